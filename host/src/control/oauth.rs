//! The gateway's OAuth 2.0 authorization server: the client credentials
//! grant (RFC 6749 §4.4) at `/oauth2/token`, revocation (RFC 7009),
//! introspection (RFC 7662), the signing keys as a JWKS (RFC 7517) and the
//! server's metadata (RFC 8414). See docs/oauth.md.
//!
//! Access tokens are JWTs (RFC 9068 `at+jwt`) signed with ES256 by a key
//! the registry keeps; `sub` and `client_id` name the client, `scope` the
//! scopes granted (a subset of the plan's), `jti` the token's record. The
//! record is written durably before the token is handed out, so the data
//! path's lookup by `jti` (the `jwt` policy with `consumer-claim = "jti"`)
//! sees revocations and a revoked or suspended client at once.

use crate::control::admin::model::{IssuedToken, SigningKey, Ts};
use crate::control::admin::registry::{ClientRefusal, TOKEN_ID_PREFIX};
use crate::control::admin::{AdminError, Registry};
use crate::domain::oauth::{self, AuthorizationServer, OAuthAnswer, OAuthCall};
use crate::manifest::OAuthSpec;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::sync::{Arc, Mutex};

/// The authorization server over the control plane's registry.
pub struct OAuthServer {
    registry: Arc<Registry>,
    spec: OAuthSpec,
    rng: SystemRandom,
    /// The signing key last used, parsed (parsing checks the key).
    signer: Mutex<Option<(String, Arc<EcdsaKeyPair>)>>,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServer").finish_non_exhaustive()
    }
}

/// An endpoint's refusal: RFC 6749 §5.2's `error` and a description.
struct Refusal {
    status: u16,
    error: &'static str,
    description: String,
}

fn refuse(status: u16, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        description: description.into(),
    }
}

const ALG: &signature::EcdsaSigningAlgorithm = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;

impl OAuthServer {
    /// The server, with a signing key made if the store has none.
    pub fn start(registry: Arc<Registry>, spec: OAuthSpec) -> Result<Arc<OAuthServer>, AdminError> {
        let server = Arc::new(OAuthServer {
            registry,
            spec,
            rng: SystemRandom::new(),
            signer: Mutex::new(None),
        });
        // A data node of a cluster signs with the control node's keys, which
        // reach it with the rest of the registry.
        let replica = server.registry.role() == Some(crate::cluster::Role::Data);
        if !replica
            && !server
                .registry
                .signing_keys()?
                .iter()
                .any(|k| k.retired_at.is_none())
        {
            server.rotate_key("init")?;
        }
        Ok(server)
    }

    /// Seconds an access token lives.
    fn lifetime(&self) -> u64 {
        self.spec.token_lifetime.0.as_secs()
    }

    /// Make a new signing key and sign with it from now on. The previous
    /// keys stay in the JWKS until every token they signed has expired.
    pub fn rotate_key(&self, actor: &str) -> Result<Value, AdminError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(ALG, &self.rng)
            .map_err(|_| AdminError::unavailable("could not make a signing key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(ALG, pkcs8.as_ref(), &self.rng)
            .map_err(|_| AdminError::unavailable("the new signing key does not read back"))?;
        let point = pair.public_key().as_ref();
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let (x, y) = (&point[1..33], &point[33..65]);
        let now = Ts::now();
        let kid = format!("k{}", hex::encode(&sha2::Sha256::digest(point)[..8]));
        let key = SigningKey {
            kid: kid.clone(),
            alg: "ES256".into(),
            pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
            created_at: now,
            retired_at: None,
        };
        let keep = self.published_for_ms();
        self.registry
            .add_signing_key(actor, &key, Ts(now.0.saturating_sub(keep)))?;
        *self.signer.lock().unwrap_or_else(|p| p.into_inner()) = Some((kid, Arc::new(pair)));
        Ok(key_view(&key))
    }

    /// How long a retired key stays published: a token's lifetime and a
    /// minute of clock skew.
    fn published_for_ms(&self) -> u64 {
        (self.lifetime() + 60) * 1000
    }

    /// The signing keys as the admin API shows them (never the private
    /// part), newest first.
    pub fn keys(&self) -> Result<Value, AdminError> {
        let keys = self.registry.signing_keys()?;
        Ok(json!({"items": keys.iter().rev().map(key_view).collect::<Vec<_>>()}))
    }

    /// The key that signs now, parsed once.
    fn signer(&self) -> Result<(String, Arc<EcdsaKeyPair>), Refusal> {
        let keys = self.registry.signing_keys().map_err(|_| unavailable())?;
        let current = keys
            .iter()
            .rev()
            .find(|k| k.retired_at.is_none())
            .ok_or_else(unavailable)?;
        let mut cached = self.signer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((kid, pair)) = cached.as_ref().filter(|(kid, _)| *kid == current.kid) {
            return Ok((kid.clone(), pair.clone()));
        }
        let der = URL_SAFE_NO_PAD
            .decode(&current.pkcs8)
            .map_err(|_| unavailable())?;
        let pair =
            Arc::new(EcdsaKeyPair::from_pkcs8(ALG, &der, &self.rng).map_err(|_| unavailable())?);
        *cached = Some((current.kid.clone(), pair.clone()));
        Ok((current.kid.clone(), pair))
    }

    /// The JWKS: every key whose tokens may still be live.
    fn jwks(&self, now: Ts) -> Result<Value, Refusal> {
        let keys = self.registry.signing_keys().map_err(|_| unavailable())?;
        let keep = self.published_for_ms();
        let published: Vec<Value> = keys
            .iter()
            .rev()
            .filter(|k| k.retired_at.is_none_or(|at| at.0 + keep > now.0))
            .map(|k| {
                json!({"kty": "EC", "crv": "P-256", "x": k.x, "y": k.y,
                       "kid": k.kid, "alg": k.alg, "use": "sig"})
            })
            .collect();
        Ok(json!({ "keys": published }))
    }

    fn issuer(&self, call: &OAuthCall<'_>) -> String {
        self.spec
            .issuer
            .clone()
            .unwrap_or_else(|| call.origin.to_string())
    }

    fn metadata(&self, call: &OAuthCall<'_>) -> Value {
        let iss = self.issuer(call);
        let base = iss.trim_end_matches('/');
        json!({
            "issuer": iss,
            "token_endpoint": format!("{base}{}", oauth::TOKEN_PATH),
            "jwks_uri": format!("{base}{}", oauth::JWKS_PATH),
            "revocation_endpoint": format!("{base}{}", oauth::REVOKE_PATH),
            "introspection_endpoint": format!("{base}{}", oauth::INTROSPECT_PATH),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `POST /oauth2/token`.
    fn token(&self, call: &OAuthCall<'_>) -> Result<Value, Refusal> {
        let form = Form::read(call)?;
        let (client, plan) = self.client(call, &form)?;
        match form.get("grant_type") {
            None => return Err(refuse(400, "invalid_request", "`grant_type` is required")),
            Some("client_credentials") => {}
            Some(_) => {
                return Err(refuse(
                    400,
                    "unsupported_grant_type",
                    "only `client_credentials` is supported",
                ))
            }
        }
        let scope = match form.get("scope") {
            None => plan.scopes.clone(),
            Some(asked) => {
                let mut granted: Vec<String> = Vec::new();
                for s in asked.split(' ').filter(|s| !s.is_empty()) {
                    if !oauth::valid_scope(s) {
                        return Err(refuse(400, "invalid_scope", "a scope is malformed"));
                    }
                    if !plan.scopes.iter().any(|p| p == s) {
                        return Err(refuse(
                            400,
                            "invalid_scope",
                            format!("scope `{s}` is not in the client's plan"),
                        ));
                    }
                    if !granted.iter().any(|g| g == s) {
                        granted.push(s.to_string());
                    }
                }
                granted
            }
        };
        let scope = scope.join(" ");
        let now = Ts::now();
        let lifetime = self.lifetime();
        let jti = format!(
            "{TOKEN_ID_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random::<16>(&self.rng)?)
        );
        let (iat, exp) = (now.0 / 1000, now.0 / 1000 + lifetime);
        let mut claims = json!({
            "iss": self.issuer(call),
            "sub": client.id,
            "client_id": client.id,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": jti,
        });
        if !scope.is_empty() {
            claims["scope"] = json!(scope);
        }
        if let Some(aud) = &self.spec.audience {
            claims["aud"] = json!(aud);
        }
        let (kid, pair) = self.signer()?;
        let token = self.sign(&kid, &pair, &claims)?;
        self.registry
            .record_token(&IssuedToken {
                jti,
                client: client.id,
                subscription: client.subscription,
                scope: scope.clone(),
                issued_at: Ts(iat * 1000),
                expires_at: Ts(exp * 1000),
                revoked: false,
            })
            .map_err(|_| unavailable())?;
        let mut answer = json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
        });
        if !scope.is_empty() {
            answer["scope"] = json!(scope);
        }
        Ok(answer)
    }

    fn sign(&self, kid: &str, pair: &EcdsaKeyPair, claims: &Value) -> Result<String, Refusal> {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| unavailable())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The token's record, if `raw` is a token this server signed with a
    /// key it still publishes.
    fn own_token(&self, raw: &str) -> Option<IssuedToken> {
        if raw.len() > 8192 {
            return None;
        }
        let mut parts = raw.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let kid = header["kid"].as_str()?;
        let keys = self.registry.signing_keys().ok()?;
        let key = keys.iter().find(|k| k.kid == kid)?;
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(&key.x).ok()?);
        point.extend(URL_SAFE_NO_PAD.decode(&key.y).ok()?);
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        self.registry.issued_token(claims["jti"].as_str()?)
    }

    /// `POST /oauth2/revoke` (RFC 7009): 200 whether or not the token was
    /// valid; a token of another client is refused.
    fn revoke(&self, call: &OAuthCall<'_>) -> Result<Value, Refusal> {
        let form = Form::read(call)?;
        let (client, _) = self.client(call, &form)?;
        let raw = form
            .get("token")
            .ok_or_else(|| refuse(400, "invalid_request", "`token` is required"))?;
        if let Some(t) = self.own_token(raw) {
            if t.client != client.id {
                return Err(refuse(
                    400,
                    "unauthorized_client",
                    "the token was not issued to this client",
                ));
            }
            self.registry
                .revoke_token(&format!("oauth-client:{}", client.id), &t.jti)
                .map_err(|_| unavailable())?;
        }
        Ok(Value::Null)
    }

    /// `POST /oauth2/introspect` (RFC 7662): a client may introspect the
    /// tokens issued to it; anything else reads as inactive.
    fn introspect(&self, call: &OAuthCall<'_>) -> Result<Value, Refusal> {
        let form = Form::read(call)?;
        let (client, _) = self.client(call, &form)?;
        let raw = form
            .get("token")
            .ok_or_else(|| refuse(400, "invalid_request", "`token` is required"))?;
        let now = Ts::now();
        let Some(t) = self
            .own_token(raw)
            .filter(|t| t.client == client.id && self.registry.token_live(t, now))
        else {
            return Ok(json!({"active": false}));
        };
        let mut v = json!({
            "active": true,
            "client_id": t.client,
            "sub": t.client,
            "token_type": "Bearer",
            "iat": t.issued_at.0 / 1000,
            "exp": t.expires_at.0 / 1000,
            "jti": t.jti,
            "iss": self.issuer(call),
        });
        if !t.scope.is_empty() {
            v["scope"] = json!(t.scope);
        }
        if let Some(aud) = &self.spec.audience {
            v["aud"] = json!(aud);
        }
        Ok(v)
    }

    /// The calling client, authenticated by HTTP Basic or by
    /// `client_id`/`client_secret` in the form (one of them, not both).
    fn client(
        &self,
        call: &OAuthCall<'_>,
        form: &Form,
    ) -> Result<
        (
            crate::control::admin::model::OAuthClient,
            crate::control::admin::model::Plan,
        ),
        Refusal,
    > {
        let in_form = (form.get("client_id"), form.get("client_secret"));
        let (id, secret) = match (call.authorization, in_form) {
            (Some(_), (Some(_), _) | (_, Some(_))) => {
                return Err(refuse(
                    400,
                    "invalid_request",
                    "use one way to authenticate the client: HTTP Basic or the form, not both",
                ))
            }
            (Some(h), _) => basic(h).ok_or_else(|| {
                refuse(
                    401,
                    "invalid_client",
                    "the Authorization header is not HTTP Basic client credentials",
                )
            })?,
            (None, (Some(id), Some(secret))) => (id.to_string(), secret.to_string()),
            (None, _) => return Err(refuse(
                401,
                "invalid_client",
                "client authentication is required (HTTP Basic, or client_id and client_secret)",
            )),
        };
        self.registry
            .authenticate_oauth_client(&id, &secret, Ts::now())
            .map_err(|r| match r {
                ClientRefusal::Credentials => {
                    refuse(401, "invalid_client", "client authentication failed")
                }
                ClientRefusal::Inactive(state) => refuse(
                    400,
                    "unauthorized_client",
                    format!("the client's subscription is {}", state.as_str()),
                ),
            })
    }
}

impl AuthorizationServer for OAuthServer {
    fn answer(&self, call: OAuthCall<'_>) -> OAuthAnswer {
        let (allow, result) = match call.path {
            oauth::JWKS_PATH => (
                "GET, HEAD",
                method(&call, false).and_then(|_| self.jwks(Ts::now())),
            ),
            oauth::METADATA_PATH => (
                "GET, HEAD",
                method(&call, false).map(|_| self.metadata(&call)),
            ),
            oauth::TOKEN_PATH => ("POST", method(&call, true).and_then(|_| self.token(&call))),
            oauth::REVOKE_PATH => ("POST", method(&call, true).and_then(|_| self.revoke(&call))),
            oauth::INTROSPECT_PATH => (
                "POST",
                method(&call, true).and_then(|_| self.introspect(&call)),
            ),
            _ => ("", Err(refuse(404, "not_found", "no such endpoint"))),
        };
        let mut headers = vec![
            ("cache-control", "no-store".to_string()),
            ("pragma", "no-cache".to_string()),
        ];
        if matches!(call.path, oauth::JWKS_PATH | oauth::METADATA_PATH) {
            headers[0].1 = "public, max-age=60".into();
            headers.pop();
        }
        match result {
            Ok(Value::Null) => OAuthAnswer {
                status: 200,
                headers,
                body: Vec::new(),
            },
            Ok(v) => {
                headers.push(("content-type", "application/json".into()));
                OAuthAnswer {
                    status: 200,
                    headers,
                    body: v.to_string().into_bytes(),
                }
            }
            Err(r) => {
                if r.status == 405 {
                    headers.push(("allow", allow.into()));
                }
                if r.status == 401 {
                    headers.push(("www-authenticate", "Basic realm=\"tollgate\"".into()));
                }
                headers.push(("content-type", "application/json".into()));
                OAuthAnswer {
                    status: r.status,
                    headers,
                    body: json!({"error": r.error, "error_description": r.description})
                        .to_string()
                        .into_bytes(),
                }
            }
        }
    }
}

fn unavailable() -> Refusal {
    refuse(
        503,
        "temporarily_unavailable",
        "the authorization server cannot answer now; try again",
    )
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], Refusal> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(rng, &mut b).map_err(|_| unavailable())?;
    Ok(b)
}

/// Whether the call's method fits: POST for the form endpoints, GET or
/// HEAD for the documents.
fn method(call: &OAuthCall<'_>, post: bool) -> Result<(), Refusal> {
    let ok = if post {
        call.method == "POST"
    } else {
        matches!(call.method, "GET" | "HEAD")
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(
            405,
            "invalid_request",
            format!(
                "{} is not allowed here",
                crate::control::admin::error::truncate(call.method, 20)
            ),
        ))
    }
}

/// HTTP Basic client credentials: both parts form-urlencoded first (RFC
/// 6749 §2.3.1).
fn basic(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| -> Option<String> {
        let text = format!("v={s}");
        let mut pairs = form_urlencoded::parse(text.as_bytes());
        let (_, v) = pairs.next()?;
        Some(v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// A form body: `application/x-www-form-urlencoded`, each parameter once
/// (RFC 6749 §3.2), no empty names.
struct Form(Vec<(String, String)>);

impl Form {
    fn read(call: &OAuthCall<'_>) -> Result<Form, Refusal> {
        let ct = call.content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        if ct.as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(refuse(
                400,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        if std::str::from_utf8(call.body).is_err() {
            return Err(refuse(400, "invalid_request", "the body is not UTF-8"));
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(call.body) {
            if out.len() >= 32 {
                return Err(refuse(400, "invalid_request", "too many parameters"));
            }
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(refuse(
                    400,
                    "invalid_request",
                    format!(
                        "parameter `{}` appears more than once",
                        crate::control::admin::error::truncate(&k, 40)
                    ),
                ));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Form(out))
    }

    /// A parameter; an empty value reads as absent (RFC 6749 §3.1).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// A signing key as shown: its public part and dates.
fn key_view(k: &SigningKey) -> Value {
    json!({
        "kid": k.kid,
        "alg": k.alg,
        "created_at": k.created_at,
        "retired_at": k.retired_at,
        "jwk": {"kty": "EC", "crv": "P-256", "x": k.x, "y": k.y, "kid": k.kid, "alg": k.alg, "use": "sig"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let h = format!("Basic {}", STANDARD.encode("oc_1%3Ax:s%2Bec+ret"));
        assert_eq!(basic(&h), Some(("oc_1:x".into(), "s+ec ret".into())));
        assert_eq!(basic("Bearer abc"), None);
        assert_eq!(basic("Basic !!!"), None);
        assert_eq!(
            basic(&format!("Basic {}", STANDARD.encode("nocolon"))),
            None
        );
    }
}
