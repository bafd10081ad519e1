//! Hot reload: a good change is applied atomically, a bad one is rejected
//! and the old configuration keeps serving; in-flight requests finish on
//! the configuration they started with; SIGHUP and file changes both work.

use std::time::Duration;
use tollgate::control::ReloadOutcome;
use tollgate_tests::*;

fn tagged(up: &str, tag: &str) -> String {
    simple_manifest(
        up,
        &format!("[[api.chain]]\nplugin = \"fixture-tag\"\nconfig = {{ name = \"{tag}\" }}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_reload_applies_bad_reload_keeps_old() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&tagged(&up.url(), "one")).await;
    let c = client();
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("one"));

    gw.write_manifest(&tagged(&up.url(), "two"));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("two"));

    // Truncated TOML.
    let good = tagged(&up.url(), "two");
    gw.write_manifest(&good[..good.len() / 2]);
    match gw.gateway.reload().await {
        ReloadOutcome::Rejected(why) => assert_contains(&why, "api.toml"),
        other => panic!("{other:?}"),
    }
    // A config the plugin rejects.
    gw.write_manifest(&simple_manifest(
        &up.url(),
        "[[api.chain]]\nplugin = \"fixture-badconfig\"\nconfig = { level = \"medium\" }\n",
    ));
    match gw.gateway.reload().await {
        ReloadOutcome::Rejected(why) => {
            assert_contains(&why, "field `level`: must be one of: low, high")
        }
        other => panic!("{other:?}"),
    }
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_old_configuration() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&tagged(&up.url(), "old")).await;
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        let u = gw.url("/slow/800");
        async move { c.get(u).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.write_manifest(&tagged(&up.url(), "new"));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    let chain = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("x-chain-response")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 200);
    // Its response chain ran on the old configuration.
    assert_eq!(chain(&r), vec!["upstream", "old"]);
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(chain(&r), vec!["upstream", "new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_triggers_reload() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&tagged(&up.url(), "before"))
        .watch(true)
        .start()
        .await;
    // Let the watcher arm itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.write_manifest(&tagged(&up.url(), "after"));
    let c = client();
    let ok = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let u = gw.url("/");
        async move {
            let r = c.get(u).send().await.unwrap();
            r.headers()
                .get_all("x-chain-response")
                .iter()
                .any(|v| v.to_str().unwrap() == "after")
        }
    })
    .await;
    assert!(ok, "the file change was not picked up");
}

/// The gateway's generation number (bumped by every applied reload).
fn generation(gw: &TestGateway) -> u64 {
    gw.gateway
        .data
        .generation
        .load(std::sync::atomic::Ordering::SeqCst)
}

/// The watcher reacts to the configuration's own files only, and only when
/// their bytes change: a log written beside the manifest, other files
/// created and renamed there, and the manifest and gateway file rewritten
/// with the same bytes reload nothing; a real edit reloads exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_only_when_an_input_really_changes() {
    use std::io::Write;
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&tagged(&up.url(), "before"))
        .watch(true)
        .start()
        .await;
    // Let the watcher arm itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let g0 = generation(&gw);

    // A log beside the manifest: 150 writes over about 3 s, and a scratch
    // file replaced by rename now and then, as an editor would.
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(gw.path().join("access.log"))
        .unwrap();
    for i in 0..150 {
        writeln!(log, "{{\"line\":{i}}}").unwrap();
        log.sync_data().unwrap();
        if i % 30 == 0 {
            std::fs::write(gw.path().join("notes.txt.tmp"), format!("{i}")).unwrap();
            std::fs::rename(gw.path().join("notes.txt.tmp"), gw.path().join("notes.txt")).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        generation(&gw),
        g0,
        "writes beside the configuration files reloaded it"
    );

    // The manifest and the gateway file rewritten with the same bytes, by
    // rename and in place.
    let manifest = std::fs::read_to_string(gw.path().join("api.toml")).unwrap();
    gw.write_manifest(&manifest);
    std::fs::write(gw.path().join("api.toml"), &manifest).unwrap();
    let gw_file = gw.path().join("tollgate.toml");
    std::fs::write(&gw_file, std::fs::read(&gw_file).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        generation(&gw),
        g0,
        "unchanged files reloaded the configuration"
    );

    // A real edit: one reload, and the new chain serves.
    gw.write_manifest(&tagged(&up.url(), "after"));
    let reloaded = eventually(Duration::from_secs(10), || async { generation(&gw) > g0 }).await;
    assert!(reloaded, "the edit was not picked up");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(generation(&gw), g0 + 1, "one edit, more than one reload");
    client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(up.last().header("x-chain"), Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("api.toml"), tagged(&up.url(), "first")).unwrap();
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!(
            "schema = 1\npolicies = [\"api.toml\"]\n[[listener]]\nname = \"p\"\naddress = \"127.0.0.1:{port}\"\n[plugins]\ndirs = [{:?}]\n[reload]\nwatch = false\n",
            plugin_dir().display().to_string()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(tollgate_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("tollgate.toml"))
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let _guard = ChildGuard(child);
    let url = format!("http://127.0.0.1:{port}/");
    let c = client();
    let tag = |c: reqwest::Client, url: String| async move {
        match c.get(url).send().await {
            Ok(r) => r
                .headers()
                .get_all("x-chain-response")
                .iter()
                .next_back()
                .map(|v| v.to_str().unwrap().to_string()),
            Err(_) => None,
        }
    };
    let up_ok = eventually(Duration::from_secs(60), || {
        let (c, u) = (c.clone(), url.clone());
        async move { tag(c, u).await == Some("first".into()) }
    })
    .await;
    assert!(
        up_ok,
        "gateway did not come up: {}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
    std::fs::write(dir.path().join("api.toml"), tagged(&up.url(), "second")).unwrap();
    // No watcher: nothing changes until SIGHUP.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tag(c.clone(), url.clone()).await, Some("first".into()));
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let reloaded = eventually(Duration::from_secs(20), || {
        let (c, u) = (c.clone(), url.clone());
        async move { tag(c, u).await == Some("second".into()) }
    })
    .await;
    assert!(
        reloaded,
        "SIGHUP did not reload: {}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
}

/// The `x-chain` tag the upstream saw on a call to `path`, or the status
/// when the call did not reach it.
async fn tag_of(gw: &TestGateway, up: &Upstream, path: &str) -> Result<String, u16> {
    let before = up.requests().len();
    let r = client().get(gw.url(path)).send().await.unwrap();
    if r.status() != 200 || up.requests().len() == before {
        return Err(r.status().as_u16());
    }
    Ok(up.last().header("x-chain").unwrap_or("").to_string())
}

/// Two APIs, `/a` and `/b`, each with a `fixture-tag` step named `tag`.
fn two_apis(up: &str, tag: &str, extra: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "a"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/a"
[[api.chain]]
plugin = "fixture-tag"
config = {{ name = "{tag}" }}

[[api]]
name = "b"
upstream = {{ targets = ["{up}"] }}
[[api.route]]
prefix = "/b"
[[api.chain]]
plugin = "fixture-tag"
config = {{ name = "{tag}" }}
{extra}"#
    )
}

/// The old configuration serves both APIs exactly as before.
async fn old_config_serves(gw: &TestGateway, up: &Upstream, tag: &str, generation: u64) {
    assert_eq!(
        gw.gateway
            .data
            .generation
            .load(std::sync::atomic::Ordering::SeqCst),
        generation,
        "a rejected configuration was swapped in"
    );
    for path in ["/a/1", "/b/1"] {
        assert_eq!(tag_of(gw, up, path).await, Ok(tag.to_string()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_caught_mid_write_keeps_the_old_config() {
    use std::io::{Seek, Write};
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&two_apis(&up.url(), "old", ""))
        .watch(true)
        .start()
        .await;
    // Let the watcher arm itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // (The watcher may have reloaded the unchanged file once meanwhile.)
    let g0 = gw
        .gateway
        .data
        .generation
        .load(std::sync::atomic::Ordering::SeqCst);
    old_config_serves(&gw, &up, "old", g0).await;
    // An editor writing in place, stalled halfway through a table (longer
    // than the debounce): the watcher reloads the half-written file.
    let new = two_apis(&up.url(), "new", "");
    let cut = new.find("[[api]]\nname = \"b\"").unwrap() + 12;
    let path = gw.path().join("api.toml");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&new.as_bytes()[..cut]).unwrap();
    f.sync_all().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    old_config_serves(&gw, &up, "old", g0).await;
    // (The same as an explicit reload would say.)
    match gw.gateway.reload().await {
        ReloadOutcome::Rejected(why) => assert_contains(&why, "api.toml"),
        other => panic!("a half-written manifest: {other:?}"),
    }
    // An empty file (truncated, nothing written yet) is refused too.
    f.set_len(0).unwrap();
    f.sync_all().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    old_config_serves(&gw, &up, "old", g0).await;
    // The write completes: the new configuration applies.
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(new.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let applied = eventually(Duration::from_secs(10), || async {
        tag_of(&gw, &up, "/b/2").await == Ok("new".into())
    })
    .await;
    assert!(applied, "the completed file was not picked up");
    assert_eq!(tag_of(&gw, &up, "/a/2").await, Ok("new".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_is_not_utf8_keeps_the_old_config() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&two_apis(&up.url(), "old", "")).await;
    old_config_serves(&gw, &up, "old", 1).await;
    // A valid manifest but for one byte (Latin-1 `é` in a comment).
    let mut bytes = two_apis(&up.url(), "new", "# caf").into_bytes();
    bytes.extend_from_slice(b"\xe9\n");
    let path = gw.path().join("api.toml");
    std::fs::write(path.with_extension("tmp"), &bytes).unwrap();
    std::fs::rename(path.with_extension("tmp"), &path).unwrap();
    match gw.gateway.reload().await {
        ReloadOutcome::Rejected(why) => {
            assert_contains(&why, "api.toml");
            assert_contains(&why, "UTF-8");
        }
        other => panic!("{other:?}"),
    }
    old_config_serves(&gw, &up, "old", 1).await;
    // Fixed, it applies.
    gw.write_manifest(&two_apis(&up.url(), "new", ""));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    assert_eq!(tag_of(&gw, &up, "/b/1").await, Ok("new".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_init_fails_rejects_the_whole_config() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&two_apis(&up.url(), "old", "")).await;
    old_config_serves(&gw, &up, "old", 1).await;
    // The new configuration changes both APIs and adds a good API `/c` and
    // one whose plugin fails in its init: a panic, then a loop (which only
    // its deadline ends).
    for (plugin, config, why) in [
        ("fixture-panic", "{ phase = \"configure\" }", "trapped"),
        ("fixture-loop", "{ phase = \"configure\" }", "deadline"),
    ] {
        let extra = format!(
            r#"
[[api]]
name = "c"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/c"
[[api.chain]]
plugin = "fixture-tag"
config = {{ name = "new" }}

[[api]]
name = "broken"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/broken"
[[api.chain]]
name = "init-fails"
plugin = "{plugin}"
timeout = "200ms"
config = {config}
"#,
            u = up.url()
        );
        gw.write_manifest(&two_apis(&up.url(), "new", &extra));
        let started = std::time::Instant::now();
        match gw.gateway.reload().await {
            ReloadOutcome::Rejected(why_not) => {
                assert_contains(&why_not, "api.toml");
                assert_contains(&why_not, "broken");
                assert_contains(&why_not, "init-fails");
                assert_contains(&why_not, why);
            }
            other => panic!("{plugin}: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        old_config_serves(&gw, &up, "old", 1).await;
        assert_eq!(tag_of(&gw, &up, "/c/1").await, Err(404), "{plugin}");
        assert_eq!(tag_of(&gw, &up, "/broken/1").await, Err(404), "{plugin}");
        assert_eq!(gw.gateway.runtime.instances_in_use(), 0);
    }
}
