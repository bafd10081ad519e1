//! The fourth level: an API's chain, step by step — a distinct name, the
//! plugin (the next level), the step's limits, its grants, then its config
//! checked by the plugin itself. Each error points at the key it is about.

use super::manifests::{ChainAt, Source};
use super::scope::Scope;
use super::{Build, MAX_STEP_TIMEOUT};
use crate::domain::grants::{Capability, Grants};
use crate::manifest::{self, ApiSpec, GatewayFile, StepSpec};
use crate::policy::canary::Canary;
use crate::policy::condition::Condition;
use crate::policy::deadline;
use crate::policy::engine::MAX_STEP_MEMORY;
use crate::policy::gate::{check_gate_limits, GateLimits, QuarantineLimits};
use crate::policy::guard::{check_log_limits, LogLimits};
use crate::policy::reuse::{check_reuse_limits, Isolation};
use crate::policy::{Plugin, Step, StepConfigError};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// The scope a chain belongs to, for its errors.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner<'a> {
    Gateway,
    /// A product's chain, by product id.
    Product(&'a str),
    Api,
    /// A route's chain, by route name.
    Route(&'a str),
}

impl Owner<'_> {
    pub fn scope(&self) -> Scope {
        match self {
            Owner::Gateway => Scope::Gateway,
            Owner::Product(p) => Scope::Product(p.to_string()),
            Owner::Api => Scope::Api,
            Owner::Route(r) => Scope::Route(r.to_string()),
        }
    }

    /// What the chain is, in an error about API `api` (the gateway's and
    /// the products' chains are named without it: their errors are the
    /// same for every API, and reported once).
    pub fn describe(&self, api: &str) -> String {
        match self {
            Owner::Gateway => "the gateway chain".into(),
            Owner::Product(p) => format!("product `{p}`"),
            Owner::Api => format!("api `{api}`"),
            Owner::Route(r) => format!("api `{api}`, route `{r}`"),
        }
    }
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Gateway => f.write_str("the gateway chain"),
            Owner::Product(p) => write!(f, "product `{p}`'s chain"),
            Owner::Api => f.write_str("the API's chain"),
            Owner::Route(r) => write!(f, "route `{r}`'s chain"),
        }
    }
}

/// Where a step is written, for its errors.
pub(super) struct StepSite<'a> {
    src: &'a Source<'a>,
    /// The step's table in the file's syntax tree.
    item: Option<&'a toml_edit::Item>,
    /// Where the step's table starts.
    start: usize,
    /// The API the step is built for.
    api: &'a str,
    /// The chain it is written in.
    pub owner: Owner<'a>,
    /// The step's `name`, or its plugin's.
    pub name: String,
    plugin: &'a str,
}

impl<'a> StepSite<'a> {
    pub fn new(
        src: &'a Source<'a>,
        owner: Owner<'a>,
        api: &'a ApiSpec,
        place: ChainAt,
        index: usize,
        step: &'a Spanned<StepSpec>,
    ) -> StepSite<'a> {
        let spec = step.get_ref();
        StepSite {
            src,
            item: src.chain_step_item(place, index),
            start: step.span().start,
            api: api.name.as_str(),
            owner,
            name: spec
                .name
                .as_ref()
                .map_or_else(|| spec.plugin.clone(), |n| n.to_string()),
            plugin: &spec.plugin,
        }
    }

    /// `file:line:col: api `a`, step `s` (plugin `p`)` at the key `path` of
    /// the step (e.g. `memory`, `config.request.path`), or at the step's
    /// header when the file has no such key.
    pub fn at(&self, path: &str) -> String {
        self.context(self.offset(path))
    }

    /// Where the key `path` of the step starts in its file.
    fn offset(&self, path: &str) -> usize {
        self.item
            .and_then(|i| manifest::errors::path_span(i, path))
            .map_or(self.start, |r| r.start)
    }

    /// Where the value of the step's key `key` starts, if written.
    fn value_start(&self, key: &str) -> Option<usize> {
        self.item?.get(key)?.span().map(|r| r.start)
    }

    /// The same, at the step's header.
    pub fn header(&self) -> String {
        self.context(self.start)
    }

    fn context(&self, offset: usize) -> String {
        format!(
            "{}: {}, step `{}` (plugin `{}`)",
            self.src.at(offset),
            self.owner.describe(self.api),
            self.name,
            self.plugin
        )
    }
}

/// What a step may use, from the step or else the gateway file's defaults.
#[derive(Clone)]
pub(super) struct StepLimits {
    memory: u64,
    timeout: Duration,
    /// The wall-clock bound, host calls included.
    wall: Duration,
    log: LogLimits,
    /// Isolation level, and under `worker` the uses and idle time.
    isolation: (Isolation, u64, Duration),
    gate: GateLimits,
}

impl Build<'_> {
    /// One step, or `None` when it has an error (then reported).
    pub(super) fn step(&mut self, site: &StepSite, spec: &StepSpec) -> Option<Step> {
        if spec.plugin.is_empty() {
            self.errs.push(format!(
                "{}: a step needs `plugin` (or, alone, `base = true`: where the enclosing chain runs)",
                site.header()
            ));
            return None;
        }
        let when = self.condition(site, spec);
        let plugin = self.plugin(site, spec)?;
        let limits = step_limits(self.gw, site, spec)
            .map_err(|e| self.errs.push(e))
            .ok()?;
        let grants = step_grants(site, spec)
            .map_err(|errs| self.errs.extend(errs))
            .ok()?;
        if !matches!(site.owner, Owner::Api | Owner::Route(_)) && grants.has(&Capability::OpenApi) {
            self.errs.push(format!(
                "{}: grant `openapi`: only a step of an API's or a route's chain has an API's document",
                site.at("grants")
            ));
            return None;
        }
        let when = when?;
        let step = self
            .configure(site, spec, plugin, limits.clone(), grants.clone())
            .map(|s| s.with_condition(when.clone()));
        match &spec.canary {
            None => step,
            Some(c) => {
                // Its errors are reported whether or not the step built.
                let canary = self.canary(site, spec, c, limits, grants);
                let (stable, (version, share, rollback)) = (step?, canary?);
                let rollbacks = self.runtime.rollbacks().clone();
                let canary = Canary::new(&stable, version, share, rollback, rollbacks);
                Some(stable.with_canary(canary))
            }
        }
    }

    /// The step's compiled `when`: `Some(None)` without one, `None` after
    /// an error (reported at the expression, with the place in it).
    fn condition(&mut self, site: &StepSite, spec: &StepSpec) -> Option<Option<Arc<Condition>>> {
        let Some(source) = &spec.when else {
            return Some(None);
        };
        match Condition::compile(source) {
            Ok(c) => Some(Some(Arc::new(c))),
            Err(e) => {
                // Inside the value, after its opening quote (escapes in
                // a basic string shift it; literal strings are exact).
                let value = site.value_start("when");
                let at = match (value, e.offset) {
                    (Some(v), Some(o)) => v + 1 + o,
                    (Some(v), None) => v,
                    (None, _) => site.offset("when"),
                };
                self.errs.push(format!(
                    "{}: {}, step `{}` (plugin `{}`): when: {}",
                    site.src.at(at),
                    site.owner.describe(site.api),
                    site.name,
                    site.plugin,
                    e.message
                ));
                None
            }
        }
    }

    /// Check the step's config through its plugin, and make the step.
    fn configure(
        &mut self,
        site: &StepSite,
        spec: &StepSpec,
        plugin: Arc<Plugin>,
        limits: StepLimits,
        grants: Grants,
    ) -> Option<Step> {
        let config = spec.config.as_ref();
        self.configure_version(site, spec, (&site.name, "", config), plugin, limits, grants)
    }

    /// Configure one version of a step: `name`, the prefix of its keys in
    /// the step's table (`""`, or `canary.` for a canary's), its config.
    pub(super) fn configure_version(
        &mut self,
        site: &StepSite,
        spec: &StepSpec,
        (name, keys, config): (&str, &str, Option<&toml::Table>),
        plugin: Arc<Plugin>,
        limits: StepLimits,
        grants: Grants,
    ) -> Option<Step> {
        let mut config = config.map_or_else(
            || serde_json::Value::Object(Default::default()),
            |c| manifest::toml_to_json(&toml::Value::Table(c.clone())),
        );
        if grants.has(&crate::domain::grants::Capability::OpenApi) {
            let Some(doc) = &self.openapi else {
                self.errs.push(format!(
                    "{}: grant `openapi`: api `{}` has no OpenAPI document: add `openapi = \"FILE\"` to the API",
                    site.at("grants"),
                    site.api
                ));
                return None;
            };
            // A step's config is a TOML table: always an object.
            let table = config.as_object_mut()?;
            if table.contains_key("openapi") {
                self.errs.push(format!(
                    "{}: `openapi` is the key the grant `openapi` fills in with the API's document: rename the config's own `openapi`",
                    site.at(&format!("{keys}config.openapi"))
                ));
                return None;
            }
            table.insert("openapi".into(), (*doc.for_step()).clone());
        }
        let config = config.to_string();
        let version = if keys.is_empty() {
            String::new()
        } else {
            format!("canary (plugin `{}`): ", plugin.name)
        };
        match self.runtime.configure_step(
            site.api,
            name,
            plugin,
            config,
            limits.timeout,
            limits.memory as usize,
            spec.fail_open,
            grants,
        ) {
            Ok(step) => {
                let (isolation, max_uses, idle) = limits.isolation;
                Some(
                    step.with_log_limits(limits.log)
                        .with_isolation(isolation, max_uses, idle)
                        .with_wall_timeout(limits.wall)
                        .with_gate_limits(limits.gate),
                )
            }
            Err(e) => {
                let key = config_error_key(&e, spec, keys);
                self.errs.push(format!("{}: {version}{e}", site.at(&key)));
                None
            }
        }
    }
}

/// The step's memory, deadline and log limits, each in range.
fn step_limits(gw: &GatewayFile, site: &StepSite, spec: &StepSpec) -> Result<StepLimits, String> {
    let memory = spec.memory.unwrap_or(gw.limits.step_memory).0;
    if !((1 << 20)..=MAX_STEP_MEMORY).contains(&memory) {
        return Err(format!(
            "{}: memory = {memory} bytes must be between 1MiB and {}MiB",
            site.at("memory"),
            MAX_STEP_MEMORY >> 20
        ));
    }
    let timeout = spec.timeout.unwrap_or(gw.limits.step_timeout).0;
    if timeout.is_zero() || timeout > MAX_STEP_TIMEOUT {
        return Err(format!(
            "{}: timeout = {timeout:?} must be between 1ms and 30s",
            site.at("timeout")
        ));
    }
    let wall = step_wall_timeout(gw, site, spec, timeout)?;
    let log = LogLimits {
        lines_per_sec: spec.log_rate.unwrap_or(gw.limits.plugin_log_rate),
        line_bytes: spec.log_line.unwrap_or(gw.limits.plugin_log_line).0 as usize,
    };
    check_log_limits(&log).map_err(|e| format!("{}: {e}", site.header()))?;
    let gate = gate_limits(&gw.limits, Some(spec), wall);
    check_gate_limits(&gate).map_err(|e| {
        let key = e.split(" = ").next().unwrap_or_default();
        format!("{}: {e}", site.at(key))
    })?;
    Ok(StepLimits {
        memory,
        timeout,
        wall,
        log,
        isolation: step_isolation(gw, site, spec)?,
        gate,
    })
}

/// The step's gate: its own keys, else `[limits]`'s, else the defaults
/// (`[limits]`'s alone without a step).
pub(super) fn gate_limits(
    limits: &manifest::Limits,
    spec: Option<&StepSpec>,
    wall_timeout: Duration,
) -> GateLimits {
    let d = GateLimits::for_wall_timeout(wall_timeout);
    let (dq, lq) = (QuarantineLimits::default(), &limits.step_quarantine);
    let sq = spec.and_then(|s| s.quarantine).unwrap_or_default();
    GateLimits {
        concurrency: spec
            .and_then(|s| s.concurrency)
            .or(limits.step_concurrency)
            .unwrap_or(d.concurrency),
        queue_timeout: spec
            .and_then(|s| s.queue_timeout)
            .or(limits.step_queue_timeout)
            .map_or(d.queue_timeout, |t| t.0),
        quarantine: QuarantineLimits {
            failures: sq.failures.or(lq.failures).unwrap_or(dq.failures),
            window: sq.window.or(lq.window).map_or(dq.window, |t| t.0),
            cool_down: sq.cool_down.or(lq.cool_down).map_or(dq.cool_down, |t| t.0),
            max_cool_down: sq
                .max_cool_down
                .or(lq.max_cool_down)
                .map_or(dq.max_cool_down, |t| t.0),
        },
    }
}

/// The step's isolation level, uses and idle time (see
/// [`crate::policy::reuse`]).
fn step_isolation(
    gw: &GatewayFile,
    site: &StepSite,
    spec: &StepSpec,
) -> Result<(Isolation, u64, Duration), String> {
    let isolation = spec.isolation.unwrap_or(gw.limits.step_isolation);
    let max_uses = spec.max_uses.unwrap_or(gw.limits.step_max_uses);
    let idle = spec.idle.unwrap_or(gw.limits.step_idle).0;
    check_reuse_limits(max_uses, idle).map_err(|(key, e)| format!("{}: {e}", site.at(key)))?;
    Ok((isolation, max_uses, idle))
}

/// The step's wall-clock bound: its own `wall-timeout`, else the gateway
/// file's `step-wall-timeout`, else the larger of 5s and its timeout; in
/// range and at least its timeout.
fn step_wall_timeout(
    gw: &GatewayFile,
    site: &StepSite,
    spec: &StepSpec,
    timeout: Duration,
) -> Result<Duration, String> {
    let wall = spec
        .wall_timeout
        .or(gw.limits.step_wall_timeout)
        .map_or_else(|| deadline::default_wall_timeout(timeout), |d| d.0);
    let key = if spec.wall_timeout.is_some() {
        "wall-timeout"
    } else {
        "timeout"
    };
    if wall.is_zero() || wall > deadline::MAX_WALL_TIMEOUT {
        return Err(format!(
            "{}: wall-timeout = {wall:?} must be between 1ms and 300s",
            site.at(key)
        ));
    }
    if wall < timeout {
        return Err(format!(
            "{}: wall-timeout = {wall:?} must be at least the step's timeout = {timeout:?}",
            site.at(key)
        ));
    }
    Ok(wall)
}

/// The capabilities the step is granted; every one that does not parse.
fn step_grants(site: &StepSite, spec: &StepSpec) -> Result<Grants, Vec<String>> {
    let mut grants = Grants::default();
    let mut errs = Vec::new();
    for (i, g) in spec.grants.iter().enumerate() {
        match Capability::parse(g) {
            Ok(c) => grants.list.push(c),
            Err(e) => errs.push(format!("{}: {e}", site.at(&format!("grants.{i}")))),
        }
    }
    if errs.is_empty() {
        Ok(grants)
    } else {
        Err(errs)
    }
}

/// The key of the step a config error is about: the one the plugin names
/// inside `config`, or what a missing grant is fixed with. `keys` is the
/// prefix of the version's own keys (`canary.` for a canary).
fn config_error_key(e: &StepConfigError, spec: &StepSpec, keys: &str) -> String {
    // A canary without its own config is configured with the step's.
    let own_config = keys.is_empty() || spec.canary.as_ref().is_some_and(|c| c.config.is_some());
    let config = if own_config {
        format!("{keys}config")
    } else {
        "config".to_string()
    };
    match e {
        StepConfigError::Rejected { field: Some(f), .. } => format!("{config}.{f}"),
        StepConfigError::Rejected { field: None, .. } => config,
        StepConfigError::NotGranted { .. } if spec.grants.is_empty() => format!("{keys}plugin"),
        StepConfigError::NotGranted { .. } => "grants".into(),
        StepConfigError::Failed(_) if keys.is_empty() => String::new(),
        StepConfigError::Failed(_) => format!("{keys}plugin"),
    }
}
