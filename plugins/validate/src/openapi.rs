//! The `openapi` key the gateway adds to the configuration of a step
//! granted `openapi`: the document, its version and the operations that are
//! routes. Local `$ref`s of OpenAPI objects (parameters, request bodies,
//! responses) are followed here; schema `$ref`s are left to the JSON Schema
//! compiler (see [`crate::schemas`]).
//!
//! [`normalize`] rewrites every schema of the document in place, once at
//! configure: 3.0 schema objects become JSON Schema 2020-12, OpenAPI's
//! `int32`/`int64` formats become bounds, and the limits on depth, enums and
//! patterns are checked.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Schemas nested deeper than this (subschema in subschema) are refused.
pub const MAX_SCHEMA_DEPTH: usize = 64;
/// Longer `enum`s are refused.
pub const MAX_ENUM: usize = 10_000;
/// Longer `pattern`s (and `patternProperties` keys) are refused, in bytes.
pub const MAX_PATTERN: usize = 1_000;
/// `$ref` chains between OpenAPI objects longer than this are refused.
const MAX_REF_HOPS: usize = 32;

/// The `openapi` key, as the gateway writes it.
#[derive(Debug, Deserialize)]
pub struct OpenApi {
    /// The document's `openapi` field, e.g. `3.0.3` or `3.1.0`.
    pub version: String,
    /// The whole document (local `$ref`s in place).
    pub document: Value,
    /// One entry per gateway route that is an operation.
    pub operations: Vec<OperationRef>,
}

/// Where an operation is, and which route it is.
#[derive(Debug, Deserialize)]
pub struct OperationRef {
    /// The route's name.
    pub route: String,
    /// The operation's method, e.g. `GET`.
    pub method: String,
    /// The path template, e.g. `/pets/{id}`.
    #[serde(default)]
    pub path: String,
    /// JSON Pointer to the operation object, e.g. `/paths/~1pets/get`.
    pub pointer: String,
}

/// Which JSON Schema dialect the document's schemas are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAPI 3.0's schema object (converted to 2020-12 by [`normalize`]).
    Oas30,
    /// OpenAPI 3.1: JSON Schema 2020-12.
    Oas31,
}

impl Dialect {
    /// The dialect of an `openapi` version string.
    pub fn of(version: &str) -> Result<Dialect, String> {
        if version.starts_with("3.0.") || version == "3.0" {
            Ok(Dialect::Oas30)
        } else if version.starts_with("3.1.") || version == "3.1" {
            Ok(Dialect::Oas31)
        } else {
            Err(format!(
                "OpenAPI {version:?} is not supported: the document must be OpenAPI 3.0.x or 3.1.x"
            ))
        }
    }
}

/// Escape one JSON Pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Follow `$ref`s from the object at `pointer` (an OpenAPI object, not a
/// schema) to the object they name: its pointer and value.
pub fn resolve<'a>(doc: &'a Value, pointer: &str) -> Result<(String, &'a Value), String> {
    let mut pointer = pointer.to_string();
    for _ in 0..MAX_REF_HOPS {
        let value = doc
            .pointer(&pointer)
            .ok_or_else(|| format!("{pointer:?} points to nothing in the document"))?;
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => pointer = local_ref(r)?,
            None => return Ok((pointer, value)),
        }
    }
    Err(format!(
        "{pointer:?}: more than {MAX_REF_HOPS} $refs in a row (a loop?)"
    ))
}

/// The JSON Pointer of a local reference `#/...` (percent-decoded).
pub fn local_ref(r: &str) -> Result<String, String> {
    let Some(fragment) = r.strip_prefix('#') else {
        return Err(format!(
            "$ref {r:?} is not local: only references into the same document (\"#/...\") are followed"
        ));
    };
    let decoded = percent_encoding::percent_decode_str(fragment)
        .decode_utf8()
        .map_err(|_| format!("$ref {r:?} is not UTF-8 once percent-decoded"))?;
    if !decoded.is_empty() && !decoded.starts_with('/') {
        return Err(format!("$ref {r:?} is not a JSON Pointer"));
    }
    Ok(decoded.into_owned())
}

/// Follow a schema's `$ref`s (local ones) to a schema that is not a bare
/// reference; `None` if a reference leads nowhere or loops.
pub fn resolve_schema<'a>(doc: &'a Value, mut schema: &'a Value) -> Option<&'a Value> {
    for _ in 0..MAX_REF_HOPS {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => schema = doc.pointer(&local_ref(r).ok()?)?,
            None => return Some(schema),
        }
    }
    None
}

/// Rewrite every schema of the document in place (see the module docs).
/// An error names the schema's pointer and the limit it breaks.
pub fn normalize(doc: &mut Value, dialect: Dialect) -> Result<(), String> {
    walk_document(doc, dialect, &mut String::new())
}

/// Walk the OpenAPI objects: every `schema` value, and every entry of a
/// `schemas` map (`components.schemas`), is a schema. Examples and
/// extensions are data, not descriptions: not walked.
fn walk_document(v: &mut Value, dialect: Dialect, at: &mut String) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let len = at.len();
                at.push('/');
                at.push_str(&escape(key));
                match key.as_str() {
                    "example" | "examples" => {}
                    k if k.starts_with("x-") => {}
                    "schema" if child.is_object() || child.is_boolean() => {
                        normalize_schema(child, dialect, 0, at)?
                    }
                    "schemas" if child.is_object() => {
                        if let Value::Object(schemas) = child {
                            for (name, schema) in schemas.iter_mut() {
                                let len = at.len();
                                at.push('/');
                                at.push_str(&escape(name));
                                normalize_schema(schema, dialect, 0, at)?;
                                at.truncate(len);
                            }
                        }
                    }
                    _ => walk_document(child, dialect, at)?,
                }
                at.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                walk_document(child, dialect, at)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
    "contentSchema",
    "items",
];
/// Keywords whose value is an array of subschemas.
const MANY: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
/// Keywords whose value is a map of subschemas.
const MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

fn normalize_schema(
    v: &mut Value,
    dialect: Dialect,
    depth: usize,
    at: &mut String,
) -> Result<(), String> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!(
            "the schema at {at} nests deeper than {MAX_SCHEMA_DEPTH} levels"
        ));
    }
    let Value::Object(schema) = v else {
        return Ok(());
    };
    // The document's dialect is the only one: a `$schema` (3.1's OAS
    // dialect, say) would make the compiler look for a meta-schema.
    schema.remove("$schema");
    if dialect == Dialect::Oas30 {
        if schema.contains_key("$ref") {
            // 3.0: siblings of `$ref` are ignored.
            schema.retain(|k, _| k == "$ref");
            return Ok(());
        }
        convert_30(schema);
    } else {
        convert_30_leftovers(schema);
    }
    int_format_bounds(schema);
    check_limits(schema, at)?;
    for (key, child) in schema.iter_mut() {
        let key = key.as_str();
        let len = at.len();
        at.push('/');
        at.push_str(&escape(key));
        if ONE.contains(&key) && (child.is_object() || child.is_boolean()) {
            normalize_schema(child, dialect, depth + 1, at)?;
        } else if MANY.contains(&key) {
            if let Value::Array(items) = child {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    normalize_schema(item, dialect, depth + 1, at)?;
                    at.truncate(len);
                }
            }
        } else if MAP.contains(&key) {
            if let Value::Object(entries) = child {
                for (name, item) in entries.iter_mut() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&escape(name));
                    normalize_schema(item, dialect, depth + 1, at)?;
                    at.truncate(len);
                }
            }
        }
        at.truncate(len);
    }
    Ok(())
}

/// What published 3.1 documents keep of 3.0 (OpenAI's has both): a
/// boolean `exclusiveMinimum`/`exclusiveMaximum`, which 2020-12 refuses
/// outright, and `nullable: true`, which 3.1 does not know — read as 3.0
/// meant them. `example` stays (3.1 allows it).
fn convert_30_leftovers(schema: &mut Map<String, Value>) {
    let bool_bound = ["exclusiveMinimum", "exclusiveMaximum"]
        .iter()
        .any(|k| schema.get(*k).is_some_and(Value::is_boolean));
    let nullable = schema.get("nullable").is_some_and(Value::is_boolean);
    if bool_bound || nullable {
        let example = schema.remove("example");
        convert_30(schema);
        if let Some(e) = example {
            schema.insert("example".into(), e);
        }
    }
}

/// An OpenAPI 3.0 schema object as JSON Schema 2020-12: `nullable`, the
/// boolean `exclusiveMinimum`/`exclusiveMaximum`, and `example`.
fn convert_30(schema: &mut Map<String, Value>) {
    if schema.remove("nullable") == Some(Value::Bool(true)) {
        match schema.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                schema.insert("type".into(), Value::from(vec![t, "null".to_string()]));
            }
            Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
                types.push("null".into())
            }
            _ => {}
        }
        if let Some(Value::Array(values)) = schema.get_mut("enum") {
            if !values.contains(&Value::Null) {
                values.push(Value::Null);
            }
        }
    }
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match schema.get(flag) {
            Some(Value::Bool(true)) => {
                schema.remove(flag);
                if let Some(b) = schema.remove(bound) {
                    schema.insert(flag.into(), b);
                }
            }
            Some(Value::Bool(false)) => {
                schema.remove(flag);
            }
            _ => {}
        }
    }
    schema.remove("example");
}

/// `format: int32` / `int64` as `minimum` and `maximum` (kept if tighter).
fn int_format_bounds(schema: &mut Map<String, Value>) {
    let (lo, hi) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("int64") => (i64::MIN, i64::MAX),
        _ => return,
    };
    let tighter_lo = schema
        .get("minimum")
        .and_then(Value::as_f64)
        .is_some_and(|m| m >= lo as f64);
    if !tighter_lo {
        schema.insert("minimum".into(), lo.into());
    }
    let tighter_hi = schema
        .get("maximum")
        .and_then(Value::as_f64)
        .is_some_and(|m| m <= hi as f64);
    if !tighter_hi {
        schema.insert("maximum".into(), hi.into());
    }
}

fn check_limits(schema: &Map<String, Value>, at: &str) -> Result<(), String> {
    if let Some(Value::Array(values)) = schema.get("enum") {
        if values.len() > MAX_ENUM {
            return Err(format!(
                "the schema at {at} has an enum of {} values; at most {MAX_ENUM} are allowed",
                values.len()
            ));
        }
    }
    if let Some(Value::String(p)) = schema.get("pattern") {
        check_pattern(p, &format!("{at}/pattern"))?;
    }
    if let Some(Value::Object(props)) = schema.get("patternProperties") {
        for p in props.keys() {
            check_pattern(p, &format!("{at}/patternProperties"))?;
        }
    }
    Ok(())
}

fn check_pattern(p: &str, at: &str) -> Result<(), String> {
    if p.len() > MAX_PATTERN {
        return Err(format!(
            "the pattern at {at} is {} bytes long; at most {MAX_PATTERN} are allowed",
            p.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema30(mut v: Value) -> Value {
        normalize_schema(&mut v, Dialect::Oas30, 0, &mut String::new()).unwrap();
        v
    }

    #[test]
    fn leftovers_of_3_0_in_a_3_1_document_are_read_as_3_0_meant_them() {
        let mut v = json!({"type": "integer", "minimum": 1, "exclusiveMinimum": true, "nullable": true, "example": 2});
        let mut at = String::new();
        normalize_schema(&mut v, Dialect::Oas31, 0, &mut at).unwrap();
        assert_eq!(
            v,
            json!({"type": ["integer", "null"], "exclusiveMinimum": 1, "example": 2})
        );
        let mut plain = json!({"type": "integer", "exclusiveMinimum": 1});
        normalize_schema(&mut plain, Dialect::Oas31, 0, &mut at).unwrap();
        assert_eq!(plain, json!({"type": "integer", "exclusiveMinimum": 1}));
    }

    #[test]
    fn nullable_and_exclusive_bounds_become_2020_12() {
        assert_eq!(
            schema30(json!({"type": "string", "nullable": true, "example": "x"})),
            json!({"type": ["string", "null"]})
        );
        assert_eq!(
            schema30(json!({"enum": ["a"], "type": "string", "nullable": true})),
            json!({"enum": ["a", null], "type": ["string", "null"]})
        );
        assert_eq!(
            schema30(
                json!({"minimum": 1, "exclusiveMinimum": true, "maximum": 5, "exclusiveMaximum": false})
            ),
            json!({"exclusiveMinimum": 1, "maximum": 5})
        );
        assert_eq!(
            schema30(json!({"$ref": "#/components/schemas/A", "description": "ignored"})),
            json!({"$ref": "#/components/schemas/A"})
        );
        assert_eq!(
            schema30(
                json!({"properties": {"a": {"type": "integer", "format": "int32", "minimum": 0}}})
            ),
            json!({"properties": {"a": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2147483647}}})
        );
    }

    #[test]
    fn every_schema_location_of_a_document_is_converted() {
        let mut doc = json!({
            "components": {"schemas": {"A": {"type": "string", "nullable": true}}},
            "paths": {"/a": {"get": {"parameters": [{"name": "q", "in": "query",
                "schema": {"type": "integer", "nullable": true}}],
                "responses": {"200": {"content": {"application/json": {
                    "schema": {"items": {"type": "string", "nullable": true}},
                    "example": {"nullable": true}}}}}}}}
        });
        normalize(&mut doc, Dialect::Oas30).unwrap();
        assert_eq!(
            doc["components"]["schemas"]["A"]["type"],
            json!(["string", "null"])
        );
        let op = &doc["paths"]["/a"]["get"];
        assert_eq!(
            op["parameters"][0]["schema"]["type"],
            json!(["integer", "null"])
        );
        let media = &op["responses"]["200"]["content"]["application/json"];
        assert_eq!(media["schema"]["items"]["type"], json!(["string", "null"]));
        assert_eq!(media["example"], json!({"nullable": true}));
    }

    #[test]
    fn limits_name_the_schema() {
        let mut deep = json!({"type": "string"});
        for _ in 0..70 {
            deep = json!({"items": deep});
        }
        let mut doc = json!({"components": {"schemas": {"Deep": deep}}});
        let e = normalize(&mut doc, Dialect::Oas31).unwrap_err();
        assert!(e.contains("/components/schemas/Deep/items"), "{e}");
        assert!(e.contains("deeper than 64"), "{e}");

        let mut doc = json!({"components": {"schemas": {"P": {"pattern": "a".repeat(1001)}}}});
        let e = normalize(&mut doc, Dialect::Oas31).unwrap_err();
        assert!(e.contains("/components/schemas/P/pattern"), "{e}");
    }

    #[test]
    fn refs_are_followed_and_loops_refused() {
        let doc = json!({"components": {"parameters": {
            "a": {"$ref": "#/components/parameters/b"}, "b": {"name": "x"},
            "l": {"$ref": "#/components/parameters/l"}}}});
        let (p, v) = resolve(&doc, "/components/parameters/a").unwrap();
        assert_eq!(
            (p.as_str(), &v["name"]),
            ("/components/parameters/b", &json!("x"))
        );
        assert!(resolve(&doc, "/components/parameters/l")
            .unwrap_err()
            .contains("loop"));
        assert!(local_ref("other.yaml#/x")
            .unwrap_err()
            .contains("not local"));
        assert_eq!(local_ref("#/paths/~1a%7Bb%7D").unwrap(), "/paths/~1a{b}");
    }
}
