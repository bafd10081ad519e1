//! OpenAPI 3.0 and 3.1 documents: read (YAML or JSON, bounded), checked
//! (local `$ref`s resolve, remote ones are refused, every path template
//! fits the router), and turned into the gateway's routes, one per
//! operation; written back out as the API the gateway serves
//! ([`export`]); imported into a manifest ([`import`]).
//!
//! A manifest that names a document (`openapi = "specs/pets.yaml"`) gets
//! its routes from it, and a step granted `openapi` gets the document and
//! the operation of each route in its configuration ([`OpenApi::for_step`]),
//! so the document stays the single source.

pub mod doc;
pub mod export;
pub mod import;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most operations one document may have.
pub const MAX_OPERATIONS: usize = 5000;
/// Most errors reported for one document.
const MAX_ERRORS: usize = 50;
/// The HTTP methods an OpenAPI path item may have, as it spells them.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One operation: a method on a path template, served as one route.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The route's name: the `operationId` made a valid name, else
    /// `<method>-<path>`; unique in the document.
    pub route: String,
    /// Upper case: `GET`.
    pub method: String,
    /// The path template the router serves it at: as the document
    /// writes it (`/pets/{petId}`), without a `#...` or `?...` suffix.
    pub path: String,
    /// The route of an earlier operation with the same method and path
    /// (once captures are unnamed), which serves this one's calls too:
    /// the router cannot tell them apart. No route of its own.
    pub shadowed_by: Option<String>,
    /// JSON pointer of the operation object (`/paths/~1pets/get`).
    pub pointer: String,
    pub operation_id: Option<String>,
    pub tags: Vec<String>,
}

/// A checked OpenAPI document.
#[derive(Debug)]
pub struct OpenApi {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its `openapi` field: `3.0.x` or `3.1.x`.
    pub version: String,
    /// The document, local `$ref`s left in place.
    pub doc: Value,
    /// In document order.
    pub operations: Vec<Operation>,
    /// What a step granted `openapi` gets in its configuration, as JSON
    /// text (built once: every such step of the API shares it).
    step_value: std::sync::OnceLock<Arc<Value>>,
}

/// A document error: the file, where in it, and the JSON pointer.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub pointer: String,
    pub message: String,
}

/// Escape a key for a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Read and check the document `file`. Errors are `file:line:col: at
/// POINTER: what` lines.
pub fn load(file: &Path) -> Result<OpenApi, Vec<String>> {
    let meta = std::fs::metadata(file)
        .map_err(|e| vec![format!("{}: cannot read: {e}", file.display())])?;
    if meta.len() > doc::MAX_BYTES as u64 {
        return Err(vec![format!(
            "{}: the document is {} bytes; at most {} MiB are read",
            file.display(),
            meta.len(),
            doc::MAX_BYTES >> 20
        )]);
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![format!("{}: cannot read: {e}", file.display())])?;
    from_text(file, &text)
}

/// Check the document `text`, read from `file`.
pub fn from_text(file: &Path, text: &str) -> Result<OpenApi, Vec<String>> {
    let value = doc::parse(text).map_err(|e| {
        vec![format!(
            "{}:{}:{}: {}",
            file.display(),
            e.line.max(1),
            e.column.max(1),
            e.message
        )]
    })?;
    check(file, value).map_err(|mut errs| {
        errs.truncate(MAX_ERRORS);
        let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
        let places = doc::locate_all(text, &pointers);
        errs.iter()
            .zip(places)
            .map(|(e, place)| {
                let (line, col) = place.unwrap_or((1, 1));
                let at = if e.pointer.is_empty() {
                    String::new()
                } else {
                    format!("at {}: ", e.pointer)
                };
                format!("{}:{line}:{col}: {at}{}", file.display(), e.message)
            })
            .collect()
    })
}

/// Check a parsed document and list its operations.
pub fn check(file: &Path, doc: Value) -> Result<OpenApi, Vec<SpecError>> {
    let mut errs = Vec::new();
    let err = |pointer: &str, message: String| SpecError {
        pointer: pointer.to_string(),
        message,
    };
    let Some(top) = doc.as_object() else {
        return Err(vec![err(
            "",
            "an OpenAPI document is a mapping (object) at the top".into(),
        )]);
    };
    let version = match top.get("openapi") {
        Some(Value::String(v)) if v.starts_with("3.0.") || v.starts_with("3.1.") => v.clone(),
        Some(Value::String(v)) => {
            return Err(vec![err(
                "/openapi",
                format!("OpenAPI `{v}` is not supported: 3.0.x and 3.1.x are"),
            )])
        }
        Some(v) => {
            return Err(vec![err(
                "/openapi",
                format!("`openapi` must be a string such as \"3.1.0\", not {v}"),
            )])
        }
        None if top.contains_key("swagger") => {
            return Err(vec![err(
                "/swagger",
                "Swagger 2.0 documents are not supported: convert it to OpenAPI 3 first (e.g. with swagger2openapi)".into(),
            )])
        }
        None => return Err(vec![err("", "no `openapi` field: not an OpenAPI 3 document".into())]),
    };
    check_refs(&doc, &mut errs);
    let mut operations = Vec::new();
    match top.get("paths") {
        None | Some(Value::Null) => {}
        Some(Value::Object(paths)) => {
            for (path, item) in paths {
                let at = format!("/paths/{}", escape(path));
                path_item(&doc, path, item, &at, &mut operations, &mut errs);
                if operations.len() > MAX_OPERATIONS {
                    errs.push(err(
                        &at,
                        format!("more than {MAX_OPERATIONS} operations: split the API"),
                    ));
                    break;
                }
            }
        }
        Some(_) => errs.push(err("/paths", "`paths` must be a mapping".into())),
    }
    name_routes(&mut operations, &mut errs);
    mark_shadowed(&mut operations);
    if errs.is_empty() {
        Ok(OpenApi {
            file: file.to_path_buf(),
            version,
            doc,
            operations,
            step_value: Default::default(),
        })
    } else {
        Err(errs)
    }
}

/// Every `$ref` must be local (`#/...`) and resolve; a chain of `$ref`s
/// to `$ref`s must end.
fn check_refs(doc: &Value, errs: &mut Vec<SpecError>) {
    let mut todo: Vec<(&Value, String)> = vec![(doc, String::new())];
    while let Some((v, at)) = todo.pop() {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref") {
                    let here = format!("{at}/$ref");
                    match r {
                        Value::String(r) => {
                            if let Err(m) = resolve_chain(doc, r) {
                                errs.push(SpecError {
                                    pointer: here,
                                    message: m,
                                });
                            }
                        }
                        _ => errs.push(SpecError {
                            pointer: here,
                            message: "`$ref` must be a string".into(),
                        }),
                    }
                }
                for (k, c) in o {
                    // Example values are data, not document structure.
                    if k == "example" || k == "$ref" {
                        continue;
                    }
                    todo.push((c, format!("{at}/{}", escape(k))));
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    todo.push((c, format!("{at}/{i}")));
                }
            }
            _ => {}
        }
    }
}

/// Follow `$ref` `r` (and the `$ref`s it lands on) to a value.
pub fn resolve_chain<'a>(doc: &'a Value, r: &str) -> Result<&'a Value, String> {
    let mut r = r.to_string();
    for _ in 0..32 {
        let Some(pointer) = r.strip_prefix('#') else {
            let what = if r.starts_with("http://") || r.starts_with("https://") {
                "a remote reference"
            } else {
                "a reference to another file"
            };
            return Err(format!(
                "`$ref: {r}` is {what}, which the gateway does not follow: bundle the document into one file (e.g. `redocly bundle` or `swagger-cli bundle`)"
            ));
        };
        let pointer = percent_decode(pointer);
        let Some(v) = doc.pointer(&pointer) else {
            return Err(format!("`$ref: {r}` points at nothing in this document"));
        };
        match v.get("$ref").and_then(Value::as_str) {
            Some(next) if v.as_object().is_some_and(|o| o.len() == 1) => r = next.to_string(),
            _ => return Ok(v),
        }
    }
    Err(format!("`$ref: {r}` is part of a loop of references"))
}

/// A `$ref`'s fragment is a URI fragment: percent-escapes decode.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The operations of one path item.
fn path_item(
    doc: &Value,
    path: &str,
    item: &Value,
    at: &str,
    ops: &mut Vec<Operation>,
    errs: &mut Vec<SpecError>,
) {
    let err = |pointer: &str, message: String| SpecError {
        pointer: pointer.to_string(),
        message,
    };
    let routed = match route_template(path) {
        Ok(p) => p,
        Err(m) => {
            errs.push(err(at, m));
            return;
        }
    };
    // A path item may be a `$ref` (3.1: to components.pathItems).
    let (item, at) = match item.get("$ref").and_then(Value::as_str) {
        Some(r) => match resolve_chain(doc, r) {
            Ok(v) => (v, r.trim_start_matches('#').to_string()),
            Err(_) => return, // reported by check_refs
        },
        None => (item, at.to_string()),
    };
    let Some(item) = item.as_object() else {
        errs.push(err(&at, "a path item must be a mapping".into()));
        return;
    };
    for m in METHODS {
        let Some(op) = item.get(m) else { continue };
        let op_at = format!("{at}/{m}");
        let Some(o) = op.as_object() else {
            errs.push(err(&op_at, "an operation must be a mapping".into()));
            continue;
        };
        let operation_id = match o.get("operationId") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errs.push(err(
                    &format!("{op_at}/operationId"),
                    "`operationId` must be a string".into(),
                ));
                None
            }
        };
        let tags = o
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        ops.push(Operation {
            route: String::new(),
            method: m.to_ascii_uppercase(),
            path: routed.clone(),
            shadowed_by: None,
            pointer: op_at,
            operation_id,
            tags,
        });
    }
}

/// The router's template for an OpenAPI path key: the key without a
/// `#...` or `?...` suffix (some published documents tell operations
/// apart that way; the router cannot), when the router takes it: one
/// capture per segment, alone or with literal text around it.
pub fn route_template(path: &str) -> Result<String, String> {
    let routed = path.split(['#', '?']).next().unwrap_or(path);
    crate::route::PathPattern::template(routed)?;
    Ok(routed.to_string())
}

/// A valid gateway name (1-64 of `A-Z a-z 0-9 - _ .`) from `s`.
fn name_from(s: &str) -> String {
    let mut n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while n.contains("--") {
        n = n.replace("--", "-");
    }
    let n = n.trim_matches('-');
    let mut n: String = n.chars().take(64).collect();
    if n.is_empty() {
        n = "op".into();
    }
    n
}

/// Give each operation a route name: its `operationId` (made a valid
/// name), else `<method>-<path>`; a taken name gets `-2`, `-3` ...
/// Duplicate `operationId`s are an error (OpenAPI requires them unique).
fn name_routes(ops: &mut [Operation], errs: &mut Vec<SpecError>) {
    let mut seen_ids = std::collections::HashMap::new();
    for op in ops.iter() {
        if let Some(id) = &op.operation_id {
            if let Some(first) = seen_ids.insert(id.clone(), op.pointer.clone()) {
                errs.push(SpecError {
                    pointer: format!("{}/operationId", op.pointer),
                    message: format!(
                        "operationId `{id}` is also the id of {first}: operation ids must be unique"
                    ),
                });
            }
        }
    }
    let mut taken = std::collections::HashSet::new();
    for op in ops.iter_mut() {
        let base = match &op.operation_id {
            Some(id) => name_from(id),
            None => name_from(&format!(
                "{}-{}",
                op.method.to_ascii_lowercase(),
                op.path.replace(['{', '}'], "")
            )),
        };
        let mut name = base.clone();
        let mut i = 2;
        while !taken.insert(name.clone()) {
            let suffix = format!("-{i}");
            let keep: String = base.chars().take(64 - suffix.len()).collect();
            name = format!("{keep}{suffix}");
            i += 1;
        }
        op.route = name;
    }
}

/// Mark each operation whose method and path (captures unnamed) an
/// earlier one has.
fn mark_shadowed(ops: &mut [Operation]) {
    let shape = |p: &str| {
        let mut out = String::with_capacity(p.len());
        let mut inside = false;
        for c in p.chars() {
            match c {
                '{' => {
                    inside = true;
                    out.push('{');
                }
                '}' => {
                    inside = false;
                    out.push('}');
                }
                _ if inside => {}
                c => out.push(c),
            }
        }
        out.trim_end_matches('/').to_string()
    };
    let mut first: std::collections::HashMap<(String, String), String> = Default::default();
    for op in ops.iter_mut() {
        let key = (op.method.clone(), shape(&op.path));
        match first.get(&key) {
            Some(route) => op.shadowed_by = Some(route.clone()),
            None => {
                first.insert(key, op.route.clone());
            }
        }
    }
}

impl OpenApi {
    /// The operations that have a route of their own.
    pub fn served(&self) -> impl Iterator<Item = &Operation> {
        self.operations.iter().filter(|o| o.shadowed_by.is_none())
    }

    /// `{"version", "document", "operations"}`: what a step granted
    /// `openapi` finds under its config's `openapi` key.
    pub fn for_step(&self) -> Arc<Value> {
        self.step_value
            .get_or_init(|| {
                let ops: Vec<Value> = self
                    .served()
                    .map(|o| {
                        json!({"route": o.route, "method": o.method, "path": o.path, "pointer": o.pointer})
                    })
                    .collect();
                Arc::new(json!({"version": self.version, "document": self.doc, "operations": ops}))
            })
            .clone()
    }

    /// The document's `info.title`, if it has one.
    pub fn title(&self) -> Option<&str> {
        self.doc.pointer("/info/title").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests;
