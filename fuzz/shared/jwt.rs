//! Body of the `jwt` fuzz target, shared by `fuzz/fuzz_targets/jwt.rs` and
//! the corpus replay test `tests/tests/fuzz_corpus.rs` (both include this
//! file with `#[path]`).
//!
//! The standard `jwt` plugin runs natively (its `rlib`), with the SDK's
//! native services and the host's own crypto service
//! (`tollgate::policy::host::crypto::KeyCache`) as the signature checker, so
//! parsing, key selection and claim checks are the plugin's and the
//! signature check is the host's: the pair that runs in the gateway.
//!
//! Properties:
//! - a token is accepted only if its signature is right for the configured
//!   secret or RSA key (checked again here with `ring`), its header is a
//!   JSON object naming an allowed algorithm, and its claims pass `exp`,
//!   `nbf`, `iat`, `iss` and `aud` (checked again here);
//! - what the plugin returns passes the host's checks on plugin output
//!   (`check_response`, `apply_header_ops`, `check_query`);
//! - a client-sent `x-user-id` never survives unless the token says so;
//! - a refusal is a 401 with a challenge, and never echoes the token;
//! - the host's `import_jwk` never panics on any text.

#![allow(dead_code)]

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt::Jwt;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use tollgate::policy::host::crypto::KeyCache;
use tollgate_policy_sdk::services::harness;
use tollgate_policy_sdk::{
    parse_config, Call, CallContext, Header, HeaderOp, Policy, RequestDecision, RequestHead,
};

/// The clock the plugin sees, in seconds.
pub const NOW: i64 = 1_700_000_000;
pub const SECRET: &str = "an HS256 fuzzing secret of 32 bytes+";
const LEEWAY: f64 = 30.0;
const ISSUER: &str = "https://idp.test";
const AUDIENCES: [&str; 2] = ["pets", "orders"];
/// The plugin's own test key (2048-bit RSA, PKCS#1 DER).
const RSA_DER: &[u8] = include_bytes!("../../plugins/jwt/src/testdata/rsa2048.der");

thread_local! {
    /// The host's key cache, as the gateway keeps one per process.
    static KEYS: KeyCache = KeyCache::default();
    static POLICY: RefCell<Option<Jwt>> = const { RefCell::new(None) };
}

/// The native `crypto.verify` of the SDK harness, answered by the host.
fn host_verifier(source: &str, alg: &str, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
    KEYS.with(|keys| {
        let handle = match source.split_once(':') {
            Some(("jwk", jwk)) => keys.import_jwk(jwk)?,
            Some(("secret", s)) => keys.import_secret(s.as_bytes())?,
            _ => return Err(format!("unknown key source {source:?}")),
        };
        keys.verify(alg, handle, msg, sig)
    })
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn rsa() -> ring::signature::RsaKeyPair {
    ring::signature::RsaKeyPair::from_der(RSA_DER).expect("the test RSA key")
}

/// The RSA public key as (n, e).
fn rsa_public() -> (Vec<u8>, Vec<u8>) {
    let c: ring::signature::RsaPublicKeyComponents<Vec<u8>> = rsa().public().into();
    (c.n, c.e)
}

fn config() -> Value {
    let (n, e) = rsa_public();
    json!({
        "algorithms": ["HS256", "RS256"],
        "secret": SECRET,
        "keys": [{ "kty": "RSA", "kid": "rsa1", "n": b64(&n), "e": b64(&e) }],
        "issuer": ISSUER,
        "audience": AUDIENCES,
        "query": "access_token",
        "cookie": "tok",
        "strip": true,
        "forward-claims": { "sub": "x-user-id", "scope": "x-scopes" },
    })
}

/// Where the client puts the token.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Place {
    Bearer,
    Query,
    Cookie,
    /// The header twice: must be refused as ambiguous.
    TwoHeaders,
}

/// How the token is signed.
#[derive(Debug, Clone, Arbitrary)]
pub enum Sig {
    /// HMAC-SHA256 with the configured secret.
    Hs256,
    /// RS256 with the configured RSA key.
    Rs256,
    /// The right HS256 signature with one bit flipped.
    Flipped(u16),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A claim value, biased towards the interesting ones.
#[derive(Debug, Clone, Arbitrary)]
pub enum Time {
    /// NOW plus this many seconds.
    Offset(i16),
    Float(f64),
    Text(String),
    Big(i64),
}

impl Time {
    fn json(&self) -> Value {
        match self {
            Time::Offset(d) => json!(NOW + i64::from(*d)),
            Time::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Time::Text(s) => json!(s),
            Time::Big(n) => json!(n),
        }
    }
}

/// Claims built from parts, so the fuzzer reaches the claim checks with
/// correctly signed tokens.
#[derive(Debug, Clone, Arbitrary)]
pub struct Claims {
    pub alg: u8,
    pub kid: Option<String>,
    pub typ: bool,
    pub crit: bool,
    pub exp: Option<Time>,
    pub nbf: Option<Time>,
    pub iat: Option<Time>,
    /// 0: the right issuer, 1: another, 2: a number.
    pub iss: Option<u8>,
    /// 0: "pets", 1: ["x", "orders"], 2: "other", 3: [1], 4: ["PETS"].
    pub aud: Option<u8>,
    pub sub: Option<String>,
    pub scope: Option<Vec<String>>,
    /// Appended raw to the payload JSON, e.g. a duplicate member.
    pub tail: Option<String>,
}

const ALGS: [&str; 8] = [
    "HS256", "RS256", "none", "None", "HS384", "ES256", "hs256", "PS256",
];

impl Claims {
    fn header(&self) -> String {
        let mut h = Map::new();
        h.insert(
            "alg".into(),
            json!(ALGS[usize::from(self.alg) % ALGS.len()]),
        );
        if let Some(k) = &self.kid {
            h.insert("kid".into(), json!(k));
        }
        if self.typ {
            h.insert("typ".into(), json!("JWT"));
        }
        if self.crit {
            h.insert("crit".into(), json!(["exp"]));
        }
        Value::Object(h).to_string()
    }

    fn payload(&self) -> String {
        let mut c = Map::new();
        for (name, t) in [("exp", &self.exp), ("nbf", &self.nbf), ("iat", &self.iat)] {
            if let Some(t) = t {
                c.insert(name.into(), t.json());
            }
        }
        match self.iss {
            None => {}
            Some(0) => {
                c.insert("iss".into(), json!(ISSUER));
            }
            Some(1) => {
                c.insert("iss".into(), json!("https://evil.test"));
            }
            Some(_) => {
                c.insert("iss".into(), json!(7));
            }
        }
        let aud = match self.aud.map(|a| a % 5) {
            None => None,
            Some(0) => Some(json!("pets")),
            Some(1) => Some(json!(["x", "orders"])),
            Some(2) => Some(json!("other")),
            Some(3) => Some(json!([1])),
            Some(_) => Some(json!(["PETS"])),
        };
        if let Some(a) = aud {
            c.insert("aud".into(), a);
        }
        if let Some(s) = &self.sub {
            c.insert("sub".into(), json!(s));
        }
        if let Some(s) = &self.scope {
            c.insert("scope".into(), json!(s));
        }
        let mut text = Value::Object(c).to_string();
        if let Some(tail) = &self.tail {
            // Before the closing brace: `,"exp":1` makes a duplicate.
            text.pop();
            text.push_str(tail);
            text.push('}');
        }
        text
    }
}

/// Input of the `jwt` target.
#[derive(Debug, Arbitrary)]
pub enum Input {
    /// Any token text.
    Raw { token: String, place: Place },
    /// A header and a payload as given, signed as asked.
    Parts {
        header: Vec<u8>,
        payload: Vec<u8>,
        sig: Sig,
        place: Place,
    },
    /// Claims built from parts, signed as asked.
    Built {
        claims: Claims,
        sig: Sig,
        place: Place,
    },
    /// Any text as a JWK for the host's `import_jwk`.
    Jwk(String),
}

fn sign(input: &str, sig: &Sig) -> Vec<u8> {
    let hs = || {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
    };
    match sig {
        Sig::Hs256 => hs(),
        Sig::Rs256 => {
            let key = rsa();
            let mut out = vec![0; key.public().modulus_len()];
            key.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut out,
            )
            .expect("RSA signing");
            out
        }
        Sig::Flipped(bit) => {
            let mut s = hs();
            let bit = usize::from(*bit) % (s.len() * 8);
            s[bit / 8] ^= 1 << (bit % 8);
            s
        }
        Sig::Bytes(b) => b.clone(),
    }
}

fn token(header: &[u8], payload: &[u8], sig: &Sig) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let s = sign(&input, sig);
    format!("{input}.{}", b64(&s))
}

fn request(token: &str, place: Place) -> RequestHead {
    let mut headers = vec![
        Header::new("x-user-id", "mallory"),
        Header::new("accept", "application/json"),
    ];
    let mut query = Some("page=2".to_string());
    match place {
        Place::Bearer => headers.push(Header::new("authorization", format!("Bearer {token}"))),
        Place::TwoHeaders => {
            headers.push(Header::new("authorization", format!("Bearer {token}")));
            headers.push(Header::new("authorization", format!("Bearer {token}")));
        }
        Place::Query => query = Some(format!("page=2&access_token={token}")),
        Place::Cookie => headers.push(Header::new("cookie", format!("a=1; tok={token}"))),
    }
    RequestHead {
        method: "GET".into(),
        path: "/pets".into(),
        query,
        headers,
        ..RequestHead::default()
    }
}

/// The token really carries a right signature (checked without the plugin
/// or the host).
fn signature_is_right(token: &str) -> bool {
    let Some((input, sig)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let Some((h, _)) = input.split_once('.') else {
        return false;
    };
    let Some(alg) = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_string))
    else {
        return false;
    };
    match alg.as_str() {
        "HS256" => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
            ring::hmac::verify(&key, input.as_bytes(), &sig).is_ok()
        }
        "RS256" => {
            let (n, e) = rsa_public();
            ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    input.as_bytes(),
                    &sig,
                )
                .is_ok()
        }
        _ => false,
    }
}

fn claims_of(token: &str) -> Map<String, Value> {
    let p = token.split('.').nth(1).expect("three parts");
    let bytes = URL_SAFE_NO_PAD.decode(p).expect("payload is base64url");
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => m,
        other => panic!("accepted a token whose payload is {other:?}"),
    }
}

/// The claims pass the configured checks (checked again, plainly).
fn assert_claims_pass(c: &Map<String, Value>) {
    let now = NOW as f64;
    let time = |n: &str| c.get(n).map(|v| v.as_f64().expect("a numeric time claim"));
    let exp = time("exp").expect("accepted without exp");
    assert!(now < exp + LEEWAY, "accepted an expired token: exp {exp}");
    if let Some(nbf) = time("nbf") {
        assert!(now + LEEWAY >= nbf, "accepted before nbf {nbf}");
    }
    if let Some(iat) = time("iat") {
        assert!(iat <= now + LEEWAY, "accepted iat {iat} in the future");
    }
    assert_eq!(
        c.get("iss"),
        Some(&json!(ISSUER)),
        "accepted another issuer"
    );
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => AUDIENCES.contains(&a.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .any(|v| v.as_str().is_some_and(|s| AUDIENCES.contains(&s))),
        _ => false,
    };
    assert!(aud_ok, "accepted audience {:?}", c.get("aud"));
}

fn to_host(h: &[Header]) -> Vec<tollgate::policy::Header> {
    h.iter()
        .map(|h| tollgate::policy::Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

fn with_policy<R>(f: impl FnOnce(&mut Jwt) -> R) -> R {
    POLICY.with(|p| {
        let mut p = p.borrow_mut();
        let policy = p.get_or_insert_with(|| {
            parse_config::<Jwt>(&config().to_string())
                .unwrap_or_else(|e| panic!("the fuzz config was refused: {e:?}"))
        });
        f(policy)
    })
}

/// Run the plugin on a request carrying `token` and check what it did.
fn check_token(token: &str, place: Place) {
    harness::reset();
    harness::set_verifier(host_verifier);
    harness::set_now_ms(NOW as u64 * 1000);
    let req = request(token, place);
    let ctx = CallContext {
        api: "pets".into(),
        request_id: "fuzz".into(),
        ..CallContext::default()
    };
    let decision = with_policy(|p| p.on_request(&Call::native(&ctx, &req), None));
    match decision {
        RequestDecision::Continue(edits) => {
            assert!(
                !matches!(place, Place::TwoHeaders),
                "accepted a request with two token headers"
            );
            assert!(
                signature_is_right(token),
                "accepted a forged token {token:?}"
            );
            let claims = claims_of(token);
            assert_claims_pass(&claims);
            // The gateway applies the edits: they must pass its checks.
            let mut headers = to_host(&req.headers);
            let ops: Vec<tollgate::policy::HeaderOp> = edits
                .headers
                .iter()
                .map(|op| match op {
                    HeaderOp::Set(h) => {
                        tollgate::policy::HeaderOp::Set(to_host(std::slice::from_ref(h)).remove(0))
                    }
                    HeaderOp::Append(h) => tollgate::policy::HeaderOp::Append(
                        to_host(std::slice::from_ref(h)).remove(0),
                    ),
                    HeaderOp::Remove(n) => tollgate::policy::HeaderOp::Remove(n.clone()),
                })
                .collect();
            tollgate::policy::apply_header_ops("jwt", &mut headers, ops)
                .unwrap_or_else(|e| panic!("the host refuses the plugin's edits: {e}"));
            if matches!(place, Place::Query) {
                assert!(edits.query.is_some(), "the token stayed in the query");
            }
            if matches!(place, Place::Cookie) {
                assert!(
                    !headers
                        .iter()
                        .any(|h| h.name == "cookie" && h.value.windows(4).any(|w| w == b"tok=")),
                    "the token stayed in the cookie"
                );
            }
            if let Some(q) = &edits.query {
                if req
                    .query
                    .as_deref()
                    .is_some_and(|q| tollgate::policy::check_query("jwt", q).is_ok())
                {
                    tollgate::policy::check_query("jwt", q)
                        .unwrap_or_else(|e| panic!("the host refuses the plugin's query: {e}"));
                }
                assert!(
                    !q.contains("access_token="),
                    "the token stayed in the query"
                );
            }
            let user: Vec<&[u8]> = headers
                .iter()
                .filter(|h| h.name == "x-user-id")
                .map(|h| h.value.as_slice())
                .collect();
            if claims.get("sub") != Some(&json!("mallory")) {
                assert!(
                    !user.contains(&&b"mallory"[..]),
                    "the client's x-user-id survived"
                );
            }
            assert!(
                !headers.iter().any(|h| h.name == "authorization"),
                "the token header was not stripped"
            );
        }
        RequestDecision::Respond(r) => {
            assert_eq!(r.status, 401, "refused with {}", r.status);
            let resp = tollgate::policy::Response {
                status: r.status,
                headers: to_host(&r.headers),
                body: r.body.clone(),
            };
            tollgate::policy::check_response("jwt", &resp)
                .unwrap_or_else(|e| panic!("the host refuses the plugin's 401: {e}"));
            assert!(r.headers.iter().any(|h| h.name == "www-authenticate"));
            serde_json::from_slice::<Value>(&r.body).expect("a JSON error body");
            // A long token that could not be part of the fixed texts.
            if token.len() >= 20 && token.contains('.') && !token.contains(' ') {
                let echoed = r
                    .headers
                    .iter()
                    .map(|h| h.value.as_slice())
                    .chain([r.body.as_slice()])
                    .any(|v| v.windows(token.len()).any(|w| w == token.as_bytes()));
                assert!(!echoed, "the refusal echoes the token");
            }
        }
    }
}

/// The target body. An input that starts like a compact JWS (`eyJ`) is a
/// token sent as `Authorization: Bearer` (so real tokens are seeds as they
/// are); anything else is a structured [`Input`].
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if text.starts_with("eyJ") && !text.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return check_token(text, Place::Bearer);
        }
    }
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input {
        Input::Raw { token, place } => {
            // Only what can arrive: header values and query bytes are
            // checked by hyper before any policy runs.
            if token.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return;
            }
            // Characters that a query, a cookie list or a header value
            // would change: such a token goes, trimmed, in the header,
            // where the plugin sees exactly these bytes.
            let plain = !token
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b"%+&=;,\"".contains(&b) || b >= 0x80);
            if plain {
                check_token(&token, place)
            } else if !token.trim().is_empty() {
                check_token(token.trim(), Place::Bearer)
            }
        }
        Input::Parts {
            header,
            payload,
            sig,
            place,
        } => check_token(&token(&header, &payload, &sig), place),
        Input::Built { claims, sig, place } => {
            let t = token(
                claims.header().as_bytes(),
                claims.payload().as_bytes(),
                &sig,
            );
            check_token(&t, place)
        }
        Input::Jwk(text) => {
            let keys = KeyCache::default();
            if let Ok(h) = keys.import_jwk(&text) {
                // Whatever was imported verifies (true or false) or refuses
                // the algorithm; it never panics.
                for alg in ["HS256", "RS256", "ES256", "ES384", "EdDSA", "PS512", "XX"] {
                    let _ = keys.verify(alg, h, b"a.b", b"sig");
                }
            }
        }
    }
}
