//! Upstreams over `https://` and the policies' outbound client over TLS,
//! against real rustls servers whose certificates a test CA makes at run
//! time: verified, wrong name and untrusted CA refused, mTLS, HTTP/2 by
//! ALPN, JWKS over https, the system's roots, `insecure-skip-verify`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tollgate::upstream::breaker::State;
use tollgate_tests::tls_upstream::{Issued, TestCa, TlsOptions, TlsServer};
use tollgate_tests::*;

/// One `[[api]]` named `name` routing `/<name>` to `target`, no retries,
/// with these extra `[api.upstream]` lines.
fn api(name: &str, target: &str, fields: &str) -> String {
    format!(
        r#"
[[api]]
name = "{name}"

[api.upstream]
targets = ["{target}"]
connect-timeout = "1s"
response-timeout = "5s"
retries = 0
{fields}

[[api.route]]
prefix = "/{name}"
"#
    )
}

fn manifest(apis: &[String]) -> String {
    format!("schema = 1\n{}", apis.concat())
}

/// A path as a TOML string.
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The error code of a gateway error response.
async fn error_code(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_with_a_ca_file_and_tls_server_name_h2_by_alpn() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("tollgate test CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    // The target is an IP address; the certificate names a DNS name only.
    let (srv, rec) =
        TlsServer::recording(&ca.server(&["upstream.test"]), TlsOptions::default()).await;
    // HTTP/1.1-only and h2-only upstreams (ALPN offers one protocol each).
    let (h1, h1_rec) = TlsServer::recording(
        &ca.server(&["upstream.test"]),
        TlsOptions {
            alpn: vec!["http/1.1"],
            ..TlsOptions::default()
        },
    )
    .await;
    let (h2, h2_rec) = TlsServer::recording(
        &ca.server(&["upstream.test"]),
        TlsOptions {
            alpn: vec!["h2"],
            http2_only: true,
            ..TlsOptions::default()
        },
    )
    .await;
    // A certificate for the IP address itself: no tls-server-name needed.
    let (ip, ip_rec) =
        TlsServer::recording(&ca.server(&["127.0.0.1"]), TlsOptions::default()).await;
    let fields = format!(
        "ca-file = {}\ntls-server-name = \"upstream.test\"",
        toml_path(&ca_file)
    );
    let gw = TestGateway::start(&manifest(&[
        api("both", &format!("{}/base", srv.url()), &fields),
        api("h1", &h1.url(), &fields),
        api("h2", &h2.url(), &fields),
        api(
            "ip",
            &ip.url(),
            &format!("ca-file = {}", toml_path(&ca_file)),
        ),
    ]))
    .await;
    let c = client();

    let r = c.get(gw.url("/both/pets?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(gw.url("/both/pets"))
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["body"], "over tls");
    let seen = rec.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path_and_query, "/base/both/pets?x=1");
    // SNI carries the configured name; the upstream picked h2 by ALPN and
    // both calls shared the one connection.
    let hs = srv.handshakes();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0].sni.as_deref(), Some("upstream.test"));
    assert_eq!(hs[0].alpn.as_deref(), Some("h2"));
    assert!(!hs[0].client_cert);
    assert_eq!(rec.versions(), [http::Version::HTTP_2; 2]);

    let r = c.get(gw.url("/h1/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h1_rec.versions(), [http::Version::HTTP_11]);
    assert_eq!(h1.handshakes()[0].alpn.as_deref(), Some("http/1.1"));

    let r = c.get(gw.url("/h2/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h2_rec.versions(), [http::Version::HTTP_2]);

    let r = c.get(gw.url("/ip/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ip_rec.requests().len(), 1);
    // No SNI for an IP address (RFC 6066 §3).
    assert_eq!(ip.handshakes()[0].sni, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_name_is_refused_and_counts_against_the_breaker() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("tollgate test CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let (srv, rec) = TlsServer::recording(&ca.server(&["other.test"]), TlsOptions::default()).await;
    let gw = TestGateway::start(&manifest(&[
        api(
            "wrong",
            &srv.url(),
            &format!(
                "ca-file = {}\ntls-server-name = \"upstream.test\"\nbreaker = {{ failures = 2, cool-down = \"60s\" }}",
                toml_path(&ca_file)
            ),
        ),
        // The IP address is not in the certificate either.
        api("noname", &srv.url(), &format!("ca-file = {}", toml_path(&ca_file))),
    ]))
    .await;
    let c = client();
    for _ in 0..2 {
        let r = c.get(gw.url("/wrong/x")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(error_code(r).await, "upstream_unavailable");
    }
    // Two TLS failures in a row opened the breaker.
    let r = c.get(gw.url("/wrong/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "upstream_circuit_open");
    let g = gw.gateway.current();
    assert!(matches!(
        g.apis[0].upstream.breaker(0).state(),
        State::Open { .. }
    ));

    let r = c.get(gw.url("/noname/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(rec.requests().is_empty(), "a request went through");
    assert!(srv.handshakes().is_empty());
    assert!(
        eventually(Duration::from_secs(5), || async {
            srv.failures().len() == 3
        })
        .await,
        "{:?}",
        srv.failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let real = TestCa::new("the upstream's CA");
    let other = TestCa::new("another CA");
    let other_file = other.write(certs.path(), "other.pem");
    let (srv, rec) =
        TlsServer::recording(&real.server(&["upstream.test"]), TlsOptions::default()).await;
    // A self-signed certificate is no better.
    let selfsigned = TestCa::new("upstream.test");
    let self_file = selfsigned.write(certs.path(), "self.pem");
    let fields = |ca: &Path| {
        format!(
            "ca-file = {}\ntls-server-name = \"upstream.test\"",
            toml_path(ca)
        )
    };
    let gw = TestGateway::start(&manifest(&[
        api("other", &srv.url(), &fields(&other_file)),
        api("self", &srv.url(), &fields(&self_file)),
    ]))
    .await;
    let c = client();
    for path in ["/other/x", "/self/x"] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        assert_eq!(error_code(r).await, "upstream_unavailable");
    }
    assert!(rec.requests().is_empty());
    assert!(srv.handshakes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_required_and_given() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let ca_file = ca.write(certs.path(), "ca.pem");
    let (cert, key) = clients.client("gateway").write(certs.path(), "gateway");
    let (rogue_cert, rogue_key) = TestCa::new("rogue CA")
        .client("gateway")
        .write(certs.path(), "rogue");
    let (srv, rec) = TlsServer::recording(
        &ca.server(&["upstream.test"]),
        TlsOptions {
            client_ca: Some(&clients),
            ..TlsOptions::default()
        },
    )
    .await;
    let fields = |identity: &str| {
        format!(
            "ca-file = {}\ntls-server-name = \"upstream.test\"\n{identity}",
            toml_path(&ca_file)
        )
    };
    let identity = |c: &Path, k: &Path| {
        format!(
            "client-cert = {}\nclient-key = {}",
            toml_path(c),
            toml_path(k)
        )
    };
    let gw = TestGateway::start(&manifest(&[
        api("none", &srv.url(), &fields("")),
        api(
            "rogue",
            &srv.url(),
            &fields(&identity(&rogue_cert, &rogue_key)),
        ),
        api("given", &srv.url(), &fields(&identity(&cert, &key))),
    ]))
    .await;
    let c = client();
    for path in ["/none/x", "/rogue/x"] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        // TLS 1.3 tells the client its certificate was refused only after
        // the handshake: the gateway reads the alert, or a reset when the
        // target closed on the request it had already sent.
        let code = error_code(r).await;
        assert!(
            ["upstream_unavailable", "upstream_invalid_response"].contains(&code.as_str()),
            "{path}: {code}"
        );
    }
    assert!(rec.requests().is_empty());
    assert!(
        eventually(Duration::from_secs(5), || async {
            srv.failures().len() == 2
        })
        .await,
        "{:?}",
        srv.failures()
    );

    let r = c.get(gw.url("/given/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rec.requests().len(), 1);
    let hs = srv.handshakes();
    assert_eq!(hs.len(), 1);
    assert!(hs[0].client_cert);
}

// ---------------------------------------------------------------------------
// JWKS over https

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// An ES256 key: its JWK and tokens it signs.
struct Ec(sig::EcdsaKeyPair);

impl Ec {
    fn new() -> Ec {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Ec(sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }
    fn jwk(&self, kid: &str) -> Value {
        let p = self.0.public_key().as_ref();
        json!({ "kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..]) })
    }
    fn token(&self, kid: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({ "sub": "alice", "exp": now + 600 });
        let input = format!(
            "{}.{}",
            b64(json!({ "alg": "ES256", "kid": kid }).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let s = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(s.as_ref()))
    }
}

/// A JWKS server over TLS serving `keys` at `/jwks.json`, counting fetches.
async fn jwks_server(cert: &Issued, keys: Value) -> (TlsServer, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let doc = Bytes::from(json!({ "keys": keys }).to_string());
    let srv = TlsServer::start(cert, TlsOptions::default(), move |req| {
        let (h, doc) = (h.clone(), doc.clone());
        async move {
            let mut resp = http::Response::new(Full::new(Bytes::new()));
            if req.uri().path() == "/jwks.json" {
                h.fetch_add(1, Ordering::SeqCst);
                resp = http::Response::new(Full::new(doc));
            } else {
                *resp.status_mut() = http::StatusCode::NOT_FOUND;
            }
            Ok(resp)
        }
    })
    .await;
    (srv, hits)
}

/// A jwt step fetching its keys from `jwks` with this `http:` grant.
fn jwt_api(name: &str, upstream: &str, jwks: &str, grant: &str) -> String {
    format!(
        r#"{api}
[[api.chain]]
plugin = "jwt"
timeout = "3s"
grants = ["crypto", "cache", "consumers", "http:{grant}"]
[api.chain.config]
algorithms = ["ES256"]
jwks-url = "{jwks}"
forward-claims = {{ sub = "x-user-id" }}
"#,
        api = api(name, upstream, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new("IdP CA");
    let ca_file = ca.write(certs.path(), "idp-ca.pem");
    let key = Ec::new();
    let (idp, hits) = jwks_server(&ca.server(&["127.0.0.1"]), json!([key.jwk("k1")])).await;
    let up = Upstream::start().await;
    let jwks = format!("https://{}/jwks.json", idp.addr);
    let port = idp.addr.port();
    let apis = manifest(&[
        jwt_api("ok", &up.url(), &jwks, &format!("127.0.0.1:{port}")),
        // A grant for another port does not cover this URL.
        jwt_api(
            "ungranted",
            &up.url(),
            &jwks,
            &format!("127.0.0.1:{}", port ^ 1),
        ),
    ]);
    let trusted = TestGateway::builder(&apis)
        .gateway_toml(&format!("[outbound]\nca-file = {}\n", toml_path(&ca_file)))
        .start()
        .await;
    let c = client();
    let call = |gw: &TestGateway, path: &str| {
        c.get(gw.url(path))
            .bearer_auth(key.token("k1"))
            .timeout(Duration::from_secs(20))
            .send()
    };
    let r = call(&trusted, "/ok/pets").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-user-id"), Some("alice"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let hs = idp.handshakes();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].alpn.as_deref(), Some("h2"));

    let r = call(&trusted, "/ungranted/pets").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(idp.handshakes().len() + idp.failures().len(), 1);

    // Without the CA file the IdP's certificate is not trusted: no fetch.
    drop(trusted);
    let untrusted = TestGateway::start(&apis).await;
    let r = call(&untrusted, "/ok/pets").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "jwt_keys_unavailable");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            idp.failures().len() == 1
        })
        .await,
        "{:?}",
        idp.failures()
    );
}

// ---------------------------------------------------------------------------
// The real binary: the system's roots, the log lines

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_roots_insecure_warning_and_the_tls_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("system CA");
    // The gateway's "system" store is this file (rustls-native-certs reads
    // SSL_CERT_FILE instead of the OS store when it is set).
    let system = ca.write(dir.path(), "system.pem");
    let (srv, rec) =
        TlsServer::recording(&ca.server(&["upstream.test"]), TlsOptions::default()).await;
    let unknown = TestCa::new("nobody's CA");
    let (stray, stray_rec) =
        TlsServer::recording(&unknown.server(&["stray.test"]), TlsOptions::default()).await;
    std::fs::write(
        dir.path().join("api.toml"),
        manifest(&[
            api("sys", &srv.url(), "tls-server-name = \"upstream.test\""),
            api("wrong", &srv.url(), "tls-server-name = \"wrong.test\""),
            api("insecure", &stray.url(), "insecure-skip-verify = true"),
        ]),
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "schema = 1\npolicies = [\"api.toml\"]\n\n[[listener]]\nname = \"t\"\naddress = \"127.0.0.1:{port}\"\n\n[plugins]\ndirs = [{}]\n",
            toml_path(&plugin_dir())
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = ChildGuard(
        gateway_command(&config)
            .env("SSL_CERT_FILE", &system)
            .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting tollgate"),
    );
    let c = client();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the gateway exited at start ({status}):\n{}", read(&log));
        }
        if let Ok(r) = c.get(url("/sys/x")).send().await {
            break r;
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", read(&log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first.status(), 200, "{}", read(&log));
    assert_eq!(rec.requests().len(), 1);

    let r = c.get(url("/insecure/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(stray_rec.requests().len(), 1);

    let r = c.get(url("/wrong/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let target = srv.addr.to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            read(&log).contains(&format!("TLS with target {target} failed"))
        })
        .await,
        "no TLS log line:\n{}",
        read(&log)
    );
    let text = read(&log);
    let line = text
        .lines()
        .find(|l| l.contains("TLS with target"))
        .unwrap();
    assert_contains(line, "wrong");
    assert_contains(line, "certificate not valid for name \"wrong.test\"");
    let warning = text
        .lines()
        .find(|l| l.contains("INSECURE"))
        .unwrap_or_else(|| panic!("no insecure-skip-verify warning:\n{text}"));
    assert_contains(warning, "insecure");
    assert_contains(warning, "insecure-skip-verify = true");
}
