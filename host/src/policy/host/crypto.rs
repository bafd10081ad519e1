//! `tollgate:policy/crypto`: native signature checks for JWT policies. Keys
//! are parsed once (JWK or a shared secret) and kept under a handle;
//! `verify` runs in `ring`.
//! An algorithm must match its key's type, so HS/RS confusion is impossible.

use crate::policy::bindings;
use crate::policy::bindings::service_types::ServiceError;
use crate::policy::StepState;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use std::collections::HashMap;
use std::sync::RwLock;

/// A parsed key.
#[derive(Debug, Clone)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519(Vec<u8>),
    Secret(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// Most keys kept at once (a policy importing keys in a loop cannot grow
/// the host without bound).
const MAX_KEYS: usize = 10_000;

/// Keys by handle, and handles by their source text.
#[derive(Default)]
pub struct KeyCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: Vec<Key>,
    by_source: HashMap<Vec<u8>, u64>,
}

fn b64(field: &str, v: Option<&serde_json::Value>) -> Result<Vec<u8>, String> {
    let s = v
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("JWK field `{field}` is missing or not a string"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("JWK field `{field}` is not base64url"))
}

impl KeyCache {
    fn insert(&self, source: Vec<u8>, key: Key) -> Result<u64, String> {
        if let Some(h) = self.inner.read().unwrap().by_source.get(&source) {
            return Ok(*h);
        }
        let mut inner = self.inner.write().unwrap();
        if let Some(h) = inner.by_source.get(&source) {
            return Ok(*h);
        }
        if inner.keys.len() >= MAX_KEYS {
            return Err(format!("too many keys imported (at most {MAX_KEYS})"));
        }
        inner.keys.push(key);
        let h = inner.keys.len() as u64;
        inner.by_source.insert(source, h);
        Ok(h)
    }

    /// Import a JWK (RSA, EC P-256/P-384, OKP Ed25519, or oct).
    pub fn import_jwk(&self, jwk: &str) -> Result<u64, String> {
        if jwk.len() > 64 << 10 {
            return Err("JWK larger than 64 KiB".into());
        }
        let v: serde_json::Value =
            serde_json::from_str(jwk).map_err(|e| format!("JWK is not JSON: {e}"))?;
        let key = match v.get("kty").and_then(|k| k.as_str()) {
            Some("RSA") => {
                let n = b64("n", v.get("n"))?;
                let e = b64("e", v.get("e"))?;
                if n.len() < 256 {
                    return Err("RSA keys shorter than 2048 bits are refused".into());
                }
                Key::Rsa { n, e }
            }
            Some("EC") => {
                let curve = match v.get("crv").and_then(|c| c.as_str()) {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    other => {
                        return Err(format!(
                            "EC curve {other:?} is not supported (P-256, P-384)"
                        ))
                    }
                };
                let x = b64("x", v.get("x"))?;
                let y = b64("y", v.get("y"))?;
                let len = if curve == Curve::P256 { 32 } else { 48 };
                if x.len() != len || y.len() != len {
                    return Err("EC key coordinates have the wrong length".into());
                }
                let mut point = vec![4u8];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Key::Ec { curve, point }
            }
            Some("OKP") => {
                if v.get("crv").and_then(|c| c.as_str()) != Some("Ed25519") {
                    return Err("OKP keys must be Ed25519".into());
                }
                let x = b64("x", v.get("x"))?;
                if x.len() != 32 {
                    return Err("Ed25519 key must be 32 bytes".into());
                }
                Key::Ed25519(x)
            }
            Some("oct") => Key::Secret(b64("k", v.get("k"))?),
            other => return Err(format!("JWK kty {other:?} is not supported")),
        };
        let mut source = b"jwk:".to_vec();
        source.extend_from_slice(jwk.as_bytes());
        self.insert(source, key)
    }

    /// Import a shared secret for HS* algorithms.
    pub fn import_secret(&self, secret: &[u8]) -> Result<u64, String> {
        if secret.is_empty() || secret.len() > 4096 {
            return Err("secret must be 1 to 4096 bytes".into());
        }
        let mut source = b"secret:".to_vec();
        source.extend_from_slice(secret);
        self.insert(source, Key::Secret(secret.to_vec()))
    }

    /// Check a signature. `Ok(false)`: the signature is wrong.
    pub fn verify(&self, alg: &str, handle: u64, msg: &[u8], sig: &[u8]) -> Result<bool, String> {
        let key = {
            let inner = self.inner.read().unwrap();
            handle
                .checked_sub(1)
                .and_then(|i| inner.keys.get(i as usize))
                .cloned()
                .ok_or_else(|| format!("no key with handle {handle}"))?
        };
        let mismatch = || format!("algorithm {alg} does not fit this key");
        Ok(match (alg, &key) {
            ("HS256" | "HS384" | "HS512", Key::Secret(k)) => {
                let a = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                ring::hmac::verify(&ring::hmac::Key::new(a, k), msg, sig).is_ok()
            }
            ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", Key::Rsa { n, e }) => {
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            (
                "ES256",
                Key::Ec {
                    curve: Curve::P256,
                    point,
                },
            ) => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, sig)
                .is_ok(),
            (
                "ES384",
                Key::Ec {
                    curve: Curve::P384,
                    point,
                },
            ) => UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                .verify(msg, sig)
                .is_ok(),
            ("EdDSA", Key::Ed25519(k)) => UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(msg, sig)
                .is_ok(),
            (
                "HS256" | "HS384" | "HS512" | "RS256" | "RS384" | "RS512" | "PS256" | "PS384"
                | "PS512" | "ES256" | "ES384" | "EdDSA",
                _,
            ) => return Err(mismatch()),
            _ => return Err(format!("algorithm {alg:?} is not supported")),
        })
    }
}

impl bindings::crypto::Host for StepState {
    fn import_jwk(&mut self, jwk: String) -> Result<u64, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .import_jwk(&jwk)
            .map_err(ServiceError::Invalid)
    }

    fn import_secret(&mut self, secret: Vec<u8>) -> Result<u64, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .import_secret(&secret)
            .map_err(ServiceError::Invalid)
    }

    fn verify(
        &mut self,
        alg: String,
        key: u64,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .verify(&alg, key, &message, &signature)
            .map_err(ServiceError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_confusion() {
        let c = KeyCache::default();
        let h = c.import_secret(b"s3cret").unwrap();
        assert_eq!(c.import_secret(b"s3cret").unwrap(), h);
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret"),
            b"m",
        );
        assert!(c.verify("HS256", h, b"m", tag.as_ref()).unwrap());
        assert!(!c.verify("HS256", h, b"n", tag.as_ref()).unwrap());
        assert!(c.verify("RS256", h, b"m", tag.as_ref()).is_err());
        assert!(c.verify("none", h, b"m", b"").is_err());
        assert!(c.verify("HS256", 999, b"m", b"").is_err());
    }

    #[test]
    fn ed25519_jwk() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        use ring::signature::KeyPair;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
        let c = KeyCache::default();
        let h = c
            .import_jwk(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#))
            .unwrap();
        let sig = kp.sign(b"hello");
        assert!(c.verify("EdDSA", h, b"hello", sig.as_ref()).unwrap());
        assert!(!c.verify("EdDSA", h, b"hellO", sig.as_ref()).unwrap());
        assert!(c.verify("HS256", h, b"hello", sig.as_ref()).is_err());
    }

    #[test]
    fn bad_jwks() {
        let c = KeyCache::default();
        for bad in [
            "not json",
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
            r#"{"kty":"EC","crv":"P-521","x":"","y":""}"#,
            r#"{"kty":"OKP","crv":"X25519","x":""}"#,
            r#"{"kty":"oct","k":"!!!"}"#,
            r#"{"kty":"none"}"#,
        ] {
            assert!(c.import_jwk(bad).is_err(), "{bad}");
        }
    }
}
