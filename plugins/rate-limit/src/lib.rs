//! `rate-limit`: limit how many calls pass per second, minute, hour or day,
//! per consumer, app, client IP, header value or for the whole API.
//!
//! ```toml
//! [[api.chain]]
//! plugin = "rate-limit"
//! grants = ["counters"]
//! [api.chain.config]
//! limits = [
//!   { per = "second", requests = 10, by = "consumer" },
//!   { per = "hour", requests = 1000, by = "consumer" },
//! ]
//! algorithm = "sliding-window"   # or "token-bucket"
//! status = 429
//! fail-open = false
//! ```
//!
//! Or take the limits from the caller's plan (defined through the admin API,
//! read with `plans::limits(consumer.plan)` on every call, so a plan change
//! applies to the next call):
//!
//! ```toml
//! [api.chain.config]
//! limits = "plan"
//! by = "consumer"                # what each plan limit counts separately
//! fallback = [                   # optional: callers without a plan
//!   { per = "minute", requests = 10, by = "ip" },
//! ]
//! ```
//!
//! Without `fallback`, a caller without a consumer, without a plan, or whose
//! plan does not exist is refused with `403` and code `no_plan`. A plan with
//! no rate limits lets its callers through unlimited.
//!
//! Counting uses the gateway's atomic `counters::check_all_and_add`: every
//! limit of the call in one check, counted on all of them or none, so of N
//! concurrent calls racing a limit exactly as many as it allows pass, and a
//! call refused by one limit does not use up the others. In cluster mode
//! that is one round trip to Redis however many limits the step has.
//!
//! The step has only a request phase, whatever its configuration: the
//! `RateLimit-*` headers of a call that passes go out as the request
//! phase's `response_headers`, which the gateway sets on the response where
//! this step's response phase would run.
//!
//! See `README.md` for the reference, including how several limits are
//! combined and how plan limits are keyed.

#![forbid(unsafe_code)]

use std::cell::{OnceCell, RefCell};
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_policy_sdk::services::{counters, plans, Algorithm, Decision, ServiceError};
use tollgate_policy_sdk::{
    log, valid_header_name, Call, ConfigError, Consumer, Policy, PolicyInfo, RequestDecision,
    RequestEdits, Response,
};

/// Most limits one step may declare.
pub const MAX_LIMITS: usize = 16;
/// Values longer than this (or not UTF-8, or with characters outside
/// printable ASCII) are hashed into the counter key.
const MAX_PLAIN_VALUE: usize = 128;

/// The status of a call refused because it has no plan (with
/// `limits = "plan"` and no `fallback`): not `status`, which says "too many,
/// retry later", while retrying cannot help a caller without a plan.
pub const NO_PLAN_STATUS: u16 = 403;

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// One or more limits (a call passes only if every one allows it), or
    /// `"plan"`: the rate limits of the caller's plan.
    pub limits: LimitsConfig,
    /// Only with `limits = "plan"`: what each plan limit counts separately
    /// (`consumer`, the default, `app`, `ip`, `api` or `header:NAME`).
    #[serde(default)]
    pub by: Option<String>,
    /// Only with `limits = "plan"`: the limits of callers without a plan
    /// (no consumer, a consumer without a plan, or a plan that does not
    /// exist), as a list like `limits`. Without it such callers are refused.
    #[serde(default)]
    pub fallback: Option<Vec<LimitConfig>>,
    /// How the limits count.
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    /// The status of a refused call.
    #[serde(default = "default_status")]
    pub status: u16,
    /// When the counters service fails: `true` lets the call through,
    /// `false` (the default) answers 503.
    #[serde(default)]
    pub fail_open: bool,
}

fn default_status() -> u16 {
    429
}

/// `limits` as written: `"plan"` or a list of limits.
#[derive(Debug)]
pub enum LimitsConfig {
    /// `limits = "plan"`.
    Plan,
    /// `limits = [ ... ]`.
    List(Vec<LimitConfig>),
}

impl<'de> Deserialize<'de> for LimitsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitsVisitor;

        impl<'de> Visitor<'de> for LimitsVisitor {
            type Value = LimitsConfig;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"plan\" or an array of limits")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<LimitsConfig, E> {
                if v == "plan" {
                    Ok(LimitsConfig::Plan)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LimitsConfig, A::Error> {
                // Through the given `SeqAccess`, so errors keep their
                // `limits.N.field` path.
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(LimitsConfig::List)
            }
        }

        deserializer.deserialize_any(LimitsVisitor)
    }
}

/// One limit as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitConfig {
    /// The window.
    pub per: Per,
    /// Calls allowed per window.
    pub requests: u64,
    /// What is counted separately: `consumer` (the default), `app`, `ip`,
    /// `api` or `header:NAME`.
    #[serde(default = "default_by")]
    pub by: String,
}

fn default_by() -> String {
    "consumer".into()
}

/// A window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3600 s.
    Hour,
    /// 86400 s (the longest window the counters service keeps).
    Day,
}

impl Per {
    /// The window in milliseconds.
    pub fn window_ms(self) -> u64 {
        match self {
            Per::Second => 1_000,
            Per::Minute => 60_000,
            Per::Hour => 3_600_000,
            Per::Day => 86_400_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
        }
    }
}

/// The counting algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlgorithmConfig {
    /// Two fixed windows, weighted: smooth, no burst at window edges.
    #[default]
    SlidingWindow,
    /// A bucket of `requests` tokens refilled evenly over the window.
    TokenBucket,
}

/// What a limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// The consumer id; the client IP when no consumer is set.
    Consumer,
    /// The consumer's app; its consumer id when it has no app; the client
    /// IP when no consumer is set.
    App,
    /// The client IP (the gateway's TCP peer).
    Ip,
    /// The value of a request header; the client IP when it is missing.
    Header(String),
    /// One counter for the whole API.
    Api,
}

impl By {
    fn parse(s: &str) -> Result<By, String> {
        Ok(match s {
            "consumer" => By::Consumer,
            "app" => By::App,
            "ip" => By::Ip,
            "api" => By::Api,
            other => match other.strip_prefix("header:") {
                Some(name) if valid_header_name(name) => By::Header(name.to_ascii_lowercase()),
                Some(name) => return Err(format!("{name:?} is not a valid header name")),
                None => {
                    return Err(format!(
                        "unknown `by` {other:?}: expected \"consumer\", \"app\", \"ip\", \"api\" or \"header:NAME\""
                    ))
                }
            },
        })
    }

    fn tag(&self) -> String {
        match self {
            By::Consumer => "consumer".into(),
            By::App => "app".into(),
            By::Ip => "ip".into(),
            By::Api => "api".into(),
            By::Header(h) => format!("header:{h}"),
        }
    }
}

/// One limit: configured, or one of a plan's rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The window in milliseconds.
    pub window_ms: u64,
    /// Calls allowed per window.
    pub requests: u64,
    /// What is counted separately.
    pub by: By,
}

/// Where a step's limits come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `limits = [ ... ]`.
    Fixed(Vec<Limit>),
    /// `limits = "plan"`: the caller's plan's rate limits, each counted
    /// `by`; `fallback` for callers without a plan (refused when `None`).
    Plan {
        /// What each plan limit counts separately.
        by: By,
        /// The limits of callers without a plan.
        fallback: Option<Vec<Limit>>,
    },
}

/// The configured policy. It keeps nothing from one call to the next: the
/// request phase decides and attaches the response headers at once.
#[derive(Debug)]
pub struct RateLimit {
    source: Source,
    algorithm: Algorithm,
    status: u16,
    fail_open: bool,
    /// The counters service (replaced in unit tests to simulate failures).
    counter: CounterFn,
}

type CounterFn = fn(&[counters::Limit], u64) -> Result<Vec<Decision>, ServiceError>;

impl Policy for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let source = match config.limits {
            LimitsConfig::List(list) => {
                if config.by.is_some() {
                    return Err(ConfigError::at(
                        "by",
                        "only with limits = \"plan\"; with a list of limits, give `by` in each limit",
                    ));
                }
                if config.fallback.is_some() {
                    return Err(ConfigError::at(
                        "fallback",
                        "only with limits = \"plan\" (the limits of callers without a plan)",
                    ));
                }
                Source::Fixed(limit_list("limits", &list)?)
            }
            LimitsConfig::Plan => {
                let by = match &config.by {
                    Some(by) => By::parse(by).map_err(|m| ConfigError::at("by", m))?,
                    None => By::Consumer,
                };
                let fallback = match &config.fallback {
                    Some(list) => Some(limit_list("fallback", list)?),
                    None => None,
                };
                Source::Plan { by, fallback }
            }
        };
        if !(400..=599).contains(&config.status) {
            return Err(ConfigError::at(
                "status",
                "must be an error status, 400 to 599",
            ));
        }
        Ok(RateLimit {
            source,
            algorithm: match config.algorithm {
                AlgorithmConfig::SlidingWindow => Algorithm::SlidingWindow,
                AlgorithmConfig::TokenBucket => Algorithm::TokenBucket,
            },
            status: config.status,
            fail_open: config.fail_open,
            counter: counters::check_all_and_add,
        })
    }

    fn info(&self) -> PolicyInfo {
        // No body, and no response phase in any configuration: the headers
        // of a call that passes are the request phase's `response_headers`.
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // The instance keeps no per-call state (the gateway's `worker`
        // isolation reuses it): everything of this call lives in `facts`
        // and in the decision returned.
        let facts = Facts::new(call);
        let (limits, keys, origin) = match self.limits_for(&facts) {
            Applied::Limits {
                limits,
                keys,
                origin,
            } => (limits, keys, origin),
            Applied::Unlimited(plan) => {
                log::debug(&format!(
                    "rate-limit: plan {plan:?} has no rate limit: the call is not counted"
                ));
                return RequestDecision::Continue(RequestEdits::default());
            }
            Applied::NoPlan => {
                return RequestDecision::Respond(Response::json_error(
                    NO_PLAN_STATUS,
                    "no_plan",
                    "no plan: this API's limits come from the caller's plan; \
                     call with a key subscribed to a plan",
                ))
            }
        };
        match self.check(&limits, &keys) {
            Ok(Outcome::Pass(d)) => {
                // Set on the response, whoever makes it, where this step's
                // response phase would run.
                let mut edits = RequestEdits::default();
                for (name, value) in headers(&d) {
                    edits = edits.set_response_header(name, value);
                }
                RequestDecision::Continue(edits)
            }
            Ok(Outcome::Refuse(i, d)) => {
                let limit = &limits[i];
                log::info(&format!(
                    "rate-limit: refused by {origin} limit {i} ({} per {} by {})",
                    limit.requests,
                    window_name(limit.window_ms),
                    limit.by.tag()
                ));
                let retry = secs(d.retry_after_ms).max(1);
                let mut r = Response::json_error(
                    self.status,
                    "rate_limited",
                    &format!(
                        "too many requests: the limit is {} per {}; retry in {retry} s",
                        limit.requests,
                        window_name(limit.window_ms)
                    ),
                )
                .header("retry-after", retry.to_string());
                for (name, value) in headers(&d) {
                    r = r.header(name, value);
                }
                RequestDecision::Respond(r)
            }
            Err(e) => {
                let what = match &e {
                    ServiceError::NotGranted(m)
                    | ServiceError::Invalid(m)
                    | ServiceError::Unavailable(m) => m.clone(),
                };
                if self.fail_open {
                    log::warn(&format!(
                        "rate-limit: counters failed ({origin} limits), letting the call through (fail-open): {what}"
                    ));
                    RequestDecision::Continue(RequestEdits::default())
                } else {
                    log::error(&format!(
                        "rate-limit: counters failed ({origin} limits), refusing the call: {what}"
                    ));
                    RequestDecision::Respond(
                        Response::json_error(
                            503,
                            "rate_limit_unavailable",
                            "the rate limit cannot be checked right now",
                        )
                        .header("retry-after", "1"),
                    )
                }
            }
        }
    }
}

/// What the request phase reads of the call, each value asked of the
/// gateway at most once, and only when a limit needs it.
struct Facts<'a, 'c> {
    call: &'a Call<'c>,
    step: OnceCell<String>,
    client_addr: OnceCell<String>,
    consumer: OnceCell<Option<Consumer>>,
    /// The values of the request headers read so far, by (lower-case) name.
    headers: RefCell<Vec<(String, Vec<Vec<u8>>)>>,
}

impl<'a, 'c> Facts<'a, 'c> {
    fn new(call: &'a Call<'c>) -> Self {
        Facts {
            call,
            step: OnceCell::new(),
            client_addr: OnceCell::new(),
            consumer: OnceCell::new(),
            headers: RefCell::new(Vec::new()),
        }
    }

    fn step(&self) -> &str {
        self.step.get_or_init(|| self.call.step())
    }

    fn client_addr(&self) -> &str {
        self.client_addr.get_or_init(|| self.call.client_addr())
    }

    fn consumer(&self) -> Option<&Consumer> {
        self.consumer.get_or_init(|| self.call.consumer()).as_ref()
    }

    /// The values of every request field `name` (lower-case), joined with
    /// `,`; `None` if there is none.
    fn header_list(&self, name: &str) -> Option<Vec<u8>> {
        let mut seen = self.headers.borrow_mut();
        let values = match seen.iter().position(|(n, _)| n == name) {
            Some(i) => &seen[i].1,
            None => {
                seen.push((name.to_string(), self.call.header_values(name)));
                &seen[seen.len() - 1].1
            }
        };
        (!values.is_empty()).then(|| values.join(&b","[..]))
    }
}

/// The limits that apply to one call.
enum Applied {
    /// Count these, under these keys; `origin` names them in logs
    /// (`configured`, `fallback` or `plan "gold"`).
    Limits {
        limits: Vec<Limit>,
        keys: Vec<String>,
        origin: String,
    },
    /// The caller's plan (named) has no rate limit.
    Unlimited(String),
    /// `limits = "plan"`, the caller has no usable plan and there is no
    /// fallback: refuse.
    NoPlan,
}

/// What [`RateLimit::check`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every limit took the call; the decision of the one closest to being
    /// exhausted.
    Pass(Decision),
    /// Limit `.0` refused.
    Refuse(usize, Decision),
}

impl RateLimit {
    /// The configured list of limits: `limits`, or with `limits = "plan"`
    /// the `fallback` (empty without one).
    fn configured(&self) -> &[Limit] {
        match &self.source {
            Source::Fixed(limits) => limits,
            Source::Plan { fallback, .. } => fallback.as_deref().unwrap_or_default(),
        }
    }

    /// The limits of this call and their counter keys.
    fn limits_for(&self, facts: &Facts<'_, '_>) -> Applied {
        let configured = |origin: &str| Applied::Limits {
            limits: self.configured().to_vec(),
            keys: (0..self.configured().len())
                .map(|i| self.key(i, facts))
                .collect(),
            origin: origin.into(),
        };
        let (by, has_fallback) = match &self.source {
            Source::Fixed(_) => return configured("configured"),
            Source::Plan { by, fallback } => (by, fallback.is_some()),
        };
        let plan = match plans::of_caller(facts.consumer()) {
            Ok(plan) => plan,
            Err((level, why)) => {
                log::log(
                    level,
                    &format!(
                        "rate-limit: {why}: {}",
                        if has_fallback {
                            "the fallback limits apply"
                        } else {
                            "refused (no fallback)"
                        }
                    ),
                );
                return if has_fallback {
                    configured("fallback")
                } else {
                    Applied::NoPlan
                };
            }
        };
        if plan.rate_limits.is_empty() {
            return Applied::Unlimited(plan.plan);
        }
        let mut limits: Vec<Limit> = Vec::new();
        for rl in &plan.rate_limits {
            let limit = Limit {
                window_ms: rl.window_ms,
                requests: rl.requests,
                by: by.clone(),
            };
            // The same limit twice would count each call twice.
            if !limits.contains(&limit) {
                limits.push(limit);
            }
        }
        let keys = limits
            .iter()
            .map(|l| plan_key(&plan.plan, l, facts))
            .collect();
        Applied::Limits {
            limits,
            keys,
            origin: format!("plan {:?}", plan.plan),
        }
    }

    /// The counter key of configured limit `i` (of `limits`, or of
    /// `fallback`) for this call. The step name keeps two rate-limit steps
    /// of one API apart (the host adds the API); the value comes last, so no
    /// value can make two keys equal.
    fn key(&self, i: usize, facts: &Facts<'_, '_>) -> String {
        let limit = &self.configured()[i];
        format!(
            "rl/{}/{i}/{}/{}/{}",
            facts.step(),
            limit.window_ms,
            limit.by.tag(),
            subject(&limit.by, facts)
        )
    }

    /// Check every limit, spending as little as possible of the others'
    /// budget on a call that one of them refuses:
    ///
    /// 1. with several limits, every limit but the first is probed at cost
    ///    0 (which never counts anything); a limit with nothing left refuses
    ///    the call before anything is spent;
    /// 2. then each limit is charged 1, in order, stopping at the first
    ///    refusal. Only a call racing others for the last units can be
    ///    refused here after earlier limits were charged.
    fn check(&self, limits: &[Limit], keys: &[String]) -> Result<Outcome, ServiceError> {
        let batch: Vec<counters::Limit> = limits
            .iter()
            .zip(keys)
            .map(|(l, key)| counters::Limit {
                key: key.clone(),
                limit: l.requests,
                window_ms: l.window_ms,
                algorithm: self.algorithm,
            })
            .collect();
        let decisions = (self.counter)(&batch, 1)?;
        if decisions.len() != limits.len() {
            return Err(ServiceError::Invalid(format!(
                "{} decisions for {} limits",
                decisions.len(),
                limits.len()
            )));
        }
        // Refused (and nothing counted): the refusal to retry after is the
        // one that lasts longest (the first of those on a tie).
        let mut refusal: Option<(usize, &Decision)> = None;
        for (i, d) in decisions.iter().enumerate() {
            if !d.allowed && refusal.is_none_or(|(_, r)| d.retry_after_ms > r.retry_after_ms) {
                refusal = Some((i, d));
            }
        }
        if let Some((i, d)) = refusal {
            return Ok(Outcome::Refuse(i, *d));
        }
        // Report the limit closest to being exhausted (the later reset on a
        // tie).
        let tightest = decisions
            .into_iter()
            .min_by(|a, b| {
                a.remaining
                    .cmp(&b.remaining)
                    .then(b.reset_ms.cmp(&a.reset_ms))
            })
            .expect("at least one limit");
        Ok(Outcome::Pass(tightest))
    }
}

/// Check a list of limits as written (`limits` or `fallback`, named by
/// `field` in errors).
fn limit_list(field: &str, list: &[LimitConfig]) -> Result<Vec<Limit>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(field, "give at least one limit"));
    }
    if list.len() > MAX_LIMITS {
        return Err(ConfigError::at(
            field,
            format!("at most {MAX_LIMITS} limits per step"),
        ));
    }
    let mut limits: Vec<Limit> = Vec::new();
    for (i, l) in list.iter().enumerate() {
        if l.requests == 0 || l.requests > 1_000_000_000_000 {
            return Err(ConfigError::at(
                format!("{field}.{i}.requests"),
                "must be between 1 and 1000000000000",
            ));
        }
        let by = By::parse(&l.by).map_err(|m| ConfigError::at(format!("{field}.{i}.by"), m))?;
        if limits
            .iter()
            .any(|o| o.window_ms == l.per.window_ms() && o.by == by)
        {
            return Err(ConfigError::at(
                format!("{field}.{i}"),
                format!(
                    "another limit already counts per {} by {:?}: keep the stricter one",
                    l.per.name(),
                    by.tag()
                ),
            ));
        }
        limits.push(Limit {
            window_ms: l.per.window_ms(),
            requests: l.requests,
            by,
        });
    }
    Ok(limits)
}

/// The counter key of one of plan `plan`'s limits for this call:
///
/// `rl/{step}/plan/{plan}/{window-ms}/{requests}/{by}/{subject}`
///
/// - the plan id, so two plans never share a counter, even when their
///   limits are equal (with `by = "api"`, each plan's callers share one
///   counter per limit; with `by = "consumer"`, a consumer whose apps are on
///   two plans is counted per plan, each against its own plan's limits);
/// - the window and the number of requests, so that a plan edited through
///   the admin API gets fresh counters on the next call, with exactly the
///   new limit (a token bucket never keeps the old capacity, a sliding
///   window never compares an old count against a new window). The price:
///   right after a change a caller may make up to the new limit on top of
///   what it made in the current window under the old one;
/// - not the limit's position in the plan, so reordering a plan's limits
///   changes nothing.
///
/// The plan id has no `/` (otherwise it is hashed), the numbers and the
/// `by` tag have none either, and the subject comes last: no two limits,
/// plans or subjects share a key. The `plan` segment never looks like the
/// index of a configured limit (`rl/{step}/{i}/...`).
fn plan_key(plan: &str, limit: &Limit, facts: &Facts<'_, '_>) -> String {
    let plan = if plan.len() <= MAX_PLAIN_VALUE
        && plan.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'/')
    {
        format!("p={plan}")
    } else {
        format!("p#{}", sha256_hex(plan.as_bytes()))
    };
    format!(
        "rl/{}/plan/{plan}/{}/{}/{}/{}",
        facts.step(),
        limit.window_ms,
        limit.requests,
        limit.by.tag(),
        subject(&limit.by, facts)
    )
}

/// A window for messages: `second`, `minute`, `hour`, `day`, or `90 s`,
/// `1500 ms` for windows a plan may set.
pub fn window_name(ms: u64) -> String {
    match ms {
        1_000 => "second".into(),
        60_000 => "minute".into(),
        3_600_000 => "hour".into(),
        86_400_000 => "day".into(),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// What `by` counts this call as: the last segment of its counter keys.
fn subject(by: &By, facts: &Facts<'_, '_>) -> String {
    let ip = || format!("ip={}", client_ip(facts.client_addr()));
    match by {
        By::Api => String::new(),
        By::Ip => ip(),
        By::Consumer => match facts.consumer() {
            Some(c) => plain_or_hash("c", c.id.as_bytes()),
            None => ip(),
        },
        By::App => match facts.consumer() {
            Some(c) => match &c.app {
                Some(app) => plain_or_hash("a", app.as_bytes()),
                None => plain_or_hash("c", c.id.as_bytes()),
            },
            None => ip(),
        },
        // Several fields count as their comma-joined list.
        By::Header(name) => match facts.header_list(name) {
            Some(list) => plain_or_hash("h", &list),
            None => ip(),
        },
    }
}

/// Milliseconds as whole seconds, rounded up.
pub fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The `RateLimit-*` headers for a decision.
fn headers(d: &Decision) -> [(&'static str, String); 3] {
    [
        ("ratelimit-limit", d.limit.to_string()),
        ("ratelimit-remaining", d.remaining.to_string()),
        ("ratelimit-reset", secs(d.reset_ms).to_string()),
    ]
}

/// The IP of `IP:port` or `[IPv6]:port` (the whole string if it has neither
/// form).
pub fn client_ip(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((ip, _)) = rest.split_once(']') {
            return ip;
        }
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => addr,
    }
}

/// `kind=value` for short printable values, `kind#sha256hex` otherwise, so
/// keys stay short and within the counters service's limits whatever a
/// client sends.
fn plain_or_hash(kind: &str, value: &[u8]) -> String {
    let plain = value.len() <= MAX_PLAIN_VALUE && value.iter().all(|b| (0x21..0x7f).contains(b));
    if plain {
        format!("{kind}={}", String::from_utf8_lossy(value))
    } else {
        format!("{kind}#{}", sha256_hex(value))
    }
}

fn sha256_hex(value: &[u8]) -> String {
    Sha256::digest(value)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

tollgate_policy_sdk::export_policy!(RateLimit);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
