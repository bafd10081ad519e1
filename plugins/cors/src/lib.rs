//! `cors`: Cross-Origin Resource Sharing for browsers.
//!
//! ```toml
//! [config]
//! allow-origins = ["https://app.example.com", "https://*.example.com"]  # or ["*"]
//! allow-methods = ["GET", "POST", "PUT", "DELETE"]   # or ["*"]
//! allow-headers = ["content-type", "authorization"]  # or ["*"]
//! expose-headers = ["x-request-id"]
//! allow-credentials = true
//! max-age = 600
//! ```
//!
//! Preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! are answered here, `204` or `403`, and never reach the upstream. Other
//! requests go on; their responses get the CORS headers if the origin is
//! allowed, and none if it is not. See `README.md`.
//!
//! Phases: the request phase answers preflights and attaches the CORS
//! response headers of other requests (`RequestEdits::response_headers`:
//! they depend only on the request). The response phase is declared only
//! when origins are listed (not `["*"]`): it adds `Vary: Origin` unless the
//! response's `Vary` already covers it, which only the response can tell.

#![forbid(unsafe_code)]

pub mod origin;

use origin::OriginRule;
use serde::Deserialize;
use tollgate_policy_sdk::{
    export_policy, json_error, log, valid_header_name, Call, ConfigError, Header, HeaderOp, Policy,
    PolicyInfo, RequestDecision, RequestEdits, Response, ResponseDecision, ResponseEdits,
};

/// The step configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Origins allowed to read responses: exact origins, `scheme://*.domain`
    /// patterns, or `["*"]` for any origin (without credentials).
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for (GET, HEAD and POST always pass), or
    /// `["*"]`.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for, or `["*"]`.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers that scripts may read, or `["*"]` (without
    /// credentials).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether browsers may send cookies and credentials.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long (seconds) browsers may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<u32>,
}

/// The most `max-age` may be: one day (Firefox's cap; Chromium caps at two
/// hours).
pub const MAX_AGE_LIMIT: u32 = 86_400;

/// A list from the configuration, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum List<T> {
    Any,
    Only(Vec<T>),
}

/// Headers this policy owns on responses: the upstream's are replaced.
const CORS_RESPONSE_HEADERS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
];

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// What the request phase decided, for the response phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The request phase has not run.
    Fresh,
    /// This step answered a preflight: its response is complete.
    Answered,
    /// An ordinary request: the request phase attached the CORS response
    /// headers; the response phase only sees to `Vary`.
    Actual,
}

/// The `cors` policy.
#[derive(Debug)]
pub struct Cors {
    origins: List<OriginRule>,
    /// As configured, standard method names upper-cased.
    methods: List<String>,
    /// Lower-case.
    headers: List<String>,
    /// Lower-case; `Any` is sent as `*`.
    expose: List<String>,
    credentials: bool,
    max_age: Option<u32>,
    state: State,
}

/// Check a list of tokens: `["*"]` alone, or valid names given once.
fn token_list(
    field: &str,
    entries: &[String],
    what: &str,
    normalise: impl Fn(&str) -> String,
) -> Result<List<String>, ConfigError> {
    if entries.iter().any(|e| e == "*") {
        return if entries.len() == 1 {
            Ok(List::Any)
        } else {
            let i = entries.iter().position(|e| e != "*").unwrap_or(0);
            Err(ConfigError::at(
                format!("{field}.{i}"),
                "\"*\" must be the only entry: it already allows everything",
            ))
        };
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        if !valid_header_name(entry) {
            return Err(ConfigError::at(
                format!("{field}.{i}"),
                format!("{entry:?} is not a valid {what}"),
            ));
        }
        let entry = normalise(entry);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(List::Only(out))
}

/// Standard methods (which browsers upper-case) in upper case; others as
/// written (browsers send them as the script wrote them).
fn normalise_method(m: &str) -> String {
    const STANDARD: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];
    match STANDARD.iter().find(|s| s.eq_ignore_ascii_case(m)) {
        Some(s) => s.to_string(),
        None => m.to_string(),
    }
}

/// The value of a header that must appear exactly once (given its
/// values), as UTF-8.
fn single_header(values: &[Vec<u8>]) -> Option<&str> {
    match values {
        [only] => std::str::from_utf8(only).ok(),
        _ => None,
    }
}

/// A value for a message: quoted, and cut after 100 bytes.
fn shown(value: &str) -> String {
    match value.char_indices().nth(100) {
        Some((i, _)) => format!("{:?}...", &value[..i]),
        None => format!("{value:?}"),
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request origin, if it
    /// is allowed.
    fn allow_origin(&self, origin: &str) -> Option<String> {
        match &self.origins {
            List::Any => Some("*".into()),
            List::Only(rules) => rules
                .iter()
                .any(|r| r.matches(origin))
                .then(|| origin.to_string()),
        }
    }

    fn method_allowed(&self, method: &str) -> bool {
        // CORS-safelisted methods never need permission (Fetch standard,
        // CORS-preflight fetch).
        ["GET", "HEAD", "POST"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(method))
            || match &self.methods {
                List::Any => true,
                List::Only(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
            }
    }

    fn header_allowed(&self, name: &str) -> bool {
        match &self.headers {
            List::Any => true,
            List::Only(list) => list.iter().any(|h| h == name),
        }
    }

    fn forbidden(message: String) -> Response {
        log::debug(&format!("cors: preflight refused: {message}"));
        json_error(403, "cors_forbidden", &message).header("vary", PREFLIGHT_VARY)
    }

    /// Answer a preflight, given the values of its `Origin` and
    /// `Access-Control-Request-Method` fields.
    fn preflight(&self, call: &Call<'_>, origins: &[Vec<u8>], methods: &[Vec<u8>]) -> Response {
        let Some(origin) = single_header(origins) else {
            return Self::forbidden("the request must have exactly one Origin header".into());
        };
        let Some(allow_origin) = self.allow_origin(origin) else {
            return Self::forbidden(format!("the origin {} is not allowed", shown(origin)));
        };
        let method = match single_header(methods) {
            Some(m) if valid_header_name(m) => m,
            _ => {
                return Self::forbidden(
                    "Access-Control-Request-Method must be exactly one method name".into(),
                )
            }
        };
        if !self.method_allowed(method) {
            return Self::forbidden(format!("the method {} is not allowed", shown(method)));
        }
        let mut requested: Vec<String> = Vec::new();
        for value in call.header_values("access-control-request-headers") {
            let Ok(value) = std::str::from_utf8(&value) else {
                return Self::forbidden("Access-Control-Request-Headers is not valid".into());
            };
            for name in value.split(',').map(|n| n.trim_matches([' ', '\t'])) {
                if name.is_empty() {
                    continue;
                }
                if !valid_header_name(name) {
                    return Self::forbidden(format!(
                        "{} in Access-Control-Request-Headers is not a header name",
                        shown(name)
                    ));
                }
                let name = name.to_ascii_lowercase();
                if !self.header_allowed(&name) {
                    return Self::forbidden(format!("the header {} is not allowed", shown(&name)));
                }
                if !requested.contains(&name) {
                    requested.push(name);
                }
            }
        }

        let mut resp = Response::new(204).header("access-control-allow-origin", allow_origin);
        if self.credentials {
            resp = resp.header("access-control-allow-credentials", "true");
        }
        // The configured list (browsers cache it for max-age), plus the
        // requested method as sent if the list does not have it byte for
        // byte (browsers compare case-sensitively).
        let methods = match &self.methods {
            List::Any => method.to_string(),
            List::Only(list) if list.iter().any(|m| m == method) => list.join(", "),
            List::Only(list) if list.is_empty() => method.to_string(),
            List::Only(list) => format!("{}, {method}", list.join(", ")),
        };
        resp = resp.header("access-control-allow-methods", methods);
        let headers = match &self.headers {
            List::Any => requested.join(", "),
            List::Only(list) => list.join(", "),
        };
        if !headers.is_empty() {
            resp = resp.header("access-control-allow-headers", headers);
        }
        if let Some(age) = self.max_age {
            resp = resp.header("access-control-max-age", age.to_string());
        }
        resp.header("vary", PREFLIGHT_VARY)
    }

    /// Whether responses differ by the request's origin.
    fn varies_by_origin(&self) -> bool {
        !matches!(self.origins, List::Any)
    }

    /// The CORS headers of an ordinary request's response, given the
    /// `Access-Control-Allow-Origin` value (`None`: the origin is missing
    /// or not allowed). This step owns CORS: whatever the upstream (or a
    /// later step) said goes, so every CORS header this step does not set
    /// is removed.
    fn actual_headers(&self, allow: Option<String>) -> Vec<HeaderOp> {
        let mut set: Vec<HeaderOp> = Vec::new();
        if let Some(origin) = allow {
            set.push(HeaderOp::set("access-control-allow-origin", origin));
            if self.credentials {
                set.push(HeaderOp::set("access-control-allow-credentials", "true"));
            }
            match &self.expose {
                List::Any => set.push(HeaderOp::set("access-control-expose-headers", "*")),
                List::Only(list) if !list.is_empty() => set.push(HeaderOp::set(
                    "access-control-expose-headers",
                    list.join(", "),
                )),
                List::Only(_) => {}
            }
        }
        // `set` replaces every field of its name; removing a field that is
        // not there changes nothing.
        let mut ops: Vec<HeaderOp> = CORS_RESPONSE_HEADERS
            .iter()
            .filter(|name| {
                !set.iter()
                    .any(|op| matches!(op, HeaderOp::Set(h) if h.name == **name))
            })
            .map(|name| HeaderOp::remove(*name))
            .collect();
        ops.extend(set);
        ops
    }
}

/// Whether a response's `Vary` fields already cover `Origin`.
fn vary_covers_origin(headers: &[Header]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("vary"))
        .any(|h| {
            h.value.split(|&b| b == b',').any(|item| {
                let item = item.trim_ascii();
                item == b"*" || item.eq_ignore_ascii_case(b"origin")
            })
        })
}

impl Policy for Cors {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let Config {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        } = config;

        if allow_origins.is_empty() {
            return Err(ConfigError::at(
                "allow-origins",
                "list at least one origin, e.g. [\"https://app.example.com\"], or [\"*\"]",
            ));
        }
        let origins = if allow_origins.iter().any(|o| o == "*") {
            if allow_origins.len() > 1 {
                let i = allow_origins.iter().position(|o| o != "*").unwrap_or(0);
                return Err(ConfigError::at(
                    format!("allow-origins.{i}"),
                    "\"*\" must be the only entry: it already allows every origin",
                ));
            }
            if allow_credentials {
                return Err(ConfigError::at(
                    "allow-origins",
                    "\"*\" cannot be combined with allow-credentials = true: the CORS \
                     protocol forbids a wildcard origin with credentials; list the origins",
                ));
            }
            List::Any
        } else {
            let mut rules: Vec<OriginRule> = Vec::with_capacity(allow_origins.len());
            for (i, text) in allow_origins.iter().enumerate() {
                let rule = OriginRule::parse(text)
                    .map_err(|m| ConfigError::at(format!("allow-origins.{i}"), m))?;
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
            List::Only(rules)
        };

        let methods = token_list("allow-methods", &allow_methods, "method", normalise_method)?;
        let headers = token_list("allow-headers", &allow_headers, "header name", |h| {
            h.to_ascii_lowercase()
        })?;
        let expose = token_list("expose-headers", &expose_headers, "header name", |h| {
            h.to_ascii_lowercase()
        })?;
        if expose == List::Any && allow_credentials {
            return Err(ConfigError::at(
                "expose-headers",
                "\"*\" is taken literally when credentials are allowed; list the header \
                 names to expose",
            ));
        }
        if let Some(age) = max_age {
            if age > MAX_AGE_LIMIT {
                return Err(ConfigError::at(
                    "max-age",
                    format!(
                        "{age} is too long: at most {MAX_AGE_LIMIT} seconds (one day); \
                         browsers cap it anyway (Firefox at one day, Chromium at two hours)"
                    ),
                ));
            }
        }
        Ok(Cors {
            origins,
            methods,
            headers,
            expose,
            credentials: allow_credentials,
            max_age,
            state: State::Fresh,
        })
    }

    /// The request phase always; the response phase only when origins are
    /// listed, for `Vary: Origin`. No body.
    fn info(&self) -> PolicyInfo {
        if self.varies_by_origin() {
            PolicyInfo::default()
        } else {
            PolicyInfo::request_only()
        }
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // A preflight: `OPTIONS` with `Origin` and
        // `Access-Control-Request-Method`.
        let origins = call.header_values("origin");
        if !origins.is_empty() && call.method() == "OPTIONS" {
            let methods = call.header_values("access-control-request-method");
            if !methods.is_empty() {
                self.state = State::Answered;
                return RequestDecision::Respond(self.preflight(call, &origins, &methods));
            }
        }
        let allow = single_header(&origins).and_then(|o| self.allow_origin(o));
        self.state = State::Actual;
        RequestDecision::Continue(RequestEdits {
            response_headers: self.actual_headers(allow),
            ..RequestEdits::default()
        })
    }

    fn on_response(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> ResponseDecision {
        let mut edits = match self.state {
            State::Answered => return ResponseDecision::default(),
            // Not reached (the request phase runs first); own CORS anyway.
            State::Fresh => ResponseEdits {
                headers: self.actual_headers(None),
                ..ResponseEdits::default()
            },
            State::Actual => ResponseEdits::default(),
        };
        // The answer depends on the origin (allowed or not), so caches must
        // key on it, even for requests that sent none.
        if self.varies_by_origin() && !vary_covers_origin(&call.response_headers()) {
            edits = edits.append_header("vary", "Origin");
        }
        ResponseDecision::Continue(edits)
    }
}

export_policy!(Cors);

#[cfg(test)]
mod tests;
