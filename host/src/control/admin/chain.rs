//! Policy chains through the admin API. The manifest file stays the source
//! of truth: an assignment rewrites the API's `[[api.chain]]` tables in its
//! file (keeping the rest of the file, comments included) and goes live
//! through the same build-check-swap as a hot reload (see
//! [`crate::control::ControlPlane::apply_manifest_edit`]).

use super::error::AdminError;
use crate::manifest::{
    toml_to_json, ApiSpec, CanarySpec, Dur, Isolation, Percent, PolicyManifest, QuarantineSpec,
    Size, StepSpec,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

/// One step as the admin API takes it: every key of a manifest's step
/// ([`StepSpec`]), in snake_case (`fail_open`, `max_uses`, ...) where the
/// manifest writes kebab-case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    #[serde(default, deserialize_with = "super::model::present")]
    pub name: Option<String>,
    /// The plugin; absent only in a `base` step.
    #[serde(default)]
    pub plugin: String,
    /// `true`: where the enclosing scope's chain runs (no other key).
    #[serde(default)]
    pub base: bool,
    /// A condition (CEL) for the step to run.
    #[serde(default, deserialize_with = "super::model::present")]
    pub when: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default, deserialize_with = "super::model::present")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub memory: Option<SizeInput>,
    #[serde(default, deserialize_with = "super::model::some_whole")]
    pub log_rate: Option<u32>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub log_line: Option<SizeInput>,
    #[serde(default)]
    pub grants: Vec<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub config: Option<Map<String, Value>>,
    /// `request` or `worker`.
    #[serde(default, deserialize_with = "super::model::present")]
    pub isolation: Option<String>,
    #[serde(default, deserialize_with = "super::model::some_whole")]
    pub max_uses: Option<u64>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub idle: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub wall_timeout: Option<String>,
    #[serde(default, deserialize_with = "super::model::some_whole")]
    pub concurrency: Option<u64>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub queue_timeout: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub quarantine: Option<QuarantineInput>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub canary: Option<CanaryInput>,
}

/// A step's `canary` as the admin API takes it (the manifest's
/// [`CanarySpec`]; `min_calls` for `min-calls`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryInput {
    pub plugin: String,
    /// 0 to 100, at most two decimals.
    pub percent: f64,
    #[serde(default, deserialize_with = "super::model::present")]
    pub config: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub rollback: Option<RollbackInput>,
}

/// A canary's `rollback` as the admin API takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    #[serde(default, deserialize_with = "super::model::present")]
    pub failures: Option<f64>,
    #[serde(default, deserialize_with = "super::model::some_whole")]
    pub min_calls: Option<u64>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub window: Option<String>,
}

/// A step's `quarantine` as the admin API takes it (the manifest's
/// [`QuarantineSpec`]: `cool_down` for `cool-down`, ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineInput {
    #[serde(default, deserialize_with = "super::model::some_whole")]
    pub failures: Option<u32>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub window: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub cool_down: Option<String>,
    #[serde(default, deserialize_with = "super::model::present")]
    pub max_cool_down: Option<String>,
}

impl QuarantineInput {
    /// The durations by their JSON and their manifest names.
    fn durations(&self) -> [(&'static str, &'static str, Option<&String>); 3] {
        [
            ("window", "window", self.window.as_ref()),
            ("cool_down", "cool-down", self.cool_down.as_ref()),
            (
                "max_cool_down",
                "max-cool-down",
                self.max_cool_down.as_ref(),
            ),
        ]
    }
}

/// The largest integer TOML can write.
const TOML_MAX_INT: u64 = i64::MAX as u64;

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

/// A step of a manifest as JSON (what `GET .../chain` shows): every key
/// the step sets, so that a `PUT` of what was read loses nothing.
pub fn step_view(s: &StepSpec) -> Value {
    // Every field by name: a key added to the manifest's step does not
    // compile here until the admin API shows it.
    let StepSpec {
        name,
        plugin,
        base,
        when,
        fail_open,
        timeout,
        memory,
        log_rate,
        log_line,
        grants,
        config,
        isolation,
        max_uses,
        idle,
        wall_timeout,
        concurrency,
        queue_timeout,
        quarantine,
        canary,
    } = s;
    let mut o = Map::new();
    if let Some(n) = name {
        o.insert("name".into(), n.as_str().into());
    }
    if *base {
        o.insert("base".into(), true.into());
    } else {
        o.insert("plugin".into(), plugin.clone().into());
    }
    if let Some(w) = when {
        o.insert("when".into(), w.clone().into());
    }
    if *fail_open {
        o.insert("fail_open".into(), true.into());
    }
    let durations = [
        ("timeout", timeout),
        ("idle", idle),
        ("wall_timeout", wall_timeout),
        ("queue_timeout", queue_timeout),
    ];
    for (k, d) in durations {
        if let Some(d) = d {
            o.insert(k.into(), dur_str(d.0).into());
        }
    }
    for (k, m) in [("memory", memory), ("log_line", log_line)] {
        if let Some(m) = m {
            o.insert(k.into(), size_str(m.0).into());
        }
    }
    if let Some(n) = log_rate {
        o.insert("log_rate".into(), (*n).into());
    }
    if !grants.is_empty() {
        o.insert("grants".into(), grants.clone().into());
    }
    if let Some(c) = config {
        o.insert(
            "config".into(),
            toml_to_json(&toml::Value::Table(c.clone())),
        );
    }
    if let Some(i) = isolation {
        o.insert("isolation".into(), i.as_str().into());
    }
    if let Some(n) = max_uses {
        o.insert("max_uses".into(), (*n).into());
    }
    if let Some(n) = concurrency {
        o.insert("concurrency".into(), (*n as u64).into());
    }
    if let Some(q) = quarantine {
        o.insert("quarantine".into(), quarantine_view(q));
    }
    if let Some(c) = canary {
        o.insert("canary".into(), canary_view(c));
    }
    Value::Object(o)
}

fn canary_view(c: &CanarySpec) -> Value {
    let CanarySpec {
        plugin,
        percent,
        config,
        rollback,
    } = c;
    let mut o = Map::new();
    o.insert("plugin".into(), plugin.clone().into());
    o.insert("percent".into(), percent.to_json());
    if let Some(c) = config {
        o.insert(
            "config".into(),
            toml_to_json(&toml::Value::Table(c.clone())),
        );
    }
    if let Some(r) = rollback {
        let mut ro = Map::new();
        if let Some(f) = r.failures {
            ro.insert("failures".into(), f.to_json());
        }
        if let Some(n) = r.min_calls {
            ro.insert("min_calls".into(), n.into());
        }
        if let Some(w) = r.window {
            ro.insert("window".into(), dur_str(w.0).into());
        }
        o.insert("rollback".into(), Value::Object(ro));
    }
    Value::Object(o)
}

fn quarantine_view(q: &QuarantineSpec) -> Value {
    let QuarantineSpec {
        failures,
        window,
        cool_down,
        max_cool_down,
    } = q;
    let mut o = Map::new();
    if let Some(n) = failures {
        o.insert("failures".into(), (*n).into());
    }
    for (k, d) in [
        ("window", window),
        ("cool_down", cool_down),
        ("max_cool_down", max_cool_down),
    ] {
        if let Some(d) = d {
            o.insert(k.into(), dur_str(d.0).into());
        }
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
        if s.base {
            if !s.plugin.is_empty() || s.name.is_some() || s.when.is_some() {
                return Err(AdminError::invalid(
                    f("base"),
                    "a `base` step marks where the enclosing chain runs: give it no other field",
                ));
            }
            continue;
        }
        check_plugin(&s.plugin, &f("plugin"))?;
        if let Some(w) = &s.when {
            // Well-formed, but not a condition: refused as the build would.
            crate::policy::condition::Condition::compile(w)
                .map_err(|e| AdminError::unprocessable(f("when"), e.message))?;
        }
        let durations = [
            ("timeout", &s.timeout),
            ("idle", &s.idle),
            ("wall_timeout", &s.wall_timeout),
            ("queue_timeout", &s.queue_timeout),
        ];
        for (k, t) in durations {
            if let Some(t) = t {
                check_dur(t, &f(k))?;
            }
        }
        for (k, m) in [("memory", &s.memory), ("log_line", &s.log_line)] {
            if let Some(m) = m {
                check_size(m, &f(k))?;
            }
        }
        if let Some(x) = &s.isolation {
            isolation(x).ok_or_else(|| {
                AdminError::invalid(
                    f("isolation"),
                    format!(
                        "`{}` is not an isolation level: `request` or `worker`",
                        super::error::truncate(x, 40)
                    ),
                )
            })?;
        }
        for (k, n) in [("max_uses", s.max_uses), ("concurrency", s.concurrency)] {
            if n.is_some_and(|n| n > TOML_MAX_INT) {
                return Err(AdminError::invalid(
                    f(k),
                    format!("at most {TOML_MAX_INT} (TOML's largest integer)"),
                ));
            }
        }
        if let Some(q) = &s.quarantine {
            for (k, _, t) in q.durations() {
                if let Some(t) = t {
                    check_dur(t, &f(&format!("quarantine.{k}")))?;
                }
            }
        }
        for (j, g) in s.grants.iter().enumerate() {
            crate::policy::host::Capability::parse(g)
                .map_err(|e| AdminError::invalid(format!("chain[{i}].grants[{j}]"), e))?;
        }
        if let Some(c) = &s.config {
            json_table(c, &f("config"), 0)?;
        }
        if let Some(c) = &s.canary {
            check_canary(c, &f("canary"))?;
        }
    }
    Ok(())
}

fn check_plugin(p: &str, field: &str) -> Result<(), AdminError> {
    if p.is_empty() || p.chars().count() > 200 || p.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            field,
            "must be a plugin name (1-200 characters)",
        ));
    }
    Ok(())
}

/// A canary's own fields (its config is checked by its plugin later).
fn check_canary(c: &CanaryInput, field: &str) -> Result<(), AdminError> {
    let f = |name: &str| format!("{field}.{name}");
    check_plugin(&c.plugin, &f("plugin"))?;
    Percent::try_from(c.percent).map_err(|e| AdminError::invalid(f("percent"), e))?;
    if let Some(cf) = &c.config {
        json_table(cf, &f("config"), 0)?;
    }
    if let Some(r) = &c.rollback {
        if let Some(p) = r.failures {
            Percent::try_from(p).map_err(|e| AdminError::invalid(f("rollback.failures"), e))?;
        }
        if r.min_calls.is_some_and(|n| n > TOML_MAX_INT) {
            return Err(AdminError::invalid(
                f("rollback.min_calls"),
                format!("at most {TOML_MAX_INT} (TOML's largest integer)"),
            ));
        }
        if let Some(w) = &r.window {
            check_dur(w, &f("rollback.window"))?;
        }
    }
    Ok(())
}

/// The isolation level `s` names.
fn isolation(s: &str) -> Option<Isolation> {
    [Isolation::Request, Isolation::Worker]
        .into_iter()
        .find(|i| i.as_str() == s)
}

/// A duration as the OpenAPI document says: 1-19 digits and a unit.
fn check_dur(t: &str, field: &str) -> Result<Dur, AdminError> {
    if !plain_number_unit(t, 19) {
        return Err(AdminError::invalid(
            field,
            format!(
                "`{}` is not a duration: 1-19 digits and one of us, ms, s, m, h (e.g. `250ms`)",
                super::error::truncate(t, 40)
            ),
        ));
    }
    Dur::try_from(t).map_err(|e| AdminError::invalid(field, e))
}

/// A size as the OpenAPI document says: bytes, or 1-9 digits and a unit.
fn check_size(m: &SizeInput, field: &str) -> Result<Size, AdminError> {
    if let SizeInput::Text(t) = m {
        if !plain_number_unit(t, 9) {
            return Err(AdminError::invalid(
                field,
                format!(
                    "`{}` is not a size: 1-9 digits and an optional unit (e.g. `16MiB`)",
                    super::error::truncate(t, 40)
                ),
            ));
        }
    }
    m.parse().map_err(|e| AdminError::invalid(field, e))
}

/// 1 to `digits` ASCII digits then ASCII letters (the unit, checked by the
/// parser), nothing else.
fn plain_number_unit(s: &str, digits: usize) -> bool {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (1..=digits).contains(&n) && s.bytes().skip(n).all(|b| b.is_ascii_alphabetic())
}

pub(super) fn json_value(
    v: &Value,
    path: &str,
    depth: usize,
) -> Result<toml_edit::Value, AdminError> {
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
            // -2^63 is left out: as JSON it reads the same as the float
            // just below it, which is out of range, so neither passes.
            if let Some(i) = n.as_i64().filter(|i| *i != i64::MIN) {
                i.into()
            } else if n.is_i64() {
                return Err(AdminError::invalid(
                    path,
                    "numbers beyond ±9223372036854775807 are not allowed",
                ));
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
pub(super) fn json_table(
    o: &Map<String, Value>,
    path: &str,
    depth: usize,
) -> Result<Table, AdminError> {
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

pub(super) fn step_table(s: &StepInput) -> Result<Table, AdminError> {
    let mut t = Table::new();
    if s.base {
        t.insert("base", toml_edit::value(true));
        return Ok(t);
    }
    if let Some(n) = &s.name {
        t.insert("name", toml_edit::value(n.as_str()));
    }
    t.insert("plugin", toml_edit::value(s.plugin.as_str()));
    if let Some(w) = &s.when {
        t.insert("when", toml_edit::value(w.as_str()));
    }
    if s.fail_open {
        t.insert("fail-open", toml_edit::value(true));
    }
    if let Some(x) = &s.timeout {
        t.insert("timeout", toml_edit::value(x.as_str()));
    }
    if let Some(x) = &s.memory {
        t.insert("memory", size_item("memory", x)?);
    }
    if let Some(n) = s.log_rate {
        t.insert("log-rate", toml_edit::value(i64::from(n)));
    }
    if let Some(x) = &s.log_line {
        t.insert("log-line", size_item("log-line", x)?);
    }
    if !s.grants.is_empty() {
        let mut a = Array::new();
        for g in &s.grants {
            a.push(g.as_str());
        }
        t.insert("grants", toml_edit::value(a));
    }
    if let Some(x) = &s.isolation {
        t.insert("isolation", toml_edit::value(x.as_str()));
    }
    if let Some(n) = s.max_uses {
        t.insert("max-uses", int_item("max-uses", n)?);
    }
    if let Some(x) = &s.idle {
        t.insert("idle", toml_edit::value(x.as_str()));
    }
    if let Some(x) = &s.wall_timeout {
        t.insert("wall-timeout", toml_edit::value(x.as_str()));
    }
    if let Some(n) = s.concurrency {
        t.insert("concurrency", int_item("concurrency", n)?);
    }
    if let Some(x) = &s.queue_timeout {
        t.insert("queue-timeout", toml_edit::value(x.as_str()));
    }
    if let Some(q) = &s.quarantine {
        let mut it = InlineTable::new();
        if let Some(n) = q.failures {
            it.insert("failures", i64::from(n).into());
        }
        for (_, k, x) in q.durations() {
            if let Some(x) = x {
                it.insert(k, x.as_str().into());
            }
        }
        t.insert("quarantine", toml_edit::value(it));
    }
    if let Some(c) = &s.config {
        t.insert("config", Item::Table(json_table(c, "config", 0)?));
    }
    if let Some(c) = &s.canary {
        t.insert("canary", Item::Table(canary_table(c)?));
    }
    Ok(t)
}

/// A canary as a `[api.chain.canary]` table.
fn canary_table(c: &CanaryInput) -> Result<Table, AdminError> {
    let mut t = Table::new();
    t.insert("plugin", toml_edit::value(c.plugin.as_str()));
    let percent = Percent::try_from(c.percent).map_err(|e| AdminError::invalid("percent", e))?;
    t.insert("percent", toml_edit::value(percent.to_toml()));
    if let Some(r) = &c.rollback {
        let mut it = InlineTable::new();
        if let Some(p) = r.failures {
            let p = Percent::try_from(p).map_err(|e| AdminError::invalid("failures", e))?;
            it.insert("failures", p.to_toml());
        }
        if let Some(n) = r.min_calls {
            let n = i64::try_from(n).map_err(|_| AdminError::invalid("min-calls", "too large"))?;
            it.insert("min-calls", n.into());
        }
        if let Some(w) = &r.window {
            it.insert("window", w.as_str().into());
        }
        t.insert("rollback", toml_edit::value(it));
    }
    if let Some(cf) = &c.config {
        t.insert("config", Item::Table(json_table(cf, "config", 0)?));
    }
    Ok(t)
}

fn size_item(key: &str, x: &SizeInput) -> Result<Item, AdminError> {
    let size = x.parse().map_err(|e| AdminError::invalid(key, e))?;
    Ok(toml_edit::value(size_str(size.0)))
}

fn int_item(key: &str, n: u64) -> Result<Item, AdminError> {
    let n = i64::try_from(n).map_err(|_| AdminError::invalid(key, "too large for TOML"))?;
    Ok(toml_edit::value(n))
}

/// `chain` as `[[...chain]]` tables; `None` for no step.
pub fn chain_item(chain: &[StepInput]) -> Result<Option<Item>, AdminError> {
    if chain.is_empty() {
        return Ok(None);
    }
    let mut aot = ArrayOfTables::new();
    for s in chain {
        aot.push(step_table(s)?);
    }
    Ok(Some(Item::ArrayOfTables(aot)))
}

/// Parse a manifest's `text` for an edit.
pub(super) fn parse_manifest(text: &str) -> Result<DocumentMut, AdminError> {
    text.parse().map_err(|e| {
        AdminError::conflict(format!(
            "the manifest cannot be edited: it does not parse: {e}"
        ))
    })
}

/// The manifest's `[[api]]` tables.
pub(super) fn api_tables(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, AdminError> {
    doc.get_mut("api")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| {
            AdminError::conflict(
                "the manifest does not write its APIs as [[api]] tables: edit it by hand",
            )
        })
}

/// The index of API `api` among `apis`.
pub(super) fn api_index(apis: &ArrayOfTables, api: &str) -> Result<usize, AdminError> {
    apis.iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(api))
        .ok_or_else(|| {
            AdminError::conflict(format!(
                "API `{api}` is not an [[api]] table of its manifest: edit it by hand"
            ))
        })
}

/// The `[[api]]` table of API `api`.
pub(super) fn api_table<'d>(
    doc: &'d mut DocumentMut,
    api: &str,
) -> Result<&'d mut Table, AdminError> {
    let apis = api_tables(doc)?;
    let i = api_index(apis, api)?;
    Ok(apis.get_mut(i).expect("found by api_index"))
}

/// `text` (a policy manifest) with the chain of API `api` replaced by
/// `chain`. Fails if the file does not define the API as an `[[api]]` table.
pub fn rewrite_chain(text: &str, api: &str, chain: &[StepInput]) -> Result<String, AdminError> {
    let mut doc = parse_manifest(text)?;
    let table = api_table(&mut doc, api)?;
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

/// A chain outside an API's own, as the admin API edits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainTarget {
    /// `[[chain]]`: the gateway's.
    Gateway,
    /// `[[product.chain]]` of the `[[product]]` with this id.
    Product(String),
    /// `[[api.route.chain]]` of API `api`'s route `route` (its name, or
    /// its path or prefix pattern as the router names it).
    Route { api: String, route: String },
}

impl ChainTarget {
    /// The entity an audit entry of an edit names: its kind and id.
    pub fn audited(&self) -> (&'static str, String) {
        match self {
            ChainTarget::Gateway => ("gateway", "gateway".into()),
            ChainTarget::Product(p) => ("product", p.clone()),
            ChainTarget::Route { api, route } => ("api", format!("{api}/{route}")),
        }
    }

    /// The chain as manifest `m` writes it, if it is there.
    pub fn view(&self, m: &PolicyManifest) -> Option<Vec<Value>> {
        let steps: Vec<&StepSpec> = match self {
            ChainTarget::Gateway => m.chain.iter().map(|s| s.get_ref()).collect(),
            ChainTarget::Product(id) => m
                .products
                .iter()
                .find(|p| p.get_ref().id.as_str() == id)?
                .get_ref()
                .chain
                .iter()
                .map(|s| s.get_ref())
                .collect(),
            ChainTarget::Route { api, route } => m
                .apis
                .iter()
                .find(|a| a.get_ref().name.as_str() == api)?
                .get_ref()
                .routes
                .iter()
                .find(|r| route_label(r.get_ref()) == *route)?
                .get_ref()
                .chain
                .iter()
                .map(|s| s.get_ref())
                .collect(),
        };
        Some(steps.into_iter().map(step_view).collect())
    }
}

pub use crate::loader::route_label;

/// The same for a route's table in a manifest being edited.
fn table_route_label(t: &Table) -> String {
    let s = |k: &str| t.get(k).and_then(Item::as_str);
    match (s("name"), s("path"), s("prefix")) {
        (Some(n), _, _) => n.to_string(),
        (None, Some(p), _) => p.to_string(),
        (None, None, Some(p)) => format!("{}/**", p.trim_end_matches('/')),
        (None, None, None) => String::new(),
    }
}

/// Put `chain` as the `chain` array of tables of `table` (removing it when
/// empty); `what` names the chain in an error.
fn set_chain(table: &mut Table, chain: &[StepInput], what: &str) -> Result<(), AdminError> {
    if let Some(existing) = table.get("chain") {
        if !existing.is_array_of_tables() && !existing.is_none() {
            return Err(AdminError::conflict(format!(
                "{what} is written inline, not as tables: edit it by hand"
            )));
        }
    }
    match chain_item(chain)? {
        Some(item) => {
            table.insert("chain", item);
        }
        None => {
            table.remove("chain");
        }
    }
    Ok(())
}

/// `text` (a policy manifest) with the chain at `target` replaced by
/// `chain`. A product without a `[[product]]` table gets one (and loses
/// it with its last step); the gateway's chain goes at the file's top.
pub fn rewrite_target(
    text: &str,
    target: &ChainTarget,
    chain: &[StepInput],
) -> Result<String, AdminError> {
    let mut doc = parse_manifest(text)?;
    match target {
        ChainTarget::Gateway => set_chain(doc.as_table_mut(), chain, "the gateway chain")?,
        ChainTarget::Product(id) => {
            let what = format!("product `{id}`'s chain");
            if doc.get("product").is_none() {
                doc.insert("product", Item::ArrayOfTables(ArrayOfTables::new()));
            }
            let products = doc
                .get_mut("product")
                .and_then(Item::as_array_of_tables_mut)
                .ok_or_else(|| {
                    AdminError::conflict("the manifest does not write its products as [[product]] tables: edit it by hand")
                })?;
            let found = products
                .iter()
                .position(|t| t.get("id").and_then(Item::as_str) == Some(id));
            let i = match found {
                Some(i) => i,
                None => {
                    let mut t = Table::new();
                    t.insert("id", toml_edit::value(id.as_str()));
                    products.push(t);
                    products.len() - 1
                }
            };
            let table = products.get_mut(i).expect("found or pushed");
            set_chain(table, chain, &what)?;
            if table.len() == 1 {
                products.remove(i);
            }
            if products.is_empty() {
                doc.remove("product");
            }
        }
        ChainTarget::Route { api, route } => {
            let table = api_table(&mut doc, api)?;
            let routes = table
                .get_mut("route")
                .and_then(Item::as_array_of_tables_mut)
                .ok_or_else(|| {
                    AdminError::conflict(format!(
                        "API `{api}` does not write its routes as [[api.route]] tables: edit it by hand"
                    ))
                })?;
            let t = routes
                .iter_mut()
                .find(|t| table_route_label(t) == *route)
                .ok_or_else(|| {
                    AdminError::conflict(format!(
                        "route `{route}` is not an [[api.route]] table of API `{api}`: edit it by hand"
                    ))
                })?;
            set_chain(t, chain, &format!("route `{route}`'s chain"))?;
        }
    }
    Ok(doc.to_string())
}

/// The same steps as JSON, normalised like [`step_view`], to compare what
/// was asked with what the rewritten file says.
pub fn input_view(s: &StepInput) -> Value {
    let mut o = Map::new();
    if s.base {
        o.insert("base".into(), true.into());
        return Value::Object(o);
    }
    if let Some(n) = &s.name {
        o.insert("name".into(), n.clone().into());
    }
    o.insert("plugin".into(), s.plugin.clone().into());
    if let Some(w) = &s.when {
        o.insert("when".into(), w.clone().into());
    }
    if s.fail_open {
        o.insert("fail_open".into(), true.into());
    }
    let durations = [
        ("timeout", &s.timeout),
        ("idle", &s.idle),
        ("wall_timeout", &s.wall_timeout),
        ("queue_timeout", &s.queue_timeout),
    ];
    for (k, t) in durations {
        if let Some(d) = t.as_ref().and_then(|t| Dur::try_from(t.as_str()).ok()) {
            o.insert(k.into(), dur_str(d.0).into());
        }
    }
    for (k, m) in [("memory", &s.memory), ("log_line", &s.log_line)] {
        if let Some(n) = m.as_ref().and_then(|m| m.parse().ok()) {
            o.insert(k.into(), size_str(n.0).into());
        }
    }
    if let Some(n) = s.log_rate {
        o.insert("log_rate".into(), n.into());
    }
    if !s.grants.is_empty() {
        o.insert("grants".into(), s.grants.clone().into());
    }
    if let Some(c) = &s.config {
        o.insert("config".into(), Value::Object(c.clone()));
    }
    if let Some(i) = s.isolation.as_deref().and_then(isolation) {
        o.insert("isolation".into(), i.as_str().into());
    }
    if let Some(n) = s.max_uses {
        o.insert("max_uses".into(), n.into());
    }
    if let Some(n) = s.concurrency {
        o.insert("concurrency".into(), n.into());
    }
    if let Some(q) = &s.quarantine {
        let mut qo = Map::new();
        if let Some(n) = q.failures {
            qo.insert("failures".into(), n.into());
        }
        for (k, _, t) in q.durations() {
            if let Some(d) = t.and_then(|t| Dur::try_from(t.as_str()).ok()) {
                qo.insert(k.into(), dur_str(d.0).into());
            }
        }
        o.insert("quarantine".into(), Value::Object(qo));
    }
    if let Some(c) = &s.canary {
        o.insert("canary".into(), canary_input_view(c));
    }
    Value::Object(o)
}

/// A canary as JSON, normalised like [`canary_view`].
fn canary_input_view(c: &CanaryInput) -> Value {
    let pct = |p: f64| Percent::try_from(p).map_or_else(|_| p.into(), Percent::to_json);
    let mut o = Map::new();
    o.insert("plugin".into(), c.plugin.clone().into());
    o.insert("percent".into(), pct(c.percent));
    if let Some(cf) = &c.config {
        o.insert("config".into(), Value::Object(cf.clone()));
    }
    if let Some(r) = &c.rollback {
        let mut ro = Map::new();
        if let Some(p) = r.failures {
            ro.insert("failures".into(), pct(p));
        }
        if let Some(n) = r.min_calls {
            ro.insert("min_calls".into(), n.into());
        }
        if let Some(d) = r.window.as_deref().and_then(|w| Dur::try_from(w).ok()) {
            ro.insert("window".into(), dur_str(d.0).into());
        }
        o.insert("rollback".into(), Value::Object(ro));
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

    /// A step with every key a manifest's step has, and a plain one.
    const EVERY_KEY: &str = r#"schema = 1

[[api]]
name = "pets"
upstream = { targets = ["http://127.0.0.1:9"] }

[[api.route]]
prefix = "/pets"

[[api.chain]]
name = "tag"
plugin = "fixture-tag"
when = 'request.method != "OPTIONS"'
fail-open = true
timeout = "20ms"
memory = "8MiB"
log-rate = 7
log-line = "1KiB"
grants = ["counters", "http:idp.example.com"]
isolation = "worker"
max-uses = 3
idle = "90s"
wall-timeout = "2s"
concurrency = 4
queue-timeout = "15ms"
quarantine = { failures = 2, window = "20s", cool-down = "3s", max-cool-down = "1m" }
canary = { plugin = "tag-v2", percent = 2.5, rollback = { failures = 5, min-calls = 10, window = "30s" }, config = { value = "next" } }
[api.chain.config]
value = "pets"
list = [1, 2]

[[api.chain]]
plugin = "noop"
isolation = "request"
quarantine = { cool-down = "250ms" }

[[api.chain]]
base = true
"#;

    fn pets_steps(text: &str) -> Vec<StepSpec> {
        let m: PolicyManifest = toml::from_str(text).unwrap();
        let pets = m.apis[0].get_ref();
        pets.chain.iter().map(|s| s.get_ref().clone()).collect()
    }

    /// GET, then PUT what was read (changed by `edit`): the new manifest.
    fn get_put(text: &str, edit: impl FnOnce(&mut Vec<Value>)) -> String {
        let m: PolicyManifest = toml::from_str(text).unwrap();
        let mut view = chain_view(m.apis[0].get_ref());
        edit(&mut view);
        let chain = steps(Value::Array(view));
        check_steps(&chain).unwrap();
        let out = rewrite_chain(text, "pets", &chain).unwrap();
        // What the handler checks before writing: the file says what was asked.
        let written: PolicyManifest = toml::from_str(&out).unwrap();
        let asked: Vec<Value> = chain.iter().map(input_view).collect();
        assert_eq!(chain_view(written.apis[0].get_ref()), asked, "{out}");
        out
    }

    #[test]
    fn every_step_key_survives_a_get_put_round_trip() {
        let before = pets_steps(EVERY_KEY);
        // The test's step sets every key (a new key fails to compile here).
        let StepSpec {
            name,
            plugin: _,
            base: _,
            when,
            fail_open,
            timeout,
            memory,
            log_rate,
            log_line,
            grants,
            config,
            isolation,
            max_uses,
            idle,
            wall_timeout,
            concurrency,
            queue_timeout,
            quarantine,
            canary,
        } = &before[0];
        let c = canary.as_ref().unwrap();
        let r = c.rollback.unwrap();
        assert!(c.config.is_some() && r.failures.is_some());
        assert!(r.min_calls.is_some() && r.window.is_some());
        assert!(name.is_some() && *fail_open && !grants.is_empty() && config.is_some());
        assert!(when.is_some() && before[2].base);
        assert!(timeout.is_some() && memory.is_some() && log_rate.is_some());
        assert!(log_line.is_some() && isolation.is_some() && max_uses.is_some());
        assert!(idle.is_some() && wall_timeout.is_some() && concurrency.is_some());
        assert!(queue_timeout.is_some());
        let q = quarantine.unwrap();
        assert!(q.failures.is_some() && q.window.is_some());
        assert!(q.cool_down.is_some() && q.max_cool_down.is_some());
        // GET shows each in the admin API's names.
        let view = step_view(&before[0]);
        for (k, v) in [
            ("isolation", serde_json::json!("worker")),
            ("max_uses", serde_json::json!(3)),
            ("idle", serde_json::json!("90s")),
            ("wall_timeout", serde_json::json!("2s")),
            ("concurrency", serde_json::json!(4)),
            ("queue_timeout", serde_json::json!("15ms")),
            ("log_rate", serde_json::json!(7)),
            ("log_line", serde_json::json!("1KiB")),
            (
                "quarantine",
                serde_json::json!({"failures": 2, "window": "20s", "cool_down": "3s", "max_cool_down": "60s"}),
            ),
            (
                "canary",
                serde_json::json!({"plugin": "tag-v2", "percent": 2.5, "config": {"value": "next"},
                    "rollback": {"failures": 5, "min_calls": 10, "window": "30s"}}),
            ),
        ] {
            assert_eq!(view[k], v, "{k}: {view}");
        }
        // PUT what was read: the manifest's steps are what they were.
        let out = get_put(EVERY_KEY, |_| {});
        assert_eq!(pets_steps(&out), before, "{out}");
        assert!(
            out.contains("quarantine = { failures = 2, window = \"20s\", cool-down = \"3s\", max-cool-down = \"60s\" }"),
            "{out}"
        );
        // Changing one step keeps every key of the others.
        let out = get_put(EVERY_KEY, |v| {
            v[1]["timeout"] = "30ms".into();
        });
        let after = pets_steps(&out);
        assert_eq!(after[0], before[0], "{out}");
        assert_eq!(after[1].timeout, Some(Dur::try_from("30ms").unwrap()));
        assert_eq!(after[1].isolation, before[1].isolation);
        assert_eq!(after[1].quarantine, before[1].quarantine);
        // And one key of the rich step, the rest of it kept.
        let out = get_put(EVERY_KEY, |v| {
            v[0]["isolation"] = "request".into();
        });
        let after = pets_steps(&out);
        assert_eq!(after[0].isolation, Some(Isolation::Request));
        let mut want = before[0].clone();
        want.isolation = Some(Isolation::Request);
        assert_eq!(after[0], want, "{out}");
        assert_eq!(after[1], before[1], "{out}");
    }

    #[test]
    fn the_openapi_document_describes_every_step_key() {
        let doc: Value = serde_json::from_str(super::super::api::OPENAPI).unwrap();
        let step = &doc["components"]["schemas"]["Step"];
        let keys = |o: &Value| -> Vec<String> {
            let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let every = pets_steps(EVERY_KEY);
        let mut view = step_view(&every[0]);
        // `base` stands alone, in a step of its own.
        view["base"] = step_view(&every[2])["base"].clone();
        assert_eq!(keys(&step["properties"]), keys(&view));
        assert_eq!(
            keys(&step["properties"]["quarantine"]["properties"]),
            keys(&view["quarantine"])
        );
        assert_eq!(
            step["properties"]["quarantine"]["additionalProperties"],
            false
        );
        // What the document allows, the admin API takes.
        let mut chain = Vec::new();
        for (k, p) in step["properties"].as_object().unwrap() {
            if let Some(ex) = p["examples"].get(0) {
                chain.push(serde_json::json!({"plugin": "x", k: ex}));
            }
        }
        check_steps(&steps(Value::Array(chain))).unwrap();
    }

    #[test]
    fn a_bad_value_of_each_step_key_is_refused_naming_it() {
        for (step, field) in [
            (serde_json::json!({"isolation": "process"}), "isolation"),
            (serde_json::json!({"isolation": "Worker"}), "isolation"),
            (serde_json::json!({"idle": "soon"}), "idle"),
            (serde_json::json!({"idle": "10d"}), "idle"),
            (serde_json::json!({"wall_timeout": "5 s"}), "wall_timeout"),
            (serde_json::json!({"queue_timeout": "ms"}), "queue_timeout"),
            (serde_json::json!({"log_line": "lots"}), "log_line"),
            (serde_json::json!({"log_line": "1TiB"}), "log_line"),
            (serde_json::json!({"max_uses": u64::MAX}), "max_uses"),
            (
                serde_json::json!({"canary": {"plugin": "x", "percent": 101}}),
                "canary.percent",
            ),
            (
                serde_json::json!({"canary": {"plugin": "x", "percent": 0.125}}),
                "canary.percent",
            ),
            (
                serde_json::json!({"canary": {"plugin": "", "percent": 1}}),
                "canary.plugin",
            ),
            (
                serde_json::json!({"canary": {"plugin": "x", "percent": 1, "rollback": {"window": "soon"}}}),
                "canary.rollback.window",
            ),
            (
                serde_json::json!({"canary": {"plugin": "x", "percent": 1, "rollback": {"failures": -1}}}),
                "canary.rollback.failures",
            ),
            (
                serde_json::json!({"concurrency": 1u64 << 63}),
                "concurrency",
            ),
            (
                serde_json::json!({"quarantine": {"window": "10"}}),
                "quarantine.window",
            ),
            (
                serde_json::json!({"quarantine": {"cool_down": "1y"}}),
                "quarantine.cool_down",
            ),
            (
                serde_json::json!({"quarantine": {"max_cool_down": ""}}),
                "quarantine.max_cool_down",
            ),
        ] {
            let mut s = step.clone();
            s["plugin"] = "x".into();
            let e = check_steps(&steps(serde_json::json!([{"plugin": "y"}, s]))).unwrap_err();
            assert_eq!(
                e.field.as_deref(),
                Some(format!("chain[1].{field}").as_str()),
                "{step}: {e}"
            );
            assert_eq!(e.status, 400, "{step}: {e}");
        }
        // What the types refuse, as the handler decodes a body.
        for (step, field) in [
            (serde_json::json!({"log_rate": -1}), "chain[0].log_rate"),
            (
                serde_json::json!({"log_rate": 1u64 << 32}),
                "chain[0].log_rate",
            ),
            (serde_json::json!({"max_uses": 1.5}), "chain[0].max_uses"),
            (
                serde_json::json!({"concurrency": "2"}),
                "chain[0].concurrency",
            ),
            (serde_json::json!({"isolation": null}), "chain[0].isolation"),
            (
                serde_json::json!({"quarantine": null}),
                "chain[0].quarantine",
            ),
            (
                serde_json::json!({"quarantine": {"failures": -2}}),
                "chain[0].quarantine.failures",
            ),
            (
                serde_json::json!({"quarantine": {"cool-down": "1s"}}),
                "chain[0].quarantine.cool-down",
            ),
            (serde_json::json!({"max-uses": 1}), "chain[0].max-uses"),
        ] {
            let mut s = step.clone();
            s["plugin"] = "x".into();
            let body = serde_json::json!({ "chain": [s] }).to_string();
            let e = super::super::api::request::decode::<ChainAssign>(body.as_bytes()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{step}: {e}");
            assert_eq!(e.status, 400, "{step}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations_print_as_written() {
        assert_eq!(dur_str(std::time::Duration::from_millis(20)), "20ms");
        assert_eq!(dur_str(std::time::Duration::from_secs(2)), "2s");
        assert_eq!(size_str(8 << 20), "8MiB");
        assert_eq!(size_str(1000), "1000B");
    }
}
