//! Hostile request heads over raw TCP, against a strict recording upstream:
//! a request-target in absolute form whose authority differs from `Host`
//! (and HTTP/2's `:authority` against `host`), requests without `Host` or
//! with two, request-targets over `max-request-target`, and what the
//! gateway does with both `Content-Length` and `Transfer-Encoding`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::time::Duration;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::raw::{self, RawUpstream};
use tollgate_tests::*;

const KEY: &str = "head-key-5e21a7";
const WAIT: Duration = Duration::from_secs(3);

/// Two virtual hosts on one upstream, both with `preserve-host` (the
/// upstream tells them apart by `Host`): `public.example` is open,
/// `admin.example` needs an API key. Any other host: `/` is open.
fn manifest(up: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "public"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s", preserve-host = true }}
[[api.route]]
hosts = ["public.example"]
prefix = "/"

[[api]]
name = "admin"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s", preserve-host = true }}
[[api.route]]
hosts = ["admin.example"]
prefix = "/"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api]]
name = "other"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s" }}
[[api.route]]
prefix = "/"

[[consumer]]
id = "alice"
keys = [{{ id = "k1", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY)
    )
}

async fn setup(limits: &str) -> (RawUpstream, TestGateway) {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits(limits)
        .start()
        .await;
    (up, gw)
}

/// Send `bytes` on a new connection; the responses, whether the gateway
/// closed the connection, and the requests the upstream received meanwhile.
async fn send(
    up: &RawUpstream,
    gw: &TestGateway,
    bytes: &str,
) -> (raw::Exchange, Vec<raw::Message>) {
    let before = up.requests().len();
    let ex = raw::exchange(gw.addr, bytes.as_bytes(), WAIT).await;
    let new = up.requests()[before..].to_vec();
    (ex, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_authority_wins_over_host_everywhere() {
    let (up, gw) = setup("").await;

    // Routed to the open virtual host by the target's authority: the
    // upstream must be asked for that host too, not the key-protected one
    // named in `Host`.
    let (ex, new) = send(
        &up,
        &gw,
        "GET http://public.example/x HTTP/1.1\r\nhost: admin.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    let ctx = format!("{ex:?} upstream {new:?}");
    assert_eq!(ex.statuses(), vec![200], "{ctx}");
    assert_eq!(new.len(), 1, "{ctx}");
    assert_eq!(new[0].target(), "/x", "{ctx}");
    assert_eq!(new[0].header("host"), Some("public.example"), "{ctx}");
    assert_eq!(
        new[0].header("x-forwarded-host"),
        Some("public.example"),
        "{ctx}"
    );
    assert!(
        !String::from_utf8_lossy(&up.all_bytes()).contains("admin.example"),
        "{ctx}"
    );

    // The other way round: the key-protected host in the target is
    // protected whatever `Host` says.
    let (ex, new) = send(
        &up,
        &gw,
        "GET http://admin.example/y HTTP/1.1\r\nhost: public.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ex.statuses(), vec![401], "{ex:?}");
    assert!(new.is_empty(), "{new:?}");

    // With the key it passes, and the upstream is asked for that host.
    let (ex, new) = send(
        &up,
        &gw,
        &format!("GET http://admin.example/z HTTP/1.1\r\nhost: public.example\r\nx-api-key: {KEY}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(ex.statuses(), vec![200], "{ex:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].header("host"), Some("admin.example"), "{new:?}");
    assert_eq!(
        new[0].header("x-forwarded-host"),
        Some("admin.example"),
        "{new:?}"
    );

    // Userinfo in the authority (`admin.example@public.example`) is not
    // a host to route by: 400.
    let (ex, new) = send(
        &up,
        &gw,
        "GET http://admin.example@public.example/u HTTP/1.1\r\nhost: public.example\r\n\r\n",
    )
    .await;
    assert_eq!(ex.statuses(), vec![400], "{ex:?}");
    assert!(ex.closed, "{ex:?}");
    assert!(new.is_empty(), "{new:?}");
    assert!(up.malformed().is_empty(), "{:?}", up.malformed());
}

/// One HTTP/2 request with `:authority` and a `host` field.
async fn h2_get(gw: &TestGateway, authority: &str, host: &str, key: Option<&str>) -> u16 {
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let mut req = http::Request::builder()
        .uri(format!("http://{authority}/h2"))
        .header("host", host);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = tokio::time::timeout(
        WAIT,
        send.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("an HTTP/2 response in time")
    .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    conn.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_wins_over_host_everywhere() {
    let (up, gw) = setup("").await;

    let before = up.requests().len();
    assert_eq!(
        h2_get(&gw, "public.example", "admin.example", None).await,
        200
    );
    let new = up.requests()[before..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].header("host"), Some("public.example"), "{new:?}");
    assert_eq!(
        new[0].header("x-forwarded-host"),
        Some("public.example"),
        "{new:?}"
    );

    let before = up.requests().len();
    assert_eq!(
        h2_get(&gw, "admin.example", "public.example", None).await,
        401
    );
    assert_eq!(up.requests().len(), before);

    let before = up.requests().len();
    assert_eq!(
        h2_get(&gw, "admin.example", "public.example", Some(KEY)).await,
        200
    );
    let new = up.requests()[before..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].header("host"), Some("admin.example"), "{new:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_needs_exactly_one_host() {
    let (up, gw) = setup("").await;
    let refused = [
        (
            "HTTP/1.1 without Host",
            "GET /a HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "HTTP/1.1 absolute form without Host",
            "GET http://public.example/a HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "two Host fields",
            "GET /a HTTP/1.1\r\nhost: public.example\r\nhost: admin.example\r\n\r\n".to_string(),
        ),
        (
            "two equal Host fields",
            "GET /a HTTP/1.1\r\nhost: public.example\r\nhost: public.example\r\n\r\n".to_string(),
        ),
        (
            "two Host fields in HTTP/1.0",
            "GET /a HTTP/1.0\r\nhost: public.example\r\nhost: admin.example\r\n\r\n".to_string(),
        ),
        (
            "two Host fields in absolute form",
            "GET http://public.example/a HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_string(),
        ),
        (
            "an invalid Host",
            "GET /a HTTP/1.1\r\nhost: a b\r\n\r\n".to_string(),
        ),
        (
            "userinfo in Host",
            "GET /a HTTP/1.1\r\nhost: admin.example@public.example\r\n\r\n".to_string(),
        ),
    ];
    for (name, bytes) in refused {
        // A pipelined request after it must not be served either.
        let bytes = format!("{bytes}GET /after HTTP/1.1\r\nhost: public.example\r\n\r\n");
        let (ex, new) = send(&up, &gw, &bytes).await;
        let ctx = format!("{name}: {ex:?} upstream {new:?}");
        assert_eq!(ex.statuses(), vec![400], "{ctx}");
        assert!(ex.closed, "{ctx}");
        assert!(new.is_empty(), "{ctx}");
    }
    // HTTP/1.0 may go without Host: routed without a host.
    let (ex, new) = send(&up, &gw, "GET /ten HTTP/1.0\r\n\r\n").await;
    assert_eq!(ex.statuses(), vec![200], "{ex:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].target(), "/ten");
    // One Host, as usual.
    let (ex, new) = send(
        &up,
        &gw,
        "GET /one HTTP/1.1\r\nhost: public.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ex.statuses(), vec![200], "{ex:?}");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].header("host"), Some("public.example"), "{new:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_over_the_limit_are_414() {
    // The default limit (8KiB), under the head limit (64KiB by default).
    let (up, gw) = setup("").await;
    let long = format!("/{}", "a".repeat(20 << 10));
    let (ex, new) = send(
        &up,
        &gw,
        &format!("GET {long} HTTP/1.1\r\nhost: gw\r\n\r\nGET /after HTTP/1.1\r\nhost: gw\r\n\r\n"),
    )
    .await;
    let ctx = format!(
        "{:?} closed {} upstream {:?}",
        ex.statuses(),
        ex.closed,
        up.targets()
    );
    assert_eq!(ex.statuses(), vec![414], "{ctx}");
    assert!(ex.closed, "{ctx}");
    assert!(new.is_empty(), "{ctx}");
    // A long query counts too.
    let q = format!("/q?{}", "b".repeat(9000));
    let (ex, new) = send(&up, &gw, &format!("GET {q} HTTP/1.1\r\nhost: gw\r\n\r\n")).await;
    assert_eq!(ex.statuses(), vec![414], "{ex:?}");
    assert!(new.is_empty());
    // So does an absolute-form target, scheme and authority included.
    let abs = format!("http://public.example/{}", "c".repeat(8192 - 21));
    let (ex, new) = send(
        &up,
        &gw,
        &format!("GET {abs} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(ex.statuses(), vec![414], "{ex:?}");
    assert!(new.is_empty());
    // Just under the limit: forwarded whole.
    let under = format!("/{}", "d".repeat(8191));
    let (ex, new) = send(
        &up,
        &gw,
        &format!("GET {under} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(ex.statuses(), vec![200], "{ex:?}");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].target(), under);

    // A configured limit; a target over it on a keep-alive connection
    // after a served request: that one is answered, then 414, then the
    // connection closes.
    drop(gw);
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits("max-request-target = \"1KiB\"\n")
        .start()
        .await;
    let before = up.requests().len();
    let bytes = format!(
        "GET /first HTTP/1.1\r\nhost: gw\r\n\r\nGET /{} HTTP/1.1\r\nhost: gw\r\n\r\nGET /third HTTP/1.1\r\nhost: gw\r\n\r\n",
        "e".repeat(1024)
    );
    let ex = raw::exchange(gw.addr, bytes.as_bytes(), WAIT).await;
    assert_eq!(ex.statuses(), vec![200, 414], "{ex:?}");
    assert!(ex.closed, "{ex:?}");
    assert_eq!(up.targets()[before..], ["/first".to_string()]);
    assert!(up.malformed().is_empty(), "{:?}", up.malformed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_forwarded_chunked_then_closed() {
    // What docs/security.md says about a request with both framings:
    // Transfer-Encoding wins (RFC 9112 §6.1), the body goes upstream
    // chunked without Content-Length, and the client connection closes
    // after the response, so nothing after the body is read as a request.
    let (up, gw) = setup("").await;
    let bytes = "POST /both HTTP/1.1\r\nhost: gw\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: gw\r\n\r\n";
    let (ex, new) = send(&up, &gw, bytes).await;
    let ctx = format!("{ex:?} upstream {new:?}");
    assert_eq!(ex.statuses(), vec![200], "{ctx}");
    assert!(ex.closed, "{ctx}");
    assert_eq!(new.len(), 1, "{ctx}");
    assert_eq!(new[0].target(), "/both", "{ctx}");
    assert_eq!(new[0].body, b"abc", "{ctx}");
    assert_eq!(new[0].header("transfer-encoding"), Some("chunked"), "{ctx}");
    assert_eq!(new[0].header("content-length"), None, "{ctx}");
    up.assert_never_received("/smuggled");
}
