//! Configured snapshots (`host/src/policy/snapshot.rs`): once a step's
//! snapshot is built, requests skip `configure`, and every request still
//! gets an instance of its own.

use std::time::Duration;
use tollgate_tests::*;

const STATE: &str = "[[api.chain]]\nplugin = \"fixture-state\"\n";

/// `x-state-count`, `x-state-previous` and `x-state-configured` the
/// upstream saw for one call carrying `secret`.
async fn state_of_one_call(gw: &TestGateway, up: &Upstream, secret: &str) -> (String, String, u64) {
    let r = client()
        .get(gw.url("/state"))
        .header("x-secret", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    let h = |n: &str| {
        seen.header(n)
            .unwrap_or_else(|| panic!("no {n}"))
            .to_string()
    };
    let configured = h("x-state-configured").parse().expect("a number");
    (h("x-state-count"), h("x-state-previous"), configured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_skip_configure_once_the_snapshot_is_ready() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), STATE)).await;
    gw.until_snapshotted().await;
    let mut configured_at = Vec::new();
    for i in 0..20 {
        let (count, previous, configured) =
            state_of_one_call(&gw, &up, &format!("secret-of-consumer-{i}")).await;
        // Still an instance in the snapshot's state per request (fresh or
        // reset): nothing one request left in
        // the plugin's statics reaches the next.
        assert_eq!(count, "1", "request {i}");
        assert_eq!(previous, "none", "request {i}");
        configured_at.push(configured);
    }
    // ... but every instance starts from the same configured state:
    // `configure` ran once, when the snapshot was taken.
    assert!(configured_at[0] > 0);
    assert!(
        configured_at.iter().all(|c| *c == configured_at[0]),
        "{configured_at:?}"
    );
    assert_eq!(gw.gateway.runtime.instances_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshots_every_request_configures_its_own_instance() {
    let up = Upstream::start().await;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), STATE))
        .snapshots(false)
        .start()
        .await;
    let mut configured_at = Vec::new();
    for i in 0..5 {
        let (count, previous, configured) = state_of_one_call(&gw, &up, &format!("s{i}")).await;
        assert_eq!((count.as_str(), previous.as_str()), ("1", "none"));
        configured_at.push(configured);
    }
    let mut distinct = configured_at.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{configured_at:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gw.gateway.current().apis[0].steps[0].snapshotted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_the_steps_own_configuration() {
    // Two steps of one plugin with different configurations: each serves
    // from a snapshot of its own configuration, and a reload with a new
    // configuration gets a new snapshot.
    let up = Upstream::start().await;
    let chain = |a: &str| {
        format!(
            r#"
[[api.chain]]
name = "first"
plugin = "transform"
config = {{ request = {{ headers = {{ set = {{ "x-first" = "{a}" }} }} }} }}

[[api.chain]]
name = "second"
plugin = "transform"
config = {{ request = {{ headers = {{ set = {{ "x-second" = "two" }} }} }} }}
"#
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::builder(&simple_manifest(&up.url(), &chain("one")))
        .data_dir(dir.path().join("data"))
        .start()
        .await;
    gw.until_snapshotted().await;
    let call = || async {
        let r = client().get(gw.url("/t")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let seen = up.last();
        (
            seen.header("x-first").map(str::to_string),
            seen.header("x-second").map(str::to_string),
        )
    };
    assert_eq!(call().await, (Some("one".into()), Some("two".into())));

    std::fs::write(
        gw.dir.path().join("api.toml"),
        simple_manifest(&up.url(), &chain("uno")),
    )
    .unwrap();
    assert!(matches!(
        gw.gateway.reload().await,
        tollgate::control::ReloadOutcome::Applied
    ));
    gw.until_snapshotted().await;
    assert_eq!(call().await, (Some("uno".into()), Some("two".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_limits_hold_for_snapshotted_steps() {
    // A step served from its snapshot keeps its deadline and memory cap,
    // and a fault still costs only that request.
    let up = Upstream::start().await;
    for (step, status, code) in [
        (
            "plugin = \"fixture-loop\"\ntimeout = \"100ms\"\nconfig = { phase = \"request\" }",
            503,
            "policy_timeout",
        ),
        (
            "plugin = \"fixture-membomb\"\nmemory = \"8MiB\"",
            500,
            "policy_memory_exceeded",
        ),
        ("plugin = \"fixture-panic\"", 500, "policy_failed"),
    ] {
        let chain = format!("[[api.chain]]\n{step}\n");
        let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
        gw.until_snapshotted().await;
        for _ in 0..2 {
            let r = client().get(gw.url("/x")).send().await.unwrap();
            assert_eq!(r.status(), status, "{step}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{step}: {v}");
        }
        assert_eq!(gw.gateway.runtime.live_instances(), 0, "{step}");
    }
}

/// The compiled plugins and their snapshots, in a `[plugins] cache-dir`.
fn cached_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_kept_in_the_cache_dir_shared_and_recompiled_when_unreadable() {
    let up = Upstream::start().await;
    let cache = tempfile::tempdir().unwrap();
    let manifest = simple_manifest(&up.url(), STATE);
    let first = TestGateway::builder(&manifest)
        .plugin_cache(cache.path())
        .start()
        .await;
    first.until_snapshotted().await;
    // The plugin and what its configured snapshot was made of, each
    // compiled once, there and not in the data directory.
    let files = cached_files(cache.path());
    assert!(files.len() >= 2, "{files:?}");
    assert!(!first.dir.path().join("data/plugin-cache").exists());
    let (count, _, _) = state_of_one_call(&first, &up, "a").await;
    assert_eq!(count, "1");

    // A second gateway on the same folder loads the very files the first
    // wrote instead of compiling them again (this plugin's snapshot holds
    // the time `configure` ran, so that one is new).
    let written: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    let second = TestGateway::builder(&manifest)
        .plugin_cache(cache.path())
        .start()
        .await;
    second.until_snapshotted().await;
    let now = cached_files(cache.path());
    assert_eq!(now.len(), files.len() + 1, "{now:?}");
    for (f, t) in files.iter().zip(&written) {
        assert_eq!(
            std::fs::metadata(f).unwrap().modified().unwrap(),
            *t,
            "{f:?}"
        );
    }
    drop(second);

    // Files wasmtime cannot read (truncated, garbage) are discarded and
    // compiled again: the gateway starts and serves as before.
    for f in &files {
        std::fs::write(f, b"\x7fELF not a compiled plugin").unwrap();
    }
    let third = TestGateway::builder(&manifest)
        .plugin_cache(cache.path())
        .start()
        .await;
    third.until_snapshotted().await;
    let (count, previous, _) = state_of_one_call(&third, &up, "b").await;
    assert_eq!((count.as_str(), previous.as_str()), ("1", "none"));
    // The plugin's own file was compiled and written again (the first
    // gateway's snapshot is not this one's: it stays as it was).
    let rewritten = files
        .iter()
        .filter(|f| std::fs::metadata(f).unwrap().len() > 1024)
        .count();
    assert!(rewritten >= 1, "nothing rewritten: {files:?}");
}
