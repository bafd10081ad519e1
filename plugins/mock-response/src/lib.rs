//! `mock-response`: answer an API's operations from the examples of its
//! OpenAPI description, without calling the upstream.
//!
//! ```toml
//! [[apis.steps]]
//! plugin = "mock-response"
//! grants = ["openapi"]         # the gateway adds the API's document
//! [apis.steps.config]
//! status = 200                 # default: the lowest 2xx, else `default` as 200
//! content-type = "application/json"
//! example = "cat"              # a name within the media type's `examples`
//! ```
//!
//! A call may ask for another response with `Prefer: code=404` and for
//! another example with `Prefer: example=dog` (as Prism does), when the
//! operation has them. Every answer is computed in `configure` (which the
//! gateway runs once and snapshots): a call looks its operation up by
//! route and method and copies a ready response.

#![forbid(unsafe_code)]

pub mod generate;
mod order;
mod prefer;

use order::Keys;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use tollgate_policy_sdk::{
    export_policy, valid_header_name, valid_header_value, Call, ConfigError, Header, Policy,
    PolicyInfo, RequestDecision, Response,
};

// ---------------------------------------------------------------------------
// Configuration as written

/// The step configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The response to mock: a status code (`200`, `"404"`).
    pub status: Option<StatusCode>,
    /// The preferred media type of the answer.
    pub content_type: Option<String>,
    /// The preferred example, by its name within `examples`.
    pub example: Option<String>,
    /// Added by the gateway for a step granted `openapi`.
    pub openapi: Option<OpenApi>,
}

/// A status code from 100 to 599, written as a number or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode(pub u16);

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        fn in_range<E: de::Error>(n: u64) -> Result<StatusCode, E> {
            if (100..=599).contains(&n) {
                Ok(StatusCode(n as u16))
            } else {
                Err(E::custom(format!("{n} is not a status code (100 to 599)")))
            }
        }
        impl Visitor<'_> for V {
            type Value = StatusCode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code such as 200 or \"404\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<StatusCode, E> {
                in_range(n)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<StatusCode, E> {
                in_range(u64::try_from(n).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusCode, E> {
                match s.trim().parse::<u64>() {
                    Ok(n) => in_range(n),
                    Err(_) => Err(E::custom(format!(
                        "{s:?} is not a status code (100 to 599)"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The `openapi` key, as the gateway writes it.
#[derive(Debug, Deserialize)]
pub struct OpenApi {
    /// The document's `openapi` field.
    pub version: String,
    /// The whole document (local `$ref`s in place), parsed in `new`.
    pub document: Box<RawValue>,
    /// One entry per gateway route that is an operation.
    pub operations: Vec<OperationRef>,
}

/// Where an operation is, and which route it is.
#[derive(Debug, Deserialize)]
pub struct OperationRef {
    /// The route's name.
    pub route: String,
    /// The operation's method.
    pub method: String,
    /// The path template.
    #[serde(default)]
    pub path: String,
    /// JSON Pointer to the operation object.
    pub pointer: String,
}

// ---------------------------------------------------------------------------
// Configuration as checked

/// One operation's ready answers.
#[derive(Debug)]
struct Operation {
    route: String,
    method: String,
    /// The answer when the call prefers nothing.
    chosen: usize,
    answers: Vec<Answer>,
}

/// The answer of one entry of `responses`.
#[derive(Debug)]
struct Answer {
    key: Key,
    /// The status sent (a `2XX` or `default` answer is sent as 200, or as
    /// the code a `Prefer` asked for).
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
    /// Named examples of the chosen media type: name, body.
    named: Vec<(String, Vec<u8>)>,
}

/// A key of a `responses` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Code(u16),
    /// `4XX`: the hundreds digit.
    Range(u16),
    Default,
}

/// The `mock-response` policy.
#[derive(Debug)]
pub struct MockResponse {
    operations: Vec<Operation>,
}

const NO_OPENAPI: &str = "the mock-response policy needs the API's OpenAPI description: add \
     grants = [\"openapi\"] to this step and openapi = \"<spec file>\" to the API";

impl Policy for MockResponse {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if let Some(ct) = &config.content_type {
            if !ct.contains('/') {
                return Err(ConfigError::at(
                    "content-type",
                    format!("{ct:?} is not a media type such as \"application/json\""),
                ));
            }
        }
        let Some(openapi) = &config.openapi else {
            return Err(ConfigError::new(NO_OPENAPI));
        };
        if !(openapi.version.starts_with("3.0") || openapi.version.starts_with("3.1")) {
            return Err(ConfigError::new(format!(
                "OpenAPI {:?} is not supported: the document must be OpenAPI 3.0.x or 3.1.x",
                openapi.version
            )));
        }
        let parse_error = |e: serde_json::Error| {
            ConfigError::new(format!("the OpenAPI description is not JSON: {e}"))
        };
        let doc: Value = serde_json::from_str(openapi.document.get()).map_err(parse_error)?;
        let keys: Keys = serde_json::from_str(openapi.document.get()).map_err(parse_error)?;
        let doc = Doc {
            value: &doc,
            keys: &keys,
        };
        let mut operations = Vec::new();
        for op in &openapi.operations {
            let built = operation(doc, op, &config).map_err(|m| {
                ConfigError::new(format!(
                    "the OpenAPI description: {} {} (route {:?}): {m}",
                    op.method, op.path, op.route
                ))
            })?;
            operations.push(built);
        }
        if let Some(StatusCode(code)) = config.status {
            let somewhere = operations.iter().any(|o| {
                o.answers
                    .iter()
                    .any(|a| a.key == Key::Code(code) || a.key == Key::Range(code / 100))
            });
            if !operations.is_empty() && !somewhere {
                return Err(ConfigError::at(
                    "status",
                    format!(
                        "no operation of the API has a {code} (or {}XX) response",
                        code / 100
                    ),
                ));
            }
        }
        Ok(MockResponse { operations })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        let (route, method) = (call.route(), call.method());
        let Some(op) = self
            .operations
            .iter()
            .find(|o| o.route == route && o.method.eq_ignore_ascii_case(&method))
        else {
            return RequestDecision::default();
        };
        let prefer = prefer::parse(&call.header_values("prefer"));
        let (answer, status) = prefer
            .code
            .and_then(|code| {
                let exact = op.answers.iter().find(|a| a.key == Key::Code(code));
                let range = || op.answers.iter().find(|a| a.key == Key::Range(code / 100));
                exact.or_else(range).map(|a| (a, code))
            })
            .unwrap_or_else(|| (&op.answers[op.chosen], op.answers[op.chosen].status));
        let body = prefer
            .example
            .as_deref()
            .and_then(|name| answer.named.iter().find(|(n, _)| n == name))
            .map_or(&answer.body, |(_, body)| body);
        RequestDecision::Respond(Response {
            status,
            headers: answer.headers.clone(),
            body: body.clone(),
        })
    }
}

/// The document's values, and its keys in order.
#[derive(Clone, Copy)]
struct Doc<'a> {
    value: &'a Value,
    keys: &'a Keys,
}

fn operation(doc: Doc<'_>, op: &OperationRef, config: &Config) -> Result<Operation, String> {
    let object = doc
        .value
        .pointer(&op.pointer)
        .ok_or_else(|| format!("{:?} points to nothing in the document", op.pointer))?;
    let mut answers = Vec::new();
    if let Some(responses) = object.get("responses").and_then(Value::as_object) {
        for key in responses.keys() {
            let parsed =
                parse_key(key).ok_or_else(|| format!("responses: {key:?} is not a status code"))?;
            let (pointer, response) = resolve(
                doc.value,
                &format!("{}/responses/{}", op.pointer, escape(key)),
            )?;
            answers.push(answer(doc, parsed, &pointer, response, config)?);
        }
    }
    if answers.is_empty() {
        // No responses at all: an empty 200.
        answers.push(Answer {
            key: Key::Code(200),
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            named: Vec::new(),
        });
    }
    let wanted = config.status.map(|s| s.0);
    let position = |k: Key| answers.iter().position(|a| a.key == k);
    let lowest_2xx = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| matches!(a.key, Key::Code(200..=299)))
        .min_by_key(|(_, a)| a.key)
        .map(|(i, _)| i);
    let chosen = wanted
        .and_then(|c| position(Key::Code(c)).or_else(|| position(Key::Range(c / 100))))
        .or(lowest_2xx)
        .or_else(|| position(Key::Range(2)))
        .or_else(|| position(Key::Default))
        .or_else(|| {
            answers
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| a.key)
                .map(|(i, _)| i)
        })
        .unwrap_or(0);
    // A wanted range status is sent as the code asked for.
    if let (Some(code), Key::Range(_)) = (wanted, answers[chosen].key) {
        answers[chosen].status = code;
    }
    Ok(Operation {
        route: op.route.clone(),
        method: op.method.clone(),
        chosen,
        answers,
    })
}

fn answer(
    doc: Doc<'_>,
    key: Key,
    pointer: &str,
    response: &Value,
    config: &Config,
) -> Result<Answer, String> {
    let status = match key {
        Key::Code(c) => c,
        Key::Range(h) => h * 100,
        Key::Default => 200,
    };
    let mut headers = Vec::new();
    let mut body = Vec::new();
    let mut named = Vec::new();
    let content = response.get("content").and_then(Value::as_object);
    let order = doc.keys.at(&format!("{pointer}/content"));
    if let Some((media_type, media)) = content.and_then(|c| pick_media(c, &order, config)) {
        let json = is_json(media_type);
        let examples = format!("{pointer}/content/{}/examples", escape(media_type));
        for name in doc.keys.at(&examples) {
            let (at, example) = resolve(doc.value, &format!("{examples}/{}", escape(name)))?;
            if example.get("externalValue").is_some() {
                return Err(format!(
                    "the example at {at} has an externalValue, which is not fetched: \
                     put the example in the document as value"
                ));
            }
            if let Some(value) = example.get("value") {
                named.push((name.to_string(), serialize(value, json)));
            }
        }
        let preferred = config
            .example
            .as_deref()
            .and_then(|name| named.iter().find(|(n, _)| n == name));
        body = match (preferred, media.get("example")) {
            (Some((_, b)), _) => b.clone(),
            (None, Some(example)) => serialize(example, json),
            (None, None) => match named.first() {
                Some((_, b)) => b.clone(),
                None => match media.get("schema") {
                    Some(schema) => {
                        let schema_example = generate::schema_example(schema);
                        match schema_example {
                            Some(e) => serialize(e, json),
                            None => serialize(&generate::generate(doc.value, schema), json),
                        }
                    }
                    None => Vec::new(),
                },
            },
        };
        headers.push(Header::new("content-type", media_type));
    }
    for name in response
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys())
    {
        let lower = name.to_ascii_lowercase();
        if lower == "content-type" || !valid_header_name(name) {
            continue;
        }
        let (_, header) = resolve(doc.value, &format!("{pointer}/headers/{}", escape(name)))?;
        let example = header
            .get("example")
            .or_else(|| {
                header
                    .get("examples")
                    .and_then(Value::as_object)
                    .and_then(|e| e.values().next())
                    .and_then(|e| e.get("value"))
            })
            .or_else(|| header.get("schema").and_then(generate::schema_example));
        let text = match example {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(v) => v.to_string(),
        };
        if valid_header_value(text.as_bytes()) {
            headers.push(Header::new(lower, text));
        }
    }
    Ok(Answer {
        key,
        status,
        headers,
        body,
        named,
    })
}

/// The media type to answer with: the configured one if the response has
/// it, else `application/json` if it has it, else its first (in `order`,
/// the document's).
fn pick_media<'a>(
    content: &'a serde_json::Map<String, Value>,
    order: &[&str],
    config: &Config,
) -> Option<(&'a str, &'a Value)> {
    let find = |want: &str| {
        content
            .iter()
            .find(|(k, _)| essence(k) == essence(want))
            .map(|(k, v)| (k.as_str(), v))
    };
    config
        .content_type
        .as_deref()
        .and_then(find)
        .or_else(|| find("application/json"))
        .or_else(|| {
            let first = order.first().copied();
            first
                .and_then(|f| content.get_key_value(f))
                .or_else(|| content.iter().next())
                .map(|(k, v)| (k.as_str(), v))
        })
}

fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json(media_type: &str) -> bool {
    let e = essence(media_type);
    e == "application/json" || e.ends_with("+json") || e == "*/*"
}

/// A body: JSON text for JSON media types; a string as it is otherwise.
fn serialize(value: &Value, json: bool) -> Vec<u8> {
    match value {
        Value::String(s) if !json => s.clone().into_bytes(),
        v => serde_json::to_vec(v).expect("a JSON value serialises"),
    }
}

fn parse_key(key: &str) -> Option<Key> {
    if key == "default" {
        return Some(Key::Default);
    }
    let b = key.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) {
        if b[1..].eq_ignore_ascii_case(b"XX") {
            return Some(Key::Range(u16::from(b[0] - b'0')));
        }
        return key.parse().ok().map(Key::Code);
    }
    None
}

/// Escape one JSON Pointer segment (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Follow `$ref`s from the object at `pointer` to the object they name.
fn resolve<'a>(doc: &'a Value, pointer: &str) -> Result<(String, &'a Value), String> {
    let mut pointer = pointer.to_string();
    for _ in 0..32 {
        let value = doc
            .pointer(&pointer)
            .ok_or_else(|| format!("{pointer:?} points to nothing in the document"))?;
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let fragment = r.strip_prefix('#').ok_or_else(|| {
                    format!("$ref {r:?} is not local: only \"#/...\" references are followed")
                })?;
                pointer = percent_encoding::percent_decode_str(fragment)
                    .decode_utf8()
                    .map_err(|_| format!("$ref {r:?} is not UTF-8 once percent-decoded"))?
                    .into_owned();
            }
            None => return Ok((pointer, value)),
        }
    }
    Err(format!(
        "{pointer:?}: more than 32 $refs in a row (a loop?)"
    ))
}

export_policy!(MockResponse);
