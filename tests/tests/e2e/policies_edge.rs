//! Edge policies end to end: cors, ip-filter, request-size-limit.
//!
//! Every test here would fail if its policy were a no-op: preflights would
//! reach the upstream, responses would lack the CORS headers, loopback
//! clients would get through, and large bodies would be forwarded.

use bytes::Bytes;
use tollgate::control::ReloadOutcome;
use tollgate_tests::*;

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn header_all(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

async fn error_code(r: reqwest::Response) -> (String, String) {
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["error"]["code"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------------------
// cors

const CORS_CHAIN: &str = r#"
[[api.chain]]
plugin = "cors"
[api.chain.config]
allow-origins = ["https://app.example.com", "https://*.example.org"]
allow-methods = ["GET", "PUT", "DELETE"]
allow-headers = ["content-type", "x-api-key"]
expose-headers = ["x-upstream", "x-request-id"]
allow-credentials = true
max-age = 600
"#;

fn preflight(
    c: &reqwest::Client,
    url: String,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut b = c
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        b = b.header("access-control-request-headers", h);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allowed_is_answered_by_the_gateway() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), CORS_CHAIN)).await;
    let c = client();
    let r = preflight(
        &c,
        gw.url("/pets/1"),
        "https://app.example.com",
        "PUT",
        Some("Content-Type, X-API-Key"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, PUT, DELETE")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert_eq!(
        header(&r, "vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // A pattern origin.
    let r = preflight(&c, gw.url("/"), "https://a.b.example.org", "DELETE", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://a.b.example.org")
    );
    // Preflights never reach the upstream.
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_denied_is_403_without_the_upstream() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), CORS_CHAIN)).await;
    let c = client();
    let cases = [
        (
            "https://evil.com",
            "PUT",
            None,
            "the origin \"https://evil.com\" is not allowed",
        ),
        ("null", "PUT", None, "the origin \"null\" is not allowed"),
        (
            "https://app.example.com.evil.com",
            "PUT",
            None,
            "the origin \"https://app.example.com.evil.com\" is not allowed",
        ),
        (
            "https://app.example.com",
            "PATCH",
            None,
            "the method \"PATCH\" is not allowed",
        ),
        (
            "https://app.example.com",
            "PUT",
            Some("content-type, authorization"),
            "the header \"authorization\" is not allowed",
        ),
    ];
    for (origin, method, headers, message) in cases {
        let r = preflight(&c, gw.url("/x"), origin, method, headers)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{origin} {method} {headers:?}");
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(
            error_code(r).await,
            ("cors_forbidden".to_string(), message.to_string())
        );
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_actual_requests_get_headers_only_for_allowed_origins() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&simple_manifest(&up.url(), CORS_CHAIN)).await;
    let c = client();

    // Allowed origin: the headers, with the origin echoed (credentials).
    let r = c
        .put(gw.url("/pets/1"))
        .header("origin", "https://app.example.com")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("x-upstream, x-request-id")
    );
    assert_eq!(header_all(&r, "vary"), vec!["Origin"]);
    assert_eq!(header(&r, "x-upstream"), Some("yes"));
    assert_eq!(up.last().method, "PUT");
    assert_eq!(up.last().header("origin"), Some("https://app.example.com"));

    // Disallowed origin: passes through, but without CORS headers.
    let r = c
        .get(gw.url("/pets/1"))
        .header("origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert_eq!(header(&r, "access-control-expose-headers"), None);
    assert_eq!(header_all(&r, "vary"), vec!["Origin"]);
    assert_eq!(up.requests().len(), 2);

    // No origin (not a browser): no CORS headers, still Vary.
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header_all(&r, "vary"), vec!["Origin"]);

    // OPTIONS without Access-Control-Request-Method is an ordinary request.
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/"))
        .header("origin", "https://x.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().method, "OPTIONS");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://x.example.org")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_wildcard_without_credentials() {
    let up = Upstream::start().await;
    let chain = r#"
[[api.chain]]
plugin = "cors"
config = { allow-origins = ["*"], allow-headers = ["*"] }
"#;
    let gw = TestGateway::start(&simple_manifest(&up.url(), chain)).await;
    let c = client();
    let r = c
        .get(gw.url("/"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(header_all(&r, "vary").is_empty());
    let r = preflight(&c, gw.url("/"), "null", "POST", Some("X-Anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("x-anything")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert_eq!(up.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// ip-filter (the tests connect from 127.0.0.1)

fn ip_filter(up: &str, config: &str) -> String {
    simple_manifest(
        up,
        &format!("[[api.chain]]\nplugin = \"ip-filter\"\nconfig = {config}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_allows_listed_loopback() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&ip_filter(
        &up.url(),
        r#"{ allow = ["127.0.0.1", "::1/128", "10.0.0.0/8"] }"#,
    ))
    .await;
    let r = client().get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().path_and_query, "/ok");
    // Another loopback address (the whole of 127.0.0.0/8 is loopback) is
    // not 127.0.0.1.
    let r = from("127.0.0.2").get(gw.url("/no")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.requests().len(), 1);
}

/// A client whose connections come from `addr`.
fn from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_deny_wins_over_allow() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&ip_filter(
        &up.url(),
        r#"{ allow = ["127.0.0.1"], deny = ["127.0.0.0/8"] }"#,
    ))
    .await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        error_code(r).await,
        (
            "ip_not_allowed".to_string(),
            "calls from this address are not allowed".to_string()
        )
    );
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_deny_only_refuses_the_denied_block() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&ip_filter(&up.url(), r#"{ deny = ["127.0.0.2/31"] }"#)).await;
    // 127.0.0.2 and 127.0.0.3 are denied, 127.0.0.1 and 127.0.0.4 are not.
    for (addr, status) in [
        ("127.0.0.1", 200),
        ("127.0.0.2", 403),
        ("127.0.0.3", 403),
        ("127.0.0.4", 200),
    ] {
        let r = from(addr).get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), status, "{addr}");
    }
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_allow_list_without_loopback_refuses_and_ignores_forwarded_headers() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&ip_filter(
        &up.url(),
        r#"{ allow = ["10.0.0.0/8", "2001:db8::/32", "::1"], status = 404 }"#,
    ))
    .await;
    let c = client();
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await.0, "ip_not_allowed");
    // Claiming an allowed address in headers changes nothing.
    let r = c
        .get(gw.url("/"))
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-real-ip", "10.1.2.3")
        .header("forwarded", "for=10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_with_a_long_list() {
    // 10,000 entries: the configuration is parsed for every call (about
    // 6 ms here), so this also checks it stays within the step deadline.
    let list: Vec<String> = (0..10_000u32)
        .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x0a00_0000 | i)))
        .collect();
    let up = Upstream::start().await;
    let gw = TestGateway::start(&ip_filter(
        &up.url(),
        &format!("{{ allow = [{}, \"127.0.0.1\"] }}", list.join(", ")),
    ))
    .await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = from("127.0.0.2").get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.requests().len(), 1);
}

// ---------------------------------------------------------------------------
// request-size-limit

fn size_limit(up: &str, max: &str, then_body_fixture: bool) -> String {
    let mut chain = format!(
        "[[api.chain]]\nplugin = \"request-size-limit\"\nconfig = {{ max-bytes = {max} }}\n"
    );
    if then_body_fixture {
        // A later step that asks for up to 1024 bytes of body, so the gateway
        // buffers more than this step's limit.
        chain.push_str("\n[[api.chain]]\nplugin = \"fixture-body\"\n");
    }
    simple_manifest(up, &chain)
}

/// A body sent with `Transfer-Encoding: chunked` (no length), in pieces.
fn chunked(len: usize) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![b'c'; len]
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// Send a body far over the limit: the gateway stops reading and answers
/// 413, and the client may still be writing when the connection closes, so
/// a failed body write is as good as the 413 (the callers check that the
/// upstream saw nothing either way).
async fn far_over(req: reqwest::RequestBuilder) {
    match req.send().await {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(
            format!("{e:?}").contains("BodyWrite"),
            "not a body write error: {e:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_with_content_length_at_the_boundary() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&size_limit(&up.url(), "100", false)).await;
    let c = client();
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'a'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body.len(), 100);
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'a'; 101])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await.0, "payload_too_large");
    far_over(c.post(gw.url("/upload")).body(vec![b'a'; 100_000])).await;
    assert_eq!(up.requests().len(), 1);
    // No body at all.
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_with_chunked_bodies_at_the_boundary() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&size_limit(&up.url(), "\"1KiB\"", false)).await;
    let c = client();
    let r = c
        .post(gw.url("/upload"))
        .body(chunked(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.body.len(), 1024);
    assert_eq!(seen.header("transfer-encoding"), None);
    let r = c
        .post(gw.url("/upload"))
        .body(chunked(1025))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await.0, "payload_too_large");
    far_over(c.post(gw.url("/upload")).body(chunked(200_000))).await;
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_holds_when_a_later_step_asks_for_more() {
    // The gateway buffers up to 1024 bytes (for fixture-body); this step
    // still refuses anything over its own 100.
    let up = Upstream::start().await;
    let gw = TestGateway::start(&size_limit(&up.url(), "100", true)).await;
    let c = client();

    // With a Content-Length: refused on the declared length.
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'a'; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (code, message) = error_code(r).await;
    assert_eq!(code, "payload_too_large");
    assert_eq!(
        message,
        "the request body is 500 bytes (Content-Length); this API accepts at most 100 bytes"
    );

    // Chunked: refused on the body the gateway buffered.
    let r = c
        .post(gw.url("/upload"))
        .body(chunked(101))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (code, message) = error_code(r).await;
    assert_eq!(code, "payload_too_large");
    assert_eq!(
        message,
        "the request body is 101 bytes; this API accepts at most 100 bytes"
    );
    assert!(up.requests().is_empty());

    // At the limit, both ways: through, and the later step saw the body.
    let r = c
        .post(gw.url("/upload"))
        .body(vec![b'a'; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body, Bytes::from(vec![b'A'; 100]));
    let r = c
        .post(gw.url("/upload"))
        .body(chunked(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().body, Bytes::from(vec![b'C'; 100]));
}

// ---------------------------------------------------------------------------
// configuration checked at load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_rejected_at_load_naming_the_field() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&size_limit(&up.url(), "100", false)).await;
    let cases = [
        (
            "plugin = \"cors\"\nconfig = { allow-origins = [\"*\"], allow-credentials = true }",
            "field `allow-origins`: \"*\" cannot be combined with allow-credentials = true",
        ),
        (
            "plugin = \"cors\"\nconfig = { allow-origins = [\"https://a.example/\"] }",
            "field `allow-origins.0`: \"https://a.example/\" has a trailing slash",
        ),
        (
            "plugin = \"ip-filter\"\nconfig = { allow = [\"10.0.0.0/8\", \"10.1.2.3/16\"] }",
            "field `allow.1`: \"10.1.2.3/16\" has host bits set: the block is 10.1.0.0/16",
        ),
        (
            "plugin = \"ip-filter\"\nconfig = { deny = [\"::/129\"] }",
            "field `deny.0`: \"::/129\" has an invalid prefix length \"129\": expected 0 to 128",
        ),
        (
            "plugin = \"request-size-limit\"\nconfig = { max-bytes = \"1 parsec\" }",
            "field `max-bytes`: unknown unit \"parsec\" in \"1 parsec\"",
        ),
        (
            "plugin = \"request-size-limit\"\nconfig = { max-bytes = \"8GiB\" }",
            "field `max-bytes`: \"8GiB\" is more than the largest limit",
        ),
    ];
    for (step, expected) in cases {
        gw.write_manifest(&simple_manifest(
            &up.url(),
            &format!("[[api.chain]]\n{step}\n"),
        ));
        match gw.gateway.reload().await {
            ReloadOutcome::Rejected(why) => assert_contains(&why, expected),
            other => panic!("{step}: {other:?}"),
        }
    }
    // The old configuration still serves.
    let r = client()
        .post(gw.url("/"))
        .body(vec![b'a'; 101])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}
