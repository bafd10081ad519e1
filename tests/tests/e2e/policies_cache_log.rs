//! cache and access-log end to end.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const ALICE: &str = "alice-key-CACHELOG-5d1e";
const BOB: &str = "bob-key-CACHELOG-9a02";

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
plan = "silver"
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
config = { query = "api_key" }
"#;

/// An upstream whose answers carry caching headers:
/// - `/no-store`, `/private`, `/no-cache`: that `Cache-Control`;
/// - `/cookie`: a `Set-Cookie` (with a secret value) and `max-age=60`;
/// - `/vary-star`: `Vary: *` and `max-age=60`;
/// - `/whoami`: the `x-consumer-id` it received, `max-age=60`;
/// - anything else: `Cache-Control: public, max-age=60`.
///
/// Every body ends in `#N`, the number of requests the upstream has
/// answered so far, so two responses never look alike.
struct CcUpstream {
    addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

const SET_COOKIE_SECRET: &str = "SETCOOKIE-SECRET-77";

impl CcUpstream {
    async fn start() -> CcUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let hits2 = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let hits = hits2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| cc_answer(req, hits.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CcUpstream { addr, hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests for `path` the upstream answered.
    fn count(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for CcUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn cc_answer(
    req: Request<Incoming>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let n = {
        let mut h = hits.lock().unwrap();
        *h.entry(path.clone()).or_default() += 1;
        h.values().sum::<usize>()
    };
    let mut cc = "public, max-age=60";
    let mut extra: Vec<(&str, String)> = Vec::new();
    let mut body = format!("{path}#{n}");
    match path.as_str() {
        "/no-store" => cc = "no-store",
        "/private" => cc = "private, max-age=60",
        "/no-cache" => cc = "no-cache, max-age=60",
        "/cookie" => extra.push(("set-cookie", format!("sid={SET_COOKIE_SECRET}; HttpOnly"))),
        "/vary-star" => extra.push(("vary", "*".into())),
        "/whoami" => {
            let who = req
                .headers()
                .get("x-consumer-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nobody");
            body = format!("{who}#{n}");
        }
        _ => {}
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert("cache-control", cc.parse().unwrap());
    h.insert("content-type", "text/plain".parse().unwrap());
    for (name, value) in extra {
        h.insert(name, value.parse().unwrap());
    }
    Ok(resp)
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// GET `path` with these headers: (x-cache, body).
async fn fetch(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut rb = client().get(gw.url(path));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    let x = header(&r, "x-cache").unwrap_or("").to_string();
    (x, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_miss_then_hit_and_the_upstream_is_called_once() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = { ttl = 60, key-query = ["page"] }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();

    let first = c
        .get(gw.url("/items?page=1&utm=a"))
        .header("x-cache", "HIT")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), Some("MISS"));
    assert_eq!(header(&first, "age"), None);
    let first_id = header(&first, "x-request-id").unwrap().to_string();
    let first_body = first.text().await.unwrap();
    // The client's x-cache never reaches the upstream.
    assert_eq!(up.last().header("x-cache"), None);

    let second = c.get(gw.url("/items?utm=b&page=1")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-cache"), Some("HIT"));
    assert_eq!(header(&second, "age"), Some("0"));
    assert_eq!(header(&second, "x-upstream"), Some("yes"));
    assert_eq!(header(&second, "content-type"), Some("application/json"));
    // Hop-by-hop fields the upstream named are not replayed, and the hit
    // gets its own request id.
    assert_eq!(header(&second, "x-hop"), None);
    assert_ne!(header(&second, "x-request-id"), Some(first_id.as_str()));
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(up.requests().len(), 1, "the hit reached the upstream");

    // Another page is another entry; a POST is never cached.
    assert_eq!(fetch(&gw, "/items?page=2", &[]).await.0, "MISS");
    let post = c.post(gw.url("/items?page=1")).send().await.unwrap();
    assert_eq!(header(&post, "x-cache"), Some("BYPASS"));
    assert_eq!(up.requests().len(), 3);
    // HEAD has its own entries.
    let head = c.head(gw.url("/items?page=1")).send().await.unwrap();
    assert_eq!(header(&head, "x-cache"), Some("MISS"));
    let head = c.head(gw.url("/items?page=1")).send().await.unwrap();
    assert_eq!(header(&head, "x-cache"), Some("HIT"));
    assert_eq!(up.requests().len(), 4);
}

/// `max-bytes` is the body limit the step declares to the gateway, which
/// buffers response bodies up to it and answers 502 to larger ones, for
/// every method (the declaration is per step, not per request). So it must
/// exceed the largest response the API returns (see the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_is_the_gateway_body_limit() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = { max-bytes = 100 }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let (x, body) = fetch(&gw, "/big/100", &[]).await;
    assert_eq!((x.as_str(), body.len()), ("MISS", 100));
    assert_eq!(fetch(&gw, "/big/100", &[]).await.0, "HIT");
    let c = client();
    // The gateway's 502 still passes the step's response phase (a MISS),
    // and is not stored.
    for _ in 0..2 {
        let r = c.get(gw.url("/big/101")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(header(&r, "x-cache"), Some("MISS"));
    }
    let r = c.post(gw.url("/big/101")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(up.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_no_cache_set_cookie_and_vary_star_are_never_cached() {
    let up = CcUpstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = { ttl = 60 }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    for path in [
        "/no-store",
        "/private",
        "/no-cache",
        "/cookie",
        "/vary-star",
    ] {
        let (x1, b1) = fetch(&gw, path, &[]).await;
        let (x2, b2) = fetch(&gw, path, &[]).await;
        assert_eq!((x1.as_str(), x2.as_str()), ("MISS", "MISS"), "{path}");
        assert_ne!(b1, b2, "{path}: the same response twice");
        assert_eq!(up.count(path), 2, "{path}");
    }
    // The same upstream's cacheable answers are cached.
    let (_, b1) = fetch(&gw, "/public", &[]).await;
    let (x2, b2) = fetch(&gw, "/public", &[]).await;
    assert_eq!((x2.as_str(), b2.as_str()), ("HIT", b1.as_str()));
    assert_eq!(up.count("/public"), 1);
    // A request carrying credentials bypasses the cache (default
    // cache-authorized = false) and does not get the public entry either.
    let (x, b) = fetch(&gw, "/public", &[("authorization", "Bearer t")]).await;
    assert_eq!(x, "BYPASS");
    assert_ne!(b, b1);
    assert_eq!(up.count("/public"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_the_ttl() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = { ttl = 1 }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    assert_eq!(fetch(&gw, "/t", &[]).await.0, "MISS");
    assert_eq!(fetch(&gw, "/t", &[]).await.0, "HIT");
    assert_eq!(up.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(fetch(&gw, "/t", &[]).await.0, "MISS");
    assert_eq!(fetch(&gw, "/t", &[]).await.0, "HIT");
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_never_see_each_others_cached_responses() {
    let up = CcUpstream::start().await;
    let chain = format!(
        r#"{KEY_AUTH}
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = {{ ttl = 60, cache-authorized = true }}
"#
    );
    let manifest = format!("{}\n{}", simple_manifest(&up.url(), &chain), consumers());
    let gw = TestGateway::start(&manifest).await;
    let alice = [("x-api-key", ALICE)];
    let bob = [("x-api-key", BOB)];

    let (x, a1) = fetch(&gw, "/whoami", &alice).await;
    assert_eq!(x, "MISS");
    assert!(a1.starts_with("alice#"), "{a1}");
    let (x, b1) = fetch(&gw, "/whoami", &bob).await;
    assert_eq!(x, "MISS", "bob was served alice's entry: {b1}");
    assert!(b1.starts_with("bob#"), "{b1}");
    for _ in 0..3 {
        assert_eq!(
            fetch(&gw, "/whoami", &alice).await,
            ("HIT".into(), a1.clone())
        );
        assert_eq!(
            fetch(&gw, "/whoami", &bob).await,
            ("HIT".into(), b1.clone())
        );
        // The key in the query is the same consumer.
        assert_eq!(
            fetch(&gw, &format!("/whoami?api_key={BOB}"), &[]).await,
            ("HIT".into(), b1.clone())
        );
    }
    assert_eq!(up.count("/whoami"), 2);
    // Without a key, key-auth refuses before the cache is consulted.
    let r = client().get(gw.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "x-cache"), None);

    // With the default cache-authorized = false, authenticated calls are
    // never cached at all.
    let chain = format!(
        "{KEY_AUTH}\n[[api.chain]]\nplugin = \"cache\"\ngrants = [\"cache\"]\nconfig = {{ ttl = 60 }}\n"
    );
    let manifest = format!("{}\n{}", simple_manifest(&up.url(), &chain), consumers());
    let gw = TestGateway::start(&manifest).await;
    let before = up.count("/whoami");
    for _ in 0..2 {
        let (x, body) = fetch(&gw, "/whoami", &alice).await;
        assert_eq!(x, "BYPASS");
        assert!(body.starts_with("alice#"));
    }
    assert_eq!(up.count("/whoami"), before + 2);
}

/// The log file's lines, once at least `n` were written.
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let ok = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(path).is_ok_and(|s| s.lines().count() >= n)
    })
    .await;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(ok, "expected {n} lines in the access log, got:\n{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_one_redacted_json_line_per_call() {
    const BEARER: &str = "BEARER-SECRET-4f9a";
    const COOKIE: &str = "COOKIE-SECRET-c2d1";
    const QUERY_TOKEN: &str = "TOKEN-SECRET-81be";
    const WRONG_KEY: &str = "WRONG-KEY-SECRET-0b3c";

    let up = CcUpstream::start().await;
    let chain = format!(
        r#"
[[api.chain]]
plugin = "access-log"
grants = ["timing", "sink"]
[api.chain.config]
include-query = true
headers = ["user-agent", "authorization", "cookie", "x-api-key"]
response-headers = ["content-type", "set-cookie"]
{KEY_AUTH}
[[api.chain]]
plugin = "cache"
grants = ["cache"]
config = {{ cache-authorized = true }}
"#
    );
    let manifest = format!("{}\n{}", simple_manifest(&up.url(), &chain), consumers());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("access.log");
    let gw = TestGateway::builder(&manifest)
        .access_log(&log)
        .start()
        .await;
    let c = client();

    // 1: header key, bearer token, cookie, a token in the query.
    let r = c
        .get(gw.url(&format!("/pets/1?page=2&token={QUERY_TOKEN}")))
        .header("x-api-key", ALICE)
        .header("authorization", format!("Bearer {BEARER}"))
        .header("cookie", format!("session={COOKIE}"))
        .header("user-agent", "e2e \"agent\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id1 = header(&r, "x-request-id").unwrap().to_string();
    // 2: the key in the query, a response that sets a cookie.
    let r = c
        .get(gw.url(&format!("/cookie?api_key={ALICE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "set-cookie")
        .unwrap()
        .contains(SET_COOKIE_SECRET));
    // 3: a wrong key, refused by key-auth (the response chain still logs).
    let r = c
        .get(gw.url("/pets/2"))
        .header("x-api-key", WRONG_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let id3 = header(&r, "x-request-id").unwrap().to_string();

    let lines = log_lines(&log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let first = lines
        .iter()
        .find(|l| l["request_id"] == id1.as_str())
        .expect("a line for the first call");
    let t = first["time"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
        "{t}"
    );
    assert_eq!(first["api"], "test");
    assert!(first["route"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/pets/1");
    assert_eq!(first["query"], "page=2&token=[redacted]");
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(first["consumer"], "alice");
    assert_eq!(first["app"], "alice-shop");
    assert_eq!(first["plan"], "gold");
    assert_eq!(first["status"], 200);
    let total = first["total_us"].as_u64().unwrap();
    let upstream = first["upstream_us"].as_u64().unwrap();
    // The field is there; the host does not measure the upstream wait yet
    // (`CallTiming.upstream_us` is never filled in by host/src/server.rs, so
    // it reads 0), hence no lower bound here.
    assert!(total > 0 && upstream <= total, "{first}");
    let steps: Vec<&str> = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    // The request steps that ran: access-log has a response phase only.
    assert_eq!(steps, vec!["key-auth", "cache"]);
    assert_eq!(first["request_headers"]["user-agent"], "e2e \"agent\"");
    assert_eq!(first["request_headers"]["authorization"], "[redacted]");
    assert_eq!(first["request_headers"]["cookie"], "[redacted]");
    // key-auth stripped the key header before the upstream (and this log).
    assert!(first["request_headers"].get("x-api-key").is_none());
    assert_eq!(first["response_headers"]["content-type"], "text/plain");

    let second = lines.iter().find(|l| l["path"] == "/cookie").unwrap();
    assert_eq!(second["consumer"], "alice");
    assert!(second.get("query").is_none(), "{second}");
    assert_eq!(second["response_headers"]["set-cookie"], "[redacted]");

    let third = lines
        .iter()
        .find(|l| l["request_id"] == id3.as_str())
        .unwrap();
    assert_eq!(third["status"], 401);
    assert_eq!(third["path"], "/pets/2");
    assert!(third.get("consumer").is_none());
    assert_eq!(third["request_headers"]["x-api-key"], "[redacted]");
    assert_eq!(third["upstream_us"], 0);

    // No secret of this test appears anywhere in the log.
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        ALICE,
        BOB,
        BEARER,
        COOKIE,
        QUERY_TOKEN,
        WRONG_KEY,
        SET_COOKIE_SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} is in the log:\n{text}");
    }
}
