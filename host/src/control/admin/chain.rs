//! Policy chains through the admin API. The manifest file stays the source
//! of truth: an assignment rewrites the API's `[[api.chain]]` tables in its
//! file (keeping the rest of the file, comments included) and goes live
//! through the same build-check-swap as a hot reload (see
//! [`crate::control::ControlPlane::apply_manifest_edit`]).

use super::error::AdminError;
use crate::manifest::{toml_to_json, ApiSpec, Dur, Size, StepSpec};
use serde::Deserialize;
use serde_json::{Map, Value};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

/// One step as the admin API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    #[serde(default, deserialize_with = "super::model::present")]
    pub name: Option<String>,
    pub plugin: String,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default, deserialize_with = "super::model::present")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub memory: Option<SizeInput>,
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub config: Option<Map<String, Value>>,
}

/// A size as bytes (`16777216`) or with a unit (`"16MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeInput {
    Bytes(#[serde(deserialize_with = "super::model::whole")] u64),
    Text(String),
}

impl SizeInput {
    fn parse(&self) -> Result<Size, String> {
        match self {
            SizeInput::Bytes(n) => Ok(Size(*n)),
            SizeInput::Text(t) => Size::try_from(t.as_str()),
        }
    }
}

/// The body of `PUT /apis/{name}/chain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainAssign {
    pub chain: Vec<StepInput>,
}

/// The most steps a chain may have.
pub const MAX_STEPS: usize = 64;
const MAX_DEPTH: usize = 32;

/// A duration as a manifest would write it.
pub fn dur_str(d: std::time::Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// A size as a manifest would write it.
pub fn size_str(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

/// A step of a manifest as JSON (what `GET .../chain` shows).
pub fn step_view(s: &StepSpec) -> Value {
    let mut o = Map::new();
    if let Some(n) = &s.name {
        o.insert("name".into(), n.as_str().into());
    }
    o.insert("plugin".into(), s.plugin.clone().into());
    if s.fail_open {
        o.insert("fail_open".into(), true.into());
    }
    if let Some(t) = s.timeout {
        o.insert("timeout".into(), dur_str(t.0).into());
    }
    if let Some(m) = s.memory {
        o.insert("memory".into(), size_str(m.0).into());
    }
    if !s.grants.is_empty() {
        o.insert("grants".into(), s.grants.clone().into());
    }
    if let Some(c) = &s.config {
        o.insert(
            "config".into(),
            toml_to_json(&toml::Value::Table(c.clone())),
        );
    }
    Value::Object(o)
}

/// An API's chain as JSON.
pub fn chain_view(api: &ApiSpec) -> Vec<Value> {
    api.chain.iter().map(|s| step_view(s.get_ref())).collect()
}

/// Check the steps' own fields (the plugins check their configs later, in
/// the build), naming the field at fault.
pub fn check_steps(chain: &[StepInput]) -> Result<(), AdminError> {
    if chain.len() > MAX_STEPS {
        return Err(AdminError::invalid(
            "chain",
            format!("at most {MAX_STEPS} steps"),
        ));
    }
    for (i, s) in chain.iter().enumerate() {
        let f = |name: &str| format!("chain[{i}].{name}");
        if let Some(n) = &s.name {
            crate::manifest::Name::try_from(n.clone())
                .map_err(|e| AdminError::invalid(f("name"), e))?;
        }
        if s.plugin.is_empty()
            || s.plugin.chars().count() > 200
            || s.plugin.chars().any(char::is_control)
        {
            return Err(AdminError::invalid(
                f("plugin"),
                "must be a plugin name (1-200 characters)",
            ));
        }
        if let Some(t) = &s.timeout {
            // As the OpenAPI document says: 1-19 digits and a unit.
            if !plain_number_unit(t, 19) {
                return Err(AdminError::invalid(
                    f("timeout"),
                    format!("`{}` is not a duration: 1-19 digits and one of us, ms, s, m, h (e.g. `250ms`)", super::error::truncate(t, 40)),
                ));
            }
            Dur::try_from(t.as_str()).map_err(|e| AdminError::invalid(f("timeout"), e))?;
        }
        if let Some(m) = &s.memory {
            if let SizeInput::Text(t) = m {
                if !plain_number_unit(t, 9) {
                    return Err(AdminError::invalid(
                        f("memory"),
                        format!(
                            "`{}` is not a size: 1-9 digits and an optional unit (e.g. `16MiB`)",
                            super::error::truncate(t, 40)
                        ),
                    ));
                }
            }
            m.parse().map_err(|e| AdminError::invalid(f("memory"), e))?;
        }
        for (j, g) in s.grants.iter().enumerate() {
            crate::policy::host::Capability::parse(g)
                .map_err(|e| AdminError::invalid(format!("chain[{i}].grants[{j}]"), e))?;
        }
        if let Some(c) = &s.config {
            json_table(c, &f("config"), 0)?;
        }
    }
    Ok(())
}

/// 1 to `digits` ASCII digits then ASCII letters (the unit, checked by the
/// parser), nothing else.
fn plain_number_unit(s: &str, digits: usize) -> bool {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (1..=digits).contains(&n) && s.bytes().skip(n).all(|b| b.is_ascii_alphabetic())
}

fn json_value(v: &Value, path: &str, depth: usize) -> Result<toml_edit::Value, AdminError> {
    if depth > MAX_DEPTH {
        return Err(AdminError::invalid(
            path,
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    Ok(match v {
        Value::Null => {
            return Err(AdminError::invalid(
                path,
                "null has no TOML form: leave the field out",
            ))
        }
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if n.is_u64() {
                return Err(AdminError::invalid(
                    path,
                    "integers above 9223372036854775807 have no TOML form",
                ));
            } else {
                let x = n.as_f64().unwrap_or(0.0);
                // The OpenAPI document bounds numbers as TOML bounds integers.
                if !(x > -9.223_372_036_854_776e18 && x < 9.223_372_036_854_776e18) {
                    return Err(AdminError::invalid(
                        path,
                        "numbers beyond ±9223372036854775807 are not allowed",
                    ));
                }
                x.into()
            }
        }
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => {
            let mut arr = Array::new();
            for (i, x) in a.iter().enumerate() {
                arr.push(json_value(x, &format!("{path}[{i}]"), depth + 1)?);
            }
            arr.into()
        }
        Value::Object(o) => {
            let mut t = InlineTable::new();
            for (k, x) in o {
                t.insert(k, json_value(x, &format!("{path}.{k}"), depth + 1)?);
            }
            t.into()
        }
    })
}

/// A JSON object as a TOML table: nested objects become sub-tables
/// (`[api.chain.config.request]`), objects inside arrays inline tables.
fn json_table(o: &Map<String, Value>, path: &str, depth: usize) -> Result<Table, AdminError> {
    if depth > MAX_DEPTH {
        return Err(AdminError::invalid(
            path,
            format!("nested deeper than {MAX_DEPTH}"),
        ));
    }
    let mut t = Table::new();
    // Plain values first, then sub-tables, as a person would write it.
    for (k, v) in o.iter().filter(|(_, v)| !v.is_object()) {
        t.insert(
            k,
            Item::Value(json_value(v, &format!("{path}.{k}"), depth + 1)?),
        );
    }
    for (k, v) in o.iter() {
        if let Value::Object(inner) = v {
            let mut sub = json_table(inner, &format!("{path}.{k}"), depth + 1)?;
            sub.set_implicit(inner.values().all(Value::is_object) && !inner.is_empty());
            t.insert(k, Item::Table(sub));
        }
    }
    Ok(t)
}

fn step_table(s: &StepInput) -> Result<Table, AdminError> {
    let mut t = Table::new();
    if let Some(n) = &s.name {
        t.insert("name", toml_edit::value(n.as_str()));
    }
    t.insert("plugin", toml_edit::value(s.plugin.as_str()));
    if s.fail_open {
        t.insert("fail-open", toml_edit::value(true));
    }
    if let Some(x) = &s.timeout {
        t.insert("timeout", toml_edit::value(x.as_str()));
    }
    if let Some(x) = &s.memory {
        let size = x.parse().map_err(|e| AdminError::invalid("memory", e))?;
        t.insert("memory", toml_edit::value(size_str(size.0)));
    }
    if !s.grants.is_empty() {
        let mut a = Array::new();
        for g in &s.grants {
            a.push(g.as_str());
        }
        t.insert("grants", toml_edit::value(a));
    }
    if let Some(c) = &s.config {
        t.insert("config", Item::Table(json_table(c, "config", 0)?));
    }
    Ok(t)
}

/// `text` (a policy manifest) with the chain of API `api` replaced by
/// `chain`. Fails if the file does not define the API as an `[[api]]` table.
pub fn rewrite_chain(text: &str, api: &str, chain: &[StepInput]) -> Result<String, AdminError> {
    let mut doc: DocumentMut = text.parse().map_err(|e| {
        AdminError::conflict(format!(
            "the manifest cannot be edited: it does not parse: {e}"
        ))
    })?;
    let apis = doc
        .get_mut("api")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            AdminError::conflict(
                "the manifest does not write its APIs as [[api]] tables: edit it by hand",
            )
        })?;
    let table = apis
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(api))
        .ok_or_else(|| {
            AdminError::conflict(format!(
                "API `{api}` is not an [[api]] table of its manifest: edit it by hand"
            ))
        })?;
    if let Some(existing) = table.get("chain") {
        if !existing.is_array_of_tables() && !existing.is_none() {
            return Err(AdminError::conflict(format!(
                "API `{api}` writes its chain inline, not as [[api.chain]] tables: edit it by hand"
            )));
        }
    }
    if chain.is_empty() {
        table.remove("chain");
    } else {
        let mut aot = ArrayOfTables::new();
        for s in chain {
            aot.push(step_table(s)?);
        }
        table.insert("chain", Item::ArrayOfTables(aot));
    }
    Ok(doc.to_string())
}

/// The same steps as JSON, normalised like [`step_view`], to compare what
/// was asked with what the rewritten file says.
pub fn input_view(s: &StepInput) -> Value {
    let mut o = Map::new();
    if let Some(n) = &s.name {
        o.insert("name".into(), n.clone().into());
    }
    o.insert("plugin".into(), s.plugin.clone().into());
    if s.fail_open {
        o.insert("fail_open".into(), true.into());
    }
    if let Some(t) = &s.timeout {
        if let Ok(d) = Dur::try_from(t.as_str()) {
            o.insert("timeout".into(), dur_str(d.0).into());
        }
    }
    if let Some(m) = &s.memory {
        if let Ok(n) = m.parse() {
            o.insert("memory".into(), size_str(n.0).into());
        }
    }
    if !s.grants.is_empty() {
        o.insert("grants".into(), s.grants.clone().into());
    }
    if let Some(c) = &s.config {
        o.insert("config".into(), Value::Object(c.clone()));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::PolicyManifest;

    const TEXT: &str = r#"# The pets API.
schema = 1

[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9"] }  # keep me

[[api.route]]
prefix = "/pets"

[[api.chain]]
plugin = "noop"

[[api]]
name = "orders"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
prefix = "/orders"

[[api.chain]]
name = "tag"
plugin = "fixture-tag"
[api.chain.config]
value = "orders"
"#;

    fn steps(v: Value) -> Vec<StepInput> {
        serde_json::from_value::<ChainAssign>(serde_json::json!({ "chain": v }))
            .unwrap()
            .chain
    }

    #[test]
    fn rewrites_one_api_and_keeps_the_rest() {
        let chain = steps(serde_json::json!([
            {"name": "auth", "plugin": "key-auth", "grants": ["consumers"], "timeout": "20ms",
             "config": {"header": "x-api-key", "nested": {"deep": {"x": 1}, "list": [{"a": 1}]}}},
            {"plugin": "noop", "fail_open": true, "memory": 16777216}
        ]));
        check_steps(&chain).unwrap();
        let out = rewrite_chain(TEXT, "pets", &chain).unwrap();
        assert!(out.contains("# The pets API."), "{out}");
        assert!(out.contains("# keep me"), "{out}");
        let m: PolicyManifest = toml::from_str(&out).unwrap();
        let pets = m.apis[0].get_ref();
        let orders = m.apis[1].get_ref();
        assert_eq!(pets.name.as_str(), "pets");
        let got = chain_view(pets);
        let want: Vec<Value> = chain.iter().map(input_view).collect();
        assert_eq!(got, want, "{out}");
        // The other API is untouched.
        assert_eq!(orders.chain.len(), 1);
        assert_eq!(orders.chain[0].get_ref().plugin, "fixture-tag");
        assert_eq!(orders.routes.len(), 1);
        // Emptying a chain.
        let out = rewrite_chain(TEXT, "orders", &[]).unwrap();
        let m: PolicyManifest = toml::from_str(&out).unwrap();
        assert!(m.apis[1].get_ref().chain.is_empty());
        assert_eq!(m.apis[0].get_ref().chain.len(), 1);
    }

    #[test]
    fn refuses_what_toml_cannot_say() {
        for (v, field) in [
            (
                serde_json::json!([{"plugin": "x", "config": {"a": null}}]),
                "chain[0].config.a",
            ),
            (
                serde_json::json!([{"plugin": "x", "timeout": "soon"}]),
                "chain[0].timeout",
            ),
            (
                serde_json::json!([{"plugin": "x", "memory": "lots"}]),
                "chain[0].memory",
            ),
            (
                serde_json::json!([{"plugin": "x", "grants": ["root"]}]),
                "chain[0].grants[0]",
            ),
            (serde_json::json!([{"plugin": ""}]), "chain[0].plugin"),
            (
                serde_json::json!([{"plugin": "x", "name": "bad name"}]),
                "chain[0].name",
            ),
            (
                serde_json::json!([{"plugin": "x", "config": {"n": u64::MAX}}]),
                "chain[0].config.n",
            ),
        ] {
            let e = check_steps(&steps(v)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
        }
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!({ "d": deep });
        }
        let e =
            check_steps(&steps(serde_json::json!([{"plugin": "x", "config": deep}]))).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        assert_eq!(rewrite_chain(TEXT, "nope", &[]).unwrap_err().status, 409);
        assert_eq!(
            rewrite_chain("api = [{ name = \"pets\" }]\n", "pets", &[])
                .unwrap_err()
                .status,
            409
        );
    }

    #[test]
    fn sizes_and_durations_print_as_written() {
        assert_eq!(dur_str(std::time::Duration::from_millis(20)), "20ms");
        assert_eq!(dur_str(std::time::Duration::from_secs(2)), "2s");
        assert_eq!(size_str(8 << 20), "8MiB");
        assert_eq!(size_str(1000), "1000B");
    }
}
