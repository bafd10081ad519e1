//! Hostile HTTP/1 clients, byte by byte over raw TCP, against a strict
//! recording upstream: ambiguous framing, smuggling attempts, framing
//! headers named as hop-by-hop, upgrades, bodies left unread by a policy,
//! oversized and invalid heads. The rule every case checks: the upstream
//! never sees a request the client did not send as a whole.

use std::time::Duration;
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::raw::{self, RawUpstream};
use tollgate_tests::*;

const KEY: &str = "hostile-key-3b9f01";
const WAIT: Duration = Duration::from_secs(3);

/// `/` streams to the upstream; `/auth` needs an API key (key-auth);
/// `/buffered` reads the body for a step (fixture-body).
fn manifest(up: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "open"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s" }}
[[api.route]]
prefix = "/"

[[api]]
name = "auth"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s" }}
[[api.route]]
prefix = "/auth"
[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]

[[api]]
name = "buffered"
upstream = {{ targets = ["{up}"], connect-timeout = "500ms", response-timeout = "3s" }}
[[api.route]]
prefix = "/buffered"
[[api.chain]]
plugin = "fixture-body"

[[consumer]]
id = "alice"
keys = [{{ id = "k1", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY)
    )
}

async fn setup() -> (RawUpstream, TestGateway) {
    let up = RawUpstream::start().await;
    let gw = TestGateway::builder(&manifest(&up.url()))
        .limits("max-header-bytes = \"8KiB\"\nmax-headers = 40\n")
        .start()
        .await;
    (up, gw)
}

/// A complete, valid request that must never reach the upstream when it is
/// hidden inside another request's body. It carries the API key so that
/// even `/auth` would forward it if it were ever parsed as a request.
fn smuggled(tag: &str) -> String {
    format!("GET /smuggled-{tag} HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\n\r\n")
}

/// What a case must produce.
#[derive(Debug)]
enum Expect {
    /// Refused with this status, and nothing reached the upstream.
    Refused(u16),
    /// Forwarded as exactly one request with this body.
    Forwarded(&'static str),
}

async fn run_case(up: &RawUpstream, gw: &TestGateway, name: &str, bytes: String, expect: Expect) {
    let before = up.requests().len();
    let ex = raw::exchange(gw.addr, bytes.as_bytes(), WAIT).await;
    let after = up.requests();
    let new: Vec<_> = after[before..].to_vec();
    let ctx = format!(
        "case {name}: sent {bytes:?}\n got {:?} (closed: {}), rest {:?}\n upstream saw {:?}\n malformed {:?}",
        ex.statuses(),
        ex.closed,
        String::from_utf8_lossy(&ex.rest),
        new.iter().map(|r| (&r.start, String::from_utf8_lossy(&r.body))).collect::<Vec<_>>(),
        up.malformed(),
    );
    match expect {
        Expect::Refused(status) => {
            assert_eq!(ex.statuses(), vec![status], "{ctx}");
            assert!(new.is_empty(), "{ctx}");
        }
        Expect::Forwarded(body) => {
            assert_eq!(ex.statuses().first(), Some(&200), "{ctx}");
            assert_eq!(new.len(), 1, "{ctx}");
            assert_eq!(String::from_utf8_lossy(&new[0].body), body, "{ctx}");
            assert!(
                new[0].header("content-length").is_some()
                    || new[0].header("transfer-encoding").is_some()
                    || body.is_empty(),
                "{ctx}"
            );
        }
    }
    assert!(
        !up.targets().iter().any(|t| t.contains("smuggled")),
        "{ctx}"
    );
    assert!(up.malformed().is_empty(), "{ctx}");
    // The gateway closes a connection it refused, so that nothing after the
    // refused request is read as a new one.
    if matches!(expect, Expect::Refused(_)) {
        assert!(ex.closed, "{ctx}");
        assert_eq!(ex.responses.len(), 1, "{ctx}");
    }
}

fn post(path: &str, headers: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: gw\r\n{headers}\r\n{body}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_content_length_and_transfer_encoding() {
    let (up, gw) = setup().await;
    let s = smuggled("cl");
    let n = s.len();
    let cases: Vec<(&str, String, Expect)> = vec![
        // Both framings: Transfer-Encoding wins and the connection closes
        // after the response, so the bytes after the chunked body are never
        // read (RFC 9112 §6.1).
        (
            "cl.te",
            post(
                "/a",
                "content-length: 40\r\ntransfer-encoding: chunked\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Forwarded(""),
        ),
        (
            "te.cl",
            post(
                "/a",
                &format!("transfer-encoding: chunked\r\ncontent-length: {n}\r\n"),
                &format!("3\r\nabc\r\n0\r\n\r\n{s}"),
            ),
            Expect::Forwarded("abc"),
        ),
        (
            "te.cl with a short length",
            post(
                "/a",
                "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
                &format!("{:x}\r\n{s}\r\n0\r\n\r\n", n),
            ),
            Expect::Forwarded(Box::leak(s.clone().into_boxed_str())),
        ),
        // Duplicate, conflicting and malformed Content-Length.
        (
            "two different lengths",
            post(
                "/a",
                &format!("content-length: 0\r\ncontent-length: {n}\r\n"),
                &s,
            ),
            Expect::Refused(400),
        ),
        (
            "a list of lengths",
            post("/a", "content-length: 1, 2\r\n", &s),
            Expect::Refused(400),
        ),
        (
            "a signed length",
            post("/a", "content-length: +5\r\n", &s),
            Expect::Refused(400),
        ),
        (
            "a negative length",
            post("/a", "content-length: -1\r\n", &s),
            Expect::Refused(400),
        ),
        (
            "a hex length",
            post("/a", "content-length: 0x5\r\n", &s),
            Expect::Refused(400),
        ),
        (
            "an empty length",
            post("/a", "content-length: \r\n", &s),
            Expect::Refused(400),
        ),
        (
            "an overflowing length",
            post("/a", "content-length: 99999999999999999999999\r\n", &s),
            Expect::Refused(400),
        ),
        (
            "u64::MAX",
            post("/a", "content-length: 18446744073709551615\r\n", &s),
            Expect::Refused(431),
        ),
        // Transfer-Encoding lists: only `chunked`, once, is understood.
        (
            "chunked, identity",
            post(
                "/a",
                "transfer-encoding: chunked, identity\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "identity",
            post(
                "/a",
                "transfer-encoding: identity\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "chunked, gzip",
            post(
                "/a",
                "transfer-encoding: chunked, gzip\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "gzip, chunked (an unsupported coding)",
            post(
                "/a",
                "transfer-encoding: gzip, chunked\r\n",
                &format!("3\r\nabc\r\n0\r\n\r\n{s}"),
            ),
            Expect::Refused(501),
        ),
        (
            "chunked twice",
            post(
                "/a",
                "transfer-encoding: chunked, chunked\r\n",
                &format!("3\r\nabc\r\n0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "chunked on two lines",
            post(
                "/a",
                "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                &format!("3\r\nabc\r\n0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "chunked then identity on two lines",
            post(
                "/a",
                "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "xchunked",
            post(
                "/a",
                "transfer-encoding: xchunked\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "obs-fold",
            post(
                "/a",
                "transfer-encoding:\r\n chunked\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "space before the colon",
            post(
                "/a",
                "transfer-encoding : chunked\r\ncontent-length: 5\r\n",
                &format!("0\r\n\r\n{s}"),
            ),
            Expect::Refused(400),
        ),
        (
            "chunked in HTTP/1.0",
            format!(
                "POST /a HTTP/1.0\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            Expect::Refused(400),
        ),
        // Spelling that is still exactly `chunked`: accepted, framed right.
        (
            "trailing whitespace",
            post(
                "/a",
                "transfer-encoding: chunked \t\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            Expect::Forwarded("abc"),
        ),
        (
            "upper case",
            post(
                "/a",
                "transfer-encoding: CHUNKED\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            Expect::Forwarded("abc"),
        ),
    ];
    for (name, bytes, expect) in cases {
        run_case(&up, &gw, name, bytes, expect).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes_never_complete_a_request_upstream() {
    let (up, gw) = setup().await;
    let s = smuggled("chunk");
    let bodies = [
        (
            "overflow",
            format!("1ffffffffffffffff\r\nabc\r\n0\r\n\r\n{s}"),
        ),
        ("negative", format!("-3\r\nabc\r\n0\r\n\r\n{s}")),
        ("not hex", format!("zz\r\nabc\r\n0\r\n\r\n{s}")),
        ("0x prefix", format!("0x3\r\nabc\r\n0\r\n\r\n{s}")),
        ("missing CRLF after data", format!("3\r\nabcXY0\r\n\r\n{s}")),
        (
            "data longer than the size",
            format!("3\r\nabcdef\r\n0\r\n\r\n{s}"),
        ),
        ("bare LF", format!("3\nabc\n0\n\n{s}")),
        ("empty size", format!("\r\nabc\r\n0\r\n\r\n{s}")),
    ];
    for (name, body) in bodies {
        for path in ["/a", "/buffered"] {
            let bytes = post(path, "transfer-encoding: chunked\r\n", &body);
            let before = up.requests().len();
            let ex = raw::exchange(gw.addr, bytes.as_bytes(), WAIT).await;
            let ctx = format!(
                "case {name} on {path}: got {:?} closed {} upstream {:?}",
                ex.statuses(),
                ex.closed,
                up.targets()
            );
            // Refused: 400 when a step reads the body; when it streams to
            // the upstream the request is cut off there and the client gets
            // 502 (the gateway cannot yet tell a broken client body from a
            // broken upstream). Never a 2xx, and the connection is closed.
            let allowed: &[u16] = if path == "/a" { &[400, 502] } else { &[400] };
            assert!(
                ex.statuses().len() <= 1 && ex.statuses().iter().all(|s| allowed.contains(s)),
                "{ctx}"
            );
            assert!(ex.closed, "{ctx}");
            assert_eq!(up.requests().len(), before, "{ctx}");
        }
    }
    // Broken client bodies are not the upstream's failures: it is still
    // in rotation for everyone else.
    let ok = raw::exchange(
        gw.addr,
        b"GET /fine HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(ok.statuses(), vec![200], "{ok:?}");
    up.assert_never_received("/smuggled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_headers_named_in_connection_keep_their_framing() {
    let (up, gw) = setup().await;
    let s = smuggled("conn");
    // Content-Length named hop-by-hop: the body is still one body upstream.
    run_case(
        &up,
        &gw,
        "connection: content-length",
        post(
            "/a",
            &format!(
                "connection: content-length\r\ncontent-length: {}\r\n",
                s.len()
            ),
            &s,
        ),
        Expect::Forwarded(Box::leak(s.clone().into_boxed_str())),
    )
    .await;
    run_case(
        &up,
        &gw,
        "connection: transfer-encoding",
        post(
            "/a",
            "connection: transfer-encoding\r\ntransfer-encoding: chunked\r\n",
            &format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len()),
        ),
        Expect::Forwarded(Box::leak(s.clone().into_boxed_str())),
    )
    .await;
    run_case(
        &up,
        &gw,
        "connection: content-length, transfer-encoding (buffered)",
        post(
            "/buffered",
            "connection: content-length, transfer-encoding\r\ntransfer-encoding: chunked\r\n",
            "3\r\nabc\r\n0\r\n\r\n",
        ),
        Expect::Forwarded("ABC"),
    )
    .await;
    // A chunked body on a GET is forwarded as a body, not dropped.
    run_case(
        &up,
        &gw,
        "GET with a chunked body",
        format!("GET /a HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len()),
        Expect::Forwarded(Box::leak(s.clone().into_boxed_str())),
    )
    .await;
    for r in up.requests() {
        assert_eq!(r.header("connection"), None, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_a_body_is_not_a_tunnel() {
    let (up, gw) = setup().await;
    let s = smuggled("upgrade");
    // The gateway does not do upgrades: Upgrade is hop-by-hop, the body is
    // a body, and the upstream sees one request.
    run_case(
        &up,
        &gw,
        "upgrade with a body",
        format!(
            "GET /a HTTP/1.1\r\nhost: gw\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: {}\r\n\r\n{s}",
            s.len()
        ),
        Expect::Forwarded(Box::leak(s.clone().into_boxed_str())),
    )
    .await;
    assert_eq!(up.requests().last().unwrap().header("upgrade"), None);

    // An upstream that answers 101 anyway: the client gets 502, not a
    // tunnel, and what it sends next is read as HTTP (a new request, framed
    // and checked) and never reaches that upstream connection raw.
    let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    c.write_all(
        b"GET /switch HTTP/1.1\r\nhost: gw\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = raw::read_response(&mut c, WAIT).await;
    let _ = c.write_all(smuggled("after-101").as_bytes()).await;
    let _ = raw::read_until_close(&mut c, Duration::from_millis(500)).await;
    assert_eq!(resp.as_ref().map(|r| r.status()), Some(502), "{resp:?}");
    let conns = up.log.lock().unwrap().bytes.clone();
    let switched: Vec<_> = conns
        .iter()
        .filter(|c| raw::find(c, b"GET /switch ").is_some())
        .collect();
    assert_eq!(switched.len(), 1);
    assert!(
        raw::find(switched[0], b"after-101").is_none(),
        "tunnelled: {}",
        String::from_utf8_lossy(switched[0])
    );
    assert!(up.malformed().is_empty(), "{:?}", up.malformed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_left_unread_by_a_refusing_policy_is_not_a_request() {
    let (up, gw) = setup().await;
    let s = smuggled("unread");
    // Whole body sent at once.
    let ex = raw::exchange(
        gw.addr,
        post("/auth/x", &format!("content-length: {}\r\n", s.len()), &s).as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses(), vec![401], "{ex:?}");
    // Head first, body only after the 401 has come back.
    let mut c = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    c.write_all(post("/auth/x", &format!("content-length: {}\r\n", s.len()), "").as_bytes())
        .await
        .unwrap();
    let r = raw::read_response(&mut c, WAIT).await.expect("a 401");
    assert_eq!(r.status(), 401);
    let _ = c.write_all(s.as_bytes()).await;
    let rest = raw::read_until_close(&mut c, WAIT).await;
    assert!(rest.responses.is_empty(), "{rest:?}");
    // Chunked, with the smuggled request inside a chunk, and a genuine
    // request pipelined after the body (which may be served, or refused
    // by closing the connection, but must not be mixed up with the body).
    let after = format!("GET /auth/after HTTP/1.1\r\nhost: gw\r\nx-api-key: {KEY}\r\n\r\n");
    let ex = raw::exchange(
        gw.addr,
        post(
            "/auth/x",
            "transfer-encoding: chunked\r\n",
            &format!("{:x}\r\n{s}\r\n0\r\n\r\n{after}", s.len()),
        )
        .as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(ex.statuses().first(), Some(&401), "{ex:?}");
    assert!(ex.statuses().len() <= 2, "{ex:?}");
    assert!(
        up.targets().iter().all(|t| t == "/auth/after"),
        "{:?}",
        up.targets()
    );
    up.assert_never_received("/smuggled");
    // The key works, so the smuggled request would have been forwarded.
    let ok = raw::exchange(
        gw.addr,
        s.replace("/smuggled-unread", "/auth/ok").as_bytes(),
        Duration::from_millis(800),
    )
    .await;
    assert_eq!(ok.statuses(), vec![200], "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_are_431_and_invalid_heads_400() {
    let (up, gw) = setup().await;
    let big = "v".repeat(9000);
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "one header over max-header-bytes",
            format!("GET /a HTTP/1.1\r\nhost: gw\r\nx-big: {big}\r\n\r\n"),
            Expect::Refused(431),
        ),
        (
            "many small headers over max-header-bytes",
            format!(
                "GET /a HTTP/1.1\r\nhost: gw\r\n{}\r\n",
                (0..25)
                    .map(|i| format!("x-h{i}: {}\r\n", "v".repeat(400)))
                    .collect::<String>()
            ),
            Expect::Refused(431),
        ),
        (
            "more than max-headers fields",
            format!(
                "GET /a HTTP/1.1\r\nhost: gw\r\n{}\r\n",
                (0..50)
                    .map(|i| format!("x-h{i}: 1\r\n"))
                    .collect::<String>()
            ),
            Expect::Refused(431),
        ),
        (
            "space in a name",
            "GET /a HTTP/1.1\r\nhost: gw\r\nbad name: 1\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "empty name",
            "GET /a HTTP/1.1\r\nhost: gw\r\n: 1\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "no colon",
            "GET /a HTTP/1.1\r\nhost: gw\r\nnocolon\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "NUL in a value",
            "GET /a HTTP/1.1\r\nhost: gw\r\nx-a: a\0b\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "bare CR in a value",
            "GET /a HTTP/1.1\r\nhost: gw\r\nx-a: a\rb\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "DEL in a value",
            "GET /a HTTP/1.1\r\nhost: gw\r\nx-a: a\x7fb\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "parenthesis in a name",
            "GET /a HTTP/1.1\r\nhost: gw\r\nx(a): 1\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "junk after the version",
            "GET /a HTTP/1.1 x\r\nhost: gw\r\n\r\n".into(),
            Expect::Refused(400),
        ),
        (
            "unknown version",
            "GET /a HTTP/7.1\r\nhost: gw\r\n\r\n".into(),
            Expect::Refused(400),
        ),
    ];
    for (name, bytes, expect) in cases {
        run_case(&up, &gw, name, bytes, expect).await;
    }
    // Under the limits, a plain request still goes through.
    run_case(
        &up,
        &gw,
        "just under",
        format!(
            "GET /a HTTP/1.1\r\nhost: gw\r\nx-big: {}\r\n\r\n",
            "v".repeat(7000)
        ),
        Expect::Forwarded(""),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_smuggling_pipelines_never_reach_the_upstream() {
    let (up, gw) = setup().await;
    let s = smuggled("classic");
    // Each attack is followed, on the same connection, by an innocent
    // request whose response a desynchronised proxy would hand to the
    // wrong client.
    let attacks = [
        ("CL.TE", format!("POST /a HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{s}", 5 + s.len())),
        ("TE.CL", format!("POST /a HTTP/1.1\r\nhost: gw\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{s}\r\n0\r\n\r\n", s.len())),
        ("TE.TE obfuscated", format!("POST /a HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\ntransfer-encoding: cow\r\ncontent-length: 4\r\n\r\n5c\r\n{s}0\r\n\r\n")),
        ("TE.TE tab", format!("POST /a HTTP/1.1\r\nhost: gw\r\ntransfer-encoding:\tchunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n{s}")),
        ("TE.TE x-chunked", format!("POST /a HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: x-chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n{s}")),
        ("CL.CL", format!("POST /a HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{s}", s.len())),
        ("CL in HTTP/1.0 keep-alive", format!("POST /a HTTP/1.0\r\nhost: gw\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n{s}")),
    ];
    for (name, attack) in attacks {
        let bytes = format!("{attack}GET /innocent HTTP/1.1\r\nhost: gw\r\n\r\n");
        let ex = raw::exchange(gw.addr, bytes.as_bytes(), WAIT).await;
        let ctx = format!("{name}: {:?} {:?}", ex.statuses(), up.targets());
        assert!(ex.responses.len() <= 2, "{ctx}");
        for r in &ex.responses {
            assert!(
                !String::from_utf8_lossy(&r.body).contains("smuggled"),
                "{ctx}"
            );
        }
        assert!(
            !up.targets().iter().any(|t| t.contains("smuggled")),
            "{ctx}"
        );
        assert!(up.malformed().is_empty(), "{ctx} {:?}", up.malformed());
    }
}
