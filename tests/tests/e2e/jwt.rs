//! jwt end to end: tokens signed here (HS256 with a secret, ES256 and EdDSA
//! with `ring`), checked by the `jwt` plugin through the host's `crypto`
//! import, with inline keys and with a JWKS served by a real HTTP server on
//! loopback (key rotation, bounded refetch).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_tests::*;

const SECRET: &str = "e2e secret for HS256, 32 bytes or more";

/// The grants the jwt plugin's imports need (see plugins/jwt/README.md):
/// `http:` names the JWKS host, or any host when there is no `jwks-url`.
fn grants(http: &str) -> String {
    format!(r#"grants = ["crypto", "cache", "consumers", "http:{http}"]"#)
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({ "sub": "alice", "iss": "https://idp.test", "aud": "pets", "exp": now() + 600, "iat": now() })
}

fn jws(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let s = sign(input.as_bytes());
    format!("{input}.{}", b64(&s))
}

fn hs256(claims: &Value) -> String {
    jws(json!({ "alg": "HS256", "typ": "JWT" }), claims, |m| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        ring::hmac::sign(&k, m).as_ref().to_vec()
    })
}

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
        json!({ "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": b64(&p[1..33]), "y": b64(&p[33..]) })
    }
    fn token(&self, kid: &str, claims: &Value) -> String {
        jws(json!({ "alg": "ES256", "kid": kid }), claims, |m| {
            self.0
                .sign(&SystemRandom::new(), m)
                .unwrap()
                .as_ref()
                .to_vec()
        })
    }
}

struct Ed(sig::Ed25519KeyPair);

impl Ed {
    fn new() -> Ed {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed(sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }
    fn jwk(&self, kid: &str) -> Value {
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(self.0.public_key().as_ref()) })
    }
    fn token(&self, kid: &str, claims: &Value) -> String {
        jws(json!({ "alg": "EdDSA", "kid": kid }), claims, |m| {
            self.0.sign(m).as_ref().to_vec()
        })
    }
}

/// Asserts a 401 with this RFC 6750 error.
async fn assert_refused(r: reqwest::Response, error: &str) {
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_contains(&challenge, &format!("Bearer error=\"{error}\""));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], error, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_with_a_secret() {
    let up = Upstream::start().await;
    let chain = format!(
        r#"
[[api.chain]]
plugin = "jwt"
{grants}
[api.chain.config]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "https://idp.test"
audience = ["pets", "orders"]
forward-claims = {{ sub = "x-user-id", scope = "x-scopes" }}
strip = true
"#,
        grants = grants("localhost")
    );
    let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
    let c = client();
    let get = |token: &str| {
        c.get(gw.url("/pets"))
            .bearer_auth(token)
            .header("x-user-id", "mallory")
            .header("x-scopes", "admin")
    };

    // A good token: claims forwarded, client-sent copies gone, token stripped.
    let mut good = claims();
    good["scope"] = json!("read write");
    let r = get(&hs256(&good)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header_all("x-user-id"), vec!["alice"]);
    assert_eq!(seen.header_all("x-scopes"), vec!["read write"]);
    assert_eq!(seen.header("authorization"), None);
    // Without a scope claim the client's x-scopes is still removed.
    let r = get(&hs256(&claims())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-scopes"), None);
    let passed = up.requests().len();

    // No token.
    let r = c.get(gw.url("/pets")).send().await.unwrap();
    assert_refused(r, "invalid_request").await;
    // alg=none, with and without a signature part.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_refused(get(&unsigned).send().await.unwrap(), "invalid_token").await;
    let r = get(&format!("{unsigned}c2ln")).send().await.unwrap();
    assert_refused(r, "invalid_token").await;
    // Expired (beyond the 30 s leeway).
    let mut expired = claims();
    expired["exp"] = json!(now() - 120);
    assert_refused(get(&hs256(&expired)).send().await.unwrap(), "invalid_token").await;
    // Wrong audience.
    let mut aud = claims();
    aud["aud"] = json!(["billing"]);
    assert_refused(get(&hs256(&aud)).send().await.unwrap(), "invalid_token").await;
    // Tampered payload with the original signature.
    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut admin = claims();
    admin["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(admin.to_string().as_bytes()),
        parts[2]
    );
    let r = get(&tampered).send().await.unwrap();
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_contains(&challenge, "signature is invalid");
    assert_refused(r, "invalid_token").await;
    // Garbage and huge tokens.
    assert_refused(get("a.b").send().await.unwrap(), "invalid_token").await;
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_refused(get(&huge).send().await.unwrap(), "invalid_token").await;

    assert_eq!(up.requests().len(), passed, "no refused call went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_with_an_inline_jwk_and_a_consumer() {
    let up = Upstream::start().await;
    let key = Ec::new();
    let jwk = key.jwk("k1");
    let manifest = format!(
        r#"schema = 1

[[consumer]]
id = "alice"
app = "alice-shop"

[[api]]
name = "test"
upstream = {{ targets = ["{up}"] }}

[[api.route]]
prefix = "/"

[[api.chain]]
plugin = "jwt"
{grants}
[api.chain.config]
algorithms = ["ES256"]
keys = [{{ kty = "EC", crv = "P-256", kid = "k1", x = {x}, y = {y} }}]
audience = "pets"
consumer-claim = "sub"

[[api.chain]]
plugin = "fixture-context"
"#,
        up = up.url(),
        grants = grants("localhost"),
        x = jwk["x"],
        y = jwk["y"],
    );
    let gw = TestGateway::start(&manifest).await;
    let c = client();
    let r = c
        .get(gw.url("/x"))
        .bearer_auth(key.token("k1", &claims()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["context"]["consumer"]["id"], "alice");
    assert_eq!(v["context"]["consumer"]["app"], "alice-shop");

    // Signed by another key.
    let other = Ec::new();
    let r = c
        .get(gw.url("/x"))
        .bearer_auth(other.token("k1", &claims()))
        .send()
        .await
        .unwrap();
    assert_refused(r, "invalid_token").await;
    // A subject that is not a consumer.
    let mut bob = claims();
    bob["sub"] = json!("bob");
    let r = c
        .get(gw.url("/x"))
        .bearer_auth(key.token("k1", &bob))
        .send()
        .await
        .unwrap();
    assert_refused(r, "invalid_token").await;
    // HS256 is not in the allowlist, even keyed with the public key.
    let forged = jws(json!({ "alg": "HS256", "kid": "k1" }), &claims(), |m| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
        ring::hmac::sign(&k, m).as_ref().to_vec()
    });
    let r = c
        .get(gw.url("/x"))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_refused(r, "invalid_token").await;
}

/// A JWKS server on loopback: serves `/jwks.json` from `doc` and counts
/// the fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(keys: &[Value]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(json!({ "keys": keys }).to_string()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (d, h) = (d.clone(), h.clone());
                        async move {
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            if req.uri().path() == "/jwks.json" {
                                h.fetch_add(1, Ordering::SeqCst);
                                let body = d.lock().unwrap().clone();
                                resp = http::Response::new(Full::new(Bytes::from(body)));
                                resp.headers_mut()
                                    .insert("content-type", "application/json".parse().unwrap());
                            } else {
                                *resp.status_mut() = http::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            doc,
            hits,
            task,
        }
    }

    fn set_keys(&self, keys: &[Value]) {
        *self.doc.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_a_server_with_key_rotation() {
    let up = Upstream::start().await;
    let (k1, k2) = (Ec::new(), Ed::new());
    let idp = JwksServer::start(&[k1.jwk("k1")]).await;
    let chain = format!(
        r#"
[[api.chain]]
plugin = "jwt"
timeout = "2s"
{grants}
[api.chain.config]
algorithms = ["ES256", "EdDSA"]
jwks-url = "http://{addr}/jwks.json"
jwks-cache = 300
jwks-min-refetch = 1
audience = "pets"
forward-claims = {{ sub = "x-user-id" }}
"#,
        grants = grants(&idp.addr.to_string()),
        addr = idp.addr,
    );
    let gw = TestGateway::start(&simple_manifest(&up.url(), &chain)).await;
    let c = client();
    let call = |token: String| c.get(gw.url("/pets")).bearer_auth(token).send();

    // First call fetches the JWKS, the next ones use the cached copy.
    for _ in 0..3 {
        let r = call(k1.token("k1", &claims())).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(idp.hits(), 1);
    assert_eq!(up.last().header("x-user-id"), Some("alice"));

    // The identity provider rotates in k2 (an Ed25519 key). After
    // jwks-min-refetch, a token with the new kid triggers one refetch.
    idp.set_keys(&[k1.jwk("k1"), k2.jwk("k2")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(k2.token("k2", &claims())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(idp.hits(), 2);
    let r = call(k1.token("k1", &claims())).await.unwrap();
    assert_eq!(r.status(), 200);
    // Unknown kids right after: refused, and no fetch storm.
    for _ in 0..5 {
        let r = call(k1.token("k9", &claims())).await.unwrap();
        assert_refused(r, "invalid_token").await;
    }
    assert_eq!(idp.hits(), 2);
    // k1 rotated out: its tokens fail once a refetch is allowed.
    idp.set_keys(&[k2.jwk("k2")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(k1.token("k9", &claims())).await.unwrap();
    assert_refused(r, "invalid_token").await;
    assert_eq!(idp.hits(), 3);
    let r = call(k1.token("k1", &claims())).await.unwrap();
    assert_refused(r, "invalid_token").await;
    let r = call(k2.token("k2", &claims())).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Write a gateway serving `manifest` and load it; the error text.
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
async fn bad_steps_are_refused_at_load() {
    let step = |grants: &str, algorithms: &str| {
        simple_manifest(
            "http://127.0.0.1:9",
            &format!(
                "[[api.chain]]\nname = \"auth\"\nplugin = \"jwt\"\n{grants}\n[api.chain.config]\nalgorithms = {algorithms}\nsecret = \"{SECRET}\"\n"
            ),
        )
    };
    let err = load_error(&step(
        r#"grants = ["cache", "consumers", "http:localhost"]"#,
        r#"["HS256"]"#,
    ))
    .await;
    assert_contains(
        &err,
        "plugin `jwt` uses crypto, which this step was not granted",
    );
    let err = load_error(&step(&grants("localhost"), r#"["HS256", "none"]"#)).await;
    assert_contains(
        &err,
        "field `algorithms.1`: `none` (unsigned tokens) is never accepted",
    );
}
