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
            gw.gateway.runtime.instances_in_use() == 0
        })
        .await,
        "instances still alive: {}",
        gw.gateway.runtime.instances_in_use()
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
    // Two steps with a response phase need two instances at once; with a
    // limit of one, the second cannot get one.
    let chain = r#"
[[api.chain]]
plugin = "fixture-tag"
config = { name = "a" }

[[api.chain]]
name = "second"
plugin = "fixture-tag"
config = { name = "b" }
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
async fn a_step_without_a_response_phase_frees_its_instance_before_the_upstream() {
    // noop has no response phase: its instance goes back to the pool as
    // soon as its request phase is done, so with a limit of one instance the
    // second step still gets one, and nothing is held during the upstream
    // call.
    let up = Upstream::start().await;
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
    for _ in 0..3 {
        let r = client().get(gw.url("/free")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
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

// ---------------------------------------------------------------------------
// One bad policy and the others: the quarantine and the concurrency bound.

/// A call's status, error code and `Retry-After`, and how long it took.
async fn call(c: &reqwest::Client, url: String, healthy: bool) -> (u16, String, String, Duration) {
    let started = Instant::now();
    let mut req = c.get(url);
    if healthy {
        req = req.header("x-healthy", "1");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, retry, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_keeps_failing_is_quarantined_then_probed() {
    let up = Upstream::start().await;
    let gw = gateway_with(
        &up,
        r#"plugin = "fixture-panic"
config = { unless-header = "x-healthy" }
quarantine = { failures = 3, cool-down = "400ms" }"#,
    )
    .await;
    let c = client();
    let url = || gw.url("/q");
    // Three traps in a row: each runs and fails.
    for _ in 0..3 {
        let (s, code, _, _) = call(&c, url(), false).await;
        assert_eq!((s, code.as_str()), (500, "policy_failed"));
    }
    // Quarantined: answered by its fail-closed rule without running, even
    // for a call it would have let through.
    let (s, code, retry, _) = call(&c, url(), true).await;
    assert_eq!(
        (s, code.as_str(), retry.as_str()),
        (503, "policy_quarantined", "1")
    );
    assert!(up.requests().is_empty(), "the upstream was called");
    // After the cool-down one probe runs; it fails, and the next
    // cool-down is twice as long.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s, code, _, _) = call(&c, url(), false).await;
    assert_eq!((s, code.as_str()), (500, "policy_failed"), "the probe ran");
    let (s, code, _, _) = call(&c, url(), true).await;
    assert_eq!((s, code.as_str()), (503, "policy_quarantined"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s, code, _, _) = call(&c, url(), true).await;
    assert_eq!(
        (s, code.as_str()),
        (503, "policy_quarantined"),
        "the second cool-down is 800ms"
    );
    // A probe that succeeds closes the quarantine: the step runs again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (s, _, _, _) = call(&c, url(), true).await;
    assert_eq!(s, 200, "the probe succeeded");
    assert_eq!(call(&c, url(), true).await.0, 200);
    assert_eq!(call(&c, url(), false).await.1, "policy_failed");
    assert_eq!(up.requests().len(), 2);

    // Fail-open: a quarantined step is skipped without running (a loop
    // that costs each call its deadline costs nothing while quarantined).
    let gw = gateway_with(
        &up,
        r#"plugin = "fixture-loop"
timeout = "300ms"
fail-open = true
config = { phase = "request" }
quarantine = { failures = 3 }"#,
    )
    .await;
    for _ in 0..3 {
        let (s, _, _, took) = call(&c, gw.url("/open"), false).await;
        assert_eq!(s, 200);
        assert!(took >= Duration::from_millis(300), "{took:?}");
    }
    let (s, _, _, took) = call(&c, gw.url("/open"), false).await;
    assert_eq!(s, 200);
    assert!(took < Duration::from_millis(150), "it ran: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_step_cannot_make_a_benign_route_answer_503() {
    let up = Upstream::start().await;
    // The loop is never quarantined here: this is the concurrency bound
    // alone. Its first calls take a place once they have run a tick or
    // two, and from then on the step is slow: its calls take their place
    // before they start. One call of it runs at a time; the others wait
    // their queue timeout and get 503 `policy_busy`, without taking the
    // workers or an instance each.
    let manifest = format!(
        r#"schema = 1
[[api]]
name = "bad"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/bad"
[[api.chain]]
plugin = "fixture-loop"
timeout = "100ms"
concurrency = 1
queue-timeout = "100ms"
quarantine = {{ failures = 100000 }}
config = {{ phase = "request" }}

[[api]]
name = "good"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/good"
[[api.chain]]
plugin = "noop"
timeout = "10ms"
"#,
        u = up.url()
    );
    let gw = TestGateway::start(&manifest).await;
    gw.until_snapshotted().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..32)
        .map(|_| {
            let (c, u, stop) = (client(), gw.url("/bad"), stop.clone());
            tokio::spawn(async move {
                let mut codes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c.get(&u).send().await.unwrap();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    codes.push(v["error"]["code"].as_str().unwrap_or("").to_string());
                }
                codes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = client();
    let (mut statuses, mut most_alive) = (Vec::new(), 0);
    for _ in 0..100 {
        let r = c.get(gw.url("/good")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        // The loop's instances in use: at most its one place (and the
        // benign call's own, when sampled mid-call), not one per client.
        // The benign step's instance, once reset and idle in its pool, is
        // not counted.
        most_alive = most_alive.max(gw.gateway.runtime.instances_in_use());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut codes = Vec::new();
    for h in hammers {
        codes.extend(h.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "benign calls: {statuses:?}"
    );
    assert!(most_alive <= 2, "{most_alive} instances in use at once");
    let count = |code: &str| codes.iter().filter(|c| *c == code).count();
    assert!(count("policy_timeout") > 0, "{codes:?}");
    assert!(count("policy_busy") > 0, "{codes:?}");
}

// ---------------------------------------------------------------------------
// Slow host calls, client disconnects, a full pool.

/// A chain with one `fixture-slowcall` step calling `url` (with a timeout
/// of its own of `call_ms`) under the step deadline `timeout`.
fn slowcall_step(up: &Upstream, url_path: &str, call_ms: u32, timeout: &str) -> String {
    format!(
        "plugin = \"fixture-slowcall\"\ntimeout = \"{timeout}\"\ngrants = [\"http:{addr}\"]\nconfig = {{ url = \"{url}{url_path}\", timeout-ms = {call_ms} }}",
        addr = up.addr,
        url = up.url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_stuck_in_a_slow_host_call_times_out() {
    let up = Upstream::start().await;
    // The call itself works (so the 503 below is the deadline's doing).
    let gw = gateway_with(&up, &slowcall_step(&up, "/slow/10", 60_000, "2s")).await;
    let r = client().get(gw.url("/works")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-slowcall"), Some("200"));

    // A hanging peer, a call timeout of a minute, a wall-clock bound of
    // 200 ms: the step ends as a timeout at that bound. The plugin ignores
    // errors, so answering it "unavailable" would let the call through.
    let step = slowcall_step(&up, "/hang", 60_000, "200ms");
    let gw = gateway_with(&up, &format!("{step}\nwall-timeout = \"200ms\"")).await;
    let started = Instant::now();
    costs_one_request(&gw, &up, "/stuck", 503, "policy_timeout").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "took {took:?} for a 200 ms deadline"
    );
    // Its own shorter timeout is the plugin's to handle: not a timeout.
    let gw = gateway_with(&up, &slowcall_step(&up, "/hang", 100, "2s")).await;
    let r = client().get(gw.url("/own-timeout")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-slowcall"), Some("error"));
}

/// Send a request on a raw connection and return it unread.
async fn send_raw(gw: &TestGateway, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_mid_step_frees_the_instance() {
    let up = Upstream::start().await;
    // A guest busy in a loop, and a guest waiting in a host call, each with
    // a deadline of 10 s: the client leaving must end them long before.
    for step in [
        "plugin = \"fixture-loop\"\ntimeout = \"10s\"\nconfig = { phase = \"request\" }"
            .to_string(),
        slowcall_step(&up, "/hang", 60_000, "10s"),
    ] {
        let gw = gateway_with(&up, &step).await;
        let conn = send_raw(&gw, "/leaving").await;
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.gateway.runtime.live_instances() == 1
            })
            .await,
            "the step never started ({step})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
        let left = Instant::now();
        assert!(
            eventually(Duration::from_secs(2), || async {
                gw.gateway.runtime.live_instances() == 0
            })
            .await,
            "the instance outlived its client: {} alive after {:?} ({step})",
            gw.gateway.runtime.live_instances(),
            left.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_pool_gets_503_and_leaks_no_slot() {
    let up = Upstream::start().await;
    // Each call holds its instance for ~800 ms (a slow outbound call).
    let gw = TestGateway::builder(&simple_manifest(
        &up.url(),
        &format!(
            "[[api.chain]]\n{}\n",
            slowcall_step(&up, "/slow/800", 5_000, "5s")
        ),
    ))
    .limits("max-instances = 4")
    .start()
    .await;
    let c = client();
    let burst = |n: usize| {
        let (c, u) = (c.clone(), gw.url("/burst"));
        async move {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let (c, u) = (c.clone(), u.clone());
                    tokio::spawn(async move {
                        let r = c.get(u).send().await.unwrap();
                        let status = r.status().as_u16();
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        (
                            status,
                            v["error"]["code"].as_str().unwrap_or("").to_string(),
                        )
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in calls {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let results = burst(16).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let busy = results
        .iter()
        .filter(|(s, code)| *s == 503 && code == "policy_busy")
        .count();
    assert_eq!(ok + busy, 16, "{results:?}");
    assert!(ok >= 4 && busy >= 1, "{results:?}");
    assert!(
        eventually(Duration::from_secs(2), || async {
            gw.gateway.runtime.instances_in_use() == 0
        })
        .await,
        "slots leaked: {}",
        gw.gateway.runtime.instances_in_use()
    );
    // The whole pool is usable again, twice over.
    for _ in 0..2 {
        let results = burst(4).await;
        assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    }
    assert_eq!(gw.gateway.runtime.instances_in_use(), 0);
}

// ---------------------------------------------------------------------------
// Misbehaving neighbours: the p99 latency of well-behaved traffic.

/// `per_conn` sequential calls on each of `conns` clients; every latency.
async fn latencies(url: &str, conns: usize, per_conn: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (c, u) = (client(), url.to_string());
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_conn);
                for _ in 0..per_conn {
                    let t = Instant::now();
                    let r = c.get(&u).send().await.unwrap();
                    assert_eq!(r.status(), 200, "a well-behaved call failed");
                    r.bytes().await.unwrap();
                    out.push(t.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Calls of the well-behaved API per measurement (2 connections x 200):
/// the p99 is the 5th slowest.
const GOOD_CONNS: usize = 2;
const GOOD_PER_CONN: usize = 200;

/// For each misbehaving plugin (on APIs of its own on the same gateway,
/// hammered by two clients), the p99 of a well-behaved API stays within
/// max(2 x its p99 measured just before, that + 20 ms). The 20 ms floor
/// keeps a debug build on a shared 2-core machine from failing on
/// scheduling noise when the baseline is a millisecond or two, and is still
/// well below what a guest holding a worker for its 50 ms deadline costs.
/// Each case gets up to three tries (a fresh baseline each time): a real
/// regression fails all three; a burst of noise from other processes does
/// not.
///
/// The gateway runs on a runtime of its own (two workers, like the binary
/// on this machine), the clients and the upstream on another.
///
/// A latency measurement cannot share two cores with the rest of the suite:
/// `scripts/test` runs it on its own after the others (`--ignored --exact`).
/// A multi-thread runtime with two workers, like the binary on this
/// machine (the latency measurements' gateway, clients and abusers).
fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "latency measurement: scripts/test runs it alone"]
fn misbehaving_plugins_leave_other_traffic_p99_within_2x() {
    let gw_rt = two_worker_runtime();
    let client_rt = two_worker_runtime();
    let up = client_rt.block_on(Upstream::start());
    let bad = |name: &str, step: &str| {
        format!(
            "[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"{u}\"] }}\n[[api.route]]\nprefix = \"/{name}\"\n[[api.chain]]\n{step}\n\n",
            u = up.url()
        )
    };
    let cases: [(&str, &str, u16); 5] = [
        (
            "loop",
            "plugin = \"fixture-loop\"\ntimeout = \"50ms\"\nconfig = { phase = \"request\" }",
            503,
        ),
        ("recurse", "plugin = \"fixture-recurse\"", 500),
        (
            "membomb",
            "plugin = \"fixture-membomb\"\nmemory = \"8MiB\"",
            500,
        ),
        ("panic", "plugin = \"fixture-panic\"", 500),
        // Not "huge-headers" (100 000 headers): lifting that list out of
        // the guest was host work that never yields and held a worker for
        // tens of ms (p99 70-84 ms beside it against 4-10 ms alone). It is
        // now refused before lifting (`policy::output`), and measured in
        // `abusive_clients_leave_a_normal_route_p99_within_2x`.
        (
            "huge-body",
            "plugin = \"fixture-huge\"\ntimeout = \"5s\"\nconfig = { what = \"body\" }",
            500,
        ),
    ];
    // The well-behaved API's deadline is generous: this measures latency,
    // not deadlines.
    let mut manifest = format!(
        "schema = 1\n\n{}",
        bad("good", "plugin = \"noop\"\ntimeout = \"2s\"")
    );
    for (name, step, _) in &cases {
        manifest.push_str(&bad(name, step));
    }
    let gw = gw_rt.block_on(TestGateway::start(&manifest));
    // Measure what serving costs, not the background snapshot builds.
    gw_rt.block_on(gw.until_snapshotted());
    let good = gw.url("/good/x");
    client_rt.block_on(async {
        // Warm up (connections, the upstream, first instances).
        latencies(&good, GOOD_CONNS, 50).await;
        for (name, _, status) in &cases {
            let mut tries = Vec::new();
            for _ in 0..3 {
                let base = p99(latencies(&good, GOOD_CONNS, GOOD_PER_CONN).await);
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let hammers: Vec<_> = (0..2)
                    .map(|_| {
                        let (c, u, stop) = (client(), gw.url(&format!("/{name}/x")), stop.clone());
                        tokio::spawn(async move {
                            let mut seen = Vec::new();
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                let r = c.get(&u).send().await.unwrap();
                                seen.push(r.status().as_u16());
                                r.bytes().await.unwrap();
                            }
                            seen
                        })
                    })
                    .collect();
                // Let the hammers get going.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let loaded = p99(latencies(&good, GOOD_CONNS, GOOD_PER_CONN).await);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let mut bad_calls = 0;
                for h in hammers {
                    let seen = h.await.unwrap();
                    // Its own 5xx (or a deadline's 503, when the
                    // machine is busy).
                    assert!(
                        seen.iter().all(|s| s == status || *s == 503),
                        "{name}: {seen:?}"
                    );
                    bad_calls += seen.len();
                }
                assert!(bad_calls > 0, "{name}: no misbehaving call completed");
                let bound = (base * 2).max(base + Duration::from_millis(20));
                eprintln!(
                    "{name}: p99 {loaded:?} beside {bad_calls} failing calls; alone {base:?}; bound {bound:?}"
                );
                tries.push((base, loaded, bound));
                if loaded <= bound {
                    break;
                }
            }
            let (base, loaded, bound) = *tries.last().unwrap();
            assert!(
                loaded <= bound,
                "{name}: p99 of well-behaved calls {loaded:?} beside it, {base:?} alone (bound {bound:?}); tries: {tries:?}"
            );
        }
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.gateway.runtime.instances_in_use() == 0
            })
            .await,
            "instances still alive: {}",
            gw.gateway.runtime.instances_in_use()
        );
    });
    drop(gw);
    gw_rt.shutdown_timeout(Duration::from_secs(5));
    drop(up);
    client_rt.shutdown_timeout(Duration::from_secs(5));
}

/// Calls of `url` at `per_sec` a second (each on time, whether or not the
/// ones before it are done) for `secs` seconds: each latency and status.
async fn paced(url: &str, per_sec: u32, secs: u32) -> Vec<(Duration, u16)> {
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::new();
    for _ in 0..per_sec * secs {
        tick.tick().await;
        let (c, u) = (c.clone(), url.to_string());
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = c.get(&u).send().await.unwrap();
            let status = r.status().as_u16();
            r.bytes().await.unwrap();
            (t.elapsed(), status)
        }));
    }
    let mut out = Vec::with_capacity(calls.len());
    for c in calls {
        out.push(c.await.unwrap());
    }
    out
}

/// Section 5 of issue 15, as a hostile plugin's clients would try it: with
/// about 200 calls a second of normal traffic on a benign route, one and
/// then eight clients hit a looping, a memory-bombing and a
/// header-flooding step (100 000 headers) on other routes of the same
/// gateway, as fast as they are answered. The normal route's p99 stays
/// within 2x its p99 measured just before (with 2 ms of absolute slack for
/// sub-millisecond baselines) and it gets no 503. Each case gets up to
/// three tries with a fresh baseline (a real regression fails all three).
///
/// The baseline is the same load made by well-behaved clients: alone for
/// one abusive client, beside as many clients flooding a benign route for
/// eight. Eight clients flooding anything, on the same two cores as the
/// gateway, cost every route some milliseconds of p99 (the operating
/// system shares the cores among a dozen busy threads: measured ~5 ms,
/// whatever the flooded route does); what a hostile policy must not do is
/// cost more than that.
///
/// The gateway runs on a runtime of its own (two workers, like the binary
/// on this machine), the clients and the upstream on another; the steps
/// have the default gate (quarantine and concurrency bound).
#[test]
#[ignore = "latency measurement, run by hand: its eight-client cases pass near their 2x bound (issue 15)"]
fn abusive_clients_leave_a_normal_route_p99_within_2x() {
    let gw_rt = two_worker_runtime();
    let client_rt = two_worker_runtime();
    // The flooding clients on a runtime of their own: a client that floods
    // must not delay the normal client's own sends and measurements.
    let abuse_rt = two_worker_runtime();
    let up = client_rt.block_on(Upstream::start());
    let api = |name: &str, step: &str| {
        format!(
            "[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"{u}\"] }}\n[[api.route]]\nprefix = \"/{name}\"\n[[api.chain]]\n{step}\n\n",
            u = up.url()
        )
    };
    let cases: [(&str, &str); 3] = [
        (
            "loop",
            "plugin = \"fixture-loop\"\ntimeout = \"50ms\"\nconfig = { phase = \"request\" }",
        ),
        ("membomb", "plugin = \"fixture-membomb\"\nmemory = \"8MiB\""),
        (
            "headers",
            "plugin = \"fixture-huge\"\ntimeout = \"5s\"\nconfig = { what = \"headers\" }",
        ),
    ];
    // The normal route's step has the default deadline (50 ms): a 503 by
    // it is what eight abusive clients used to cause. The flooded benign
    // route has the same step.
    let mut manifest = format!(
        "schema = 1\n\n{}{}",
        api("good", "plugin = \"noop\""),
        api("flood", "plugin = \"noop\"")
    );
    for (name, step) in &cases {
        manifest.push_str(&api(name, step));
    }
    let gw = gw_rt.block_on(TestGateway::start(&manifest));
    gw_rt.block_on(gw.until_snapshotted());
    let good = gw.url("/good/x");
    // The normal route's calls for 2 s, beside `clients` clients calling
    // `url` as fast as they are answered: its latencies and statuses, and
    // the flooding clients' statuses.
    let beside = |url: String, clients: usize| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammers: Vec<_> = (0..clients)
            .map(|_| {
                let (c, u, stop) = (client(), url.clone(), stop.clone());
                abuse_rt.spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = c.get(&u).send().await.unwrap();
                        seen.push(r.status().as_u16());
                        r.bytes().await.unwrap();
                    }
                    seen
                })
            })
            .collect();
        let good = good.clone();
        async move {
            if clients > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let loaded = paced(&good, 200, 2).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut seen = Vec::new();
            for h in hammers {
                seen.extend(h.await.unwrap());
            }
            (loaded, seen)
        }
    };
    let (mut report, mut failed) = (Vec::new(), Vec::new());
    client_rt.block_on(async {
        paced(&good, 200, 1).await;
        for (name, _) in &cases {
            for clients in [1usize, 8] {
                let mut tries = Vec::new();
                for _ in 0..3 {
                    // The same load, well-behaved: none for one client
                    // (one more client costs next to nothing), as many
                    // clients on the benign route for eight.
                    let flooders = if clients == 1 { 0 } else { clients };
                    let (base, seen) = beside(gw.url("/flood/x"), flooders).await;
                    assert!(base.iter().all(|(_, s)| *s == 200), "baseline failed");
                    assert!(seen.iter().all(|s| *s == 200), "benign flood failed");
                    let base = p99(base.into_iter().map(|(d, _)| d).collect());
                    let (loaded, seen) = beside(gw.url(&format!("/{name}/x")), clients).await;
                    assert!(seen.iter().all(|s| *s >= 500), "{name}: {seen:?}");
                    let not_ok: Vec<u16> =
                        loaded.iter().map(|(_, s)| *s).filter(|s| *s != 200).collect();
                    let loaded = p99(loaded.into_iter().map(|(d, _)| d).collect());
                    let bound = (base * 2).max(base + Duration::from_millis(2));
                    eprintln!(
                        "{name} x{clients}: normal p99 {loaded:?} beside {} abusive calls; beside as many benign ones {base:?}; bound {bound:?}; normal calls failed: {}",
                        seen.len(),
                        not_ok.len()
                    );
                    let ok = loaded <= bound && not_ok.is_empty();
                    tries.push((base, loaded, not_ok));
                    if ok {
                        break;
                    }
                }
                let (base, loaded, not_ok) = tries.last().unwrap();
                let bound = (*base * 2).max(*base + Duration::from_millis(2));
                let line = format!(
                    "{name} x{clients}: normal p99 {loaded:?} beside it, {base:?} beside the same benign load ({:.1}x), {} normal calls failed; tries: {:?}",
                    loaded.as_secs_f64() / base.as_secs_f64(),
                    not_ok.len(),
                    tries.iter().map(|t| (t.0, t.1, t.2.len())).collect::<Vec<_>>()
                );
                if *loaded > bound || !not_ok.is_empty() {
                    failed.push(line.clone());
                }
                report.push(line);
            }
        }
    });
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "over the bound:\n{}", failed.join("\n"));
    drop(gw);
    gw_rt.shutdown_timeout(Duration::from_secs(5));
    drop(up);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    abuse_rt.shutdown_timeout(Duration::from_secs(5));
}
