//! key-auth, rate-limit and quota end to end.

use std::time::Duration;
use tollgate::services::consumers::key_digest_hex;
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
    let result = tokio::task::spawn_blocking(move || tollgate::server::Gateway::load(&path))
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
                let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&reset), "{reset}");
            }
            429 => {
                refused += 1;
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
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
