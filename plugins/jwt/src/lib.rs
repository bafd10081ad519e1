//! `jwt`: JSON Web Token bearer authentication.
//!
//! The policy finds the token (a header, a query parameter or a cookie),
//! parses the compact JWS itself, picks the key (inline JWKs, a shared
//! secret, or a JWKS URL cached in the host's cache), has the host check
//! the signature natively (`crypto.verify`), then checks the claims and
//! forwards chosen claims as request headers. See README.md.

mod keys;
mod token;

use keys::{parse_jwk, Jwk, Jwks, JwksSource};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::cell::OnceCell;
use std::collections::BTreeMap;
use token::{Alg, Family, Reject, Token};
use tollgate_policy_sdk::services::{consumers, crypto};
use tollgate_policy_sdk::{
    clock, log, query, valid_header_name, Call, ConfigError, HeaderOp, Policy, PolicyInfo,
    RequestDecision, RequestEdits, Response,
};

/// Most keys tried for one token (when it has no `kid`, or several keys
/// share it).
const MAX_TRIES: usize = 8;

/// Header fields the gateway does not let a step touch.
const FRAMING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

/// A string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The step's configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Accepted JWS algorithms. Required; `none` is refused.
    pub algorithms: Vec<String>,
    /// The header carrying the token (default `authorization`, as `Bearer`).
    #[serde(default = "default_header")]
    pub header: String,
    /// A query parameter carrying the token.
    #[serde(default)]
    pub query: Option<String>,
    /// A cookie carrying the token.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Public keys (and `oct` secrets) as JWKs.
    #[serde(default)]
    pub keys: Vec<Map<String, Value>>,
    /// A shared secret for HS256/384/512.
    #[serde(default)]
    pub secret: Option<String>,
    /// Where to fetch a JWKS (`https://` or `http://`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Seconds a fetched JWKS is used before asking again.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache: u64,
    /// At most one JWKS fetch per this many seconds.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch: u64,
    /// Accepted `iss` values; if set, `iss` is required.
    #[serde(default)]
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` values; if set, `aud` is required.
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway: u64,
    /// Whether tokens must have `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claim name -> request header set from it.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// The claim naming the consumer (looked up with `consumers`).
    #[serde(default)]
    pub consumer_claim: Option<String>,
    /// Remove the token before the upstream.
    #[serde(default)]
    pub strip: bool,
    /// OAuth scopes the token must carry, all of them: from the `scope`
    /// claim (space-separated, RFC 9068) or `scp` (a list or a string). A
    /// token without one is refused with 403 `insufficient_scope`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_header() -> String {
    "authorization".into()
}
fn default_jwks_cache() -> u64 {
    300
}
fn default_min_refetch() -> u64 {
    10
}
fn default_leeway() -> u64 {
    30
}
fn yes() -> bool {
    true
}

/// The configured policy.
pub struct Jwt {
    algorithms: Vec<Alg>,
    header: String,
    query: Option<String>,
    cookie: Option<String>,
    keys: Vec<Jwk>,
    secret: Option<Vec<u8>>,
    jwks: Option<JwksSource>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: u64,
    require_exp: bool,
    forward: Vec<(String, String)>,
    consumer_claim: Option<String>,
    strip: bool,
    scopes: Vec<String>,
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = name.to_ascii_lowercase();
    if !valid_header_name(&lower) {
        return Err(ConfigError::at(
            field,
            format!("{name:?} is not a valid header name"),
        ));
    }
    if FRAMING.contains(&lower.as_str()) {
        return Err(ConfigError::at(
            field,
            format!("{name:?} is a framing header, which policies may not touch"),
        ));
    }
    Ok(lower)
}

fn non_empty_list(field: &str, v: Option<OneOrMany>) -> Result<Vec<String>, ConfigError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let v = v.into_vec();
    if v.is_empty() {
        return Err(ConfigError::at(
            field,
            "must not be empty (leave it out to accept any)",
        ));
    }
    if v.iter().any(String::is_empty) {
        return Err(ConfigError::at(field, "values must not be empty"));
    }
    Ok(v)
}

impl Policy for Jwt {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.algorithms.is_empty() {
            return Err(ConfigError::at(
                "algorithms",
                "must list at least one algorithm, e.g. [\"RS256\"]",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, name) in c.algorithms.iter().enumerate() {
            if name.eq_ignore_ascii_case("none") {
                return Err(ConfigError::at(
                    format!("algorithms.{i}"),
                    "`none` (unsigned tokens) is never accepted",
                ));
            }
            let Some(alg) = Alg::parse(name) else {
                let all: Vec<&str> = Alg::ALL.iter().map(|a| a.name()).collect();
                return Err(ConfigError::at(
                    format!("algorithms.{i}"),
                    format!(
                        "unknown algorithm {name:?}; expected one of {}",
                        all.join(", ")
                    ),
                ));
            };
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        let header = header_name("header", &c.header)?;
        if c.query.as_deref() == Some("") {
            return Err(ConfigError::at("query", "must not be empty"));
        }
        if let Some(cookie) = &c.cookie {
            if !valid_header_name(cookie) {
                return Err(ConfigError::at(
                    "cookie",
                    format!("{cookie:?} is not a valid cookie name"),
                ));
            }
        }
        let mut keys = Vec::new();
        for (i, map) in c.keys.iter().enumerate() {
            let field = format!("keys.{i}");
            let jwk = parse_jwk(map, true)
                .map_err(|m| ConfigError::at(&field, m))?
                .ok_or_else(|| {
                    ConfigError::at(&field, "the key is not for signatures (use or key_ops)")
                })?;
            if !algorithms.iter().any(|a| jwk.fits(*a)) {
                return Err(ConfigError::at(
                    field,
                    "the key fits none of the listed algorithms",
                ));
            }
            keys.push(jwk);
        }
        let hmac: Vec<Alg> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == Family::Hmac)
            .collect();
        let secret = match c.secret {
            None => None,
            Some(_) if hmac.is_empty() => {
                return Err(ConfigError::at(
                    "secret",
                    "a secret is only used by HS256, HS384 and HS512: list one in `algorithms` or remove `secret`",
                ))
            }
            Some(s) => {
                let need = hmac.iter().map(|a| a.min_secret_len()).max().unwrap_or(32);
                if s.len() < need {
                    return Err(ConfigError::at(
                        "secret",
                        format!("must be at least {need} bytes for the listed HS algorithms (RFC 7518 §3.2)"),
                    ));
                }
                if s.len() > 4096 {
                    return Err(ConfigError::at("secret", "must be at most 4096 bytes"));
                }
                Some(s.into_bytes())
            }
        };
        let jwks = match c.jwks_url {
            None => None,
            Some(url) => {
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"));
                if rest.is_none_or(str::is_empty) {
                    return Err(ConfigError::at(
                        "jwks-url",
                        "must be an https:// (or http://) URL; grant its host as `http:HOST[:PORT]`",
                    ));
                }
                if !(1..=86_400).contains(&c.jwks_cache) {
                    return Err(ConfigError::at("jwks-cache", "must be 1 to 86400 seconds"));
                }
                if !(1..=86_400).contains(&c.jwks_min_refetch) {
                    return Err(ConfigError::at(
                        "jwks-min-refetch",
                        "must be 1 to 86400 seconds",
                    ));
                }
                Some(JwksSource {
                    url,
                    fresh_ms: c.jwks_cache * 1000,
                    min_refetch_ms: c.jwks_min_refetch * 1000,
                })
            }
        };
        for (i, alg) in algorithms.iter().enumerate() {
            let has_key = if alg.family() == Family::Hmac {
                secret.is_some() || keys.iter().any(|k| k.fits(*alg))
            } else {
                jwks.is_some() || keys.iter().any(|k| k.fits(*alg))
            };
            if !has_key {
                let how = if alg.family() == Family::Hmac {
                    "a `secret` or an inline `oct` key"
                } else {
                    "an inline key of its type or a `jwks-url`"
                };
                return Err(ConfigError::at(
                    format!("algorithms.{i}"),
                    format!("{} needs {how}", alg.name()),
                ));
            }
        }
        let issuers = non_empty_list("issuer", c.issuer)?;
        let audiences = non_empty_list("audience", c.audience)?;
        if c.leeway > 3600 {
            return Err(ConfigError::at("leeway", "must be at most 3600 seconds"));
        }
        let mut forward = Vec::new();
        for (claim, h) in c.forward_claims {
            let field = format!("forward-claims.{claim}");
            if claim.is_empty() {
                return Err(ConfigError::at(field, "the claim name must not be empty"));
            }
            let h = header_name(&field, &h)?;
            if h == header {
                return Err(ConfigError::at(
                    field,
                    "the token header cannot carry a claim",
                ));
            }
            if forward.iter().any(|(_, other)| *other == h) {
                return Err(ConfigError::at(
                    field,
                    format!("header {h:?} is set from two claims"),
                ));
            }
            forward.push((claim, h));
        }
        if c.consumer_claim.as_deref() == Some("") {
            return Err(ConfigError::at("consumer-claim", "must not be empty"));
        }
        for (i, s) in c.scopes.iter().enumerate() {
            // RFC 6749 §3.3: printable ASCII but space, `"` and `\`.
            let token = !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !token {
                return Err(ConfigError::at(
                    format!("scopes.{i}"),
                    "a scope is 1-64 printable ASCII characters without spaces, `\"` or `\\`",
                ));
            }
        }
        Ok(Jwt {
            algorithms,
            header,
            query: c.query,
            cookie: c.cookie,
            keys,
            secret,
            jwks,
            issuers,
            audiences,
            leeway: c.leeway,
            require_exp: c.require_exp,
            forward,
            consumer_claim: c.consumer_claim,
            strip: c.strip,
            scopes: c.scopes,
        })
    }

    /// The request phase only (nothing to do on the way back), no body.
    fn info(&self) -> PolicyInfo {
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        let req = Seen::new(call, &self.header);
        let token = match self.find_token(&req) {
            Ok(Some(t)) => t,
            Ok(None) => return deny("invalid_request", "a bearer token is required"),
            Err(why) => return deny("invalid_request", why),
        };
        match self.authenticate(call, &token) {
            Ok(edits) => RequestDecision::Continue(self.strip_token(&req, edits)),
            Err(Failure::Token(reason)) => deny("invalid_token", reason.description()),
            Err(Failure::Scope) => {
                // The scopes are checked scope tokens: no quotes in them.
                let wanted = self.scopes.join(" ");
                log::info("jwt: refused (insufficient_scope)");
                RequestDecision::Respond(
                    Response::json_error(
                        403,
                        "insufficient_scope",
                        "the token does not carry the scopes this API needs",
                    )
                    .header(
                        "www-authenticate",
                        format!("Bearer error=\"insufficient_scope\", scope=\"{wanted}\""),
                    ),
                )
            }
            Err(Failure::KeysUnavailable) => {
                log::warn("jwt: no JWKS available to check a token");
                RequestDecision::Respond(Response::json_error(
                    503,
                    "jwt_keys_unavailable",
                    "the keys to check the token could not be fetched",
                ))
            }
        }
    }
}

/// The parts of the request the policy reads, each copied from the gateway
/// once, and only if a step of the policy needs it.
struct Seen<'r, 'c> {
    call: &'r Call<'c>,
    /// The name of the token header.
    header: &'r str,
    /// The values of the token header.
    token_header: OnceCell<Vec<Vec<u8>>>,
    query: OnceCell<Option<String>>,
    /// The values of `cookie`.
    cookies: OnceCell<Vec<Vec<u8>>>,
}

impl<'r, 'c> Seen<'r, 'c> {
    fn new(call: &'r Call<'c>, header: &'r str) -> Self {
        Seen {
            call,
            header,
            token_header: OnceCell::new(),
            query: OnceCell::new(),
            cookies: OnceCell::new(),
        }
    }

    fn token_header(&self) -> &[Vec<u8>] {
        self.token_header
            .get_or_init(|| self.call.header_values(self.header))
    }

    fn query(&self) -> Option<&str> {
        self.query.get_or_init(|| self.call.query()).as_deref()
    }

    fn cookies(&self) -> &[Vec<u8>] {
        self.cookies
            .get_or_init(|| self.call.header_values("cookie"))
    }
}

enum Failure {
    Token(Reject),
    KeysUnavailable,
    /// A valid token without a scope the step requires.
    Scope,
}

impl From<Reject> for Failure {
    fn from(r: Reject) -> Self {
        Failure::Token(r)
    }
}

/// 401 with an RFC 6750 challenge. `error` and `description` are fixed
/// texts (no quotes or backslashes), never parts of the request.
fn deny(error: &str, description: &str) -> RequestDecision {
    log::info(&format!("jwt: refused ({error}): {description}"));
    RequestDecision::Respond(Response::json_error(401, error, description).header(
        "www-authenticate",
        format!("Bearer error=\"{error}\", error_description=\"{description}\""),
    ))
}

/// The scopes a token carries: `scope` (a space-separated string, RFC
/// 9068) and `scp` (a list of strings, or one space-separated string).
fn scopes_of(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    if let Some(Value::String(s)) = claims.get("scope") {
        out.extend(s.split(' ').filter(|s| !s.is_empty()));
    }
    match claims.get("scp") {
        Some(Value::String(s)) => out.extend(s.split(' ').filter(|s| !s.is_empty())),
        Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
        _ => {}
    }
    out
}

/// A claim's value as a header value: strings as they are, numbers and
/// booleans in JSON, arrays of those joined with `,`. Objects, empty
/// arrays and values with control characters are not forwarded.
fn claim_header_value(v: &Value) -> Option<String> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let s = match v {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        other => scalar(other)?,
    };
    (!s.chars().any(|c| c.is_control() && c != '\t')).then_some(s)
}

impl Jwt {
    /// The token in a value of the token header: `Bearer <token>`, or for
    /// a header other than `authorization` also the bare token. `None`:
    /// not a bearer credential.
    fn bearer<'v>(&self, value: &'v [u8]) -> Option<Result<&'v str, &'static str>> {
        let Ok(value) = std::str::from_utf8(value) else {
            return Some(Err("the token header is not valid text"));
        };
        let value = value.trim();
        match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => {
                Some(Ok(value[7..].trim_start()))
            }
            _ if self.header != "authorization" => Some(Ok(value)),
            _ if value.eq_ignore_ascii_case("bearer") => Some(Ok("")),
            _ => None,
        }
    }

    /// The token, from the header, then the query, then the cookie.
    /// `Err`: the request is ambiguous or malformed.
    fn find_token(&self, req: &Seen<'_, '_>) -> Result<Option<String>, &'static str> {
        let mut values = req.token_header().iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err("the token header appears more than once");
            }
            let token = self.bearer(value).transpose()?;
            if let Some(t) = token {
                if t.is_empty() {
                    return Err("the bearer token is empty");
                }
                return Ok(Some(t.to_string()));
            }
        }
        if let Some((name, q)) = self.query.as_ref().and_then(|n| Some((n, req.query()?))) {
            let mut found = query::parse(q).into_iter().filter(|(k, _)| k == name);
            if let Some((_, v)) = found.next() {
                if found.next().is_some() {
                    return Err("the token query parameter appears more than once");
                }
                if v.is_empty() {
                    return Err("the bearer token is empty");
                }
                return Ok(Some(v));
            }
        }
        if let Some(name) = &self.cookie {
            for v in req.cookies() {
                let Ok(v) = std::str::from_utf8(v) else {
                    continue;
                };
                for pair in v.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=') {
                        if k == name {
                            let val = val.trim_matches('"');
                            if val.is_empty() {
                                return Err("the bearer token is empty");
                            }
                            return Ok(Some(val.to_string()));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn authenticate(&self, call: &Call<'_>, raw: &str) -> Result<RequestEdits, Failure> {
        let token = token::parse(raw, &self.algorithms)?;
        self.verify(&token)?;
        token::check_claims(
            &token.claims,
            &token::Checks {
                now: clock::now_ms() as f64 / 1000.0,
                leeway: self.leeway as f64,
                require_exp: self.require_exp,
                issuers: &self.issuers,
                audiences: &self.audiences,
            },
        )?;
        if !self.scopes.is_empty() {
            let granted = scopes_of(&token.claims);
            if !self.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                return Err(Failure::Scope);
            }
        }
        let mut edits = RequestEdits::default();
        if let Some(claim) = &self.consumer_claim {
            let id = match token.claims.get(claim) {
                Some(Value::String(id)) if !id.is_empty() => id,
                _ => return Err(Reject::UnknownConsumer.into()),
            };
            let consumer =
                consumers::lookup_consumer(&call.api(), id).ok_or(Reject::UnknownConsumer)?;
            edits.consumer = Some(consumer);
        }
        // `set` replaces every field of that name and `remove` drops them:
        // a client-sent header never survives, whether or not the claim is
        // there.
        for (claim, header) in &self.forward {
            edits
                .headers
                .push(match token.claims.get(claim).and_then(claim_header_value) {
                    Some(v) => HeaderOp::set(header.as_str(), v),
                    None => HeaderOp::remove(header.as_str()),
                });
        }
        Ok(edits)
    }

    /// Find the keys that may have signed `token` and have the host check
    /// the signature with each until one says yes.
    fn verify(&self, token: &Token) -> Result<(), Failure> {
        let alg = token.alg;
        let kid = token.kid.as_deref();
        // A key with a kid matches only tokens with that kid; a key without
        // one matches any token.
        let kid_matches = |k: &&Jwk| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid;
        // Remote keys: never for HS* (a JWKS holds no secrets we accept).
        let mut remote = None;
        if let Some(source) = self.jwks.as_ref().filter(|_| alg.family() != Family::Hmac) {
            let now = clock::now_ms();
            let mut found = source.keys(now, false);
            let known = |jwks: &Jwks| {
                kid.is_none()
                    || self.keys.iter().any(|k| k.kid.as_deref() == kid)
                    || matches!(jwks, Jwks::Keys(keys) if keys.iter().any(|k| k.kid.as_deref() == kid))
            };
            if !known(&found) {
                // An unknown kid: the keys may have rotated.
                if let Jwks::Keys(keys) = source.keys(now, true) {
                    found = Jwks::Keys(keys);
                }
            }
            remote = Some(found);
        }
        let remote_keys: &[Jwk] = match &remote {
            Some(Jwks::Keys(keys)) => keys,
            _ => &[],
        };
        // The configured secret is the only thing ever imported as a
        // secret: a public JWK never becomes an HMAC key.
        let secret = self
            .secret
            .as_deref()
            .filter(|_| alg.family() == Family::Hmac);
        let candidates: Vec<Option<&Jwk>> = secret
            .map(|_| None)
            .into_iter()
            .chain(
                self.keys
                    .iter()
                    .chain(remote_keys)
                    .filter(kid_matches)
                    .filter(|k| k.fits(alg))
                    .map(Some),
            )
            .take(MAX_TRIES)
            .collect();
        if candidates.is_empty() {
            if matches!(remote, Some(Jwks::Unavailable)) {
                return Err(Failure::KeysUnavailable);
            }
            log::info(&format!(
                "jwt: no {} key with kid {:?}",
                alg.name(),
                kid.map(|k| k.chars().take(64).collect::<String>())
            ));
            return Err(Reject::NoKey.into());
        }
        for candidate in candidates {
            let handle = match (candidate, secret) {
                (Some(jwk), _) => crypto::import_jwk(&jwk.json),
                (None, Some(secret)) => crypto::import_secret(secret),
                (None, None) => continue,
            };
            let verified = handle
                .and_then(|h| crypto::verify(alg.name(), h, token.signing_input, &token.signature));
            match verified {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => log::warn(&format!("jwt: a {} key was refused: {e:?}", alg.name())),
            }
        }
        Err(Reject::BadSignature.into())
    }

    /// With `strip`, remove the token from every place it may travel in.
    fn strip_token(&self, req: &Seen<'_, '_>, mut edits: RequestEdits) -> RequestEdits {
        if !self.strip {
            return edits;
        }
        // The header goes if it carries a token (an `Authorization: Basic`
        // header is someone else's business).
        if req.token_header().iter().any(|v| self.bearer(v).is_some()) {
            edits.headers.push(HeaderOp::remove(self.header.as_str()));
        }
        if let Some((name, q)) = self.query.as_ref().and_then(|n| Some((n, req.query()?))) {
            let kept: Vec<String> = query::raw_pairs(q)
                .filter(|(k, _)| query::decode_component(k) != *name)
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.to_string(),
                })
                .collect();
            if kept.len() != query::raw_pairs(q).count() {
                edits.query = Some(kept.join("&"));
            }
        }
        if let Some(name) = &self.cookie {
            let mut changed = false;
            let mut kept: Vec<&[u8]> = Vec::new();
            for v in req.cookies() {
                for pair in v.split(|b| *b == b';').map(<[u8]>::trim_ascii) {
                    let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
                    if pair.contains(&b'=') && key == name.as_bytes() {
                        changed = true;
                    } else if !pair.is_empty() {
                        kept.push(pair);
                    }
                }
            }
            if changed {
                edits.headers.push(if kept.is_empty() {
                    HeaderOp::remove("cookie")
                } else {
                    HeaderOp::set("cookie", kept.join(&b"; "[..]))
                });
            }
        }
        edits
    }
}

tollgate_policy_sdk::export_policy!(Jwt);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
