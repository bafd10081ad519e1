//! Isolation levels: `worker` reuses a warm instance per worker thread and
//! step, `request` never lets guest state reach another request (it resets
//! an instance to its snapshot before reusing it); a worker
//! instance is discarded after a trap, a deadline, a memory-cap hit, memory
//! growth, `max-uses` uses and `idle` time; and the standard policies
//! answer exactly alike under both levels (the differential test).
//!
//! The reuse tests run the gateway on the test's one thread
//! (`#[tokio::test]`): one worker, so one pool, and every call after the
//! first finds the instance the previous call left.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate::policy::ReuseCounts;
use tollgate_tests::*;

/// A gateway whose one step is `fixture-state` with these extra step keys
/// (and a deadline a loaded test machine does not reach, unless they set
/// one).
async fn state_gateway(up: &Upstream, keys: &str) -> TestGateway {
    let timeout = if keys.contains("timeout") {
        ""
    } else {
        "timeout = \"5s\""
    };
    let chain = format!("[[api.chain]]\nplugin = \"fixture-state\"\n{timeout}\n{keys}\n");
    let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
    gw.until_snapshotted().await;
    gw
}

/// One call with these request headers: its status, and the count the
/// state fixture put on the upstream request (`None` when it got none).
async fn call(gw: &TestGateway, up: &Upstream, headers: &[(&str, &str)]) -> (u16, Option<u64>) {
    let before = up.requests().len();
    let mut r = client().get(gw.url("/state"));
    for (n, v) in headers {
        r = r.header(*n, *v);
    }
    let status = r.send().await.unwrap().status().as_u16();
    let seen = up.requests();
    let count = (seen.len() > before).then(|| {
        seen.last()
            .unwrap()
            .header("x-state-count")
            .unwrap()
            .parse()
            .unwrap()
    });
    (status, count)
}

async fn counts_of(gw: &TestGateway, up: &Upstream, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, count) = call(gw, up, &[]).await;
        assert_eq!(status, 200);
        out.push(count.unwrap());
    }
    out
}

fn counts(gw: &TestGateway) -> ReuseCounts {
    gw.gateway.runtime.reuse_counts()
}

/// A step with a response phase holds its instance across the upstream
/// call, so a worker has as many out as it has requests in flight: its
/// pool keeps them all for the next wave (with 4 per pool, 12 of these 16
/// calls got a fresh instance again).
#[tokio::test]
async fn a_wave_of_concurrent_calls_finds_the_previous_wave_s_instances() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"").await;
    let wave = || async {
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (c, u) = (client(), gw.url("/slow/200"));
                async move { c.get(u).send().await.unwrap().status().as_u16() }
            })
            .collect();
        futures_util::future::join_all(calls).await
    };
    assert!(wave().await.iter().all(|s| *s == 200));
    let c = counts(&gw);
    assert_eq!((c.fresh, c.warm, c.discarded), (16, 0, 0));
    assert_eq!(gw.gateway.runtime.idle_instances(), 16);
    assert!(wave().await.iter().all(|s| *s == 200));
    let c = counts(&gw);
    assert_eq!((c.fresh, c.warm, c.discarded), (16, 16, 0));
}

#[tokio::test]
async fn worker_isolation_reuses_one_instance() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"").await;
    // The guest's global counter grows: the same instance served them all.
    assert_eq!(counts_of(&gw, &up, 10).await, (1..=10).collect::<Vec<_>>());
    let c = counts(&gw);
    assert_eq!((c.fresh, c.warm, c.discarded), (1, 9, 0));
    // Between calls the instance waits in its worker's pool, holding a slot.
    assert_eq!(gw.gateway.runtime.idle_instances(), 1);
    assert_eq!(gw.gateway.runtime.live_instances(), 1);
}

/// Under `request`, the instance is put back into its snapshot's state
/// after each request (the in-guest reset) and serves the next: neither
/// the guest's counter nor its copy of the previous request's `x-secret`
/// survives.
#[tokio::test]
async fn request_isolation_never_leaks_state() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"request\"").await;
    for i in 0..10 {
        let secret = format!("secret-{i}");
        let (status, count) = call(&gw, &up, &[("x-secret", &secret)]).await;
        assert_eq!((status, count), (200, Some(1)), "call {i}");
        assert_eq!(up.last().header("x-state-previous"), Some("none"));
    }
    let c = counts(&gw);
    assert_eq!(
        (c.fresh, c.warm, c.discarded),
        (1, 9, 0),
        "one instance, reset after each request"
    );
    assert_eq!(gw.gateway.runtime.idle_instances(), 1);
}

/// `[plugins] reset = false`: a fresh instance for every request.
#[tokio::test]
async fn without_the_reset_every_request_gets_a_fresh_instance() {
    let up = Upstream::start().await;
    let chain = "[[api.chain]]\nplugin = \"fixture-state\"\ntimeout = \"5s\"\n";
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .reset(false)
        .start()
        .await;
    gw.until_snapshotted().await;
    for i in 0..10 {
        let secret = format!("secret-{i}");
        assert_eq!(
            call(&gw, &up, &[("x-secret", &secret)]).await,
            (200, Some(1))
        );
        assert_eq!(up.last().header("x-state-previous"), Some("none"));
    }
    let c = counts(&gw);
    assert_eq!((c.fresh, c.warm), (10, 0));
    assert_eq!(gw.gateway.runtime.live_instances(), 0);
}

/// Under `request`, an instance whose request ended in a trap, a deadline
/// or a memory-cap hit is never reset: it is discarded, and the next
/// request gets a fresh one. One whose memory grew is served, then cannot
/// be reset (memory does not shrink) and is discarded too.
#[tokio::test]
async fn under_request_isolation_only_a_clean_instance_is_reset() {
    for (keys, misbehave, status) in [
        ("", "panic", 500),
        ("timeout = \"100ms\"", "loop", 503),
        ("memory = \"2MiB\"", "grow", 500),
        ("", "grow", 200),
    ] {
        let up = Upstream::start().await;
        let gw = state_gateway(&up, &format!("isolation = \"request\"\n{keys}")).await;
        assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 1]);
        let (got, _) = call(&gw, &up, &[("x-state-do", misbehave)]).await;
        assert_eq!(got, status, "{misbehave}");
        assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 1], "{misbehave}");
        let c = counts(&gw);
        assert_eq!(
            (c.fresh, c.warm, c.discarded),
            (2, 3, u64::from(status == 200)),
            "after {misbehave} {keys}"
        );
    }
}

#[tokio::test]
async fn the_gateway_default_applies_to_steps_without_their_own() {
    let up = Upstream::start().await;
    let chain = "[[api.chain]]\nplugin = \"fixture-state\"\n";
    let gw = TestGateway::builder(&simple_manifest(&up.url(), chain))
        .limits("step-isolation = \"worker\"\nstep-max-uses = 2\nstep-timeout = \"5s\"")
        .start()
        .await;
    gw.until_snapshotted().await;
    assert_eq!(counts_of(&gw, &up, 5).await, vec![1, 2, 1, 2, 1]);
}

/// Two calls on one warm instance, then `misbehave`, then the next call:
/// fresh (count 1) and served correctly.
async fn discarded_after(keys: &str, misbehave: &str, status: u16) {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, &format!("isolation = \"worker\"\n{keys}")).await;
    assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 2]);
    let (got, _) = call(&gw, &up, &[("x-state-do", misbehave)]).await;
    assert_eq!(got, status, "{misbehave}");
    assert_eq!(
        counts_of(&gw, &up, 2).await,
        vec![1, 2],
        "after {misbehave}"
    );
    let c = counts(&gw);
    // Fresh for the first call and for the one after the failure.
    assert_eq!((c.fresh, c.warm), (2, 3), "after {misbehave}");
}

#[tokio::test]
async fn a_trap_discards_the_instance() {
    discarded_after("", "panic", 500).await;
}

#[tokio::test]
async fn a_deadline_discards_the_instance() {
    discarded_after("timeout = \"100ms\"", "loop", 503).await;
}

#[tokio::test]
async fn a_memory_cap_hit_discards_the_instance() {
    discarded_after("memory = \"2MiB\"", "grow", 500).await;
}

#[tokio::test]
async fn memory_growth_after_the_first_call_discards_the_instance() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"").await;
    // Growth during the first call sets the size the instance may keep.
    assert_eq!(
        call(&gw, &up, &[("x-state-do", "grow")]).await,
        (200, Some(1))
    );
    assert_eq!(counts_of(&gw, &up, 1).await, vec![2]);
    // Growth past it: the call is served, then the instance is discarded.
    assert_eq!(
        call(&gw, &up, &[("x-state-do", "grow")]).await,
        (200, Some(3))
    );
    assert_eq!(counts(&gw).discarded, 1);
    assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 2]);
}

#[tokio::test]
async fn max_uses_discards_the_instance() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"\nmax-uses = 3").await;
    assert_eq!(counts_of(&gw, &up, 7).await, vec![1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(counts(&gw).discarded, 2);
}

#[tokio::test]
async fn idle_time_discards_the_instance() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"\nidle = \"1s\"").await;
    assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 2]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 2]);
    assert_eq!(counts(&gw).discarded, 1);
}

/// An idle instance is dropped when its idle time is up, also when no
/// request comes to sweep it: its slot and memory go back.
#[tokio::test]
async fn idle_instances_are_released_without_traffic() {
    let up = Upstream::start().await;
    let gw = state_gateway(&up, "isolation = \"worker\"\nidle = \"200ms\"").await;
    assert_eq!(counts_of(&gw, &up, 2).await, vec![1, 2]);
    assert_eq!(gw.gateway.runtime.idle_instances(), 1);
    let released = async {
        while gw.gateway.runtime.live_instances() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .expect("the idle instance was not released within 5 s");
    assert_eq!(gw.gateway.runtime.idle_instances(), 0);
    assert_eq!(counts(&gw).discarded, 1);
}

#[tokio::test]
async fn idle_instances_give_way_before_busy() {
    // One slot: the warm instance of `/warm`'s step holds it between calls,
    // and `/other` needs one; the idle one is evicted instead of a 503.
    let up = Upstream::start().await;
    let manifest = format!(
        r#"schema = 1

[[api]]
name = "warm"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/warm"
[[api.chain]]
plugin = "fixture-state"
isolation = "worker"

[[api]]
name = "other"
upstream = {{ targets = ["{u}"] }}
[[api.route]]
prefix = "/other"
[[api.chain]]
plugin = "fixture-tag"
config = {{ name = "other" }}
"#,
        u = up.url()
    );
    let gw = TestGateway::builder(&manifest)
        .limits("max-instances = 1\nstep-timeout = \"5s\"")
        .start()
        .await;
    gw.until_snapshotted().await;
    let c = client();
    for _ in 0..3 {
        for path in ["/warm", "/other"] {
            let r = c.get(gw.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
    }
    // Both steps park an instance after each call (`worker` warm, `request`
    // reset), and each call but the first evicts the other step's.
    assert_eq!(counts(&gw).warm, 0, "each idle instance was evicted");
    assert_eq!(counts(&gw).discarded, 5);
}

// ---------------------------------------------------------------------------
// The differential test

const SECRET: &str = "isolation secret for HS256, 32 bytes or more";
const KEYS: [&str; 3] = [
    "alice-key-5a1b7c3d",
    "bob-key-0e9f8d2c",
    "carol-key-44aa91b7",
];
const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// splitmix64: the same sequence from the same seed, on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Each standard policy, on an API of its own under `/NAME`.
const POLICIES: [(&str, &str); 10] = [
    (
        "access-log",
        r#"plugin = "access-log"
grants = ["timing", "sink"]
config = { include-query = true, headers = ["user-agent", "x-api-key"], response-headers = ["content-type", "x-cache"] }"#,
    ),
    (
        "cache",
        r#"plugin = "cache"
grants = ["cache"]
config = { ttl = 3600, key-query = ["page"], vary-headers = ["accept"] }"#,
    ),
    (
        "cors",
        r#"plugin = "cors"
config = { allow-origins = ["https://a.example", "https://*.b.example"], allow-methods = ["PUT"], allow-headers = ["x-custom"], expose-headers = ["x-upstream"], max-age = 600 }"#,
    ),
    (
        "ip-filter",
        r#"plugin = "ip-filter"
config = { allow = ["127.0.0.0/8"], deny = ["127.0.0.1/32"], status = 451 }"#,
    ),
    (
        "jwt",
        r#"plugin = "jwt"
grants = ["crypto", "cache", "consumers", "http:localhost"]
config = { algorithms = ["HS256"], secret = "SECRET", issuer = "https://idp.test", forward-claims = { sub = "x-user-id", scope = "x-scopes" }, strip = true }"#,
    ),
    (
        "key-auth",
        r#"plugin = "key-auth"
grants = ["consumers"]
config = { query = "api_key", realm = "iso" }"#,
    ),
    (
        "quota",
        r#"plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "quota"
grants = ["counters"]
config = { calls = 12, period = "month", by = "consumer" }"#,
    ),
    (
        "rate-limit",
        r#"plugin = "key-auth"
grants = ["consumers"]

[[api.chain]]
plugin = "rate-limit"
grants = ["counters"]
config = { limits = [{ per = "day", requests = 9, by = "consumer" }, { per = "day", requests = 20, by = "api" }] }"#,
    ),
    (
        "request-size-limit",
        r#"plugin = "request-size-limit"
config = { max-bytes = 300 }"#,
    ),
    (
        "transform",
        r#"plugin = "transform"
[api.chain.config.request]
headers = { set = { "x-api-version" = "2" }, remove = ["x-drop"] }
[api.chain.config.request.body]
max-bytes = "4KiB"
json.set = { "/via" = "gateway" }
json.remove = ["/secret"]
[api.chain.config.response]
headers = { set = { "x-served-by" = "tollgate" } }"#,
    ),
];

fn differential_manifest(up: &str) -> String {
    let mut m = String::from("schema = 1\n");
    for (name, step) in POLICIES {
        m.push_str(&format!(
            "\n[[api]]\nname = \"{name}\"\nupstream = {{ targets = [\"{up}\"] }}\n[[api.route]]\nprefix = \"/{name}\"\n[[api.chain]]\n{}\n",
            step.replace("SECRET", SECRET)
        ));
    }
    for (name, key) in NAMES.iter().zip(KEYS) {
        m.push_str(&format!(
            "\n[[consumer]]\nid = \"{name}\"\nkeys = [{{ id = \"k-{name}\", sha256 = \"{}\" }}]\n",
            key_digest_hex(key)
        ));
    }
    m
}

/// One request of the sequence.
#[derive(Debug)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "{input}.{}",
        b64(ring::hmac::sign(&k, input.as_bytes()).as_ref())
    )
}

/// The `i`-th request for `policy`, drawn from `rng`: a consumer (or none,
/// or a wrong key), a method, a path and query, and what that policy reads.
fn request(rng: &mut Rng, policy: &str, now: u64) -> Req {
    let method = rng.pick(&["GET", "GET", "GET", "POST", "PUT", "OPTIONS"]);
    let method: &'static str = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        _ => "OPTIONS",
    };
    let item = rng.below(6);
    let page = rng.below(3);
    let mut path = format!("/{policy}/items/{item}?page={page}");
    let mut headers = vec![("user-agent".to_string(), format!("agent-{}", rng.below(4)))];
    let who = rng.below(5);
    match who {
        0..=2 => headers.push(("x-api-key".into(), KEYS[who as usize].into())),
        3 => path.push_str(&format!("&api_key={}", KEYS[rng.below(3) as usize])),
        _ if rng.below(2) == 0 => headers.push(("x-api-key".into(), "wrong-key".into())),
        _ => {}
    }
    if rng.below(2) == 0 {
        let origin = rng.pick(&[
            "https://a.example",
            "https://x.b.example",
            "https://evil.example",
            "null",
        ]);
        headers.push(("origin".into(), origin.into()));
        if method == "OPTIONS" {
            headers.push((
                "access-control-request-method".into(),
                rng.pick(&["PUT", "DELETE", "GET"]).into(),
            ));
            headers.push((
                "access-control-request-headers".into(),
                rng.pick(&["x-custom", "x-other", ""]).into(),
            ));
        }
    }
    if rng.below(3) == 0 {
        headers.push((
            "accept".into(),
            rng.pick(&["application/json", "text/xml"]).into(),
        ));
    }
    if rng.below(4) == 0 {
        headers.push(("x-drop".into(), "please".into()));
    }
    // A bearer token: good, expired, badly signed or another issuer.
    if policy == "jwt" && rng.below(6) != 0 {
        let sub = NAMES[rng.below(3) as usize];
        let (exp, iss, secret) = match rng.below(5) {
            0 => (now - 600, "https://idp.test", SECRET),
            1 => (
                now + 600,
                "https://idp.test",
                "another secret of 32 bytes or more!",
            ),
            2 => (now + 600, "https://other.test", SECRET),
            _ => (now + 600, "https://idp.test", SECRET),
        };
        let claims = serde_json::json!({ "sub": sub, "iss": iss, "exp": exp, "scope": format!("read:{}", rng.below(3)) });
        headers.push((
            "authorization".into(),
            format!("Bearer {}", hs256(&claims, secret)),
        ));
    }
    let body = matches!(method, "POST" | "PUT").then(|| {
        let pad = "x".repeat(rng.below(500) as usize);
        format!(
            r#"{{"secret":"s{}","n":{},"pad":"{pad}"}}"#,
            rng.below(100),
            rng.below(1000)
        )
    });
    Req {
        method,
        path,
        headers,
        body,
    }
}

/// What one call produced: status, fields (time-dependent values and the
/// request id masked) and body (the request id masked).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

async fn send(c: &reqwest::Client, gw: &TestGateway, req: &Req) -> Seen {
    let mut r = c.request(req.method.parse().unwrap(), gw.url(&req.path));
    for (n, v) in &req.headers {
        r = r.header(n, v);
    }
    if let Some(b) = &req.body {
        r = r.header("content-type", "application/json").body(b.clone());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| *n != "date")
        .map(|(n, v)| {
            // Seconds to a window's end or since a cache store tick on
            // between the two gateways' calls.
            let timed =
                ["age", "retry-after"].contains(&n.as_str()) || n.as_str().ends_with("-reset");
            let v = if timed || n == "x-request-id" {
                "~".into()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.to_string(), v)
        })
        .collect();
    headers.sort();
    let body = mask_seconds(&resp.text().await.unwrap().replace(&rid, "<request-id>"));
    Seen {
        status,
        headers,
        body,
    }
}

/// `text` with each number of seconds ("renews in 2380334 s") masked: it
/// may tick between the two gateways' calls.
fn mask_seconds(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    for (i, ch) in text.char_indices() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        if !digits.is_empty() {
            let secs = text[i..].starts_with(" s")
                && !text[i + 2..].starts_with(|c: char| c.is_alphanumeric());
            out.push_str(if secs { "~" } else { &digits });
            digits.clear();
        }
        out.push(ch);
    }
    out.push_str(&digits);
    out
}

/// What the upstream received, in order, without what differs between two
/// gateways by construction (request ids, the gateway's own address).
fn upstream_view(up: &Upstream, gw: &TestGateway) -> Vec<String> {
    let addr = gw.addr.to_string();
    up.requests()
        .iter()
        .map(|r| {
            let rid = r.header("x-request-id").unwrap_or("-").to_string();
            let mut h: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            h.sort();
            format!(
                "{} {} {:?} {}",
                r.method,
                r.path_and_query,
                h,
                String::from_utf8_lossy(&r.body)
            )
            .replace(&rid, "<request-id>")
            .replace(&addr, "<gateway>")
            .replace(&up.addr.to_string(), "<upstream>")
        })
        .collect()
}

/// The access log's lines without their times and request ids.
fn access_log_view(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["time", "request_id", "total_us", "upstream_us", "steps"] {
                o.remove(k);
            }
            // Each client connection has a port of its own.
            let client = o["client"].as_str().unwrap();
            let ip = client.rsplit_once(':').map_or(client, |(ip, _)| ip);
            o["client"] = ip.into();
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_policies_answer_alike_under_both_levels() {
    // Three ways to serve a step: a fresh instance per request, an
    // instance reset to its snapshot after each request (both `request`),
    // and a warm instance kept by the worker.
    const PER_POLICY: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut gateways = Vec::new();
    for (name, level, reset) in [
        ("fresh", "request", false),
        ("reset", "request", true),
        ("worker", "worker", true),
    ] {
        let up = Upstream::start().await;
        let log = dir.path().join(format!("{name}.log"));
        let gw = TestGateway::builder(&differential_manifest(&up.url()))
            .reset(reset)
            // A deadline no busy test machine reaches: the outputs are
            // compared, not the timing.
            .limits(&format!(
                "step-isolation = \"{level}\"\nstep-timeout = \"10s\""
            ))
            .access_log(&log)
            .start()
            .await;
        gw.until_snapshotted().await;
        gateways.push((up, gw, log));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = client();
    let mut rng = Rng(0x15_15_15);
    let mut statuses = std::collections::BTreeSet::new();
    for (policy, _) in POLICIES {
        for i in 0..PER_POLICY {
            let req = request(&mut rng, policy, now);
            // The same request to each gateway in turn: the time-based
            // counters see the same windows.
            let a = send(&c, &gateways[0].1, &req).await;
            for (n, (_, gw, _)) in gateways.iter().enumerate().skip(1) {
                let b = send(&c, gw, &req).await;
                assert_eq!(a, b, "{policy}, request {i}, gateway {n}: {req:?}");
            }
            statuses.insert(a.status);
        }
    }
    let (up_f, gw_f, log_f) = &gateways[0];
    let seen_f = upstream_view(up_f, gw_f);
    for (n, (up, gw, log)) in gateways.iter().enumerate().skip(1) {
        let seen = upstream_view(up, gw);
        assert_eq!(seen_f.len(), seen.len(), "calls the upstream saw");
        for (i, (f, o)) in seen_f.iter().zip(&seen).enumerate() {
            assert_eq!(f, o, "upstream call {i}, gateway {n}");
        }
        assert!(
            eventually(Duration::from_secs(5), || async {
                access_log_view(log_f).len() == PER_POLICY
                    && access_log_view(log).len() == PER_POLICY
            })
            .await,
            "access log lines: {} and {}",
            access_log_view(log_f).len(),
            access_log_view(log).len()
        );
        for (i, (f, o)) in access_log_view(log_f)
            .iter()
            .zip(&access_log_view(log))
            .enumerate()
        {
            assert_eq!(f, o, "access log line {i}, gateway {n}");
        }
    }
    // Every path was taken: every call fresh without the reset, nearly
    // every one on a reset or warm instance with it.
    let [f, r, w] = [0, 1, 2].map(|n| gateways[n].1.gateway.runtime.reuse_counts());
    assert_eq!(f.warm, 0, "{f:?}");
    assert!(r.warm > 10 * r.fresh, "{r:?}");
    assert!(w.warm > 10 * w.fresh, "{w:?}");
    // The sequence exercised refusals as well as passes.
    for status in [200, 204, 401, 413, 429, 451] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
}
