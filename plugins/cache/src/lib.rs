//! `cache`: a shared response cache for `GET` and `HEAD`.
//!
//! ```toml
//! [[api.chain]]
//! plugin = "cache"
//! grants = ["cache"]
//! [api.chain.config]
//! ttl = 60                          # seconds; upstream max-age/s-maxage may shorten it
//! key-query = ["page", "sort"]      # or "*" (the default): every parameter
//! vary-headers = ["accept-language"]
//! max-bytes = 1048576               # the response body limit (see README: larger -> 502)
//! ```
//!
//! On a request the step builds a key (method, host, path, the chosen query
//! parameters, the chosen headers, and the consumer when authorised requests
//! may be cached), looks it up with the gateway's `cache` service and, on a
//! hit, answers with the stored response plus `x-cache: HIT` and `age`. On a
//! miss the call goes on; the response phase adds `x-cache: MISS` and stores
//! the response if HTTP and the configuration allow it. See `README.md`.

#![forbid(unsafe_code)]

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_policy_sdk::services::{cache, CachedResponse, ServiceError};
use tollgate_policy_sdk::{
    clock, header_values, log, query, valid_header_name, BodyAccess, Call, ConfigError, Header,
    Phases, Policy, PolicyInfo, RequestDecision, RequestEdits, Response, ResponseDecision,
    ResponseEdits,
};

/// Longest time to live the gateway's cache keeps (one day), in seconds.
pub const MAX_TTL_SECS: u64 = 86_400;
/// Largest `max-bytes`.
pub const MAX_BODY_LIMIT: u32 = 64 << 20;
/// Most names in `key-query` and in `vary-headers`, and most `Vary` names a
/// response may list and still be cached.
pub const MAX_NAMES: usize = 32;
/// The header the step adds to every response (and removes from requests).
pub const X_CACHE: &str = "x-cache";
/// A private header stored with each entry: `<stored-at ms>;<upstream age s>`.
/// Never sent to a client.
const META: &str = "x-tollgate-cache-meta";
/// The status of a marker entry: "this key varies by these headers".
const MARKER_STATUS: u16 = 0;

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Time to live in seconds, 1 to 86400; upstream `max-age`/`s-maxage`
    /// may shorten it, never lengthen it.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Query parameters in the key: a list of names, or `"*"` for all.
    #[serde(default)]
    pub key_query: KeyQuery,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub vary_headers: Vec<String>,
    /// Statuses that may be stored.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// The response body limit (bytes) the step declares to the gateway.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
    /// Cache responses to authorised requests, keyed by consumer.
    #[serde(default)]
    pub cache_authorized: bool,
    /// Let a client's `Cache-Control: no-cache` skip the lookup.
    #[serde(default)]
    pub honour_client_no_cache: bool,
}

fn default_ttl() -> u64 {
    60
}

fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 404, 410]
}

fn default_max_bytes() -> u32 {
    1 << 20
}

/// Which query parameters are part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyQuery {
    /// Every parameter (`"*"`), in a normalised order.
    #[default]
    All,
    /// Only these (decoded names); every other parameter is ignored.
    Only(Vec<String>),
}

impl<'de> Deserialize<'de> for KeyQuery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyQuery;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"*\" or a list of query parameter names")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyQuery, E> {
                if s == "*" {
                    Ok(KeyQuery::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyQuery, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(KeyQuery::Only(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the request phase decided, for the response phase.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum State {
    /// The request phase did not run.
    #[default]
    Idle,
    /// Not cacheable: `x-cache: BYPASS`, nothing stored.
    Bypass,
    /// Answered from the cache.
    Hit,
    /// Went upstream; store the response under this key material.
    /// `req_headers` are the request's fields as this step saw them (not
    /// as they went upstream: later steps may change them), for the
    /// response's own `Vary` names, which only the response tells.
    Miss {
        material: Vec<u8>,
        req_headers: Vec<Header>,
    },
}

/// The configured policy.
#[derive(Debug)]
pub struct Cache {
    ttl_ms: u64,
    key_query: KeyQuery,
    vary_headers: Vec<String>,
    statuses: Vec<u16>,
    max_bytes: u32,
    cache_authorized: bool,
    honour_client_no_cache: bool,
    state: State,
}

impl Policy for Cache {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.ttl == 0 || c.ttl > MAX_TTL_SECS {
            return Err(ConfigError::at(
                "ttl",
                format!("must be 1 to {MAX_TTL_SECS} seconds"),
            ));
        }
        let key_query = match c.key_query {
            KeyQuery::All => KeyQuery::All,
            KeyQuery::Only(names) => {
                if names.len() > MAX_NAMES {
                    return Err(ConfigError::at(
                        "key-query",
                        format!("at most {MAX_NAMES} names"),
                    ));
                }
                for (i, n) in names.iter().enumerate() {
                    if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) {
                        return Err(ConfigError::at(
                            format!("key-query.{i}"),
                            "a query parameter name: 1 to 256 characters, no control characters",
                        ));
                    }
                }
                let mut names = names;
                names.sort();
                names.dedup();
                KeyQuery::Only(names)
            }
        };
        if c.vary_headers.len() > MAX_NAMES {
            return Err(ConfigError::at(
                "vary-headers",
                format!("at most {MAX_NAMES} names"),
            ));
        }
        let mut vary_headers = Vec::new();
        for (i, h) in c.vary_headers.iter().enumerate() {
            if !valid_header_name(h) {
                return Err(ConfigError::at(
                    format!("vary-headers.{i}"),
                    format!("{h:?} is not a valid header name"),
                ));
            }
            vary_headers.push(h.to_ascii_lowercase());
        }
        vary_headers.sort();
        vary_headers.dedup();
        if c.statuses.is_empty() {
            return Err(ConfigError::at("statuses", "give at least one status"));
        }
        for (i, s) in c.statuses.iter().enumerate() {
            if !(200..=599).contains(s) || matches!(s, 206 | 304) {
                return Err(ConfigError::at(
                    format!("statuses.{i}"),
                    "must be a final status from 200 to 599, other than 206 and 304 (partial and not-modified responses are not complete representations)",
                ));
            }
        }
        if c.max_bytes == 0 || c.max_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max-bytes",
                format!("must be 1 to {MAX_BODY_LIMIT} bytes"),
            ));
        }
        Ok(Cache {
            ttl_ms: c.ttl * 1000,
            key_query,
            vary_headers,
            statuses: c.statuses,
            max_bytes: c.max_bytes,
            cache_authorized: c.cache_authorized,
            honour_client_no_cache: c.honour_client_no_cache,
            state: State::Idle,
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            body: BodyAccess {
                request: None,
                response: Some(self.max_bytes),
            },
            // Lookup in the request phase, `x-cache` and storing in the
            // response phase.
            phases: Phases::REQUEST | Phases::RESPONSE,
        }
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // Nothing from an earlier request (worker isolation).
        self.state = State::Idle;
        // Never let a client (or anything it sends) claim a cache status.
        let edits = RequestEdits::default().remove_header(X_CACHE);
        let method = call.method();
        if method != "GET" && method != "HEAD" {
            self.state = State::Bypass;
            return RequestDecision::Continue(edits);
        }
        let consumer = call.consumer();
        let authorised = consumer.is_some()
            || ["authorization", "proxy-authorization", "cookie"]
                .iter()
                .any(|h| call.header(h).is_some());
        let consumer = match (&consumer, authorised) {
            (_, false) => None,
            (Some(c), true) if self.cache_authorized => Some(c.id.as_str()),
            // Authorised but not cacheable, or credentials that no step
            // turned into a consumer: nothing to key by.
            _ => {
                self.state = State::Bypass;
                return RequestDecision::Continue(edits);
            }
        };
        let material = self.material(call, &method, consumer);
        let skip_lookup = self.honour_client_no_cache && client_no_cache(call);
        if !skip_lookup {
            if let Some(resp) = self.lookup(&material, call) {
                self.state = State::Hit;
                return RequestDecision::Respond(resp);
            }
        }
        // Which fields a `Vary` of the response will name is unknown until
        // then, and the response phase reads the request as it went
        // upstream (after later steps' edits), not as the key saw it: keep
        // this step's view of the fields, on a miss only.
        self.state = State::Miss {
            material,
            req_headers: call.headers(),
        };
        RequestDecision::Continue(edits)
    }

    fn on_response(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
        match std::mem::take(&mut self.state) {
            State::Idle | State::Hit => ResponseDecision::default(),
            State::Bypass => {
                ResponseDecision::Continue(ResponseEdits::default().set_header(X_CACHE, "BYPASS"))
            }
            State::Miss {
                material,
                req_headers,
            } => {
                // The response is read (status, then every field, once)
                // only when it may be stored.
                if let Err(why) = self.store(&material, &req_headers, call, body) {
                    log::debug(&format!("cache: not stored: {why}"));
                }
                ResponseDecision::Continue(ResponseEdits::default().set_header(X_CACHE, "MISS"))
            }
        }
    }
}

impl Cache {
    /// The key material: every part length-prefixed, so no value can make
    /// two different requests produce the same material.
    fn material(&self, call: &Call<'_>, method: &str, consumer: Option<&str>) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        part(&mut m, "v", b"1");
        part(&mut m, "step", call.step().as_bytes());
        part(&mut m, "method", method.as_bytes());
        part(
            &mut m,
            "host",
            call.authority().to_ascii_lowercase().as_bytes(),
        );
        part(&mut m, "path", call.path().as_bytes());
        let mut pairs = query::parse(call.query().as_deref().unwrap_or(""));
        if let KeyQuery::Only(names) = &self.key_query {
            pairs.retain(|(k, _)| names.binary_search(k).is_ok());
        }
        // A stable sort by name: the order of names never matters, the
        // order of one name's repeated values does.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        part(&mut m, "query", pairs.len().to_string().as_bytes());
        for (k, v) in &pairs {
            part(&mut m, "qk", k.as_bytes());
            part(&mut m, "qv", v.as_bytes());
        }
        headers_part(&mut m, &self.vary_headers, |n| call.header_values(n));
        match consumer {
            Some(id) => part(&mut m, "consumer", id.as_bytes()),
            None => part(&mut m, "anonymous", b""),
        }
        m
    }

    /// A fresh, complete response from the cache, if any.
    fn lookup(&self, material: &[u8], call: &Call<'_>) -> Option<Response> {
        let (mut entry, _) = cache::get(&key(material))?;
        if entry.status == MARKER_STATUS {
            let names = marker_names(&entry)?;
            let secondary = secondary_material(material, &names, |n| call.header_values(n));
            entry = cache::get(&key(&secondary))?.0;
            if entry.status == MARKER_STATUS {
                return None;
            }
        }
        Some(self.serve(entry))
    }

    /// The client's view of a stored entry.
    fn serve(&self, entry: CachedResponse) -> Response {
        let mut age_secs = 0u64;
        let mut headers = Vec::with_capacity(entry.headers.len() + 2);
        for h in entry.headers {
            if h.name == META {
                if let Some((at, age0)) = std::str::from_utf8(&h.value)
                    .ok()
                    .and_then(|s| s.split_once(';'))
                {
                    let at: u64 = at.parse().unwrap_or(0);
                    let age0: u64 = age0.parse().unwrap_or(0);
                    age_secs = age0 + clock::now_ms().saturating_sub(at) / 1000;
                }
            } else if storable_header(&h.name) {
                headers.push(h);
            }
        }
        headers.push(Header::new("age", age_secs.to_string()));
        headers.push(Header::new(X_CACHE, "HIT"));
        Response {
            status: entry.status,
            headers,
            body: entry.body,
        }
    }

    /// Store the upstream's response if it may be stored; `Err(why)` if not.
    fn store(
        &self,
        material: &[u8],
        req_headers: &[Header],
        call: &Call<'_>,
        body: Option<&[u8]>,
    ) -> Result<(), String> {
        let status = call.status().unwrap_or_default();
        if !self.statuses.contains(&status) {
            return Err(format!("status {status} is not cacheable"));
        }
        let body = body.ok_or("no response body was given")?;
        if body.len() > self.max_bytes as usize {
            return Err("the body is larger than max-bytes".into());
        }
        // Stored whole (less the fields never stored), so read whole.
        let resp_headers = call.response_headers();
        if header_values(&resp_headers, "set-cookie").next().is_some() {
            return Err("the response sets a cookie".into());
        }
        let cc = CacheControl::parse(header_values(&resp_headers, "cache-control"));
        if cc.no_store || cc.private || cc.no_cache {
            return Err("Cache-Control forbids a shared cache to store it".into());
        }
        let vary = vary_names(&resp_headers).ok_or("the response has Vary: *")?;
        let extra: Vec<String> = vary
            .into_iter()
            .filter(|n| self.vary_headers.binary_search(n).is_err())
            .collect();
        if extra.len() > MAX_NAMES {
            return Err("the response varies by too many headers".into());
        }
        let age0 = header_values(&resp_headers, "age")
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut ttl_ms = self.ttl_ms;
        if let Some(fresh) = cc.s_maxage.or(cc.max_age) {
            ttl_ms = ttl_ms.min(fresh.saturating_sub(age0).saturating_mul(1000));
        }
        if ttl_ms == 0 {
            return Err("already stale (max-age reached)".into());
        }
        let mut headers: Vec<Header> = resp_headers
            .into_iter()
            .filter(|h| storable_header(&h.name))
            .collect();
        headers.push(Header::new(
            META,
            format!("{};{age0}", clock::now_ms()).into_bytes(),
        ));
        let entry = CachedResponse {
            status,
            headers,
            body: body.to_vec(),
        };
        let put = |k: &[u8], v: &CachedResponse| {
            cache::put(&key(k), v, ttl_ms).map_err(|e| match e {
                ServiceError::NotGranted(m) | ServiceError::Invalid(m) => m,
                ServiceError::Unavailable(m) => m,
            })
        };
        if extra.is_empty() {
            put(material, &entry)
        } else {
            let marker = CachedResponse {
                status: MARKER_STATUS,
                headers: vec![Header::new("vary", extra.join(","))],
                body: Vec::new(),
            };
            put(material, &marker)?;
            let secondary = secondary_material(material, &extra, |n| {
                header_values(req_headers, n).map(<[u8]>::to_vec).collect()
            });
            put(&secondary, &entry)
        }
    }
}

/// Append one length-prefixed `tag` and `value` to key material.
fn part(m: &mut Vec<u8>, tag: &str, value: &[u8]) {
    m.extend_from_slice(&(tag.len() as u32).to_be_bytes());
    m.extend_from_slice(tag.as_bytes());
    m.extend_from_slice(&(value.len() as u32).to_be_bytes());
    m.extend_from_slice(value);
}

/// The values of `names` (sorted, lower-case) in the request, as
/// `values_of` reads them; an absent header and an empty one differ.
fn headers_part(m: &mut Vec<u8>, names: &[String], values_of: impl Fn(&str) -> Vec<Vec<u8>>) {
    part(m, "headers", names.len().to_string().as_bytes());
    for n in names {
        part(m, "h", n.as_bytes());
        let values = values_of(n);
        part(m, "hn", values.len().to_string().as_bytes());
        for v in &values {
            part(m, "hv", v);
        }
    }
}

fn secondary_material(
    material: &[u8],
    names: &[String],
    values_of: impl Fn(&str) -> Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut m = material.to_vec();
    part(&mut m, "vary", b"");
    headers_part(&mut m, names, values_of);
    m
}

/// The cache key: short, fixed-length, whatever the client sent.
fn key(material: &[u8]) -> String {
    let digest = Sha256::digest(material);
    let mut k = String::with_capacity(8 + 64);
    k.push_str("cache/1/");
    for b in digest {
        k.push_str(&format!("{b:02x}"));
    }
    k
}

/// The header names a marker entry lists.
fn marker_names(entry: &CachedResponse) -> Option<Vec<String>> {
    let v = header_values(&entry.headers, "vary").next()?;
    let names: Vec<String> = std::str::from_utf8(v)
        .ok()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The header names of the response's `Vary` fields, lower-case, sorted,
/// deduplicated; `None` for `Vary: *` (or a value that is not a list of
/// header names, which is treated the same).
fn vary_names(headers: &[Header]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for v in header_values(headers, "vary") {
        let v = std::str::from_utf8(v).ok()?;
        for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if n == "*" || !valid_header_name(n) {
                return None;
            }
            names.push(n.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// Headers never stored or replayed: hop-by-hop and framing fields, the
/// per-call ones the gateway or this step sets, and the step's private one.
fn storable_header(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "age"
            | "x-cache"
            | "x-request-id"
            | "set-cookie"
            | META
    )
}

/// Whether the client asked for a fresh response (`Cache-Control: no-cache`,
/// or `Pragma: no-cache` without `Cache-Control`).
fn client_no_cache(call: &Call<'_>) -> bool {
    let cache_control = call.header_values("cache-control");
    if !cache_control.is_empty() {
        return CacheControl::parse(cache_control.iter().map(Vec::as_slice)).no_cache;
    }
    call.header_values("pragma").iter().any(|v| {
        std::str::from_utf8(v).is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
    })
}

/// The `Cache-Control` directives this step reads.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl CacheControl {
    /// The directives of these `Cache-Control` field values.
    fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in values {
            let Ok(v) = std::str::from_utf8(v) else {
                // Unreadable: assume the worst.
                cc.no_store = true;
                continue;
            };
            for d in v.split(',') {
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (d.trim(), None),
                };
                // Invalid or negative ages count as 0 (stale).
                let secs = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `no-cache="field"` and `private="field"` are taken
                    // as the unqualified directives: never wrong.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "max-age" => cc.max_age = Some(cc.max_age.map_or(secs(), |m| m.min(secs()))),
                    "s-maxage" => cc.s_maxage = Some(cc.s_maxage.map_or(secs(), |m| m.min(secs()))),
                    _ => {}
                }
            }
        }
        cc
    }
}

tollgate_policy_sdk::export_policy!(Cache);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
