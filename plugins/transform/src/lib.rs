//! `transform`: rewrite request headers, query and path, response headers,
//! and request and response bodies (JSON Pointer edits, JSON <-> XML).
//!
//! Every section is optional; unknown keys are rejected. See `README.md` for
//! the reference.
//!
//! ```toml
//! [config.request.headers]
//! set = { "x-api-version" = "2" }        # replace every field with this name
//! append = { "x-via" = "tollgate" }      # add alongside existing fields
//! remove = ["x-internal"]
//! rename = { "x-old" = "x-new" }         # move all values of x-old to x-new
//!
//! [config.request.query]
//! set = { "v" = "2" }                    # replace all occurrences with one
//! remove = ["debug"]                     # remove all occurrences
//!
//! [config.request]
//! path = "/v2/pets/{id}"                 # {id}: a route capture; {{ and }}: literal braces
//!
//! [config.response.headers]
//! set = { "cache-control" = "no-store" }
//!
//! [config.request.body]                  # the same keys for response.body
//! max-bytes = "1MiB"                     # body access limit (default 1MiB)
//! json.set = { "/meta/source" = "gateway" }
//! json.remove = ["/password"]
//! json.rename = { "/user_name" = "/userName" }
//! convert = "json-to-xml"                # or "xml-to-json"
//! xml.root = "root"                      # root element for json-to-xml
//! ```
//!
//! Header operations run in the order rename, remove, set, append. Renames
//! are simultaneous: each reads the headers as they arrived, so
//! `{ a = "b", b = "a" }` swaps two headers. Bodies are read only in a phase
//! with a body section; see [`body`] and `README.md`.
//!
//! Phases: the request phase runs only if the configuration edits the
//! request, or has response header operations that need nothing from the
//! response (`set`, `append`, `remove` without `rename` or a response body
//! section): those the request phase hands to the gateway
//! (`RequestEdits::response_headers`), which applies them where the
//! response phase would have run. The response phase runs only for a
//! response `rename` or body section, and then does all the response
//! header operations itself, in the order above.

#![forbid(unsafe_code)]

pub mod body;
mod json;
mod xml;

use body::{BodyConfig, BodyPlan};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use tollgate_policy_sdk::query::{decode_component, encode_component, encode_path_segment};
use tollgate_policy_sdk::{
    export_policy, json_error, log, valid_header_name, valid_header_value, BodyAccess, Call,
    ConfigError, Header, HeaderOp, Phases, Policy, PolicyInfo, RequestDecision, RequestEdits,
    ResponseDecision, ResponseEdits,
};

// ---------------------------------------------------------------------------
// Configuration as written

/// The step configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Edits to the request.
    pub request: RequestConfig,
    /// Edits to the response.
    pub response: ResponseConfig,
}

/// `[config.request]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestConfig {
    /// `[config.request.headers]`.
    pub headers: HeadersConfig,
    /// `[config.request.query]`.
    pub query: QueryConfig,
    /// A path template, e.g. `/v2/pets/{id}`.
    pub path: Option<String>,
    /// `[config.request.body]`: the request body is read only if present.
    pub body: Option<BodyConfig>,
}

/// `[config.response]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// `[config.response.headers]`.
    pub headers: HeadersConfig,
    /// `[config.response.body]`: the response body is read only if present.
    pub body: Option<BodyConfig>,
}

/// Header operations.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    /// `name = "value"`: replace every field called `name` by one.
    pub set: Pairs,
    /// `name = "value"`: add a field, keeping existing ones.
    pub append: Pairs,
    /// Names of fields to remove.
    pub remove: Vec<String>,
    /// `old = "new"`: move every value of `old` to `new`.
    pub rename: Pairs,
}

/// Query operations.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// `key = "value"`: replace every occurrence of `key` by one, or add it.
    pub set: Pairs,
    /// Keys whose every occurrence is removed.
    pub remove: Vec<String>,
}

/// A table of strings, kept in the order given.
#[derive(Debug, Default)]
pub struct Pairs(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

// ---------------------------------------------------------------------------
// Configuration as checked

/// Header operations with validated, lower-cased names.
#[derive(Debug, Default)]
struct HeaderPlan {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    set: Vec<(String, Vec<u8>)>,
    append: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct QueryPlan {
    /// Decoded keys and values.
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Part {
    /// Path text, already encoded for the output.
    Literal(String),
    Capture(String),
}

/// The `transform` policy.
#[derive(Debug)]
pub struct Transform {
    request_headers: HeaderPlan,
    query: Option<QueryPlan>,
    path: Option<Vec<Part>>,
    request_body: Option<BodyPlan>,
    response_headers: HeaderPlan,
    response_body: Option<BodyPlan>,
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    if valid_header_name(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(ConfigError::at(
            field,
            format!("{name:?} is not a valid header name"),
        ))
    }
}

fn header_value(field: &str, value: String) -> Result<Vec<u8>, ConfigError> {
    if valid_header_value(value.as_bytes()) {
        Ok(value.into_bytes())
    } else {
        Err(ConfigError::at(
            field,
            "a header value must not contain CR, LF or NUL",
        ))
    }
}

/// Lower-cased names of a table, each valid and given once.
fn header_table(field: &str, pairs: &[(String, String)]) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::with_capacity(pairs.len());
    for (name, _) in pairs {
        let lower = header_name(field, name)?;
        if names.contains(&lower) {
            return Err(ConfigError::at(
                field,
                format!("{lower:?} is given more than once (header names are case-insensitive)"),
            ));
        }
        names.push(lower);
    }
    Ok(names)
}

impl HeaderPlan {
    fn new(prefix: &str, config: HeadersConfig) -> Result<Self, ConfigError> {
        let mut plan = HeaderPlan::default();

        let field = format!("{prefix}.headers.rename");
        let names = header_table(&field, &config.rename.0)?;
        for (from, (orig, to)) in names.into_iter().zip(config.rename.0) {
            let to = header_name(&format!("{field}.{orig}"), &to)?;
            plan.rename.push((from, to));
        }

        for (i, name) in config.remove.iter().enumerate() {
            let name = header_name(&format!("{prefix}.headers.remove.{i}"), name)?;
            if !plan.remove.contains(&name) {
                plan.remove.push(name);
            }
        }

        for (op, pairs, out) in [
            ("set", config.set.0, &mut plan.set),
            ("append", config.append.0, &mut plan.append),
        ] {
            let field = format!("{prefix}.headers.{op}");
            let names = header_table(&field, &pairs)?;
            for (name, (orig, value)) in names.into_iter().zip(pairs) {
                out.push((name, header_value(&format!("{field}.{orig}"), value)?));
            }
        }
        Ok(plan)
    }

    fn is_empty(&self) -> bool {
        self.rename.is_empty()
            && self.remove.is_empty()
            && self.set.is_empty()
            && self.append.is_empty()
    }

    /// The operations for a header list, in order: rename, remove, set,
    /// append. `values_of(name)` gives the values of the fields called
    /// `name` (as they arrived); it is asked only for renamed names, once
    /// each.
    fn ops(&self, values_of: impl Fn(&str) -> Vec<Vec<u8>>) -> Vec<HeaderOp> {
        let mut ops = Vec::new();
        if !self.rename.is_empty() {
            let mut moved = Vec::new();
            for (from, to) in &self.rename {
                let values = values_of(from);
                if !values.is_empty() {
                    ops.push(HeaderOp::remove(from.clone()));
                }
                moved.extend(values.into_iter().map(|v| HeaderOp::append(to.clone(), v)));
            }
            ops.extend(moved);
        }
        ops.extend(self.remove.iter().map(|n| HeaderOp::remove(n.clone())));
        ops.extend(
            self.set
                .iter()
                .map(|(n, v)| HeaderOp::set(n.clone(), v.clone())),
        );
        ops.extend(
            self.append
                .iter()
                .map(|(n, v)| HeaderOp::append(n.clone(), v.clone())),
        );
        ops
    }
}

impl QueryPlan {
    fn new(config: QueryConfig) -> Result<Option<Self>, ConfigError> {
        if config.set.0.is_empty() && config.remove.is_empty() {
            return Ok(None);
        }
        let mut plan = QueryPlan::default();
        for (key, value) in config.set.0 {
            if key.is_empty() {
                return Err(ConfigError::at(
                    "request.query.set",
                    "query keys must not be empty",
                ));
            }
            plan.set.push((key, value));
        }
        for (i, key) in config.remove.into_iter().enumerate() {
            if key.is_empty() {
                return Err(ConfigError::at(
                    format!("request.query.remove.{i}"),
                    "query keys must not be empty",
                ));
            }
            plan.remove.push(key);
        }
        Ok(Some(plan))
    }

    /// The new query string for `query`. Untouched parameters keep their
    /// order and their encoding; `remove` drops every occurrence of a key;
    /// `set` puts one encoded parameter where the key first appeared, or at
    /// the end. Keys are compared decoded (`+` is a space).
    fn apply(&self, query: Option<&str>) -> Option<String> {
        let mut out: Vec<String> = Vec::new();
        let mut done = vec![false; self.set.len()];
        for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let raw_key = piece.split_once('=').map_or(piece, |(k, _)| k);
            let key = decode_component(raw_key);
            if self.remove.contains(&key) {
                continue;
            }
            if let Some(i) = self.set.iter().position(|(k, _)| *k == key) {
                if !done[i] {
                    done[i] = true;
                    out.push(encode_pair(&self.set[i]));
                }
                continue;
            }
            out.push(piece.to_string());
        }
        for (pair, done) in self.set.iter().zip(done) {
            if !done {
                out.push(encode_pair(pair));
            }
        }
        let new = out.join("&");
        match query {
            None if new.is_empty() => None,
            _ => Some(new),
        }
    }
}

fn encode_pair((key, value): &(String, String)) -> String {
    format!("{}={}", encode_component(key), encode_component(value))
}

/// Parse a path template into literal text (encoded for the output) and
/// capture names.
fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    if !template.starts_with('/') {
        return Err("the path must start with \"/\"".into());
    }
    let mut parts = Vec::new();
    // Literal text as written (braces unescaped), encoded when flushed.
    let mut raw = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '}' if chars.peek().map(|&(_, next)| next) == Some(c) => {
                chars.next();
                raw.push(c);
            }
            '}' => {
                return Err(format!(
                    "unmatched \"}}\" at byte {i} (write \"}}}}\" for a literal brace)"
                ))
            }
            '{' => {
                let rest = &template[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!(
                        "unclosed \"{{\" at byte {i} (write \"{{{{\" for a literal brace)"
                    ));
                };
                let name = &rest[..end];
                if !valid_capture_name(name) {
                    return Err(format!(
                        "\"{{{name}}}\" is not a valid capture: a name is a letter or \"_\" \
                         followed by letters, digits, \"_\" or \"-\""
                    ));
                }
                for _ in 0..=name.chars().count() {
                    chars.next();
                }
                flush_literal(&mut raw, &mut parts);
                parts.push(Part::Capture(name.to_string()));
            }
            '?' | '#' => {
                return Err(format!(
                    "the path must not contain {c:?}; the query is edited with request.query"
                ))
            }
            c if c.is_control() => {
                return Err("the path must not contain control characters".into());
            }
            c => raw.push(c),
        }
    }
    flush_literal(&mut raw, &mut parts);
    Ok(parts)
}

/// Encode literal path text segment by segment (keeping `/` and valid `%XX`
/// escapes) and add it to `parts`.
fn flush_literal(raw: &mut String, parts: &mut Vec<Part>) {
    if !raw.is_empty() {
        let encoded: Vec<String> = raw.split('/').map(encode_path_segment).collect();
        parts.push(Part::Literal(encoded.join("/")));
        raw.clear();
    }
}

fn valid_capture_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Fill a parsed template from the route's captures (`capture(name)`);
/// `Err(name)` names a capture that the route did not provide.
fn render_path(parts: &[Part], capture: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut path = String::new();
    for part in parts {
        match part {
            Part::Literal(text) => path.push_str(text),
            Part::Capture(name) => match capture(name) {
                Some(value) => path.push_str(&encode_path_segment(&value)),
                None => return Err(name.clone()),
            },
        }
    }
    Ok(path)
}

/// The request fields a body plan reads: the first `content-type` and
/// every `content-encoding`.
fn body_headers(call: &Call<'_>) -> Vec<Header> {
    let mut headers: Vec<Header> = call
        .header("content-type")
        .map(|v| Header::new("content-type", v))
        .into_iter()
        .collect();
    headers.extend(
        call.header_values("content-encoding")
            .into_iter()
            .map(|v| Header::new("content-encoding", v)),
    );
    headers
}

impl Policy for Transform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let Config { request, response } = config;
        let path = match request.path {
            Some(template) => {
                Some(parse_template(&template).map_err(|m| ConfigError::at("request.path", m))?)
            }
            None => None,
        };
        Ok(Transform {
            request_headers: HeaderPlan::new("request", request.headers)?,
            query: QueryPlan::new(request.query)?,
            path,
            request_body: request
                .body
                .map(|b| BodyPlan::new("request.body", b))
                .transpose()?,
            response_headers: HeaderPlan::new("response", response.headers)?,
            response_body: response
                .body
                .map(|b| BodyPlan::new("response.body", b))
                .transpose()?,
        })
    }

    fn info(&self) -> PolicyInfo {
        let mut phases = Phases::empty();
        if self.edits_request() || self.response_headers_in_request() {
            phases = phases | Phases::REQUEST;
        }
        if self.needs_response() {
            phases = phases | Phases::RESPONSE;
        }
        PolicyInfo {
            // Bodies stream through unless a phase has a body section.
            body: BodyAccess {
                request: self.request_body.as_ref().map(|b| b.max_bytes),
                response: self.response_body.as_ref().map(|b| b.max_bytes),
            },
            phases,
        }
    }

    fn on_request(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
        let path = match &self.path {
            Some(parts) => match render_path(parts, |name| call.capture(name)) {
                Ok(path) => Some(path),
                Err(name) => {
                    return RequestDecision::Respond(json_error(
                        500,
                        "transform_missing_capture",
                        &format!(
                            "the path rewrite needs the route capture {name:?}, \
                             which this route does not provide"
                        ),
                    ))
                }
            },
            None => None,
        };
        let mut headers = self.request_headers.ops(|name| call.header_values(name));
        let mut new_body = None;
        if let (Some(plan), Some(body)) = (&self.request_body, body) {
            match plan.apply(&body_headers(call), body) {
                Ok(Some((bytes, content_type))) => {
                    new_body = Some(bytes);
                    if let Some(ct) = content_type {
                        headers.push(HeaderOp::set("content-type", ct));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let (status, code, message) = e.response_parts();
                    return RequestDecision::Respond(json_error(
                        status,
                        code,
                        &format!("the request body {message}"),
                    ));
                }
            }
        }
        // Response header operations that need nothing from the response:
        // the gateway applies them where the response phase would run.
        let response_headers = if self.response_headers_in_request() {
            self.response_headers.ops(|_| Vec::new())
        } else {
            Vec::new()
        };
        RequestDecision::Continue(RequestEdits {
            headers,
            response_headers,
            path,
            query: self
                .query
                .as_ref()
                .and_then(|q| q.apply(call.query().as_deref())),
            body: new_body,
            ..RequestEdits::default()
        })
    }

    fn on_response(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
        if !self.needs_response() {
            return ResponseDecision::default();
        }
        // Renames and the body plan need the response's fields (every value
        // of a name): one copy, and only for them.
        let body = self.response_body.as_ref().zip(body);
        let fields = if self.response_headers.rename.is_empty() && body.is_none() {
            Vec::new()
        } else {
            call.response_headers()
        };
        let mut headers = self.response_headers.ops(|name| {
            tollgate_policy_sdk::header_values(&fields, name)
                .map(<[u8]>::to_vec)
                .collect()
        });
        let mut new_body = None;
        if let Some((plan, body)) = body {
            match plan.apply(&fields, body) {
                Ok(Some((bytes, content_type))) => {
                    new_body = Some(bytes);
                    if let Some(ct) = content_type {
                        headers.push(HeaderOp::set("content-type", ct));
                    }
                }
                Ok(None) => {}
                // The client did nothing wrong: pass the upstream's body on.
                Err(e) => log::warn(&format!(
                    "transform: the response body {}; passed on as it is",
                    e.message()
                )),
            }
        }
        ResponseDecision::Continue(ResponseEdits {
            headers,
            body: new_body,
            ..ResponseEdits::default()
        })
    }
}

impl Transform {
    /// Whether the configuration changes the request.
    fn edits_request(&self) -> bool {
        !self.request_headers.is_empty()
            || self.query.is_some()
            || self.path.is_some()
            || self.request_body.is_some()
    }

    /// Whether the response phase has work that reads the response: a
    /// response `rename` (it moves values) or a response body section.
    fn needs_response(&self) -> bool {
        !self.response_headers.rename.is_empty() || self.response_body.is_some()
    }

    /// Whether the response header operations go with the request phase's
    /// edits (there are some, and none needs the response).
    fn response_headers_in_request(&self) -> bool {
        !self.response_headers.is_empty() && !self.needs_response()
    }
}

export_policy!(Transform);

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_body;
