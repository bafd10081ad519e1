//! Verification keys: JWKs (inline or from a JWKS URL) and the shared
//! secret, and the JWKS cache kept in the host's per-API cache (a policy
//! instance lives for one request, so nothing can be kept in memory).

use crate::token::{Alg, Family};
use serde_json::{Map, Value};
use tollgate_policy_sdk::services::{cache, http, CachedResponse};
use tollgate_policy_sdk::{header_str, log, Header};

/// Most keys taken from one JWKS document.
const MAX_JWKS_KEYS: usize = 100;
/// Upper bound of the outbound call; the host also caps it at the step's
/// remaining deadline.
const JWKS_TIMEOUT_MS: u32 = 5_000;

/// One public key (or, inline only, an `oct` secret) as a JWK.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub family: Family,
    /// The JWK's own `alg`, if it names one.
    pub alg: Option<Alg>,
    /// The JWK as JSON, handed to the host's `crypto.import-jwk`.
    pub json: String,
}

impl Jwk {
    /// Whether this key may check a token signed with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

fn has_str(map: &Map<String, Value>, name: &str) -> bool {
    matches!(map.get(name), Some(Value::String(s)) if !s.is_empty())
}

/// Parse a JWK. `Ok(None)`: a valid key that is not for signatures (`use`
/// or `key_ops` say so). `oct` keys are accepted only if `allow_oct` (they
/// are secrets: never taken from a JWKS URL).
pub fn parse_jwk(map: &Map<String, Value>, allow_oct: bool) -> Result<Option<Jwk>, String> {
    let kty = map.get("kty").and_then(Value::as_str).unwrap_or("");
    let crv = map.get("crv").and_then(Value::as_str);
    let family = match (kty, crv) {
        ("RSA", _) => Family::Rsa,
        ("EC", Some("P-256")) => Family::P256,
        ("EC", Some("P-384")) => Family::P384,
        ("EC", _) => return Err("EC keys must have crv P-256 or P-384".into()),
        ("OKP", Some("Ed25519")) => Family::Ed25519,
        ("OKP", _) => return Err("OKP keys must have crv Ed25519".into()),
        ("oct", _) if allow_oct => Family::Hmac,
        ("oct", _) => return Err("symmetric (oct) keys are not taken from a JWKS URL".into()),
        ("", _) => return Err("the key has no kty".into()),
        (other, _) => {
            return Err(format!(
                "kty {other:?} is not supported (RSA, EC, OKP, oct)"
            ))
        }
    };
    let required: &[&str] = match family {
        Family::Rsa => &["n", "e"],
        Family::P256 | Family::P384 => &["x", "y"],
        Family::Ed25519 => &["x"],
        Family::Hmac => &["k"],
    };
    for member in required {
        if !has_str(map, member) {
            return Err(format!("a {kty} key needs the member {member:?}"));
        }
    }
    if family != Family::Hmac {
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            if map.contains_key(private) {
                return Err(format!(
                    "the key has the private member {private:?}: give only the public key"
                ));
            }
        }
    }
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid must be a string".into()),
    };
    let alg = match map.get("alg") {
        None => None,
        Some(Value::String(a)) => match Alg::parse(a) {
            Some(alg) if alg.family() == family => Some(alg),
            Some(_) => return Err(format!("alg {a:?} does not fit a {kty} key")),
            None => return Err(format!("alg {a:?} is not supported")),
        },
        Some(_) => return Err("alg must be a string".into()),
    };
    match map.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Ok(None),
    }
    if let Some(ops) = map.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verifies {
            return Ok(None);
        }
    }
    Ok(Some(Jwk {
        kid,
        family,
        alg,
        json: Value::Object(map.clone()).to_string(),
    }))
}

/// The signature keys of a JWKS document; keys this policy cannot use are
/// skipped. `None` if the document is not a JWKS.
pub fn parse_jwks(body: &[u8]) -> Option<Vec<Jwk>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let keys = doc.get("keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(Value::as_object)
            .filter_map(|k| parse_jwk(k, false).ok().flatten())
            .take(MAX_JWKS_KEYS)
            .collect(),
    )
}

/// Where and how long JWKS documents are kept.
pub struct JwksSource {
    pub url: String,
    /// How long a fetched document is used without asking again.
    pub fresh_ms: u64,
    /// At most one fetch per this many ms.
    pub min_refetch_ms: u64,
}

/// What [`JwksSource::keys`] found.
pub enum Jwks {
    Keys(Vec<Jwk>),
    /// No document: never fetched successfully, or it expired and the
    /// identity provider did not answer.
    Unavailable,
}

const FETCHED_AT: &str = "x-tollgate-jwt-fetched-at";

impl JwksSource {
    fn doc_key(&self) -> String {
        format!("tollgate-jwt\0jwks\0{}", self.url)
    }
    fn fetch_key(&self) -> String {
        format!("tollgate-jwt\0fetched\0{}", self.url)
    }

    /// The JWKS keys: from the cache while fresh; otherwise (or when
    /// `refetch` asks, for an unknown `kid`) fetched again, unless a fetch
    /// happened within `min_refetch_ms`. A failed fetch falls back to the
    /// stale document, kept for up to another `fresh_ms` (at most a day).
    pub fn keys(&self, now_ms: u64, refetch: bool) -> Jwks {
        let cached = cache::get(&self.doc_key()).and_then(|(doc, _)| {
            let at: u64 = header_str(&doc.headers, FETCHED_AT)?.parse().ok()?;
            Some((at, doc.body))
        });
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) < self.fresh_ms);
        let from_cache =
            |cached: Option<(u64, Vec<u8>)>| match cached.and_then(|(_, b)| parse_jwks(&b)) {
                Some(keys) => Jwks::Keys(keys),
                None => Jwks::Unavailable,
            };
        if fresh && !refetch {
            return from_cache(cached);
        }
        if cache::get(&self.fetch_key()).is_some() {
            // Fetched (or tried) very recently: do not ask again yet.
            return from_cache(cached);
        }
        let marker = CachedResponse {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        };
        if let Err(e) = cache::put(&self.fetch_key(), &marker, self.min_refetch_ms) {
            log::warn(&format!("jwt: cannot record the JWKS fetch time: {e:?}"));
        }
        match self.fetch() {
            Ok((body, keys)) => {
                let doc = CachedResponse {
                    status: 200,
                    headers: vec![Header::new(FETCHED_AT, now_ms.to_string())],
                    body,
                };
                let ttl = self.fresh_ms.saturating_mul(2).min(86_400_000);
                if let Err(e) = cache::put(&self.doc_key(), &doc, ttl) {
                    log::warn(&format!("jwt: cannot cache the JWKS: {e:?}"));
                }
                Jwks::Keys(keys)
            }
            Err(why) => {
                log::warn(&format!(
                    "jwt: fetching the JWKS from {} failed: {why}",
                    self.url
                ));
                from_cache(cached)
            }
        }
    }

    fn fetch(&self) -> Result<(Vec<u8>, Vec<Jwk>), String> {
        let resp = http::get(&self.url, JWKS_TIMEOUT_MS).map_err(|e| format!("{e:?}"))?;
        if resp.status != 200 {
            return Err(format!("status {}", resp.status));
        }
        let keys =
            parse_jwks(&resp.body).ok_or("the answer is not a JWKS (a JSON object with `keys`)")?;
        Ok((resp.body, keys))
    }
}
