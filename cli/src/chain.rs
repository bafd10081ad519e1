//! `apis chain set`: turn a chain file into the `{"chain": [...]}` body.
//!
//! JSON files are the body itself (`{"chain": [...]}`) or just the list of
//! steps. TOML files use the manifest's own syntax, so a chain can be moved
//! between a manifest and the API unchanged:
//!
//! ```toml
//! [[chain]]                 # or [[api.chain]], as in a policy manifest
//! name = "auth"
//! plugin = "key-auth"
//! fail-open = false
//! grants = ["consumers"]
//! [chain.config]
//! header = "x-api-key"
//! ```
//!
//! A whole manifest works too: the chain of the `[[api]]` whose `name` is
//! the API being set is taken. Step keys are written kebab-case in TOML
//! (`fail-open`) and snake_case in JSON (`fail_open`); the plugin's own
//! `config` is passed through unchanged.

use crate::body::json_kind;
use crate::error::Error;
use serde_json::{Map, Value};
use std::path::Path;

/// The format of a chain file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

/// `.json` and `.toml` by extension; otherwise JSON when the text starts
/// like a JSON object or list of objects (`{`, `[{`, `[]`), else TOML (whose
/// `[[chain]]` also starts with `[`).
pub fn detect(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
        Some(e) if e.eq_ignore_ascii_case("toml") => Format::Toml,
        _ => {
            let t = text.trim_start();
            let json_list = t
                .strip_prefix('[')
                .is_some_and(|rest| rest.trim_start().starts_with(['{', ']']));
            if t.starts_with('{') || json_list {
                Format::Json
            } else {
                Format::Toml
            }
        }
    }
}

/// Read a chain file (`-` for standard input) into the request body for `api`.
pub fn read(path: &Path, api: &str) -> Result<Value, Error> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Error::Usage(format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("{}: cannot read: {e}", path.display())))?
    };
    let origin = path.display().to_string();
    convert(&text, detect(path, &text), api, &origin)
}

/// The `{"chain": [...]}` body from a chain file's text; `origin` names the
/// file in errors.
pub fn convert(text: &str, format: Format, api: &str, origin: &str) -> Result<Value, Error> {
    let bad = |m: String| Error::Usage(format!("{origin}: {m}"));
    match format {
        Format::Json => {
            let v: Value =
                serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            match v {
                Value::Array(_) => Ok(body(v)),
                Value::Object(ref m) if m.contains_key("chain") => Ok(v),
                other => Err(bad(format!(
                    "expected {{\"chain\": [step...]}} or a list of steps, not {}",
                    if other.is_object() {
                        "an object without `chain`"
                    } else {
                        json_kind(&other)
                    }
                ))),
            }
        }
        Format::Toml => {
            let table: toml::Table =
                toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
            let steps = toml_steps(&table, api).map_err(bad)?;
            let steps = steps
                .iter()
                .enumerate()
                .map(|(i, s)| step(s).map_err(|m| bad(format!("chain step {}: {m}", i + 1))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(body(Value::Array(steps)))
        }
    }
}

fn body(steps: Value) -> Value {
    let mut m = Map::new();
    m.insert("chain".into(), steps);
    Value::Object(m)
}

/// The step tables: top-level `[[chain]]`, or `[[api.chain]]` of the one
/// API (or of the API named `api` among several).
fn toml_steps<'a>(table: &'a toml::Table, api: &str) -> Result<&'a [toml::Value], String> {
    let chain_of = |t: &'a toml::Table, what: &str| -> Result<&'a [toml::Value], String> {
        match t.get("chain") {
            Some(toml::Value::Array(a)) => Ok(a.as_slice()),
            Some(other) => Err(format!(
                "`{what}` must be an array of tables ([[{what}]]), not a {}",
                other.type_str()
            )),
            None => Ok(&[]),
        }
    };
    match (table.get("chain"), table.get("api")) {
        (Some(_), Some(_)) => {
            Err("has both [[chain]] and [[api]]: give the steps one way".to_string())
        }
        (Some(_), None) => chain_of(table, "chain"),
        (None, Some(toml::Value::Table(t))) => {
            check_name(t, api)?;
            chain_of(t, "api.chain")
        }
        (None, Some(toml::Value::Array(apis))) => {
            let tables: Vec<&toml::Table> = apis.iter().filter_map(|a| a.as_table()).collect();
            let named: Vec<&&toml::Table> = tables
                .iter()
                .filter(|t| t.get("name").and_then(|n| n.as_str()) == Some(api))
                .collect();
            match (named.as_slice(), tables.as_slice()) {
                ([one], _) => chain_of(one, "api.chain"),
                ([], [only]) => {
                    check_name(only, api)?;
                    chain_of(only, "api.chain")
                }
                _ => {
                    let names: Vec<&str> = tables
                        .iter()
                        .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
                        .collect();
                    Err(format!(
                        "has no [[api]] named `{api}` (it has: {})",
                        if names.is_empty() {
                            "none named".to_string()
                        } else {
                            names.join(", ")
                        }
                    ))
                }
            }
        }
        (None, Some(other)) => Err(format!("`api` must be a table, not a {}", other.type_str())),
        (None, None) => Err("expected [[chain]] or [[api.chain]] tables".to_string()),
    }
}

/// An `[[api]]` that names a different API than the one being set is refused.
fn check_name(t: &toml::Table, api: &str) -> Result<(), String> {
    match t.get("name").and_then(|n| n.as_str()) {
        Some(name) if name != api => Err(format!(
            "its [[api]] is `{name}`, not `{api}`: remove `name` or set the chain of `{name}`"
        )),
        _ => Ok(()),
    }
}

/// One step as JSON: its own keys from kebab-case to snake_case, values
/// (including the plugin's `config`, keys untouched) converted as they are,
/// except a `memory` given as a number of bytes, which the API takes as text.
fn step(v: &toml::Value) -> Result<Value, String> {
    let toml::Value::Table(t) = v else {
        return Err(format!("expected a table, not a {}", v.type_str()));
    };
    Ok(Value::Object(
        t.iter()
            .map(|(k, v)| {
                let key = k.replace('-', "_");
                let value = match (key.as_str(), v) {
                    ("memory", toml::Value::Integer(n)) => Value::String(n.to_string()),
                    _ => toml_to_json(v),
                };
                (key, value)
            })
            .collect(),
    ))
}

/// TOML to JSON, datetimes as their RFC 3339 text.
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toml(text: &str, api: &str) -> Result<Value, String> {
        convert(text, Format::Toml, api, "chain.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn top_level_chain_tables() {
        let text = r#"
[[chain]]
name = "auth"
plugin = "key-auth"
fail-open = false
timeout = "20ms"
memory = "8MiB"
grants = ["consumers"]
[chain.config]
header = "x-api-key"
cache-authorized = true

[[chain]]
plugin = "quota"
memory = 1048576
[chain.config]
calls = 1000
period = "month"
"#;
        assert_eq!(
            toml(text, "pets").unwrap(),
            json!({"chain": [
                {"name": "auth", "plugin": "key-auth", "fail_open": false, "timeout": "20ms",
                 "memory": "8MiB", "grants": ["consumers"],
                 "config": {"header": "x-api-key", "cache-authorized": true}},
                {"plugin": "quota", "memory": "1048576",
                 "config": {"calls": 1000, "period": "month"}},
            ]})
        );
    }

    #[test]
    fn api_chain_tables() {
        let text = r#"
[[api.chain]]
plugin = "access-log"
[api.chain.config]
headers = ["user-agent"]
"#;
        assert_eq!(
            toml(text, "pets").unwrap(),
            json!({"chain": [{"plugin": "access-log", "config": {"headers": ["user-agent"]}}]})
        );
    }

    #[test]
    fn whole_manifest_picks_the_named_api() {
        let text = r#"
schema = 1
[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9090"] }
[[api.route]]
prefix = "/pets"
[[api.chain]]
plugin = "key-auth"

[[api]]
name = "shop"
upstream = { targets = ["http://127.0.0.1:9091"] }
[[api.chain]]
plugin = "cache"
[[api.chain]]
plugin = "transform"
"#;
        assert_eq!(
            toml(text, "shop").unwrap(),
            json!({"chain": [{"plugin": "cache"}, {"plugin": "transform"}]})
        );
        assert_eq!(
            toml(text, "pets").unwrap(),
            json!({"chain": [{"plugin": "key-auth"}]})
        );
        let e = toml(text, "zoo").unwrap_err();
        assert_eq!(
            e,
            "chain.toml: has no [[api]] named `zoo` (it has: pets, shop)"
        );
    }

    #[test]
    fn a_single_api_of_another_name_is_refused() {
        let text = "[[api]]\nname = \"pets\"\n[[api.chain]]\nplugin = \"cache\"\n";
        let e = toml(text, "shop").unwrap_err();
        assert!(e.contains("its [[api]] is `pets`, not `shop`"), "{e}");
        // Without a name it is taken for the API being set.
        let text = "[[api.chain]]\nplugin = \"cache\"\n";
        assert_eq!(
            toml(text, "shop").unwrap(),
            json!({"chain": [{"plugin": "cache"}]})
        );
    }

    #[test]
    fn bad_toml() {
        let e = toml("[[chain]]\nplugin = \n", "pets").unwrap_err();
        assert!(e.starts_with("chain.toml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert_eq!(
            toml("name = \"x\"\n", "pets").unwrap_err(),
            "chain.toml: expected [[chain]] or [[api.chain]] tables"
        );
        assert!(toml("chain = 3\n", "pets")
            .unwrap_err()
            .contains("must be an array of tables"));
        assert_eq!(
            toml("chain = [1]\n", "pets").unwrap_err(),
            "chain.toml: chain step 1: expected a table, not a integer"
        );
        assert!(toml(
            "[[chain]]\nplugin=\"a\"\n[[api.chain]]\nplugin=\"b\"\n",
            "pets"
        )
        .unwrap_err()
        .contains("both"));
    }

    #[test]
    fn json_files() {
        let conv = |t: &str| convert(t, Format::Json, "pets", "c.json").map_err(|e| e.to_string());
        let steps = r#"[{"plugin":"cache","fail_open":true}]"#;
        assert_eq!(
            conv(steps).unwrap(),
            json!({"chain": [{"plugin": "cache", "fail_open": true}]})
        );
        let whole = r#"{"chain":[{"plugin":"cache"}]}"#;
        assert_eq!(
            conv(whole).unwrap(),
            json!({"chain": [{"plugin": "cache"}]})
        );
        assert!(conv(r#"{"steps":[]}"#)
            .unwrap_err()
            .contains("an object without `chain`"));
        assert!(conv("\"x\"").unwrap_err().contains("not a string"));
        assert!(conv("{").unwrap_err().starts_with("c.json: not valid JSON"));
    }

    #[test]
    fn format_detection() {
        assert_eq!(detect(Path::new("c.json"), "x"), Format::Json);
        assert_eq!(detect(Path::new("c.TOML"), "[x]"), Format::Toml);
        assert_eq!(detect(Path::new("-"), "  {\"chain\":[]}"), Format::Json);
        assert_eq!(
            detect(Path::new("-"), "[ {\"plugin\":\"cache\"}]"),
            Format::Json
        );
        assert_eq!(detect(Path::new("-"), "[]"), Format::Json);
        assert_eq!(
            detect(Path::new("-"), "[[chain]]\nplugin = \"cache\""),
            Format::Toml
        );
        assert_eq!(detect(Path::new("-"), "[chain]"), Format::Toml);
        assert_eq!(
            detect(Path::new("chain"), "# steps\n[[chain]]"),
            Format::Toml
        );
    }
}
