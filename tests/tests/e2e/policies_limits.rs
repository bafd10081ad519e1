//! key-auth, rate-limit and quota end to end.

use std::net::SocketAddr;
use std::time::Duration;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const ALICE: &str = "alice-key-6f1c2a9d";
const BOB: &str = "bob-key-77b3e0c4";

/// Two consumers with one key each.
fn consumers() -> String {
    format!(
        r#"
[[consumer]]
id = "alice"
app = "alice-shop"
plan = "gold"
keys = [{{ id = "k-alice", sha256 = "{a}" }}]

[[consumer]]
id = "bob"
plan = "gold"
keys = [{{ id = "k-bob", sha256 = "{b}" }}]
"#,
        a = key_digest_hex(ALICE),
        b = key_digest_hex(BOB),
    )
}

const KEY_AUTH: &str = r#"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
config = { query = "api_key", realm = "pets" }
"#;

fn manifest(up: &str, chain: &str) -> String {
    format!("{}\n{}", simple_manifest(up, chain), consumers())
}

/// `ALICE` with its last byte changed.
fn alice_last_byte_differs() -> String {
    let mut k = ALICE.as_bytes().to_vec();
    *k.last_mut().unwrap() ^= 1;
    String::from_utf8(k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_accepts_valid_keys_and_refuses_the_rest_alike() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url(), KEY_AUTH)).await;
    let c = client();

    let missing = c.get(gw.url("/pets")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "ApiKey realm=\"pets\""
    );
    let missing_body = missing.bytes().await.unwrap();
    assert_eq!(
        &missing_body[..],
        br#"{"error":{"code":"unauthorized","message":"a valid API key is required"}}"#
    );
    let wrong_keys = [
        "nope".to_string(),
        alice_last_byte_differs(),
        ALICE[..ALICE.len() - 1].to_string(),
        format!("{ALICE}0"),
        ALICE.to_uppercase(),
    ];
    for key in &wrong_keys {
        let r = c
            .get(gw.url("/pets"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{key}");
        assert_eq!(r.headers()["www-authenticate"], "ApiKey realm=\"pets\"");
        assert_eq!(r.bytes().await.unwrap(), missing_body, "{key}");
        // The same in the query.
        let r = c
            .get(gw.url(&format!("/pets?api_key={key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.bytes().await.unwrap(), missing_body);
    }
    // Two keys (even two valid ones) are ambiguous.
    let r = c
        .get(gw.url(&format!("/pets?api_key={BOB}")))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        up.requests().is_empty(),
        "refused calls reached the upstream"
    );

    // A valid key: the credential is stripped, the consumer forwarded, and
    // forged consumer headers removed.
    let r = c
        .get(gw.url("/pets?a=1"))
        .header("x-api-key", ALICE)
        .header("x-consumer-id", "admin")
        .header("x-consumer-plan", "platinum")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.path_and_query, "/pets?a=1");
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header_all("x-consumer-id"), vec!["alice"]);
    assert_eq!(seen.header("x-consumer-plan"), None);

    // In the query: removed from it, other parameters kept.
    let r = c
        .get(gw.url(&format!("/pets?b=2&api_key={BOB}&c=%203")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.path_and_query, "/pets?b=2&c=%203");
    assert_eq!(seen.header("x-consumer-id"), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_steps_see_the_consumer() {
    let up = Upstream::start().await;
    let chain = format!("{KEY_AUTH}\n[[api.chain]]\nplugin = \"fixture-context\"\n");
    let gw = TestGateway::start(&manifest(&up.url(), &chain)).await;
    let r = client()
        .get(gw.url("/x"))
        .header("x-api-key", ALICE)
        .header("x-consumer-id", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let consumer = &v["context"]["consumer"];
    assert_eq!(consumer["id"], "alice");
    assert_eq!(consumer["app"], "alice-shop");
    assert_eq!(consumer["plan"], "gold");
    assert_eq!(consumer["key-id"], "k-alice");
    let headers: Vec<(String, String)> = v["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    assert!(!headers.iter().any(|(n, _)| n == "x-api-key"));
    let ids: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "x-consumer-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, vec!["alice"]);
    // The upstream was not called: fixture-context answers itself.
    assert!(up.requests().is_empty());
}

/// Write a gateway file serving `manifest` into `dir` and load it the way
/// the server does, returning the error text.
async fn load_error(manifest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.toml"), manifest).unwrap();
    let gw = format!(
        "schema = 1\ndata-dir = \"data\"\npolicies = [\"api.toml\"]\n\n[[listener]]\nname = \"t\"\naddress = \"127.0.0.1:0\"\n\n[plugins]\ndirs = [{:?}]\n",
        plugin_dir().display().to_string()
    );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, gw).unwrap();
    let result = tokio::task::spawn_blocking(move || tollgate::app::Gateway::load(&path))
        .await
        .unwrap();
    match result {
        Ok(_) => panic!("the gateway loaded"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_without_their_grants_are_refused_at_load() {
    let chain = r#"
[[api.chain]]
name = "auth"
plugin = "key-auth"
"#;
    let err = load_error(&manifest("http://127.0.0.1:9", chain)).await;
    assert_contains(
        &err,
        "step `auth` (plugin `key-auth`): plugin `key-auth` uses consumers, which this step was not granted",
    );
    assert_contains(&err, "grants");
    // A grant of something else does not help.
    let chain = r#"
[[api.chain]]
plugin = "rate-limit"
grants = ["consumers"]
config = { limits = [{ per = "second", requests = 1 }] }
"#;
    let err = load_error(&manifest("http://127.0.0.1:9", chain)).await;
    assert_contains(&err, "counters");
    // And a bad config names the field.
    let chain = r#"
[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = { calls = 5, period = "month", time-zone = "Europe/Paris" }
"#;
    let err = load_error(&manifest("http://127.0.0.1:9", chain)).await;
    assert_contains(&err, "time-zone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_racing_one_limit_pass_exactly_as_many_as_it_allows() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "minute", requests = 7, by = "ip" }] }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let calls = (0..20).map(|i| {
        let url = gw.url(&format!("/r/{i}"));
        async move { client().get(url).send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let mut remaining = Vec::new();
    let mut refused = 0;
    for r in &responses {
        let h = r.headers();
        match r.status().as_u16() {
            200 => {
                assert_eq!(h["ratelimit-limit"], "7");
                remaining.push(
                    h["ratelimit-remaining"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap(),
                );
                // Until the calls counted so far weigh nothing any more: the
                // end of the next minute.
                let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
                assert!((60..=120).contains(&reset), "{reset}");
            }
            429 => {
                refused += 1;
                // Seven calls in this minute weigh seven until its end, then
                // decay: room for one more 1/7 into the next minute.
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((9..=69).contains(&retry), "{retry}");
                assert_eq!(h["ratelimit-limit"], "7");
                assert_eq!(h["ratelimit-remaining"], "0");
                assert!(h.contains_key("ratelimit-reset"));
                assert_eq!(h["content-type"], "application/json");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..7).collect::<Vec<u64>>());
    assert_eq!(refused, 13);
    assert_eq!(up.requests().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_consumer() {
    let up = Upstream::start().await;
    let chain = format!(
        r#"{KEY_AUTH}
[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "minute", requests = 2, by = "consumer" }}, {{ per = "hour", requests = 100, by = "consumer" }}] }}
"#
    );
    let gw = TestGateway::start(&manifest(&up.url(), &chain)).await;
    let c = client();
    let call = |key: &'static str| c.get(gw.url("/p")).header("x-api-key", key).send();
    for left in ["1", "0"] {
        let r = call(ALICE).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-remaining"], left);
        assert_eq!(r.headers()["ratelimit-limit"], "2");
    }
    let r = call(ALICE).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Bob has his own budget.
    for _ in 0..2 {
        assert_eq!(call(BOB).await.unwrap().status(), 200);
    }
    assert_eq!(call(BOB).await.unwrap().status(), 429);
    // An unauthenticated call never reaches the rate limit.
    assert_eq!(c.get(gw.url("/p")).send().await.unwrap().status(), 401);
}

fn quota_chain(calls: u64) -> String {
    format!(
        r#"{KEY_AUTH}
[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = {{ calls = {calls}, period = "month", by = "consumer", time-zone = "+02:00" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_quota_answers_403_with_retry_after() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url(), &quota_chain(3))).await;
    let c = client();
    for left in ["2", "1", "0"] {
        let r = c
            .get(gw.url("/q"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-quota-remaining"], left);
        assert_eq!(r.headers()["x-quota-limit"], "3");
        let reset: u64 = r.headers()["x-quota-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=31 * 86_400).contains(&reset), "{reset}");
    }
    let r = c
        .get(gw.url("/q"))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "{retry}");
    assert_eq!(r.headers()["x-quota-remaining"], "0");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "quota_exceeded");
    assert_eq!(up.requests().len(), 3);
    // Bob's quota is his own.
    let r = c
        .get(gw.url("/q"))
        .header("x-api-key", BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-quota-remaining"], "2");
}

/// Run `f` on a runtime of its own, and drop the runtime afterwards, so that
/// everything the gateway spawned (and with it the store) is gone.
fn on_own_runtime<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(f);
    drop(rt);
}

#[test]
fn a_quota_survives_a_gateway_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("store");
    let d = data_dir.clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&manifest(&up.url(), &quota_chain(2)))
            .data_dir(&d)
            .start()
            .await;
        let c = client();
        for _ in 0..2 {
            let r = c
                .get(gw.url("/q"))
                .header("x-api-key", ALICE)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let r = c
            .get(gw.url("/q"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    });
    // The old gateway lets go of the store once its tasks are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tollgate::store::Store::open(&data_dir).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first gateway still holds the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = data_dir.clone();
    on_own_runtime(async move {
        let up = Upstream::start().await;
        let gw = TestGateway::builder(&manifest(&up.url(), &quota_chain(2)))
            .data_dir(&d)
            .start()
            .await;
        let c = client();
        let r = c
            .get(gw.url("/q"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "the quota was reset by the restart");
        assert!(r.headers().contains_key("retry-after"));
        assert!(up.requests().is_empty());
        // Another consumer still has its whole quota.
        let r = c
            .get(gw.url("/q"))
            .header("x-api-key", BOB)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-quota-remaining"], "1");
    });
}

/// A loopback HTTP server for `fixture-slowcall`: it answers `200` at once,
/// except every third request (the 2nd, 5th, 8th, ...), which it leaves
/// unanswered for 10 s, so that the step calling it runs past its deadline.
async fn every_third_hangs() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if seen.fetch_add(1, Ordering::SeqCst) % 3 == 1 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_charges_only_the_calls_the_upstream_served() {
    // key-auth, quota (100 a month), a rate limit of 9 calls, and a step
    // whose outbound call hangs on every third call, so that it runs past
    // its deadline (503 from the gateway).
    let up = Upstream::start().await;
    let (hang, hang_task) = every_third_hangs().await;
    let chain = format!(
        r#"{quota}
[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "hour", requests = 9, by = "consumer" }}] }}

[[api.chain]]
plugin = "fixture-slowcall"
timeout = "2s"
grants = ["http:{hang}"]
config = {{ url = "http://{hang}/", timeout-ms = 60000 }}
"#,
        quota = quota_chain(100)
    );
    let gw = TestGateway::start(&manifest(&up.url(), &chain)).await;
    gw.until_snapshotted().await;
    let c = client();
    // (path, the status the client gets, the quota left after the call)
    let calls = [
        ("/ok", 200, 99),
        ("/ok", 503, 99),         // the step's deadline: the gateway failed the call
        ("/status/500", 500, 99), // the upstream failed
        ("/ok", 200, 98),
        ("/ok", 503, 98),
        ("/status/404", 404, 97), // the upstream answered: the caller's mistake counts
        ("/ok", 200, 96),
        ("/ok", 503, 96),
        ("/ok", 200, 95),
        ("/ok", 429, 95), // refused by the later rate limit
        ("/ok", 429, 95),
    ];
    for (i, (path, status, left)) in calls.into_iter().enumerate() {
        let r = c
            .get(gw.url(path))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "call {i} to {path}");
        assert_eq!(r.headers()["x-quota-limit"], "100", "call {i}");
        assert_eq!(
            r.headers()["x-quota-remaining"],
            left.to_string().as_str(),
            "call {i} to {path}: status {status}"
        );
    }
    // The upstream saw exactly the six calls that got past the steps.
    assert_eq!(up.requests().len(), 6);
    // The count is durable: another gateway on the same store would see 5
    // used; here, the next call of another consumer is unaffected, and
    // Alice's units given back are really there (not just in the headers).
    let r = c
        .get(gw.url("/ok"))
        .header("x-api-key", BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-quota-remaining"], "99");
    hang_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_count_all_every_call_the_quota_let_through_is_charged() {
    let up = Upstream::start().await;
    let chain = format!(
        r#"{KEY_AUTH}
[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = {{ calls = 10, period = "day", count = "all" }}

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "hour", requests = 3, by = "consumer" }}] }}
"#
    );
    let gw = TestGateway::start(&manifest(&up.url(), &chain)).await;
    let c = client();
    for (path, left) in [("/status/500", "9"), ("/status/503", "8"), ("/ok", "7")] {
        let r = c
            .get(gw.url(path))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-quota-remaining"], left, "{path}");
    }
    // Refused by the later rate limit: charged all the same.
    let r = c
        .get(gw.url("/ok"))
        .header("x-api-key", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-quota-remaining"], "6");
}

/// Wall-clock milliseconds into the current second.
fn ms_into_second() -> u64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1000) as u64
}

/// Spend a limit of 3 calls per second at the start of a second, then wait
/// exactly `Retry-After` after the first refusal: the next call must pass.
/// (With the sliding window, the three calls still weigh three at the end
/// of their second; a `Retry-After` pointing there was early.)
async fn waiting_retry_after_gets_through(algorithm: &str) {
    let up = Upstream::start().await;
    let chain = format!(
        r#"
[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = {{ limits = [{{ per = "second", requests = 3, by = "header:x-round" }}], algorithm = "{algorithm}" }}
"#
    );
    let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
    let c = client();
    let mut refusals = 0;
    for round in 0..3 {
        // Start early in a second, where waiting until its end is not
        // enough for the sliding window.
        tokio::time::sleep(Duration::from_millis(1000 - ms_into_second() + 20)).await;
        let call = || {
            c.get(gw.url("/r"))
                .header("x-round", format!("{algorithm}-{round}"))
                .send()
        };
        let mut refused = None;
        for _ in 0..10 {
            let r = call().await.unwrap();
            if r.status() == 429 {
                refused = Some(r);
                break;
            }
            assert_eq!(r.status(), 200);
        }
        let r = refused.expect("the limit refused none of 10 calls");
        refusals += 1;
        let h = r.headers();
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        // The limit is fully back no sooner than a call could pass.
        assert!(
            reset >= retry,
            "ratelimit-reset {reset} < retry-after {retry}"
        );
        assert_eq!(h["ratelimit-remaining"], "0");
        tokio::time::sleep(Duration::from_secs(retry)).await;
        let again = call().await.unwrap();
        assert_eq!(
            again.status(),
            200,
            "{algorithm}, round {round}: refused again after waiting retry-after {retry} s"
        );
    }
    assert_eq!(refusals, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_retry_after_gets_through_the_sliding_window() {
    waiting_retry_after_gets_through("sliding-window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_retry_after_gets_through_the_token_bucket() {
    waiting_retry_after_gets_through("token-bucket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_gateway_fails_after_the_upstream_answered_costs_nothing() {
    // The upstream answers, then a later step's response phase runs past
    // its deadline: the client gets the gateway's 503, not the upstream's
    // answer, so the call does not count.
    let up = Upstream::start().await;
    let chain = format!(
        r#"{quota}
[[api.chain]]
plugin = "fixture-loop"
timeout = "20ms"
config = {{ phase = "response" }}
"#,
        quota = quota_chain(10)
    );
    let gw = TestGateway::start(&manifest(&up.url(), &chain)).await;
    let c = client();
    for i in 0..3 {
        let r = c
            .get(gw.url("/ok"))
            .header("x-api-key", ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "call {i}");
        assert_eq!(r.headers()["x-quota-remaining"], "10", "call {i}");
    }
    assert_eq!(up.requests().len(), 3);
}
