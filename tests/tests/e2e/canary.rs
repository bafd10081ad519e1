//! Canary and rollback of a policy version: a step's second plugin serves a
//! share of the consumers (sticky), is rolled back automatically when it
//! fails, while the stable version keeps serving; reloads keep or drop it.
//!
//! The consumer comes from `fixture-auth` (`x-user: <id>`), so a test can
//! be a thousand consumers cheaply. The versions are `fixture-tag` (the
//! stable one, `name = "stable"`) and the same file loaded as a second
//! plugin `tag-v2` (`name = "canary"`), or `fixture-panic` for a canary
//! that traps on every call.

use serde_json::Value;
use tollgate::control::ReloadOutcome;
use tollgate::policy::canary::slot;
use tollgate_tests::*;

/// An auth step, then step `tag` with the given canary (TOML inline table).
fn manifest(up: &str, step_extra: &str, canary: &str) -> String {
    let chain = format!(
        r#"
[[api.chain]]
plugin = "fixture-auth"
config = {{ header = "x-user" }}

[[api.chain]]
name = "tag"
plugin = "fixture-tag"
config = {{ name = "stable" }}
{step_extra}
{canary}
"#
    );
    simple_manifest(up, &chain)
}

async fn gateway(manifest: &str) -> TestGateway {
    let gw = TestGateway::builder(manifest)
        .plugin_path("tag-v2", plugin_dir().join("fixture_tag.wasm"))
        .admin()
        .start()
        .await;
    gw.until_snapshotted().await;
    gw
}

/// One call as consumer `user`: its status and the version that tagged
/// its response (`"stable"`, `"canary"`, or `""` when no tag ran).
async fn call(c: &reqwest::Client, gw: &TestGateway, user: &str) -> (u16, String) {
    let r = c
        .get(gw.url("/x"))
        .header("x-user", user)
        .send()
        .await
        .unwrap();
    let tag = r
        .headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v != "upstream")
        .unwrap_or_default();
    (r.status().as_u16(), tag)
}

/// The `tag` step's canary as the admin API shows it.
async fn canary_view(gw: &TestGateway) -> Value {
    let (status, v) = gw.admin().get("/apis/test/canaries").await;
    assert_eq!(status, 200, "{v}");
    v["canaries"][0].clone()
}

/// Whether consumer `user` falls in a share of `percent` at step `tag`.
fn in_canary(user: &str, percent: u32) -> bool {
    slot("tag", &format!("consumer:{user}")) < percent * 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_at_10_percent_serves_about_10_percent_sticky_per_consumer() {
    let up = Upstream::start().await;
    let canary = r#"canary = { plugin = "tag-v2", percent = 10, config = { name = "canary" } }"#;
    let gw = gateway(&manifest(&up.url(), "", canary)).await;
    let c = client();
    // A thousand consumers, one call each.
    let mut served = 0;
    for i in 0..1000 {
        let user = format!("u{i}");
        let (status, tag) = call(&c, &gw, &user).await;
        assert_eq!(status, 200);
        assert_eq!(tag == "canary", in_canary(&user, 10), "{user}: {tag}");
        served += usize::from(tag == "canary");
    }
    // 10% ± 3% (the binomial's standard deviation is 0.95% here; the
    // selection is a fixed hash, so this number never changes).
    assert!((70..=130).contains(&served), "{served} of 1000");
    eprintln!("canary at 10%: {served} of 1000 consumers");
    // Sticky: each consumer gets the same version on 20 calls.
    for user in ["u1", "u2", "u3", "u7", "u42"] {
        let first = call(&c, &gw, user).await.1;
        for _ in 0..19 {
            assert_eq!(call(&c, &gw, user).await.1, first, "{user}");
        }
    }
    // The upstream saw which version tagged the request, too.
    let tagged: usize = up
        .requests()
        .iter()
        .filter(|r| r.header("x-chain") == Some("canary"))
        .count();
    assert!(tagged >= served, "{tagged} < {served}");
    // Per-version figures.
    let v = canary_view(&gw).await;
    assert_eq!(v["step"], "tag");
    assert_eq!(v["stable_plugin"], "fixture-tag");
    assert_eq!(v["canary_plugin"], "tag-v2");
    assert_eq!(v["percent"], 10.0);
    assert_eq!(v["rolled_back"], false);
    let calls = |ver: &str| v[ver]["calls"].as_u64().unwrap();
    assert_eq!(calls("stable") + calls("canary"), 1100);
    assert_eq!(calls("canary") as usize, tagged);
    assert_eq!(v["canary"]["failed"], 0);
}

/// Sequential calls of consumers `u0`, `u1`, ... until `n`: for each, the
/// consumer, whether it is in the canary's share, its status and tag.
async fn run(gw: &TestGateway, n: usize) -> Vec<(String, bool, u16, String)> {
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        let user = format!("u{i}");
        let (status, tag) = call(&c, gw, &user).await;
        out.push((user.clone(), in_canary(&user, 50), status, tag));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_traps_is_rolled_back_within_min_calls_while_the_stable_version_serves() {
    let up = Upstream::start().await;
    // Quarantined after 3 failures: the canary's own gate, not the step's.
    let canary = r#"quarantine = { failures = 3 }
canary = { plugin = "fixture-panic", percent = 50, config = {}, rollback = { failures = 10, min-calls = 20, window = "60s" } }"#;
    let text = manifest(&up.url(), "", canary);
    let gw = gateway(&text).await;
    let calls = run(&gw, 300).await;
    // Every failure is a canary consumer's, and there are exactly
    // `min-calls` of them: calls one at a time, each failing, so the 20th
    // crossed the threshold.
    let failed: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].2 >= 500).collect();
    assert_eq!(failed.len(), 20, "{calls:?}");
    assert!(failed.iter().all(|&i| calls[i].1), "{calls:?}");
    let last = *failed.last().unwrap();
    // Stable consumers were served all along; after the rollback, every
    // consumer is, by the stable version.
    for (i, (user, canary, status, tag)) in calls.iter().enumerate() {
        if !canary || i > last {
            assert_eq!(
                (*status, tag.as_str()),
                (200, "stable"),
                "call {i} ({user})"
            );
        }
    }
    let after = calls.iter().skip(last + 1).filter(|c| c.1).count();
    assert!(
        after > 50,
        "only {after} canary consumers after the rollback"
    );
    eprintln!(
        "rolled back after {} canary calls (call {} of {}), then {after} canary consumers served by the stable version",
        failed.len(),
        last + 1,
        calls.len()
    );
    let v = canary_view(&gw).await;
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["canary"]["calls"], 20, "{v}");
    assert_eq!(v["canary"]["failed"], 20, "{v}");
    // Three traps, then quarantined (other errors) for the rest.
    assert_eq!(v["canary"]["traps"], 3, "{v}");
    assert_eq!(v["canary"]["errors"], 17, "{v}");
    assert_eq!(v["stable"]["failed"], 0, "{v}");

    // A reload that changes neither the step nor its canary keeps it
    // rolled back.
    gw.write_manifest(&format!("{text}\n# touched\n"));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    gw.until_snapshotted().await;
    let calls = run(&gw, 60).await;
    assert!(
        calls.iter().all(|c| c.2 == 200 && c.3 == "stable"),
        "{calls:?}"
    );
    assert_eq!(canary_view(&gw).await["rolled_back"], true);

    // A reload that removes the canary: the stable version alone.
    gw.write_manifest(&manifest(&up.url(), "", ""));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    let calls = run(&gw, 60).await;
    assert!(
        calls.iter().all(|c| c.2 == 200 && c.3 == "stable"),
        "{calls:?}"
    );
    let (_, v) = gw.admin().get("/apis/test/canaries").await;
    assert_eq!(v["canaries"], serde_json::json!([]));

    // A changed canary (a working one now) starts again.
    let fixed = r#"canary = { plugin = "tag-v2", percent = 50, config = { name = "canary" } }"#;
    gw.write_manifest(&manifest(&up.url(), "", fixed));
    assert!(matches!(gw.gateway.reload().await, ReloadOutcome::Applied));
    gw.until_snapshotted().await;
    for (user, canary, status, tag) in run(&gw, 60).await {
        let want = if canary { "canary" } else { "stable" };
        assert_eq!((status, tag.as_str()), (200, want), "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_canary_that_traps_is_skipped_then_rolled_back() {
    let up = Upstream::start().await;
    let canary = r#"fail-open = true
canary = { plugin = "fixture-panic", percent = 50, config = {}, rollback = { min-calls = 10 } }"#;
    let gw = gateway(&manifest(&up.url(), "", canary)).await;
    let calls = run(&gw, 200).await;
    // No call fails: the canary is skipped (no tag) until it is rolled
    // back, on its 10th call.
    assert!(calls.iter().all(|c| c.2 == 200), "{calls:?}");
    let skipped: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].3.is_empty())
        .collect();
    assert_eq!(skipped.len(), 10, "{calls:?}");
    assert!(skipped.iter().all(|&i| calls[i].1), "{calls:?}");
    let last = *skipped.last().unwrap();
    assert!(
        calls[last + 1..].iter().all(|c| c.3 == "stable"),
        "{calls:?}"
    );
    let v = canary_view(&gw).await;
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["canary"]["failed"], 10, "{v}");
    assert_eq!(v["canary"]["answers_5xx"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_checked_at_load_like_a_step() {
    let up = Upstream::start().await;
    let gw = gateway(&manifest(&up.url(), "", "")).await;
    for (canary, want) in [
        (
            r#"canary = { plugin = "tag-v2", percent = 10, config = { nme = "x" } }"#,
            "step `tag` (plugin `fixture-tag`): canary (plugin `tag-v2`): field `nme`",
        ),
        (
            r#"canary = { plugin = "no-such-plugin", percent = 10 }"#,
            "no-such-plugin",
        ),
        (
            r#"canary = { plugin = "tag-v2", percent = 101 }"#,
            "101 is not a percentage",
        ),
        (
            r#"canary = { plugin = "tag-v2", percent = 5, rollback = { min-calls = 0 } }"#,
            "rollback.min-calls = 0 must be between 1 and 1000000",
        ),
    ] {
        gw.write_manifest(&manifest(&up.url(), "", canary));
        match gw.gateway.reload().await {
            ReloadOutcome::Rejected(e) => {
                assert_contains(&e, want);
                assert_contains(&e, "api.toml:");
            }
            ReloadOutcome::Applied => panic!("{canary} was accepted"),
        }
        // The old configuration keeps serving.
        assert_eq!(call(&client(), &gw, "u1").await, (200, "stable".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrency_a_rollback_costs_at_most_min_calls_plus_the_calls_in_flight() {
    const CLIENTS: usize = 8;
    let up = Upstream::start().await;
    let canary = r#"canary = { plugin = "fixture-panic", percent = 50, config = {}, rollback = { min-calls = 20 } }"#;
    let gw = std::sync::Arc::new(gateway(&manifest(&up.url(), "", canary)).await);
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failed = 0;
            for i in 0..60 {
                let (status, _) = call(&c, &gw, &format!("c{t}-{i}")).await;
                failed += usize::from(status >= 500);
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap();
    }
    // The 20th failed canary call in the window rolls it back; the calls
    // that chose the canary before that (at most one per other client)
    // still fail.
    assert!((20..20 + CLIENTS).contains(&failed), "{failed}");
    eprintln!("{CLIENTS} clients: rolled back after {failed} failed calls");
    let v = canary_view(&gw).await;
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["canary"]["failed"].as_u64().unwrap() as usize, failed);
    assert_eq!(v["stable"]["failed"], 0, "{v}");
}
