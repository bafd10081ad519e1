//! The sandbox: a misbehaving plugin costs one request a 5xx within its
//! deadline, the process keeps serving, no state leaks between requests,
//! and no instance slot is lost.

use std::time::{Duration, Instant};
use tollgate_tests::*;

async fn gateway_with(up: &Upstream, step: &str) -> TestGateway {
    let chain = format!("[[api.chain]]\n{step}\n");
    TestGateway::start(&simple_manifest(&up.url(), &chain)).await
}

/// Expect `status` and error `code` within `within`, then a healthy call.
async fn costs_one_request(gw: &TestGateway, up: &Upstream, path: &str, status: u16, code: &str) {
    let c = client();
    let started = Instant::now();
    let r = c.get(gw.url(path)).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), status, "{path}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(took < Duration::from_secs(5), "{path} took {took:?}");
    // The upstream saw nothing of the failed call.
    assert!(up.requests().iter().all(|r| r.path_and_query != path));
    // No slot leaked.
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.gateway.runtime.live_instances() == 0
        })
        .await,
        "instances still alive: {}",
        gw.gateway.runtime.live_instances()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_hits_the_deadline() {
    let up = Upstream::start().await;
    let gw = gateway_with(
        &up,
        "plugin = \"fixture-loop\"\ntimeout = \"100ms\"\nconfig = { phase = \"request\" }",
    )
    .await;
    let started = Instant::now();
    costs_one_request(&gw, &up, "/loop", 503, "policy_timeout").await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Again: each call costs its own deadline, the gateway is not stuck.
    costs_one_request(&gw, &up, "/loop2", 503, "policy_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_in_the_response_phase() {
    let up = Upstream::start().await;
    let gw = gateway_with(
        &up,
        "plugin = \"fixture-loop\"\ntimeout = \"100ms\"\nconfig = { phase = \"response\" }",
    )
    .await;
    let r = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_hits_the_cap() {
    let up = Upstream::start().await;
    let gw = gateway_with(&up, "plugin = \"fixture-membomb\"\nmemory = \"8MiB\"").await;
    costs_one_request(&gw, &up, "/bomb", 500, "policy_memory_exceeded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_and_stack_overflow_are_traps() {
    let up = Upstream::start().await;
    let gw = gateway_with(&up, "plugin = \"fixture-panic\"").await;
    costs_one_request(&gw, &up, "/panic", 500, "policy_failed").await;
    costs_one_request(&gw, &up, "/panic-again", 500, "policy_failed").await;
    let gw = gateway_with(&up, "plugin = \"fixture-recurse\"").await;
    costs_one_request(&gw, &up, "/recurse", 500, "policy_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_outputs_are_refused() {
    let up = Upstream::start().await;
    for (what, code) in [
        ("headers", "policy_invalid_output"),
        ("body", "policy_memory_exceeded"),
        ("header-value", "policy_memory_exceeded"),
    ] {
        let gw = gateway_with(
            &up,
            &format!(
                "plugin = \"fixture-huge\"\ntimeout = \"5s\"\nconfig = {{ what = \"{what}\" }}"
            ),
        )
        .await;
        costs_one_request(&gw, &up, &format!("/huge-{what}"), 500, code).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_skips_the_failing_step() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "fixture-panic"
fail-open = true

[[api.chain]]
plugin = "fixture-loop"
fail-open = true
timeout = "50ms"
config = { phase = "request" }

[[api.chain]]
plugin = "fixture-tag"
config = { name = "after" }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let r = client().get(gw.url("/open")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-chain"), Some("after"));
    let resp: Vec<&str> = r
        .headers()
        .get_all("x-chain-response")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(resp, vec!["upstream", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_leaks_between_requests() {
    let up = Upstream::start().await;
    let gw = gateway_with(&up, "plugin = \"fixture-state\"").await;
    let c = client();
    for i in 0..20 {
        let r = c
            .get(gw.url("/state"))
            .header("x-secret", format!("secret-of-consumer-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = up.last();
        assert_eq!(seen.header("x-state-count"), Some("1"), "request {i}");
        assert_eq!(seen.header("x-state-previous"), Some("none"), "request {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_instance_is_never_reused() {
    // fixture-state after a panicking step: if instances were reused, the
    // state plugin would see its count grow; the panicking one would stay
    // poisoned. Both must be fresh on every call.
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "fixture-state"

[[api.chain]]
plugin = "fixture-panic"
fail-open = true
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    for _ in 0..5 {
        let r = client().get(gw.url("/t")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(up.last().header("x-state-count"), Some("1"));
    }
    assert_eq!(gw.gateway.runtime.live_instances(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_limit_gives_503_and_recovers() {
    let up = Upstream::start().await;
    // Two steps need two instances at once; with a limit of one, the second
    // cannot get one.
    let chain = r#"
[[api.chain]]
plugin = "noop"

[[api.chain]]
name = "second"
plugin = "noop"
"#;
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .limits("max-instances = 1")
        .start()
        .await;
    let r = client().get(gw.url("/busy")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "policy_busy");
    assert_eq!(gw.gateway.runtime.live_instances(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_does_not_stall_other_requests() {
    let up = Upstream::start().await;
    let manifest = format!(
        r#"schema = 1
[[api]]
name = "bad"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/bad"
[[api.chain]]
plugin = "fixture-loop"
timeout = "200ms"
config = {{ phase = "request" }}

[[api]]
name = "good"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/good"
[[api.chain]]
plugin = "noop"
"#,
        u = up.url()
    );
    let gw = TestGateway::start(&manifest).await;
    let c = client();
    let bad: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            let u = gw.url("/bad");
            tokio::spawn(async move { c.get(u).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for _ in 0..10 {
        assert_eq!(c.get(gw.url("/good")).send().await.unwrap().status(), 200);
    }
    for b in bad {
        assert_eq!(b.await.unwrap(), 503);
    }
}
