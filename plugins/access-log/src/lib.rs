//! `access-log`: one JSON line per call, written in the response phase to
//! the gateway's sink (standard output or the `[access-log] path` file).
//!
//! ```toml
//! [[api.chain]]
//! plugin = "access-log"                  # first in the chain: it logs last
//! grants = ["timing", "sink"]
//! [api.chain.config]
//! include-query = true
//! redact-query = ["session"]             # added to the built-in list
//! headers = ["user-agent"]
//! response-headers = ["content-type"]
//! redact-headers = ["x-secret"]          # added to the built-in list
//! ```
//!
//! Credentials never reach the log: the values of `authorization`,
//! `proxy-authorization`, `cookie`, `set-cookie`, `x-api-key` and of any
//! header named in `redact-headers` are written as `"[redacted]"`, and so
//! are credential-like query parameters. See `README.md`.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_policy_sdk::{
    clock, header_values, query, services, valid_header_name, Call, ConfigError, Policy,
    PolicyInfo, ResponseDecision,
};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";
/// Headers whose values are always redacted.
pub const ALWAYS_REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// Query parameters whose values are always redacted (compared after
/// decoding, ASCII case-insensitively).
pub const ALWAYS_REDACTED_QUERY: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "client_secret",
    "password",
    "secret",
    "signature",
    "sig",
];
/// Most names in each list of the configuration.
pub const MAX_NAMES: usize = 32;
/// Longest string field (path, query, header value) in a line, in bytes;
/// longer ones are cut at a character boundary and end in `...`.
pub const MAX_FIELD: usize = 2048;

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Log the query string (with credential parameters redacted).
    #[serde(default)]
    pub include_query: bool,
    /// More query parameters whose values are redacted.
    #[serde(default)]
    pub redact_query: Vec<String>,
    /// Request headers to log.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers to log.
    #[serde(default)]
    pub response_headers: Vec<String>,
    /// More headers whose values are redacted.
    #[serde(default)]
    pub redact_headers: Vec<String>,
}

/// The configured policy.
#[derive(Debug)]
pub struct AccessLog {
    include_query: bool,
    redact_query: Vec<String>,
    headers: Vec<String>,
    response_headers: Vec<String>,
    redact_headers: Vec<String>,
}

/// One log line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    api: &'a str,
    route: &'a str,
    method: &'a str,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    status: u16,
    total_us: u64,
    upstream_us: u64,
    steps: Vec<StepTime>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    request_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    response_headers: BTreeMap<String, String>,
}

/// Time spent by one request step.
#[derive(Debug, Serialize)]
struct StepTime {
    step: String,
    us: u64,
}

fn header_list(field: &str, names: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if names.len() > MAX_NAMES {
        return Err(ConfigError::at(field, format!("at most {MAX_NAMES} names")));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if !valid_header_name(n) {
            return Err(ConfigError::at(
                format!("{field}.{i}"),
                format!("{n:?} is not a valid header name"),
            ));
        }
        let n = n.to_ascii_lowercase();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

impl Policy for AccessLog {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.redact_query.len() > MAX_NAMES {
            return Err(ConfigError::at(
                "redact-query",
                format!("at most {MAX_NAMES} names"),
            ));
        }
        let mut redact_query: Vec<String> = ALWAYS_REDACTED_QUERY
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (i, n) in c.redact_query.iter().enumerate() {
            if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) {
                return Err(ConfigError::at(
                    format!("redact-query.{i}"),
                    "a query parameter name: 1 to 256 characters, no control characters",
                ));
            }
            redact_query.push(n.to_lowercase());
        }
        let mut redact_headers: Vec<String> = ALWAYS_REDACTED_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        redact_headers.extend(header_list("redact-headers", c.redact_headers)?);
        Ok(AccessLog {
            include_query: c.include_query,
            redact_query,
            headers: header_list("headers", c.headers)?,
            response_headers: header_list("response-headers", c.response_headers)?,
            redact_headers,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No body access, and nothing to do before the response is known:
        // the response phase reads the request as it went upstream.
        PolicyInfo::response_only()
    }

    fn on_response(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> ResponseDecision {
        services::sink_line(&self.line(call));
        ResponseDecision::default()
    }
}

impl AccessLog {
    /// The JSON line for this call (in the response phase: the request as
    /// it went upstream, the response as it stands). Reads only what the
    /// line needs: the query only with `include-query`, and only the
    /// configured headers.
    pub fn line(&self, call: &Call<'_>) -> String {
        let timing = services::timing();
        let request_id = call.request_id();
        let (api, route, method, client) =
            (call.api(), call.route(), call.method(), call.client_addr());
        let consumer = call.consumer();
        let consumer = consumer.as_ref();
        let query = if self.include_query {
            call.query().map(|q| cut(&self.redact_query(&q)))
        } else {
            None
        };
        let request_headers = self.pick(&self.headers, |n| call.header_values(n));
        let response_headers = if self.response_headers.is_empty() {
            BTreeMap::new()
        } else {
            // One copy of the response's fields: a repeated field's values
            // are all logged, and the call has no per-name list for them.
            let fields = call.response_headers();
            self.pick(&self.response_headers, |n| {
                header_values(&fields, n).map(<[u8]>::to_vec).collect()
            })
        };
        let line = Line {
            time: rfc3339_ms(clock::now_ms()),
            request_id: &request_id,
            api: &api,
            route: &route,
            method: &method,
            path: cut(&call.path()),
            query,
            client: &client,
            consumer: consumer.map(|c| c.id.as_str()),
            app: consumer.and_then(|c| c.app.as_deref()),
            plan: consumer.and_then(|c| c.plan.as_deref()),
            status: call.status().unwrap_or_default(),
            total_us: timing.total_us,
            upstream_us: timing.upstream_us,
            steps: timing
                .steps
                .into_iter()
                .map(|(step, us)| StepTime { step, us })
                .collect(),
            request_headers,
            response_headers,
        };
        serde_json::to_string(&line).unwrap_or_else(|e| {
            serde_json::json!({ "request_id": request_id, "error": e.to_string() }).to_string()
        })
    }

    /// The query with the values of credential parameters replaced; every
    /// other piece exactly as sent.
    fn redact_query(&self, q: &str) -> String {
        query::raw_pairs(q)
            .map(|(k, v)| {
                let name = query::decode_component(k).to_lowercase();
                match v {
                    Some(_) if self.redact_query.contains(&name) => format!("{k}={REDACTED}"),
                    Some(v) => format!("{k}={v}"),
                    None => k.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The configured headers that are present: values of a repeated field
    /// joined by `, `, redacted where they must be.
    fn pick(
        &self,
        names: &[String],
        values_of: impl Fn(&str) -> Vec<Vec<u8>>,
    ) -> BTreeMap<String, String> {
        names
            .iter()
            .filter_map(|n| {
                let values = values_of(n);
                if values.is_empty() {
                    return None;
                }
                let value = if self.redact_headers.contains(n) {
                    REDACTED.to_string()
                } else {
                    let joined = values.join(&b", "[..]);
                    cut(&String::from_utf8_lossy(&joined))
                };
                Some((n.clone(), value))
            })
            .collect()
    }
}

/// `s` cut to at most [`MAX_FIELD`] bytes at a character boundary.
fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds,
/// e.g. `2023-11-14T22:13:20.000Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

tollgate_policy_sdk::export_policy!(AccessLog);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
