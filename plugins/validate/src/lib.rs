//! `validate`: check requests (and optionally responses) against the
//! API's OpenAPI description, and refuse what does not match with an
//! RFC 9457 `application/problem+json` naming the failing JSON Pointer and
//! keyword.
//!
//! ```toml
//! [[apis.steps]]
//! plugin = "validate"
//! grants = ["openapi"]           # the gateway adds the API's document
//! [apis.steps.config]
//! mode = "enforce"               # or "report-only": log, let the call go on
//! max-body = "1MiB"              # body access limit (larger: the gateway's 413)
//! max-depth = 64                 # JSON nesting of a body (deeper: 400)
//! responses = false              # also check responses (enforce: 502)
//! max-errors = 10                # errors listed in a problem
//! unknown-query = "allow"        # or "refuse"
//! ```
//!
//! Everything costly happens in `configure`, which the gateway runs once
//! and snapshots: the document is normalised ([`openapi::normalize`]: 3.0
//! schemas become JSON Schema 2020-12, limits are checked), one reference
//! registry is built over it, and every parameter, request body and
//! (with `responses`) response schema is compiled ([`schemas`]). A call
//! only looks its operation up by route and method and runs validators.

#![forbid(unsafe_code)]

mod check;
mod media;
pub mod openapi;
mod params;
mod problem;
mod schemas;

use media::{is_json, MediaRange};
use openapi::{escape, resolve, Dialect, OpenApi, OperationRef};
use params::{Param, Shape};
use problem::In;
use schemas::{Compiler, Schema};
use serde::de::Visitor;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::fmt;
use tollgate_policy_sdk::{
    export_policy, BodyAccess, Call, ConfigError, Phases, Policy, PolicyInfo, RequestDecision,
    ResponseDecision,
};

// ---------------------------------------------------------------------------
// Configuration as written

/// The step configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `enforce` (refuse) or `report-only` (log and go on).
    pub mode: Mode,
    /// How much of a body the step reads.
    pub max_body: ByteSize,
    /// How deeply a JSON body may nest.
    pub max_depth: u32,
    /// Whether responses are checked too.
    pub responses: bool,
    /// How many errors a problem lists.
    pub max_errors: u32,
    /// What to do with query parameters the operation does not declare.
    pub unknown_query: UnknownQuery,
    /// Added by the gateway for a step granted `openapi`.
    pub openapi: Option<OpenApi>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            max_body: ByteSize(1 << 20),
            max_depth: 64,
            responses: false,
            max_errors: 10,
            unknown_query: UnknownQuery::Allow,
            openapi: None,
        }
    }
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Refuse calls (and replace responses) that do not match.
    Enforce,
    /// Log what does not match; change nothing.
    ReportOnly,
}

/// `unknown-query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownQuery {
    /// Undeclared query parameters pass.
    Allow,
    /// Undeclared query parameters are violations.
    Refuse,
}

/// Largest `max-body`.
const MAX_MAX_BODY: u64 = 16 << 20;
/// Largest `max-depth`: serde_json refuses deeper JSON anyway.
const MAX_MAX_DEPTH: u32 = 100;
/// Largest `max-errors`.
const MAX_MAX_ERRORS: u32 = 100;

/// A byte count: an integer, or a string with a unit (`512B`, `64KiB`,
/// `1MiB`), from 1 byte to 16MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u32);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        fn in_range<E: serde::de::Error>(
            n: u64,
            written: &dyn fmt::Display,
        ) -> Result<ByteSize, E> {
            if (1..=MAX_MAX_BODY).contains(&n) {
                Ok(ByteSize(n as u32))
            } else {
                Err(E::custom(format!(
                    "{written} is out of range: max-body must be from 1 byte to 16MiB"
                )))
            }
        }
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string such as \"64KiB\" or \"1MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                in_range(n, &n)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                in_range(u64::try_from(n).unwrap_or(0), &n)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (digits, unit) = t.split_at(split);
                let multiplier: u64 = match unit.trim() {
                    "" | "B" => 1,
                    "KiB" | "KB" | "K" => 1 << 10,
                    "MiB" | "MB" | "M" => 1 << 20,
                    _ => 0,
                };
                match digits.parse::<u64>() {
                    Ok(n) if multiplier != 0 => {
                        in_range(n.saturating_mul(multiplier), &format_args!("{s:?}"))
                    }
                    _ => Err(E::custom(format!(
                        "{s:?} is not a size: expected a number of bytes, or a number and a \
                         unit (B, KiB, MiB), e.g. \"64KiB\""
                    ))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Configuration as checked

/// One operation, compiled.
struct Operation {
    route: String,
    method: String,
    params: Vec<Param>,
    body: Option<Body>,
    /// Only with `responses = true`.
    responses: Vec<(Status, Vec<Media>)>,
}

/// A request body (or a response's content).
struct Body {
    required: bool,
    media: Vec<Media>,
}

/// One entry of a `content` map.
struct Media {
    range: MediaRange,
    /// For JSON (and wildcard) media types with a schema.
    schema: Option<Schema>,
}

/// A key of a `responses` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Code(u16),
    /// `2XX`: the hundreds digit.
    Range(u16),
    Default,
}

/// The `validate` policy.
pub struct Validate {
    mode: Mode,
    max_body: u32,
    max_depth: usize,
    max_errors: usize,
    unknown_query: UnknownQuery,
    check_responses: bool,
    operations: Vec<Operation>,
    /// Each route's operations (their indexes), to find a call's without
    /// a walk over every operation of a large document.
    by_route: std::collections::HashMap<String, Vec<usize>>,
}

const NO_OPENAPI: &str = "the validate policy needs the API's OpenAPI description: add \
     grants = [\"openapi\"] to this step and openapi = \"<spec file>\" to the API";

impl Policy for Validate {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.max_depth == 0 || config.max_depth > MAX_MAX_DEPTH {
            return Err(ConfigError::at(
                "max-depth",
                format!("must be from 1 to {MAX_MAX_DEPTH}"),
            ));
        }
        if config.max_errors == 0 || config.max_errors > MAX_MAX_ERRORS {
            return Err(ConfigError::at(
                "max-errors",
                format!("must be from 1 to {MAX_MAX_ERRORS}"),
            ));
        }
        let Some(openapi) = config.openapi else {
            return Err(ConfigError::new(NO_OPENAPI));
        };
        let operations = compile(openapi, config.responses)
            .map_err(|m| ConfigError::new(format!("the OpenAPI description: {m}")))?;
        let mut by_route: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, o) in operations.iter().enumerate() {
            by_route.entry(o.route.clone()).or_default().push(i);
        }
        Ok(Validate {
            by_route,
            mode: config.mode,
            max_body: config.max_body.0,
            max_depth: config.max_depth as usize,
            max_errors: config.max_errors as usize,
            unknown_query: config.unknown_query,
            check_responses: config.responses,
            operations,
        })
    }

    fn info(&self) -> PolicyInfo {
        let reads_bodies = self.operations.iter().any(|o| o.body.is_some());
        let mut phases = Phases::REQUEST;
        if self.check_responses {
            phases = phases | Phases::RESPONSE;
        }
        PolicyInfo {
            body: BodyAccess {
                request: reads_bodies.then_some(self.max_body),
                response: self.check_responses.then_some(self.max_body),
            },
            phases,
        }
    }

    fn on_request(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
        check::request(self, call, body)
    }

    fn on_response(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> ResponseDecision {
        check::response(self, call, body)
    }
}

impl Validate {
    fn operation(&self, route: &str, method: &str) -> Option<&Operation> {
        self.by_route
            .get(route)?
            .iter()
            .map(|&i| &self.operations[i])
            .find(|o| o.method.eq_ignore_ascii_case(method))
    }
}

/// Normalise the document, build its registry once, and compile every
/// operation.
fn compile(openapi: OpenApi, responses: bool) -> Result<Vec<Operation>, String> {
    let dialect = Dialect::of(&openapi.version)?;
    let mut doc = openapi.document;
    openapi::normalize(&mut doc, dialect)?;
    let compiler = Compiler::new(&doc)?;
    let operations = openapi
        .operations
        .iter()
        .map(|op| {
            operation(&doc, &compiler, op, responses)
                .map_err(|m| format!("{} {} (route {:?}): {m}", op.method, op.path, op.route))
        })
        .collect::<Result<Vec<_>, _>>()?;
    compiler.finish()?;
    Ok(operations)
}

fn operation(
    doc: &Value,
    compiler: &Compiler<'_>,
    op: &OperationRef,
    responses: bool,
) -> Result<Operation, String> {
    let object = doc
        .pointer(&op.pointer)
        .ok_or_else(|| format!("{:?} points to nothing in the document", op.pointer))?;
    let item = op.pointer.rsplit_once('/').map_or("", |(item, _)| item);
    // Path-level parameters, then the operation's, which win by (name, in).
    let mut declared: Vec<(String, &Value)> = Vec::new();
    for base in [item.to_string(), op.pointer.clone()] {
        let list = doc
            .pointer(&format!("{base}/parameters"))
            .and_then(Value::as_array);
        for i in 0..list.map_or(0, Vec::len) {
            let (pointer, p) = resolve(doc, &format!("{base}/parameters/{i}"))?;
            let key = |p: &Value| (p.get("name").cloned(), p.get("in").cloned());
            declared.retain(|(_, q)| key(q) != key(p));
            declared.push((pointer, p));
        }
    }
    let mut params = Vec::new();
    for (pointer, p) in declared {
        if let Some(param) = parameter(doc, compiler, &pointer, p)? {
            params.push(param);
        }
    }
    let body = match object.get("requestBody") {
        Some(_) => {
            let (pointer, b) = resolve(doc, &format!("{}/requestBody", op.pointer))?;
            Some(Body {
                required: b.get("required").and_then(Value::as_bool).unwrap_or(false),
                media: content(doc, compiler, &pointer)?,
            })
        }
        None => None,
    };
    let mut statuses = Vec::new();
    if responses {
        if let Some(map) = object.get("responses").and_then(Value::as_object) {
            for key in map.keys() {
                let status = status_key(key)
                    .ok_or_else(|| format!("responses: {key:?} is not a status code"))?;
                let (pointer, _) =
                    resolve(doc, &format!("{}/responses/{}", op.pointer, escape(key)))?;
                statuses.push((status, content(doc, compiler, &pointer)?));
            }
        }
    }
    Ok(Operation {
        route: op.route.clone(),
        method: op.method.clone(),
        params,
        body,
        responses: statuses,
    })
}

/// A parameter object (resolved); `None` for cookies and the headers
/// OpenAPI says to ignore.
fn parameter(
    doc: &Value,
    compiler: &Compiler<'_>,
    pointer: &str,
    p: &Value,
) -> Result<Option<Param>, String> {
    let name = p
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the parameter at {pointer} has no name"))?;
    let location = match p.get("in").and_then(Value::as_str) {
        Some("path") => In::Path,
        Some("query") => In::Query,
        Some("header") => In::Header,
        Some("cookie") => return Ok(None),
        other => return Err(format!("the parameter at {pointer} has in = {other:?}")),
    };
    let name = if location == In::Header {
        let lower = name.to_ascii_lowercase();
        if ["accept", "content-type", "authorization"].contains(&lower.as_str()) {
            return Ok(None);
        }
        lower
    } else {
        name.to_string()
    };
    let shape = params::shape(doc, location, p);
    let validator = match (&shape, p.get("schema")) {
        (Shape::Opaque, _) | (_, None) => None,
        (_, Some(_)) => Some(compiler.schema(&format!("{pointer}/schema"))),
    };
    Ok(Some(Param {
        required: location == In::Path
            || p.get("required").and_then(Value::as_bool).unwrap_or(false),
        name,
        location,
        shape,
        validator,
    }))
}

/// The `content` map of the object at `pointer`: its media ranges, with
/// compiled schemas for JSON (and wildcard) ones.
fn content(doc: &Value, compiler: &Compiler<'_>, pointer: &str) -> Result<Vec<Media>, String> {
    let mut media = Vec::new();
    let Some(map) = doc
        .pointer(&format!("{pointer}/content"))
        .and_then(Value::as_object)
    else {
        return Ok(media);
    };
    for (key, m) in map {
        let range = MediaRange::parse(key)
            .ok_or_else(|| format!("{pointer}/content: {key:?} is not a media type"))?;
        let json_like = media::essence(key).is_some_and(|(t, s)| is_json(&t, &s) || s == "*");
        let schema = match m.get("schema") {
            Some(_) if json_like => {
                Some(compiler.schema(&format!("{pointer}/content/{}/schema", escape(key))))
            }
            _ => None,
        };
        media.push(Media { range, schema });
    }
    Ok(media)
}

fn status_key(key: &str) -> Option<Status> {
    if key == "default" {
        return Some(Status::Default);
    }
    let b = key.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) {
        if b[1..].eq_ignore_ascii_case(b"XX") {
            return Some(Status::Range(u16::from(b[0] - b'0')));
        }
        return key.parse().ok().map(Status::Code);
    }
    None
}

export_policy!(Validate);

#[cfg(test)]
mod tests;
