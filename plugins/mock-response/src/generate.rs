//! A value for a schema that has no example: the schema's own example,
//! `default`, `const` or first `enum` value if it has one; otherwise the
//! required properties of an object, one item of an array, a string that
//! fits its `format`, the lowest number allowed. `$ref`s are followed to a
//! bounded depth, so recursive schemas end.

use serde_json::{Map, Value};

/// How many schemas deep generation goes (`$ref` hops included); deeper
/// values are `null`, or left out of their object.
pub const MAX_DEPTH: usize = 8;

/// The example of a schema (3.0 `example`; 3.1 first of `examples`).
pub fn schema_example(schema: &Value) -> Option<&Value> {
    schema.get("example").or_else(|| {
        schema
            .get("examples")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
    })
}

/// A value that `schema` (in `doc`) describes.
pub fn generate(doc: &Value, schema: &Value) -> Value {
    value(doc, schema, 0).unwrap_or(Value::Null)
}

/// `None`: too deep (or a reference to nowhere).
fn value(doc: &Value, schema: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let Value::Object(s) = schema else {
        // `true`, `{}` or something that is not a schema.
        return Some(Value::Null);
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix('#')
            .and_then(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .ok()
                    .map(|p| p.into_owned())
            })
            .and_then(|p| doc.pointer(&p))?;
        return value(doc, target, depth + 1);
    }
    if let Some(v) = schema_example(schema)
        .or_else(|| s.get("default"))
        .or_else(|| s.get("const"))
        .or_else(|| {
            s.get("enum")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
        })
    {
        return Some(v.clone());
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        let mut other = None;
        for part in all {
            match value(doc, part, depth + 1)? {
                Value::Object(o) => merged.extend(o),
                v => other = other.or(Some(v)),
            }
        }
        return Some(if merged.is_empty() {
            other.unwrap_or(Value::Object(merged))
        } else {
            Value::Object(merged)
        });
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(first) = s.get(key).and_then(Value::as_array).and_then(|a| a.first()) {
            return value(doc, first, depth + 1);
        }
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => return Some(Value::Null),
    };
    Some(match kind {
        "object" => object(doc, s, depth),
        "array" => {
            let item = match s.get("items") {
                Some(items) => value(doc, items, depth + 1),
                None => Some(Value::Null),
            };
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 10);
            match item {
                Some(item) => Value::Array(vec![item; n as usize]),
                None => Value::Array(Vec::new()),
            }
        }
        "string" => Value::String(string(s)),
        "integer" => number(s, true),
        "number" => number(s, false),
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    })
}

/// The required properties (those not `writeOnly`), each generated.
fn object(doc: &Value, s: &Map<String, Value>, depth: usize) -> Value {
    let mut out = Map::new();
    let properties = s.get("properties").and_then(Value::as_object);
    for name in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let schema = properties.and_then(|p| p.get(name));
        if schema.and_then(|p| p.get("writeOnly")) == Some(&Value::Bool(true)) {
            continue;
        }
        let v = match schema {
            Some(schema) => value(doc, schema, depth + 1),
            None => Some(Value::Null),
        };
        if let Some(v) = v {
            out.insert(name.to_string(), v);
        }
    }
    Value::Object(out)
}

fn string(s: &Map<String, Value>) -> String {
    let text = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "2024-01-01T00:00:00Z",
        Some("date") => "2024-01-01",
        Some("time") => "00:00:00Z",
        Some("email") | Some("idn-email") => "user@example.com",
        Some("uuid") => "00000000-0000-4000-8000-000000000000",
        Some("uri") | Some("url") | Some("iri") => "https://example.com/",
        Some("uri-reference") | Some("iri-reference") => "/",
        Some("hostname") | Some("idn-hostname") => "example.com",
        Some("ipv4") => "192.0.2.1",
        Some("ipv6") => "2001:db8::1",
        Some("byte") => "AA==",
        Some("duration") => "P1D",
        Some("password") => "********",
        _ => "string",
    };
    let mut text = text.to_string();
    let min = s
        .get("minLength")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(1_000) as usize;
    while text.chars().count() < min {
        text.push('x');
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        text = text.chars().take(max as usize).collect();
    }
    text
}

/// The lowest value allowed (0 if that is allowed, else the bound).
fn number(s: &Map<String, Value>, integer: bool) -> Value {
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    let mut v = 0.0_f64;
    if let Some(min) = num("minimum") {
        v = v.max(min);
    }
    match s.get("exclusiveMinimum") {
        Some(Value::Number(n)) => {
            let m = n.as_f64().unwrap_or(0.0);
            if v <= m {
                v = if integer { m.floor() + 1.0 } else { m + 1.0 };
            }
        }
        // 3.0's boolean form.
        Some(Value::Bool(true)) if num("minimum") == Some(v) => v += 1.0,
        _ => {}
    }
    if let Some(max) = num("maximum") {
        if v > max {
            v = max;
        }
    }
    if integer {
        let v = v.ceil();
        if v.abs() < 9.0e15 {
            return Value::from(v as i64);
        }
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_follow_the_schema() {
        let doc = json!({"components": {"schemas": {
            "Pet": {"type": "object", "required": ["id", "name", "tags", "born", "secret"],
                "properties": {"id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "minLength": 8},
                    "tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}},
                    "born": {"type": "string", "format": "date"},
                    "secret": {"type": "string", "writeOnly": true},
                    "optional": {"type": "string"}}},
            "Tag": {"type": "string", "enum": ["a", "b"]},
            "Tree": {"type": "object", "required": ["children"], "properties": {
                "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}}}}}}});
        let pet = generate(&doc, &json!({"$ref": "#/components/schemas/Pet"}));
        assert_eq!(
            pet,
            json!({"id": 1, "name": "stringxx", "tags": ["a"], "born": "2024-01-01"})
        );
        // A recursive schema ends.
        let tree = generate(&doc, &json!({"$ref": "#/components/schemas/Tree"}));
        assert!(tree.to_string().len() < 400, "{tree}");
        assert_eq!(
            generate(&doc, &json!({"type": "number", "exclusiveMinimum": 2.5})),
            json!(3.5)
        );
        assert_eq!(
            generate(&doc, &json!({"type": ["integer", "null"], "maximum": -3})),
            json!(-3)
        );
        assert_eq!(
            generate(&doc, &json!({"examples": [7], "type": "integer"})),
            json!(7)
        );
        assert_eq!(
            generate(
                &doc,
                &json!({"allOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "boolean"}}},
                                            {"type": "object", "required": ["b"], "properties": {"b": {"format": "uuid", "type": "string"}}}]})
            ),
            json!({"a": true, "b": "00000000-0000-4000-8000-000000000000"})
        );
    }
}
