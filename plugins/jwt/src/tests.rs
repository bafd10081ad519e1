//! Native unit tests: real tokens signed with `ring`, checked through the
//! SDK's in-memory `crypto` service by a `ring` verifier that, like the
//! host, refuses an algorithm that does not fit its key.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use serde_json::json;
use std::cell::RefCell;
use tollgate_policy_sdk::services::{harness, IncomingResponse};
use tollgate_policy_sdk::{
    header_str, parse_config, CallContext, Consumer, Header, RequestEdits, RequestHead,
};

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "an HS256 test secret of 32 bytes+";
/// A 2048-bit RSA key (PKCS#1 DER) made for these tests only (`openssl genpkey`).
const RSA_DER: &[u8] = include_bytes!("testdata/rsa2048.der");
const JWKS_URL: &str = "http://idp.test:8080/jwks.json";

thread_local! {
    /// (alg, key kind) of every verify call.
    static CALLS: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn unb64(v: &Value, member: &str) -> Result<Vec<u8>, String> {
    let s = v[member].as_str().ok_or(format!("no {member}"))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())
}

/// What the host does, with `ring`.
fn ring_verifier(source: &str, alg: &str, msg: &[u8], signature: &[u8]) -> Result<bool, String> {
    let (kind, material) = source.split_once(':').unwrap();
    let jwk: Value = if kind == "jwk" {
        serde_json::from_str(material).map_err(|e| e.to_string())?
    } else {
        json!({ "kty": "secret" })
    };
    let kty = jwk["kty"].as_str().unwrap_or("").to_string();
    CALLS.with(|c| c.borrow_mut().push((alg.to_string(), kty.clone())));
    let hmac = |key: &[u8]| {
        let a = match alg {
            "HS256" => ring::hmac::HMAC_SHA256,
            "HS384" => ring::hmac::HMAC_SHA384,
            _ => ring::hmac::HMAC_SHA512,
        };
        ring::hmac::verify(&ring::hmac::Key::new(a, key), msg, signature).is_ok()
    };
    let public = |a: &'static dyn sig::VerificationAlgorithm, key: Vec<u8>| {
        sig::UnparsedPublicKey::new(a, key)
            .verify(msg, signature)
            .is_ok()
    };
    Ok(match (alg, kty.as_str()) {
        ("HS256" | "HS384" | "HS512", "secret") => hmac(material.as_bytes()),
        ("HS256" | "HS384" | "HS512", "oct") => hmac(&unb64(&jwk, "k")?),
        ("RS256" | "PS256", "RSA") => {
            let params = if alg == "RS256" {
                &sig::RSA_PKCS1_2048_8192_SHA256
            } else {
                &sig::RSA_PSS_2048_8192_SHA256
            };
            sig::RsaPublicKeyComponents {
                n: unb64(&jwk, "n")?,
                e: unb64(&jwk, "e")?,
            }
            .verify(params, msg, signature)
            .is_ok()
        }
        ("ES256", "EC") => {
            let mut point = vec![4];
            point.extend(unb64(&jwk, "x")?);
            point.extend(unb64(&jwk, "y")?);
            public(&sig::ECDSA_P256_SHA256_FIXED, point)
        }
        ("EdDSA", "OKP") => public(&sig::ED25519, unb64(&jwk, "x")?),
        _ => return Err(format!("algorithm {alg} does not fit this key")),
    })
}

fn calls() -> Vec<(String, String)> {
    CALLS.with(|c| c.borrow().clone())
}

fn setup() {
    harness::reset();
    harness::set_verifier(ring_verifier);
    harness::set_now_ms(NOW * 1000);
    CALLS.with(|c| c.borrow_mut().clear());
}

struct Rsa(sig::RsaKeyPair);
struct Ec(sig::EcdsaKeyPair);
struct Ed(sig::Ed25519KeyPair);

impl Rsa {
    fn new() -> Rsa {
        Rsa(sig::RsaKeyPair::from_der(RSA_DER).unwrap())
    }
    fn jwk(&self, kid: &str) -> Value {
        let c: sig::RsaPublicKeyComponents<Vec<u8>> = self.0.public().into();
        json!({ "kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e) })
    }
    fn sign(&self, pss: bool, msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0; self.0.public().modulus_len()];
        let pad: &'static dyn sig::RsaEncoding = if pss {
            &sig::RSA_PSS_SHA256
        } else {
            &sig::RSA_PKCS1_SHA256
        };
        self.0
            .sign(pad, &SystemRandom::new(), msg, &mut out)
            .unwrap();
        out
    }
}

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
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

impl Ed {
    fn new() -> Ed {
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed(sig::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }
    fn jwk(&self, kid: &str) -> Value {
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(self.0.public_key().as_ref()) })
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, msg).as_ref().to_vec()
}

/// A compact JWS of `header` and `claims`, signed by `sign`.
fn jws(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let s = sign(input.as_bytes());
    format!("{input}.{}", b64(&s))
}

fn claims() -> Value {
    json!({ "sub": "alice", "iss": "https://idp.test", "aud": "pets", "exp": NOW + 600, "iat": NOW })
}

fn hs256(claims: Value) -> String {
    jws(json!({ "alg": "HS256", "typ": "JWT" }), claims, |m| {
        hmac(SECRET.as_bytes(), m)
    })
}

fn policy(config: Value) -> Jwt {
    match parse_config::<Jwt>(&config.to_string()) {
        Ok(p) => p,
        Err(e) => panic!("{config} was refused: {e:?}"),
    }
}

fn hs_policy() -> Jwt {
    policy(json!({
        "algorithms": ["HS256"],
        "secret": SECRET,
        "issuer": "https://idp.test",
        "audience": ["pets", "orders"],
        "forward-claims": { "sub": "x-user-id", "scope": "x-scopes" },
    }))
}

fn ctx() -> CallContext {
    CallContext {
        api: "pets".into(),
        request_id: "r1".into(),
        ..CallContext::default()
    }
}

fn bearer(token: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        path: "/".into(),
        headers: vec![Header::new("authorization", format!("Bearer {token}"))],
        ..RequestHead::default()
    }
}

fn run(p: &mut Jwt, req: &RequestHead) -> RequestDecision {
    p.on_request(&Call::native(&ctx(), req), None)
}

#[track_caller]
fn accepted(p: &mut Jwt, req: &RequestHead) -> RequestEdits {
    match run(p, req) {
        RequestDecision::Continue(e) => e,
        RequestDecision::Respond(r) => {
            panic!("refused: {} {}", r.status, String::from_utf8_lossy(&r.body))
        }
    }
}

/// Asserts a 401 with this `error` and a description containing `why`.
#[track_caller]
fn refused(p: &mut Jwt, req: &RequestHead, error: &str, why: &str) {
    let RequestDecision::Respond(r) = run(p, req) else {
        panic!("accepted, expected {error}: {why}");
    };
    assert_eq!(r.status, 401);
    let challenge = header_str(&r.headers, "www-authenticate").unwrap();
    assert!(
        challenge.starts_with(&format!("Bearer error=\"{error}\"")),
        "{challenge}"
    );
    assert!(challenge.contains(why), "{challenge} lacks {why:?}");
    assert_eq!(
        header_str(&r.headers, "content-type"),
        Some("application/json")
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"]["code"], error);
    assert!(body["error"]["message"].as_str().unwrap().contains(why));
}

#[track_caller]
fn bad_token(p: &mut Jwt, token: &str, why: &str) {
    refused(p, &bearer(token), "invalid_token", why)
}

fn config_error(config: Value) -> ConfigError {
    match parse_config::<Jwt>(&config.to_string()) {
        Ok(_) => panic!("{config} was accepted"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn configuration_is_checked_at_load() {
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (json!({}), None, "missing field `algorithms`"),
        (
            json!({ "algorithms": [] }),
            Some("algorithms"),
            "at least one",
        ),
        (
            json!({ "algorithms": ["HS256", "none"], "secret": SECRET }),
            Some("algorithms.1"),
            "never accepted",
        ),
        (
            json!({ "algorithms": ["None"], "secret": SECRET }),
            Some("algorithms.0"),
            "never accepted",
        ),
        (
            json!({ "algorithms": ["hs256"], "secret": SECRET }),
            Some("algorithms.0"),
            "unknown algorithm",
        ),
        (
            json!({ "algorithms": ["HS256"] }),
            Some("algorithms.0"),
            "needs a `secret`",
        ),
        (
            json!({ "algorithms": ["RS256"] }),
            Some("algorithms.0"),
            "jwks-url",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": "short" }),
            Some("secret"),
            "at least 32 bytes",
        ),
        (
            json!({ "algorithms": ["HS512"], "secret": SECRET }),
            Some("secret"),
            "at least 64 bytes",
        ),
        (
            json!({ "algorithms": ["RS256"], "secret": SECRET, "jwks-url": JWKS_URL }),
            Some("secret"),
            "only used by HS256",
        ),
        (
            json!({ "algorithms": ["RS256"], "jwks-url": "ftp://idp.test/jwks" }),
            Some("jwks-url"),
            "https://",
        ),
        (
            json!({ "algorithms": ["RS256"], "jwks-url": JWKS_URL, "jwks-min-refetch": 0 }),
            Some("jwks-min-refetch"),
            "1 to 86400",
        ),
        (
            json!({ "algorithms": ["ES256"], "keys": [{ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA" }] }),
            Some("keys.0"),
            "private member \"d\"",
        ),
        (
            json!({ "algorithms": ["ES256"], "keys": [Ed::new().jwk("a")] }),
            Some("keys.0"),
            "fits none",
        ),
        (
            json!({ "algorithms": ["ES256"], "keys": [{ "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" }] }),
            Some("keys.0"),
            "P-256 or P-384",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "issuer": [] }),
            Some("issuer"),
            "must not be empty",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "audience": 7 }),
            Some("audience"),
            "a string or an array of strings",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "forward-claims": { "sub": "x user" } }),
            Some("forward-claims.sub"),
            "not a valid header name",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "forward-claims": { "sub": "Content-Length" } }),
            Some("forward-claims.sub"),
            "framing",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "forward-claims": { "sub": "x-a", "uid": "X-A" } }),
            Some("forward-claims.uid"),
            "two claims",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "forward-claims": { "sub": "authorization" } }),
            Some("forward-claims.sub"),
            "token header",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "leeway": 7200 }),
            Some("leeway"),
            "3600",
        ),
        (
            json!({ "algorithms": ["HS256"], "secret": SECRET, "secrets": SECRET }),
            Some("secrets"),
            "unknown field",
        ),
    ];
    for (config, field, message) in cases {
        let e = config_error(config.clone());
        assert_eq!(e.field.as_deref(), field, "{config}: {e:?}");
        assert!(e.message.contains(message), "{config}: {e:?}");
    }
    let p = policy(json!({
        "algorithms": ["RS256", "ES256", "EdDSA", "HS384"],
        "keys": [Rsa::new().jwk("r"), Ec::new().jwk("e"), { "kty": "oct", "k": b64(&[7; 48]) }],
        "jwks-url": JWKS_URL,
        "issuer": ["a", "b"],
        "audience": "pets",
    }));
    assert_eq!(p.info(), PolicyInfo::request_only());
    // The host's outbound client speaks TLS: https:// JWKS URLs are fine.
    policy(json!({ "algorithms": ["ES256"], "jwks-url": "https://idp.test/jwks.json" }));
    let e = config_error(json!({ "algorithms": ["ES256"], "jwks-url": "https://" }));
    assert_eq!(e.field.as_deref(), Some("jwks-url"), "{e:?}");
}

// ---------------------------------------------------------------------------
// Accepted tokens

#[test]
fn hs256_forwards_claims_and_overwrites_client_headers() {
    setup();
    let mut p = hs_policy();
    let mut req = bearer(&hs256(claims()));
    req.headers.push(Header::new("x-user-id", "mallory"));
    req.headers.push(Header::new("x-scopes", "admin"));
    let edits = accepted(&mut p, &req);
    assert_eq!(
        edits.headers,
        vec![
            // forward-claims is a sorted table: scope, then sub.
            HeaderOp::remove("x-scopes"),
            HeaderOp::set("x-user-id", "alice"),
        ]
    );
    assert_eq!(edits.consumer, None);
    assert_eq!(calls(), vec![("HS256".to_string(), "secret".to_string())]);

    let mut c = claims();
    c["scope"] = json!("read write");
    c["aud"] = json!(["other", "orders"]);
    let edits = accepted(&mut p, &bearer(&hs256(c)));
    assert!(edits
        .headers
        .contains(&HeaderOp::set("x-scopes", "read write")));
}

#[test]
fn rs256_ps256_es256_and_eddsa_with_inline_keys() {
    setup();
    let (rsa, ec, ed) = (Rsa::new(), Ec::new(), Ed::new());
    let mut p = policy(json!({
        "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
        "keys": [rsa.jwk("r1"), ec.jwk("e1"), ed.jwk("d1")],
        "audience": "pets",
    }));
    let tokens = [
        jws(json!({ "alg": "RS256", "kid": "r1" }), claims(), |m| {
            rsa.sign(false, m)
        }),
        jws(json!({ "alg": "PS256", "kid": "r1" }), claims(), |m| {
            rsa.sign(true, m)
        }),
        jws(json!({ "alg": "ES256", "kid": "e1" }), claims(), |m| {
            ec.sign(m)
        }),
        // No kid: every key that fits the algorithm is tried.
        jws(json!({ "alg": "EdDSA" }), claims(), |m| {
            ed.0.sign(m).as_ref().to_vec()
        }),
    ];
    for t in &tokens {
        accepted(&mut p, &bearer(t));
    }
    let kinds: Vec<String> = calls()
        .into_iter()
        .map(|(a, k)| format!("{a}/{k}"))
        .collect();
    assert_eq!(kinds, ["RS256/RSA", "PS256/RSA", "ES256/EC", "EdDSA/OKP"]);
    // A kid that names another key: that key is used, and says no.
    let t = jws(json!({ "alg": "ES256", "kid": "r1" }), claims(), |m| {
        ec.sign(m)
    });
    bad_token(&mut p, &t, "no key matches");
    let other = Ec::new();
    let t = jws(json!({ "alg": "ES256", "kid": "e1" }), claims(), |m| {
        other.sign(m)
    });
    bad_token(&mut p, &t, "signature is invalid");
}

#[test]
fn token_from_query_or_cookie_and_strip() {
    setup();
    let mut p = policy(json!({
        "algorithms": ["HS256"], "secret": SECRET,
        "query": "access_token", "cookie": "jwt", "strip": true,
    }));
    let t = hs256(claims());
    let edits = accepted(&mut p, &bearer(&t));
    assert_eq!(edits.headers, vec![HeaderOp::remove("authorization")]);
    assert_eq!(edits.query, None);

    let req = RequestHead {
        query: Some(format!("a=1&access_token={t}&b=2")),
        ..RequestHead::default()
    };
    let edits = accepted(&mut p, &req);
    assert_eq!(edits.query.as_deref(), Some("a=1&b=2"));

    let req = RequestHead {
        headers: vec![
            Header::new("authorization", "Basic dXNlcjpwYXNz"),
            Header::new("cookie", format!("theme=dark; jwt={t}; lang=en")),
        ],
        ..RequestHead::default()
    };
    let edits = accepted(&mut p, &req);
    assert_eq!(
        edits.headers,
        // The Basic credentials are not the token: they stay.
        vec![HeaderOp::set("cookie", "theme=dark; lang=en")]
    );
}

#[test]
fn custom_header_takes_a_bare_token() {
    setup();
    let mut p = policy(json!({ "algorithms": ["HS256"], "secret": SECRET, "header": "X-JWT" }));
    let req = RequestHead {
        headers: vec![Header::new("x-jwt", hs256(claims()))],
        ..RequestHead::default()
    };
    let edits = accepted(&mut p, &req);
    assert!(edits.headers.is_empty(), "not stripped by default");
}

#[test]
fn consumer_claim_sets_the_consumer() {
    setup();
    harness::add_consumer(
        "pets",
        Consumer {
            id: "alice".into(),
            app: Some("shop".into()),
            ..Consumer::default()
        },
    );
    let mut p =
        policy(json!({ "algorithms": ["HS256"], "secret": SECRET, "consumer-claim": "sub" }));
    let edits = accepted(&mut p, &bearer(&hs256(claims())));
    assert_eq!(edits.consumer.unwrap().app.as_deref(), Some("shop"));
    let mut c = claims();
    c["sub"] = json!("bob");
    bad_token(&mut p, &hs256(c), "not a known consumer");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    bad_token(&mut p, &hs256(c), "not a known consumer");
}

#[test]
fn required_scopes_come_from_scope_or_scp() {
    setup();
    let mut p = policy(json!({
        "algorithms": ["HS256"], "secret": SECRET, "scopes": ["pets:read", "pets:write"],
    }));
    for granted in [
        json!({"scope": "pets:write other pets:read"}),
        json!({"scp": ["pets:read", "pets:write"]}),
        json!({"scp": "pets:read pets:write"}),
        json!({"scope": "pets:read", "scp": ["pets:write"]}),
    ] {
        let mut c = claims();
        c.as_object_mut()
            .unwrap()
            .extend(granted.as_object().unwrap().clone());
        accepted(&mut p, &bearer(&hs256(c)));
    }
    for short in [
        json!({}),
        json!({"scope": "pets:read"}),
        json!({"scope": "pets:readpets:write"}),
        json!({"scope": ["pets:read", "pets:write"]}),
        json!({"scp": [["pets:read"], "pets:write"]}),
        json!({"scope": "PETS:READ PETS:WRITE"}),
    ] {
        let mut c = claims();
        c.as_object_mut()
            .unwrap()
            .extend(short.as_object().unwrap().clone());
        let RequestDecision::Respond(r) = run(&mut p, &bearer(&hs256(c))) else {
            panic!("{short} was accepted");
        };
        assert_eq!(r.status, 403, "{short}");
        assert_eq!(
            header_str(&r.headers, "www-authenticate"),
            Some("Bearer error=\"insufficient_scope\", scope=\"pets:read pets:write\"")
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "insufficient_scope");
    }
    // A bad token is still a 401, not a scope refusal.
    bad_token(&mut p, "a.b.c", "");
    for bad in [
        json!([""]),
        json!(["a b"]),
        json!(["q\"x"]),
        json!(["s".repeat(65)]),
    ] {
        let e = config_error(json!({"algorithms": ["HS256"], "secret": SECRET, "scopes": bad}));
        assert_eq!(e.field.as_deref(), Some("scopes.0"), "{e:?}");
    }
}

#[test]
fn claim_values_as_headers() {
    setup();
    let mut p = policy(json!({
        "algorithms": ["HS256"], "secret": SECRET,
        "forward-claims": { "roles": "x-roles", "n": "x-n", "obj": "x-obj", "evil": "x-evil" },
    }));
    let mut c = claims();
    c["roles"] = json!(["a", "b"]);
    c["n"] = json!(42);
    c["obj"] = json!({ "a": 1 });
    c["evil"] = json!("x\r\nset-cookie: a=b");
    let edits = accepted(&mut p, &bearer(&hs256(c)));
    assert_eq!(
        edits.headers,
        vec![
            HeaderOp::remove("x-evil"),
            HeaderOp::set("x-n", "42"),
            HeaderOp::remove("x-obj"),
            HeaderOp::set("x-roles", "a,b"),
        ]
    );
}

// ---------------------------------------------------------------------------
// Refused tokens

#[test]
fn missing_token_is_invalid_request() {
    setup();
    let mut p = hs_policy();
    refused(
        &mut p,
        &RequestHead::default(),
        "invalid_request",
        "required",
    );
    let basic = RequestHead {
        headers: vec![Header::new("authorization", "Basic dXNlcjpwYXNz")],
        ..RequestHead::default()
    };
    refused(&mut p, &basic, "invalid_request", "required");
    refused(&mut p, &bearer(""), "invalid_request", "empty");
    let mut twice = bearer(&hs256(claims()));
    twice.headers.push(twice.headers[0].clone());
    refused(&mut p, &twice, "invalid_request", "more than once");
    assert!(calls().is_empty());
}

#[test]
fn alg_none_and_algorithms_outside_the_allowlist() {
    setup();
    let mut p = hs_policy();
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(json!({ "alg": alg }).to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        )
    };
    for alg in ["none", "None", "NONE"] {
        bad_token(&mut p, &unsigned(alg), "alg none");
        // Even with something in the signature part.
        bad_token(&mut p, &format!("{}c2ln", unsigned(alg)), "alg none");
    }
    let hs384 = jws(json!({ "alg": "HS384" }), claims(), |m| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA384, SECRET.as_bytes());
        ring::hmac::sign(&k, m).as_ref().to_vec()
    });
    bad_token(&mut p, &hs384, "algorithm is not accepted");
    let weird = jws(json!({ "alg": "XS256" }), claims(), |_| vec![1]);
    bad_token(&mut p, &weird, "algorithm is not accepted");
    assert!(calls().is_empty());
}

#[test]
fn hs_rs_confusion_is_refused() {
    setup();
    let rsa = Rsa::new();
    let jwk = rsa.jwk("r1");
    // The classic attack: an HS256 token keyed with the server's public key.
    let forged = |key: &[u8], kid: Option<&str>| {
        let mut h = json!({ "alg": "HS256" });
        if let Some(kid) = kid {
            h["kid"] = json!(kid);
        }
        jws(h, claims(), |m| hmac(key, m))
    };
    let public_texts = [jwk.to_string(), jwk["n"].as_str().unwrap().to_string()];

    // Only RS256 allowed: refused before any key is touched.
    let mut p = policy(json!({ "algorithms": ["RS256"], "keys": [jwk.clone()] }));
    for key in &public_texts {
        bad_token(
            &mut p,
            &forged(key.as_bytes(), Some("r1")),
            "algorithm is not accepted",
        );
    }
    assert!(calls().is_empty());

    // Both allowed: HS256 is checked with the secret only, never the RSA key.
    let mut p = policy(
        json!({ "algorithms": ["RS256", "HS256"], "keys": [jwk.clone()], "secret": SECRET }),
    );
    for key in &public_texts {
        bad_token(
            &mut p,
            &forged(key.as_bytes(), Some("r1")),
            "signature is invalid",
        );
        bad_token(
            &mut p,
            &forged(key.as_bytes(), None),
            "signature is invalid",
        );
    }
    assert!(calls()
        .iter()
        .all(|(alg, kind)| alg == "HS256" && kind == "secret"));
    // And the host would refuse the pair anyway.
    assert!(ring_verifier(&format!("jwk:{jwk}"), "HS256", b"m", b"s").is_err());
    // An RS256 token still works.
    let t = jws(json!({ "alg": "RS256", "kid": "r1" }), claims(), |m| {
        rsa.sign(false, m)
    });
    accepted(&mut p, &bearer(&t));
}

#[test]
fn malformed_tokens() {
    setup();
    let mut p = hs_policy();
    let good = hs256(claims());
    let parts: Vec<&str> = good.split('.').collect();
    let enc = |v: &str| b64(v.as_bytes());
    let sig = parts[2];
    let body = parts[1];
    let cases: Vec<(String, &str)> = vec![
        ("abc".into(), "three dot-separated parts"),
        (
            format!("{}.{}", parts[0], parts[1]),
            "three dot-separated parts",
        ),
        (format!("{good}.x"), "three dot-separated parts"),
        (
            format!("{}.{body}.{sig}.a.b", parts[0]),
            "three dot-separated parts",
        ),
        (
            format!("*{}.{body}.{sig}", parts[0]),
            "header is not base64url",
        ),
        (
            format!("{}=.{body}.{sig}", parts[0]),
            "header is not base64url",
        ),
        (
            format!("{}.{body}.{sig}!", parts[0]),
            "signature is not base64url",
        ),
        (
            format!("{}.{body}+.{sig}", parts[0]),
            "payload is not base64url",
        ),
        (
            format!("{}.{body}.{sig}", enc("not json")),
            "header is not a JSON object",
        ),
        (
            format!("{}.{body}.{sig}", enc("[\"HS256\"]")),
            "header is not a JSON object",
        ),
        (
            format!("{}.{body}.{sig}", enc(r#"{"alg":"none","alg":"HS256"}"#)),
            "header is not a JSON object",
        ),
        (
            format!("{}.{body}.{sig}", enc(r#"{"typ":"JWT"}"#)),
            "has no alg",
        ),
        (
            format!("{}.{body}.{sig}", enc(r#"{"alg":256}"#)),
            "has no alg",
        ),
        (
            format!("{}.{body}.{sig}", enc(r#"{"alg":"HS256","kid":7}"#)),
            "kid is not a string",
        ),
        (
            format!("{}.{}.{sig}", parts[0], enc("[1]")),
            "payload is not a JSON object",
        ),
        (
            format!("{}.{}.{sig}", parts[0], enc(r#"{"exp":1,"exp":2}"#)),
            "payload is not a JSON object",
        ),
        (format!("{}.{body}.", parts[0]), "has no signature"),
        (
            format!("{}.{}.{sig}", parts[0], "a".repeat(9000)),
            "too large",
        ),
    ];
    for (token, why) in cases {
        bad_token(&mut p, &token, why);
    }
    let crit = jws(
        json!({ "alg": "HS256", "crit": ["exp"], "exp": 1 }),
        claims(),
        |m| hmac(SECRET.as_bytes(), m),
    );
    bad_token(&mut p, &crit, "critical header");
    // None of these reached a signature check.
    assert!(calls().is_empty());
}

#[test]
fn time_claims_with_leeway() {
    setup();
    let mut p = hs_policy();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        hs256(c)
    };
    // exp: refused from exp + leeway (30 s) on.
    accepted(&mut p, &bearer(&with(&|c| c["exp"] = json!(NOW - 29))));
    bad_token(&mut p, &with(&|c| c["exp"] = json!(NOW - 30)), "expired");
    bad_token(&mut p, &with(&|c| c["exp"] = json!(NOW - 3600)), "expired");
    bad_token(
        &mut p,
        &with(&|c| c["exp"] = json!("tomorrow")),
        "not a number",
    );
    bad_token(
        &mut p,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        "no expiry",
    );
    // nbf and iat: refused when more than the leeway in the future.
    accepted(&mut p, &bearer(&with(&|c| c["nbf"] = json!(NOW + 30))));
    bad_token(
        &mut p,
        &with(&|c| c["nbf"] = json!(NOW + 31)),
        "not valid yet",
    );
    accepted(
        &mut p,
        &bearer(&with(&|c| c["iat"] = json!(NOW as f64 + 29.5))),
    );
    bad_token(
        &mut p,
        &with(&|c| c["iat"] = json!(NOW + 120)),
        "issued in the future",
    );

    let mut lax = policy(
        json!({ "algorithms": ["HS256"], "secret": SECRET, "require-exp": false, "leeway": 0 }),
    );
    accepted(
        &mut lax,
        &bearer(&with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        })),
    );
    bad_token(&mut lax, &with(&|c| c["exp"] = json!(NOW)), "expired");
}

#[test]
fn issuer_and_audience() {
    setup();
    let mut p = hs_policy();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v;
        }
        hs256(c)
    };
    bad_token(&mut p, &with("iss", json!("https://evil.test")), "issuer");
    bad_token(&mut p, &with("iss", Value::Null), "issuer");
    bad_token(&mut p, &with("iss", json!(["https://idp.test"])), "issuer");
    bad_token(&mut p, &with("aud", json!("billing")), "audience");
    bad_token(&mut p, &with("aud", json!([])), "audience");
    bad_token(&mut p, &with("aud", json!(["billing", 7])), "audience");
    bad_token(&mut p, &with("aud", Value::Null), "audience");
    accepted(&mut p, &bearer(&with("aud", json!(["billing", "pets"]))));
    accepted(&mut p, &bearer(&with("aud", json!("orders"))));
}

#[test]
fn bad_signatures() {
    setup();
    let mut p = hs_policy();
    let good = hs256(claims());
    let (input, sig) = good.rsplit_once('.').unwrap();
    // Tampered payload, original signature.
    let mut c = claims();
    c["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{sig}",
        input.split('.').next().unwrap(),
        b64(c.to_string().as_bytes())
    );
    bad_token(&mut p, &tampered, "signature is invalid");
    // Signed with another secret.
    let other = jws(json!({ "alg": "HS256" }), claims(), |m| {
        hmac(b"another secret, also 32 bytes long", m)
    });
    bad_token(&mut p, &other, "signature is invalid");
    // A truncated signature.
    bad_token(
        &mut p,
        &format!("{input}.{}", &sig[..20]),
        "signature is invalid",
    );
    accepted(&mut p, &bearer(&good));
}

// ---------------------------------------------------------------------------
// JWKS

fn jwks_answer(keys: &[Value]) -> IncomingResponse {
    IncomingResponse {
        status: 200,
        headers: vec![Header::new("content-type", "application/json")],
        body: json!({ "keys": keys }).to_string().into_bytes(),
    }
}

fn jwks_policy() -> Jwt {
    policy(json!({
        "algorithms": ["ES256", "EdDSA"],
        "jwks-url": JWKS_URL,
        "jwks-cache": 300,
        "jwks-min-refetch": 10,
        "audience": "pets",
    }))
}

#[test]
fn jwks_is_cached_and_refetched_for_a_new_kid_at_most_every_min_refetch() {
    setup();
    let (k1, k2, k3) = (Ec::new(), Ec::new(), Ed::new());
    let token = |k: &Ec, kid: &str| {
        jws(json!({ "alg": "ES256", "kid": kid }), claims(), |m| {
            k.sign(m)
        })
    };
    harness::answer(JWKS_URL, jwks_answer(&[k1.jwk("k1")]));
    // Each request is a fresh instance: a new policy value every time.
    accepted(&mut jwks_policy(), &bearer(&token(&k1, "k1")));
    accepted(&mut jwks_policy(), &bearer(&token(&k1, "k1")));
    assert_eq!(harness::http_calls().len(), 1, "cached");

    // Rotation: k2 appears. Within jwks-min-refetch of the last fetch the
    // unknown kid does not trigger a fetch.
    harness::answer(JWKS_URL, jwks_answer(&[k1.jwk("k1"), k2.jwk("k2")]));
    harness::set_now_ms((NOW + 5) * 1000);
    bad_token(&mut jwks_policy(), &token(&k2, "k2"), "no key matches");
    assert_eq!(harness::http_calls().len(), 1);
    // Later it does, once.
    harness::set_now_ms((NOW + 11) * 1000);
    accepted(&mut jwks_policy(), &bearer(&token(&k2, "k2")));
    assert_eq!(harness::http_calls().len(), 2);
    accepted(&mut jwks_policy(), &bearer(&token(&k1, "k1")));
    // A stream of unknown kids costs at most one fetch per 10 s.
    for _ in 0..5 {
        bad_token(&mut jwks_policy(), &token(&k2, "nope"), "no key matches");
    }
    assert_eq!(harness::http_calls().len(), 2);
    // EdDSA key in the set, no kid in the token.
    harness::answer(JWKS_URL, jwks_answer(&[k1.jwk("k1"), k3.jwk("k3")]));
    harness::set_now_ms((NOW + 22) * 1000);
    let t = jws(json!({ "alg": "EdDSA", "kid": "k3" }), claims(), |m| {
        k3.0.sign(m).as_ref().to_vec()
    });
    accepted(&mut jwks_policy(), &bearer(&t));
    assert_eq!(harness::http_calls().len(), 3);
    // k2 was rotated out; after the cache time the set is fetched again.
    harness::set_now_ms((NOW + 22 + 300) * 1000);
    bad_token(&mut jwks_policy(), &token(&k2, "k2"), "no key matches");
    assert_eq!(harness::http_calls().len(), 4);
}

#[test]
fn jwks_failures() {
    setup();
    let k1 = Ec::new();
    let t = jws(json!({ "alg": "ES256", "kid": "k1" }), claims(), |m| {
        k1.sign(m)
    });
    // Never fetched: 503, not 401 (the client is not at fault).
    let RequestDecision::Respond(r) = run(&mut jwks_policy(), &bearer(&t)) else {
        panic!("accepted without keys")
    };
    assert_eq!(r.status, 503);
    assert_eq!(harness::http_calls().len(), 1);
    // A failed fetch also counts for jwks-min-refetch.
    harness::answer(JWKS_URL, jwks_answer(&[k1.jwk("k1")]));
    assert!(
        matches!(run(&mut jwks_policy(), &bearer(&t)), RequestDecision::Respond(r) if r.status == 503)
    );
    assert_eq!(harness::http_calls().len(), 1);
    harness::set_now_ms((NOW + 10) * 1000);
    accepted(&mut jwks_policy(), &bearer(&t));
    assert_eq!(harness::http_calls().len(), 2);
    // The identity provider fails after the cache time: the stale set is
    // still used.
    harness::answer(
        JWKS_URL,
        IncomingResponse {
            status: 500,
            headers: vec![],
            body: b"oops".to_vec(),
        },
    );
    harness::set_now_ms((NOW + 400) * 1000);
    accepted(&mut jwks_policy(), &bearer(&t));
    assert_eq!(harness::http_calls().len(), 3);
    // Not a JWKS, or symmetric keys only: nothing usable.
    harness::reset();
    harness::set_verifier(ring_verifier);
    harness::set_now_ms(NOW * 1000);
    harness::answer(
        JWKS_URL,
        jwks_answer(&[json!({ "kty": "oct", "kid": "k1", "k": b64(SECRET.as_bytes()) })]),
    );
    bad_token(&mut jwks_policy(), &t, "no key matches");
}

#[test]
fn jwks_keys_for_encryption_or_other_algorithms_are_skipped() {
    let k = Ec::new();
    let mut enc = k.jwk("a");
    enc["use"] = json!("enc");
    let mut ops = k.jwk("b");
    ops["key_ops"] = json!(["encrypt"]);
    let mut wrong_alg = k.jwk("c");
    wrong_alg["alg"] = json!("RS256");
    let mut private = k.jwk("d");
    private["d"] = json!("AAAA");
    let mut ok = k.jwk("e");
    ok["alg"] = json!("ES256");
    ok["use"] = json!("sig");
    let body = json!({ "keys": [enc, ops, wrong_alg, private, ok, "junk", { "kty": "RSA" }] });
    let keys = keys::parse_jwks(body.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, ["e"]);
    assert!(keys::parse_jwks(b"[]").is_none());
    assert!(keys::parse_jwks(b"{\"keys\":{}}").is_none());
}
