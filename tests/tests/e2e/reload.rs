//! Hot reload: a good change is applied atomically, a bad one is rejected
//! and the old configuration keeps serving; in-flight requests finish on
//! the configuration they started with; SIGHUP and file changes both work.

use std::time::Duration;
use tollgate::server::ReloadOutcome;
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
