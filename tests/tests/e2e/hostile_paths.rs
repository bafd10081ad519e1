//! Hostile request paths: one normalisation before routing, so the router,
//! every policy step and the upstream see the same path, and no spelling of
//! a path reaches a route (or skips a check) that the plain path would not.
//!
//! Two APIs share one recording upstream under different base paths:
//! `/admin-only` (key-auth, base `/private-api`) and `/public` (open, base
//! `/public-api`). Both chains end with `fixture-observe`, which tells the
//! upstream the path the policy saw (`x-policy-path`). Requests are written
//! byte for byte on a raw socket, so no client library tidies them first.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::policy::host::consumers::key_digest_hex;
use tollgate_tests::*;

const KEY: &str = "hostile-paths-key-3a7e91";

fn manifest(up: &str) -> String {
    format!(
        r#"schema = 1

[[api]]
name = "private"
upstream = {{ targets = ["{up}/private-api"], connect-timeout = "500ms", response-timeout = "2s" }}

[[api.route]]
prefix = "/admin-only"

[[api.chain]]
plugin = "key-auth"
grants = ["consumers"]
config = {{ header = "x-api-key" }}

[[api.chain]]
plugin = "fixture-observe"

[[api]]
name = "public"
upstream = {{ targets = ["{up}/public-api"], connect-timeout = "500ms", response-timeout = "2s" }}

[[api.route]]
prefix = "/public"

[[api.chain]]
plugin = "fixture-observe"

[[consumer]]
id = "ops"
keys = [{{ id = "k1", sha256 = "{digest}" }}]
"#,
        digest = key_digest_hex(KEY),
    )
}

/// Send `GET <target>` with the given extra header lines, exactly as
/// bytes, and return the status code (0 when the gateway closed without
/// one) and the whole response.
async fn raw(addr: std::net::SocketAddr, target: &[u8], extra: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{extra}\r\n").as_bytes(),
    );
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway answered within 10 s")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// What a hostile path must lead to.
#[derive(Debug)]
enum Expect {
    /// 400 from the gateway; the upstream never sees it.
    Refused,
    /// 404: no route for the normalised path.
    NoRoute,
    /// Routed to the private API as this normalised path: 401 without the
    /// key, and with it the policy and the upstream see exactly this path.
    Private(&'static str),
    /// Routed to the public API as this normalised path.
    Public(&'static str),
}

fn cases() -> Vec<(&'static [u8], Expect)> {
    use Expect::*;
    vec![
        // Encoded slashes and backslashes: an upstream that decodes them
        // before resolving `..` would serve /admin-only.
        (b"/public/..%2Fadmin-only/x", Refused),
        (b"/public/..%2fadmin-only", Refused),
        (b"/public/%2e%2e%2Fadmin-only", Refused),
        (b"/public/..%5Cadmin-only", Refused),
        (b"/public/..%5cadmin-only/x", Refused),
        (b"/public\\..\\admin-only", Refused),
        (b"/public/..\\admin-only", Refused),
        // Path parameters: Tomcat and others drop `;...` before `..`.
        (b"/public/..;/admin-only", Refused),
        (b"/public/..;x=1/admin-only", Refused),
        (b"/admin-only;jsessionid=1", Refused),
        // Overlong and invalid UTF-8: `%C0%AE` is an overlong `.`, `%C0%AF`
        // an overlong `/`.
        (b"/public/%c0%ae%c0%ae/admin-only", Refused),
        (b"/public/%e0%80%ae%e0%80%ae/admin-only", Refused),
        (b"/public/%c0%af..%c0%afadmin-only", Refused),
        (b"/public/x%ff", Refused),
        (b"/public/%c3", Refused),
        // NUL and control characters, encoded (raw ones never parse).
        (b"/public/%00/../../admin-only", Refused),
        (b"/public/x%0d%0aX-Injected:%20yes", Refused),
        (b"/public/%1b[31m", Refused),
        (b"/public/x%7f", Refused),
        (b"/public/x%c2%85", Refused),
        // Invalid escapes.
        (b"/public/%zz", Refused),
        (b"/public/%2", Refused),
        // Raw bytes that are not allowed in a path.
        (b"/public/caf\xc3\xa9", Refused),
        (b"/public/x\"y", Refused),
        (b"/public/{x}", Refused),
        // Dot-segments, plain and encoded: resolved, then routed (and
        // checked) as the path they resolve to.
        (b"/public/../admin-only", Private("/admin-only")),
        (b"/public/%2e%2e/admin-only", Private("/admin-only")),
        (b"/public/%2E%2E/admin-only/x", Private("/admin-only/x")),
        (b"/public/.%2e/admin-only", Private("/admin-only")),
        (b"/public/%2e/../admin-only", Private("/admin-only")),
        (b"/public/./x/../../admin-only/", Private("/admin-only/")),
        (b"/../../admin-only", Private("/admin-only")),
        (b"/admin-only/x/..", Private("/admin-only/")),
        // Duplicate slashes.
        (b"//admin-only", Private("/admin-only")),
        (b"///admin-only//x", Private("/admin-only/x")),
        // Escapes of unreserved characters are decoded.
        (b"/%61dmin-only/x", Private("/admin-only/x")),
        (b"/admin%2Donly", Private("/admin-only")),
        (b"/%41dmin-only", NoRoute),
        // Absolute form.
        (
            b"http://localhost/public/../admin-only",
            Private("/admin-only"),
        ),
        // Routing is case-sensitive: another case is another path.
        (b"/ADMIN-ONLY", NoRoute),
        (b"/Admin-Only/x", NoRoute),
        // Climbing out of a prefix and back in stays where it lands.
        (b"/admin-only/../public/x", Public("/public/x")),
        // Double encoding is data: `%25` stays `%25`.
        (
            b"/public/%252e%252e/admin-only",
            Public("/public/%252e%252e/admin-only"),
        ),
        (b"/public/%252F", Public("/public/%252F")),
        // Other escapes are kept, upper-cased; valid UTF-8 is fine.
        (b"/public/caf%c3%a9", Public("/public/caf%C3%A9")),
        (b"/public/%7e%41%3a", Public("/public/~A%3A")),
        (
            b"/public/a:b@c!$&'()*+,=",
            Public("/public/a:b@c!$&'()*+,="),
        ),
        // A trailing `/.` keeps the slash.
        (b"/public/x/.", Public("/public/x/")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_reaches_a_route_its_normal_form_would_not() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url())).await;
    let mut failures = Vec::new();
    for (i, (target, expect)) in cases().into_iter().enumerate() {
        let shown = String::from_utf8_lossy(target).into_owned();
        let probe = format!("x-probe: {i}\r\n");
        let keyed = format!("{probe}x-api-key: {KEY}\r\n");
        let seen = |up: &Upstream| -> Vec<Recorded> {
            up.requests()
                .into_iter()
                .filter(|r| r.header("x-probe") == Some(&i.to_string()))
                .collect()
        };
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(format!("{shown:?} ({expect:?}): {what}"));
            }
        };
        match expect {
            Expect::Refused | Expect::NoRoute => {
                let want = if matches!(expect, Expect::Refused) {
                    400
                } else {
                    404
                };
                let (s, text) = raw(gw.addr, target, &keyed).await;
                check(s == want, format!("status {s}, want {want}: {text}"));
                let got = seen(&up);
                check(got.is_empty(), format!("reached the upstream: {got:?}"));
            }
            Expect::Private(path) => {
                let (s, text) = raw(gw.addr, target, &probe).await;
                check(s == 401, format!("without a key: status {s}: {text}"));
                check(
                    seen(&up).is_empty(),
                    "reached the upstream without a key".into(),
                );
                let (s, text) = raw(gw.addr, target, &keyed).await;
                check(s == 200, format!("with the key: status {s}: {text}"));
                let got = seen(&up);
                check(got.len() == 1, format!("upstream saw {got:?}"));
                if let Some(r) = got.first() {
                    let want = format!("/private-api{path}");
                    check(
                        r.path_and_query == want,
                        format!("upstream path {:?}, want {want:?}", r.path_and_query),
                    );
                    check(
                        r.header("x-policy-path") == Some(path),
                        format!("the policy saw {:?}", r.header("x-policy-path")),
                    );
                }
            }
            Expect::Public(path) => {
                let (s, text) = raw(gw.addr, target, &probe).await;
                check(s == 200, format!("status {s}: {text}"));
                let got = seen(&up);
                check(got.len() == 1, format!("upstream saw {got:?}"));
                if let Some(r) = got.first() {
                    let want = format!("/public-api{path}");
                    check(
                        r.path_and_query == want,
                        format!("upstream path {:?}, want {want:?}", r.path_and_query),
                    );
                    check(
                        r.header("x-policy-path") == Some(path),
                        format!("the policy saw {:?}", r.header("x-policy-path")),
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing the upstream received ever holds a spelling the router would
    // read differently.
    for r in up.requests() {
        let p = r.path_and_query.to_ascii_lowercase();
        for bad in ["%2f", "%5c", "\\", ";", "#", "%c0", "/../", "/./", "//"] {
            assert!(!p.contains(bad), "the upstream saw {:?}", r.path_and_query);
        }
        assert!(
            p.starts_with("/public-api/public") || p.starts_with("/private-api/admin-only"),
            "the upstream saw {:?}",
            r.path_and_query
        );
    }
}

/// A fragment is not part of a request target; the HTTP parser drops it
/// (everything from `#` on) before the gateway sees the path, so the
/// router, the policy and the upstream all see the path without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_is_dropped_before_anything_sees_the_path() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&manifest(&up.url())).await;
    let (s, text) = raw(gw.addr, b"/public/x#/../../admin-only", "").await;
    assert_eq!(s, 200, "{text}");
    let r = up.last();
    assert_eq!(r.path_and_query, "/public-api/public/x");
    assert_eq!(r.header("x-policy-path"), Some("/public/x"));
    // An encoded `#` is data, and the `..` after it are resolved.
    let (s, text) = raw(gw.addr, b"/public/x%23/../../admin-only", "").await;
    assert_eq!(s, 401, "{text}");
    let (s, text) = raw(gw.addr, b"/admin-only#/../public", "").await;
    assert_eq!(s, 401, "{text}");
    for r in up.requests() {
        assert!(!r.path_and_query.contains('#'), "{:?}", r.path_and_query);
        assert!(
            !r.path_and_query.contains("admin"),
            "{:?}",
            r.path_and_query
        );
    }
}
