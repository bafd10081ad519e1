//! Path, query and header parameters: how each is serialised (OpenAPI's
//! `style` and `explode`), and the JSON value its schema is checked
//! against (strings coerced to integers, numbers and booleans where the
//! schema says so).

use crate::openapi::resolve_schema;
use crate::problem::In;
use crate::schemas::Schema;
use serde_json::Value;
use tollgate_policy_sdk::query;

/// One parameter of an operation, ready to check.
pub struct Param {
    /// The name (lower-cased for headers).
    pub name: String,
    /// Path, query or header.
    pub location: In,
    /// Whether a call without it is refused.
    pub required: bool,
    /// How its value is read.
    pub shape: Shape,
    /// Its schema (`None`: presence only).
    pub validator: Option<Schema>,
}

/// How a parameter's value is read.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One value.
    Scalar(Types),
    /// An array of values.
    Array {
        /// The items' scalar types.
        items: Types,
        /// How the items are written.
        split: Split,
    },
    /// Objects, `deepObject`, `label`/`matrix` paths and `content`
    /// parameters: only presence is checked.
    Opaque,
}

/// How the items of an array parameter are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `?id=1&id=2` (form, explode).
    Repeat,
    /// `?id=1,2` (form, no explode; simple), or space/pipe delimited.
    Delim(char),
}

/// The scalar types a string may be coerced to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types {
    integer: bool,
    number: bool,
    boolean: bool,
}

impl Types {
    fn of(doc: &Value, schema: Option<&Value>) -> Types {
        let mut t = Types::default();
        let Some(schema) = schema.and_then(|s| resolve_schema(doc, s)) else {
            return t;
        };
        t.add(schema.get("type"));
        // An untyped schema: the types of its alternatives, one level down.
        if schema.get("type").is_none() {
            for key in ["allOf", "anyOf", "oneOf"] {
                for sub in schema
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(sub) = resolve_schema(doc, sub) {
                        t.add(sub.get("type"));
                    }
                }
            }
        }
        t
    }

    fn add(&mut self, types: Option<&Value>) {
        let mut one = |t: &str| match t {
            "integer" => self.integer = true,
            "number" => self.number = true,
            "boolean" => self.boolean = true,
            _ => {}
        };
        match types {
            Some(Value::String(t)) => one(t),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).for_each(one),
            _ => {}
        }
    }

    /// `text` as the first of integer, number, boolean that it parses as;
    /// else a string (and the schema says what is wrong with it).
    pub fn coerce(self, text: &str) -> Value {
        if self.integer {
            if let Ok(n) = text.parse::<i64>() {
                return n.into();
            }
            if let Ok(n) = text.parse::<u64>() {
                return n.into();
            }
        }
        if self.number {
            if let Some(n) = text
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .and_then(serde_json::Number::from_f64)
            {
                return Value::Number(n);
            }
        }
        if self.boolean && (text == "true" || text == "false") {
            return Value::Bool(text == "true");
        }
        Value::String(text.to_string())
    }
}

/// The shape of a parameter with `style` (or its default for `location`),
/// `explode` and `schema` (already normalised).
pub fn shape(doc: &Value, location: In, param: &Value) -> Shape {
    let Some(schema) = param.get("schema") else {
        return Shape::Opaque;
    };
    let schema = resolve_schema(doc, schema).unwrap_or(schema);
    let style = param.get("style").and_then(Value::as_str);
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"object") {
        return Shape::Opaque;
    }
    let default_style = if location == In::Query {
        "form"
    } else {
        "simple"
    };
    let style = style.unwrap_or(default_style);
    if types.contains(&"array") {
        let explode = param
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(style == "form");
        let split = match (style, explode) {
            ("form", true) => Split::Repeat,
            ("form", false) | ("simple", _) => Split::Delim(','),
            ("spaceDelimited", _) => Split::Delim(' '),
            ("pipeDelimited", _) => Split::Delim('|'),
            _ => return Shape::Opaque,
        };
        return Shape::Array {
            items: Types::of(doc, schema.get("items")),
            split,
        };
    }
    match style {
        "form" | "simple" => Shape::Scalar(Types::of(doc, Some(schema))),
        _ => Shape::Opaque,
    }
}

/// A parameter's raw values, as the call carries them.
pub enum Raw {
    /// Not sent.
    Missing,
    /// Sent: every occurrence, decoded.
    Values(Vec<String>),
}

/// Percent-decode a path capture (`+` stays a plus).
pub fn decode_path(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Every value of query key `name` in decoded `pairs`.
pub fn query_values(pairs: &[(String, String)], name: &str) -> Raw {
    let values: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect();
    if values.is_empty() {
        Raw::Missing
    } else {
        Raw::Values(values)
    }
}

/// The decoded pairs of a query string.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(query::parse).unwrap_or_default()
}

impl Param {
    /// The value to check: `values` read as the shape says.
    pub fn value(&self, values: &[String]) -> Option<Value> {
        let header = self.location == In::Header;
        let trim = |t: &str| if header { t.trim() } else { t }.to_string();
        match &self.shape {
            Shape::Opaque => None,
            Shape::Scalar(types) => {
                let first = values.first().map(String::as_str).unwrap_or("");
                Some(types.coerce(&trim(first)))
            }
            Shape::Array { items, split } => {
                let texts: Vec<String> = match split {
                    Split::Repeat => values.to_vec(),
                    Split::Delim(d) => {
                        // Headers: every field, joined; others: the first.
                        let text = if header {
                            values.join(",")
                        } else {
                            values.first().cloned().unwrap_or_default()
                        };
                        if text.is_empty() {
                            Vec::new()
                        } else {
                            text.split(*d).map(trim).collect()
                        }
                    }
                };
                Some(Value::Array(
                    texts.iter().map(|t| items.coerce(t)).collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(location: In, p: Value) -> Param {
        Param {
            name: "p".into(),
            location,
            required: false,
            shape: shape(&json!({}), location, &p),
            validator: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn styles_read_arrays_and_coerce_scalars() {
        let int_array = json!({"type": "array", "items": {"type": "integer"}});
        let p = param(In::Query, json!({"schema": int_array}));
        assert_eq!(p.value(&strings(&["1", "2"])), Some(json!([1, 2])));
        let p = param(In::Query, json!({"schema": int_array, "explode": false}));
        assert_eq!(p.value(&strings(&["1,x"])), Some(json!([1, "x"])));
        let p = param(
            In::Query,
            json!({"schema": int_array, "style": "pipeDelimited"}),
        );
        assert_eq!(p.value(&strings(&["1|2"])), Some(json!([1, 2])));
        let p = param(In::Header, json!({"schema": int_array}));
        assert_eq!(p.value(&strings(&["1, 2", "3"])), Some(json!([1, 2, 3])));
        let p = param(In::Path, json!({"schema": {"type": ["number", "null"]}}));
        assert_eq!(p.value(&strings(&["1.5"])), Some(json!(1.5)));
        let p = param(In::Query, json!({"schema": {"type": "boolean"}}));
        assert_eq!(p.value(&strings(&["true"])), Some(json!(true)));
        assert_eq!(p.value(&strings(&["yes"])), Some(json!("yes")));
        let p = param(In::Query, json!({"schema": {"type": "object"}}));
        assert_eq!(p.value(&strings(&["a"])), None);
        let p = param(
            In::Query,
            json!({"schema": int_array, "style": "deepObject"}),
        );
        assert_eq!(p.shape, Shape::Opaque);
    }

    #[test]
    fn path_captures_are_decoded() {
        assert_eq!(decode_path("a%20b+c%2F"), "a b+c/");
    }
}
