//! The compact JWS serialisation (RFC 7515 §7.1) and JWT claims (RFC 7519),
//! parsed by hand: three base64url segments, a JSON header, a JSON payload.
//! Nothing here checks a signature; [`Token::signing_input`] and
//! [`Token::signature`] go to the host's `crypto.verify`.
//!
//! Hand-written: `jwt-compact` and `jsonwebtoken` add 30 and 70 KiB to the
//! component and hide the signing input or the specific refusals (figures in
//! the README, "Why the JWS parsing is hand-written").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The JWS algorithms the host verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A shared secret (`secret`, or a JWK with `kty = "oct"`).
    Hmac,
    /// `kty = "RSA"`.
    Rsa,
    /// `kty = "EC"`, `crv = "P-256"`.
    P256,
    /// `kty = "EC"`, `crv = "P-384"`.
    P384,
    /// `kty = "OKP"`, `crv = "Ed25519"`.
    Ed25519,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The algorithm called exactly `name` (JWS names are case-sensitive).
    pub fn parse(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 => Family::P256,
            Alg::ES384 => Family::P384,
            Alg::EdDSA => Family::Ed25519,
        }
    }

    /// The smallest HMAC key, in bytes, RFC 7518 §3.2 allows.
    pub fn min_secret_len(self) -> usize {
        match self {
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 32,
        }
    }
}

/// Why a token was refused, as told to the client (`error_description`)
/// and written to the log. The texts never contain the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    TooLarge,
    Malformed(&'static str),
    AlgNone,
    AlgNotAllowed,
    Critical,
    NoKey,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingExp,
    BadIssuer,
    BadAudience,
    UnknownConsumer,
}

impl Reject {
    pub fn description(&self) -> &'static str {
        match self {
            Reject::TooLarge => "the token is too large",
            Reject::Malformed(what) => what,
            Reject::AlgNone => "unsigned tokens (alg none) are not accepted",
            Reject::AlgNotAllowed => "the token's algorithm is not accepted",
            Reject::Critical => "the token has critical header parameters that are not understood",
            Reject::NoKey => "no key matches the token",
            Reject::BadSignature => "the token's signature is invalid",
            Reject::Expired => "the token has expired",
            Reject::NotYetValid => "the token is not valid yet",
            Reject::IssuedInFuture => "the token was issued in the future",
            Reject::MissingExp => "the token has no expiry (exp)",
            Reject::BadIssuer => "the token's issuer is not accepted",
            Reject::BadAudience => "the token's audience is not accepted",
            Reject::UnknownConsumer => "the token's subject is not a known consumer",
        }
    }
}

/// A token whose structure is valid and whose algorithm is allowed; its
/// signature is not checked yet.
#[derive(Debug)]
pub struct Token<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: what the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
    pub claims: Map<String, Value>,
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, Reject> {
    // Strict: no padding, no whitespace, no non-canonical trailing bits.
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Reject::Malformed(what))
}

/// Parse a compact JWS and check its header against `allowed`.
pub fn parse<'a>(token: &'a str, allowed: &[Alg]) -> Result<Token<'a>, Reject> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reject::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reject::Malformed(
            "the token is not a JWS in compact form (three dot-separated parts)",
        ));
    };
    let header = b64(h, "the token's header is not base64url")?;
    let header = strict_object(&header).ok_or(Reject::Malformed(
        "the token's header is not a JSON object (with unique members)",
    ))?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.as_str(),
        _ => return Err(Reject::Malformed("the token's header has no alg")),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(Reject::AlgNone);
    }
    let alg = Alg::parse(alg)
        .filter(|a| allowed.contains(a))
        .ok_or(Reject::AlgNotAllowed)?;
    // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names
    // extensions it does not understand. This policy understands none.
    if header.contains_key("crit") {
        return Err(Reject::Critical);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(Reject::Malformed("the token's kid is not a string")),
    };
    let payload = b64(p, "the token's payload is not base64url")?;
    let claims = strict_object(&payload).ok_or(Reject::Malformed(
        "the token's payload is not a JSON object (with unique members)",
    ))?;
    let signature = b64(s, "the token's signature is not base64url")?;
    if signature.is_empty() {
        return Err(Reject::Malformed("the token has no signature"));
    }
    Ok(Token {
        alg,
        kid,
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        signature,
        claims,
    })
}

/// A JSON object whose top-level members are unique (RFC 7515 §4 and RFC
/// 7519 §4: a duplicate `alg` or `exp` must not be silently resolved).
pub fn strict_object(json: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice::<StrictObject>(json)
        .ok()
        .map(|o| o.0)
}

struct StrictObject(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(A::Error::custom("duplicate member"));
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        d.deserialize_map(V)
    }
}

/// The registered claims this policy checks.
pub struct Checks<'a> {
    /// Seconds since the epoch.
    pub now: f64,
    pub leeway: f64,
    pub require_exp: bool,
    pub issuers: &'a [String],
    pub audiences: &'a [String],
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Reject> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(Reject::Malformed(
            "the token has a time claim that is not a number",
        )),
        Some(_) => Err(Reject::Malformed(
            "the token has a time claim that is not a number",
        )),
    }
}

/// Check `exp`, `nbf`, `iat`, `iss` and `aud`.
pub fn check_claims(claims: &Map<String, Value>, c: &Checks) -> Result<(), Reject> {
    match numeric_date(claims, "exp")? {
        Some(exp) if c.now >= exp + c.leeway => return Err(Reject::Expired),
        None if c.require_exp => return Err(Reject::MissingExp),
        _ => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if c.now + c.leeway < nbf {
            return Err(Reject::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > c.now + c.leeway {
            return Err(Reject::IssuedInFuture);
        }
    }
    if !c.issuers.is_empty() {
        match claims.get("iss") {
            Some(Value::String(iss)) if c.issuers.contains(iss) => {}
            _ => return Err(Reject::BadIssuer),
        }
    }
    if !c.audiences.is_empty() {
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => c.audiences.contains(aud),
            Some(Value::Array(auds)) => auds.iter().any(|a| {
                a.as_str()
                    .is_some_and(|a| c.audiences.iter().any(|c| c == a))
            }),
            _ => false,
        };
        if !ok {
            return Err(Reject::BadAudience);
        }
    }
    Ok(())
}
