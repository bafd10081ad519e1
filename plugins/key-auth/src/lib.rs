//! `key-auth`: authenticate the caller by an API key.
//!
//! The key is read from a header (default `x-api-key`) and, if configured,
//! from a query parameter, and looked up with the gateway's consumer
//! directory (`services::consumers::lookup_key`, grant `consumers`). A known
//! key sets the call's consumer for later steps and analytics, and (by
//! default) sends `x-consumer-id` upstream. A missing, unknown, wrong,
//! expired or ambiguous key gets one and the same `401` — but a call that
//! presents no key at all, to an API a product open to anonymous callers
//! covers, goes on as the consumer `anonymous`
//! (`services::consumers::open_access`).
//!
//! ```toml
//! [[api.chain]]
//! plugin = "key-auth"
//! grants = ["consumers"]
//! config = { header = "x-api-key", query = "api_key", strip = true, realm = "pets" }
//! ```
//!
//! See `README.md` for the reference.

#![forbid(unsafe_code)]

use serde::Deserialize;
use tollgate_policy_sdk::query::{decode_component, raw_pairs};
use tollgate_policy_sdk::services::consumers;
use tollgate_policy_sdk::{
    export_policy, log, valid_header_name, Call, ConfigError, Consumer, Policy, PolicyInfo,
    RequestDecision, RequestEdits, Response,
};

/// The header that carries the consumer id upstream.
pub const CONSUMER_HEADER: &str = "x-consumer-id";
/// Every request header starting with this is removed: only the gateway may
/// say who the consumer is.
pub const CONSUMER_PREFIX: &str = "x-consumer-";
/// Keys longer than this are refused without a lookup.
pub const MAX_KEY_BYTES: usize = 4096;

/// Header names a step may not touch (framing) or that would make no sense
/// as a credential.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "host",
];

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The header carrying the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// A query parameter that may carry the key instead of the header.
    #[serde(default)]
    pub query: Option<String>,
    /// Remove the credential (header and query parameter) before the
    /// upstream sees the request.
    #[serde(default = "yes")]
    pub strip: bool,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Send `x-consumer-id` upstream.
    #[serde(default = "yes")]
    pub forward_consumer_header: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}

fn default_realm() -> String {
    "tollgate".into()
}

fn yes() -> bool {
    true
}

/// The configured policy.
#[derive(Debug)]
pub struct KeyAuth {
    header: String,
    query: Option<String>,
    strip: bool,
    challenge: String,
    forward: bool,
}

impl Policy for KeyAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let header = config.header.to_ascii_lowercase();
        if !valid_header_name(&header) {
            return Err(ConfigError::at(
                "header",
                format!("{:?} is not a valid header name", config.header),
            ));
        }
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(ConfigError::at(
                "header",
                format!("`{header}` cannot carry an API key"),
            ));
        }
        if header.starts_with(CONSUMER_PREFIX) {
            return Err(ConfigError::at(
                "header",
                format!("`{header}`: headers starting with `{CONSUMER_PREFIX}` are reserved for the consumer the gateway forwards"),
            ));
        }
        if let Some(q) = &config.query {
            if q.is_empty() || q.len() > 256 {
                return Err(ConfigError::at(
                    "query",
                    "must be a parameter name of 1 to 256 characters",
                ));
            }
        }
        let realm = &config.realm;
        if realm.is_empty()
            || realm.len() > 256
            || !realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::at(
                "realm",
                "must be 1 to 256 printable ASCII characters without `\"` or `\\`",
            ));
        }
        Ok(KeyAuth {
            header,
            query: config.query,
            strip: config.strip,
            challenge: format!("ApiKey realm=\"{realm}\""),
            forward: config.forward_consumer_header,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No body, and nothing to do on the response: every configuration
        // is request-only.
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // The query is read only if a parameter may carry the key, and once.
        let query = match &self.query {
            Some(_) => call.query(),
            None => None,
        };
        let key = match self.credential(call, query.as_deref()) {
            Ok(Some(key)) => key,
            Ok(None) => return self.anonymous(call),
            Err(why) => {
                log::info(&format!("key-auth: refused: {why}"));
                return RequestDecision::Respond(self.unauthorized());
            }
        };
        let Some(consumer) = consumers::lookup_key(&call.api(), &key) else {
            // Never log the key, not even a prefix of it.
            log::info("key-auth: refused: unknown, revoked or expired key");
            return RequestDecision::Respond(self.unauthorized());
        };
        log::debug(&format!(
            "key-auth: consumer `{}` (key `{}`)",
            consumer.id,
            consumer.key_id.as_deref().unwrap_or("-")
        ));
        RequestDecision::Continue(self.admit(call, query.as_deref(), consumer))
    }
}

impl KeyAuth {
    /// A call without any key: admitted as the anonymous consumer when a
    /// product open to anonymous callers covers the API, refused otherwise.
    fn anonymous(&self, call: &Call<'_>) -> RequestDecision {
        match consumers::open_access(&call.api()) {
            Some(consumer) => {
                log::debug(&format!(
                    "key-auth: no key; admitted as `{}` (open product `{}`)",
                    consumer.id,
                    consumer.product.as_deref().unwrap_or("-")
                ));
                RequestDecision::Continue(self.admit(call, None, consumer))
            }
            None => {
                log::info("key-auth: refused: no key");
                RequestDecision::Respond(self.unauthorized())
            }
        }
    }

    /// The edits that let the call go on as `consumer`: no client-sent
    /// `x-consumer-*` header, the credential stripped (if configured), the
    /// consumer forwarded (if configured) and set.
    fn admit(&self, call: &Call<'_>, query: Option<&str>, consumer: Consumer) -> RequestEdits {
        let mut edits = RequestEdits::default();
        // Nobody but the gateway says who the consumer is. The names to
        // remove are known only by prefix, so this (accepted calls only)
        // reads every request field.
        let mut forged: Vec<String> = vec![CONSUMER_HEADER.to_string()];
        for h in &call.headers() {
            let name = h.name.to_ascii_lowercase();
            if name.starts_with(CONSUMER_PREFIX) && !forged.contains(&name) {
                forged.push(name);
            }
        }
        for name in forged {
            edits = edits.remove_header(name);
        }
        if self.strip {
            edits = edits.remove_header(&self.header);
            if let (Some(param), Some(query)) = (&self.query, query) {
                if let Some(rest) = without_param(query, param) {
                    edits.query = Some(rest);
                }
            }
        }
        if self.forward {
            // Consumer ids are manifest names (letters, digits, `-_.`); check
            // anyway, a bad header value would fail the whole call.
            if tollgate_policy_sdk::valid_header_value(consumer.id.as_bytes()) {
                edits = edits.set_header(CONSUMER_HEADER, consumer.id.as_str());
            }
        }
        edits.consumer = Some(consumer);
        edits
    }

    /// The one key the request presents, `None` when it presents none at
    /// all, or why it is refused. Exactly one credential is accepted: a
    /// header field given twice, a parameter given twice, or both a header
    /// and a parameter are refused, so that no later reader can pick a
    /// different one than the one checked here.
    fn credential(
        &self,
        call: &Call<'_>,
        query: Option<&str>,
    ) -> Result<Option<String>, &'static str> {
        let mut found: Vec<Vec<u8>> = call.header_values(&self.header);
        if let (Some(param), Some(query)) = (&self.query, query) {
            for (k, v) in raw_pairs(query) {
                if decode_component(k) == *param {
                    found.push(decode_component(v.unwrap_or("")).into_bytes());
                }
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => {
                let key = found.pop().unwrap_or_default();
                if key.is_empty() {
                    return Err("empty key");
                }
                if key.len() > MAX_KEY_BYTES {
                    return Err("key too long");
                }
                String::from_utf8(key)
                    .map(Some)
                    .map_err(|_| "key is not UTF-8")
            }
            _ => Err("more than one key"),
        }
    }

    fn unauthorized(&self) -> Response {
        Response::json_error(401, "unauthorized", "a valid API key is required")
            .header("www-authenticate", self.challenge.as_str())
            .header("cache-control", "no-store")
    }
}

/// `query` without every occurrence of `param` (compared decoded), other
/// pieces kept as written; `None` if `param` does not occur. An empty result
/// is `Some("")`, which removes the query.
pub fn without_param(query: &str, param: &str) -> Option<String> {
    let mut hit = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .filter(|piece| {
            let k = piece.split_once('=').map_or(*piece, |(k, _)| k);
            let same = decode_component(k) == param;
            hit |= same;
            !same
        })
        .collect();
    hit.then(|| kept.join("&"))
}

export_policy!(KeyAuth);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
