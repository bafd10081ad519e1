//! `quota`: a number of calls per calendar day, week or month, per consumer,
//! app or plan, counted durably by the gateway (a restart does not reset it).
//!
//! ```toml
//! [[api.chain]]
//! plugin = "quota"
//! grants = ["counters"]
//! [api.chain.config]
//! calls = 10000
//! period = "month"          # day | week | month
//! by = "consumer"           # consumer | app | plan
//! time-zone = "+02:00"      # UTC, or a fixed offset
//! week-starts = "monday"
//! status = 403
//! count = "upstream-below-500"   # which calls cost a unit: all | upstream |
//!                                # upstream-below-500 (default) | upstream-below-400
//! ```
//!
//! A call takes its unit in the request phase (so that concurrent calls
//! cannot exceed the quota) and, under the default `count`, gets it back in
//! the response phase unless the upstream answered it with a status below
//! 500: calls refused or failed by the gateway (a later step's refusal,
//! deadline or failure, an unreachable upstream) and the upstream's own
//! failures cost the consumer nothing.
//!
//! The step declares its response phase only when it may give units back
//! (any `count` but `all`); there the response gets the `x-quota-*` headers,
//! with what is left after a refund. With `count = "all"` the step is
//! request-only: the request phase attaches the same headers as
//! `response_headers`, which the gateway sets where the response phase
//! would have run.
//!
//! Or take the quota from the caller's plan (defined through the admin API,
//! read with `plans::limits(consumer.plan)` on every call):
//!
//! ```toml
//! [api.chain.config]
//! limits = "plan"           # instead of calls + period
//! by = "consumer"
//! fallback = { calls = 100, period = "month" }   # optional: consumers without a plan
//! ```
//!
//! Without `fallback`, a caller without a consumer, without a plan, or whose
//! plan does not exist is refused with `status` and code `no_plan`; with it,
//! consumers without a (known) plan get the fallback quota, and calls without
//! a consumer are refused as always (`quota_no_subject`). A plan without a
//! quota lets its callers through uncounted.
//!
//! See `README.md` for the reference, including how plan quotas are keyed.

#![forbid(unsafe_code)]

pub mod calendar;

use calendar::{parse_offset, parse_weekday, period_bounds, Period, Weekday};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_policy_sdk::services::outcome::{self, ResponseOrigin};
use tollgate_policy_sdk::services::{counters, plans, Decision, ServiceError};
use tollgate_policy_sdk::{
    clock, log, Call, ConfigError, Consumer, Policy, PolicyInfo, RequestDecision, RequestEdits,
    Response, ResponseDecision, ResponseEdits,
};

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Calls allowed per period (required unless `limits = "plan"`).
    #[serde(default)]
    pub calls: Option<u64>,
    /// The calendar period (required unless `limits = "plan"`).
    #[serde(default)]
    pub period: Option<PeriodConfig>,
    /// `"plan"`: calls and period from the caller's plan, instead of
    /// `calls` and `period`.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// Only with `limits = "plan"`: the quota of consumers without a plan
    /// (or with a plan that does not exist). Without it they are refused.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// Who the quota belongs to.
    #[serde(default)]
    pub by: By,
    /// `UTC` or a fixed offset `+HH:MM` / `-HH:MM`.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// The first day of a week (`monday` .. `sunday`).
    #[serde(default = "default_week_start")]
    pub week_starts: String,
    /// The status of a refused call.
    #[serde(default = "default_status")]
    pub status: u16,
    /// When the counters service fails: `true` lets the call through,
    /// `false` (the default) answers 503.
    #[serde(default)]
    pub fail_open: bool,
    /// Which calls cost a unit.
    #[serde(default)]
    pub count: Count,
}

/// Which calls cost a unit of the quota (`count`). Every call the quota lets
/// through takes a unit at once; in the response phase the unit is given
/// back if the call does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Count {
    /// Every call the quota let through, however it ended (also calls a
    /// later step refused or failed, and calls the upstream never saw).
    #[serde(rename = "all")]
    All,
    /// Calls the upstream answered, whatever the status.
    #[serde(rename = "upstream")]
    Upstream,
    /// Calls the upstream answered with a status below 500: its successes,
    /// redirects and client errors, not its failures (the default).
    #[default]
    #[serde(rename = "upstream-below-500")]
    UpstreamBelow500,
    /// Calls the upstream answered with a status below 400.
    #[serde(rename = "upstream-below-400")]
    UpstreamBelow400,
}

impl Count {
    /// Whether a call whose response came from `origin` counts. Without an
    /// origin (none known), it counts.
    pub fn counts(self, origin: Option<&ResponseOrigin>) -> bool {
        if self == Count::All {
            return true;
        }
        let status = match origin {
            None => return true,
            Some(ResponseOrigin::Upstream(status)) => *status,
            Some(ResponseOrigin::Step(_) | ResponseOrigin::Gateway(_)) => return false,
        };
        match self {
            Count::All | Count::Upstream => true,
            Count::UpstreamBelow500 => status < 500,
            Count::UpstreamBelow400 => status < 400,
        }
    }
}

fn default_tz() -> String {
    "UTC".into()
}
fn default_week_start() -> String {
    "monday".into()
}
fn default_status() -> u16 {
    403
}

/// `limits` as written: only `"plan"` (a fixed quota is `calls` + `period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitsConfig {
    /// The caller's plan's quota.
    Plan,
}

/// `fallback = { calls = 100, period = "month" }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FallbackConfig {
    /// Calls allowed per period.
    pub calls: u64,
    /// The calendar period.
    pub period: PeriodConfig,
}

/// A period as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeriodConfig {
    /// From local midnight to the next.
    Day,
    /// Seven days from local midnight of `week-starts`.
    Week,
    /// From local midnight of the 1st to that of the next month's 1st.
    Month,
}

/// Who a quota belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum By {
    /// Each consumer has its own quota.
    #[default]
    Consumer,
    /// Each app (a consumer without an app counts as its own app).
    App,
    /// All apps subscribed to one plan share the quota.
    Plan,
}

impl From<PeriodConfig> for Period {
    fn from(p: PeriodConfig) -> Period {
        match p {
            PeriodConfig::Day => Period::Day,
            PeriodConfig::Week => Period::Week,
            PeriodConfig::Month => Period::Month,
        }
    }
}

/// A number of calls per calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Calls allowed per period.
    pub calls: u64,
    /// The period.
    pub period: Period,
}

/// Where a step's quota comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `calls` + `period`.
    Fixed(Allowance),
    /// `limits = "plan"`: the caller's plan's quota; `fallback` for
    /// consumers without a plan (refused when `None`).
    Plan {
        /// The quota of consumers without a plan.
        fallback: Option<Allowance>,
    },
}

/// The configured policy and what the request phase decided (for the
/// response phase, which only a refunding `count` has).
#[derive(Debug)]
pub struct Quota {
    source: Source,
    by: By,
    offset_ms: i64,
    week_starts: Weekday,
    status: u16,
    fail_open: bool,
    count: Count,
    passed: Option<Decision>,
    /// The unit taken by this call: key and period, to give it back.
    taken: Option<(String, u64, u64)>,
    counter: CounterFn,
}

type CounterFn = fn(&str, u64, u64, u64, u64) -> Result<Decision, ServiceError>;

impl Policy for Quota {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let source = match config.limits {
            Some(LimitsConfig::Plan) => {
                for (field, given) in [
                    ("calls", config.calls.is_some()),
                    ("period", config.period.is_some()),
                ] {
                    if given {
                        return Err(ConfigError::at(
                            field,
                            "not with limits = \"plan\", which takes calls and period from the caller's plan: give either `calls` and `period`, or `limits = \"plan\"`",
                        ));
                    }
                }
                let fallback = match config.fallback {
                    Some(f) if f.calls == 0 => {
                        return Err(ConfigError::at("fallback.calls", "must be at least 1"))
                    }
                    Some(_) if config.by == By::Plan => {
                        return Err(ConfigError::at(
                            "fallback",
                            "not with by = \"plan\": a fallback quota is for callers without a plan, who have no plan to be counted by",
                        ))
                    }
                    Some(f) => Some(Allowance {
                        calls: f.calls,
                        period: f.period.into(),
                    }),
                    None => None,
                };
                Source::Plan { fallback }
            }
            None => {
                if config.fallback.is_some() {
                    return Err(ConfigError::at(
                        "fallback",
                        "only with limits = \"plan\" (the quota of consumers without a plan)",
                    ));
                }
                let missing = |field: &str| {
                    ConfigError::at(
                        field,
                        "missing: give `calls` and `period`, or `limits = \"plan\"` to take them from the caller's plan",
                    )
                };
                let calls = config.calls.ok_or_else(|| missing("calls"))?;
                let period = config.period.ok_or_else(|| missing("period"))?;
                if calls == 0 {
                    return Err(ConfigError::at("calls", "must be at least 1"));
                }
                Source::Fixed(Allowance {
                    calls,
                    period: period.into(),
                })
            }
        };
        let offset_ms =
            parse_offset(&config.time_zone).map_err(|m| ConfigError::at("time-zone", m))?;
        let week_starts = parse_weekday(&config.week_starts).ok_or_else(|| {
            ConfigError::at(
                "week-starts",
                format!(
                    "{:?} is not a day: expected \"monday\" .. \"sunday\"",
                    config.week_starts
                ),
            )
        })?;
        if !(400..=599).contains(&config.status) {
            return Err(ConfigError::at(
                "status",
                "must be an error status, 400 to 599",
            ));
        }
        Ok(Quota {
            source,
            by: config.by,
            offset_ms,
            week_starts,
            status: config.status,
            fail_open: config.fail_open,
            count: config.count,
            passed: None,
            taken: None,
            counter: counters::quota_check_and_add,
        })
    }

    fn info(&self) -> PolicyInfo {
        if self.refunds() {
            // The response phase gives back the unit of a call that does
            // not count, and reports what is left after that.
            PolicyInfo::default()
        } else {
            // Nothing depends on the outcome: the request phase attaches
            // the headers (`response_headers`).
            PolicyInfo::request_only()
        }
    }

    fn on_request(&mut self, call: &Call<'_>, _body: Option<&[u8]>) -> RequestDecision {
        // Nothing of an earlier call on this instance (the gateway's
        // `worker` isolation reuses it) may reach this call's response.
        self.passed = None;
        self.taken = None;
        // Both the plan and the subject come from the consumer: read once.
        let consumer = call.consumer();
        let (allowance, plan) = match self.allowance(consumer.as_ref()) {
            Applied::Quota(allowance, plan) => (allowance, plan),
            Applied::Unlimited(plan) => {
                log::debug(&format!(
                    "quota: plan {plan:?} has no quota: the call is not counted"
                ));
                return RequestDecision::Continue(RequestEdits::default());
            }
            Applied::NoPlan => {
                return RequestDecision::Respond(Response::json_error(
                    self.status,
                    "no_plan",
                    "no plan: this API's quota comes from the caller's plan; \
                     call with a key subscribed to a plan",
                ))
            }
        };
        let Some(subject) = self.subject(consumer.as_ref()) else {
            log::warn(&format!(
                "quota: no {} to count against: put an authentication step before this one",
                self.by_name()
            ));
            return RequestDecision::Respond(Response::json_error(
                self.status,
                "quota_no_subject",
                &format!(
                    "this API has a quota per {}, and the call has none",
                    self.by_name()
                ),
            ));
        };
        let now = clock::now_ms();
        let (start, end) = self.bounds(allowance.period, now);
        let period = period_name(allowance.period);
        // A plan's count is keyed by the plan id and the period, not by
        // the number of calls: calls made on one plan never count against
        // another plan's quota, and raising or lowering a plan's `calls`
        // keeps the count (README: "Counter keys of plan quotas"). The
        // `plan` segment is never a period name, so plan counts never meet
        // configured ones.
        let step = call.step();
        let key = match &plan {
            None => format!("quota/{step}/{period}/{}/{subject}", self.by_name()),
            Some(plan) => format!(
                "quota/{step}/plan/{}/{period}/{}/{subject}",
                plan_segment(plan),
                self.by_name()
            ),
        };
        match (self.counter)(&key, allowance.calls, start, end, 1) {
            Ok(d) if d.allowed => {
                if !self.refunds() {
                    // No response phase: the headers go with the request
                    // phase's edits, to be set where it would have run.
                    let mut edits = RequestEdits::default();
                    for (name, value) in headers(&d) {
                        edits = edits.set_response_header(name, value);
                    }
                    return RequestDecision::Continue(edits);
                }
                self.passed = Some(d);
                self.taken = Some((key, start, end));
                RequestDecision::Continue(RequestEdits::default())
            }
            Ok(d) => {
                let retry = secs(d.retry_after_ms).max(1);
                log::info(&format!(
                    "quota: {subject} used its {} calls this {period}{}",
                    allowance.calls,
                    match &plan {
                        Some(plan) => format!(" (plan {plan:?})"),
                        None => String::new(),
                    }
                ));
                let mut r = Response::json_error(
                    self.status,
                    "quota_exceeded",
                    &format!(
                        "the quota of {} calls per {period} is used up; it renews in {retry} s",
                        allowance.calls,
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
                        "quota: counters failed, letting the call through (fail-open): {what}"
                    ));
                    RequestDecision::Continue(RequestEdits::default())
                } else {
                    log::error(&format!(
                        "quota: counters failed, refusing the call: {what}"
                    ));
                    RequestDecision::Respond(
                        Response::json_error(
                            503,
                            "quota_unavailable",
                            "the quota cannot be checked right now",
                        )
                        .header("retry-after", "1"),
                    )
                }
            }
        }
    }

    /// Only declared when [`Quota::refunds`]: reads nothing of the call but
    /// its outcome (`outcome::origin`).
    fn on_response(&mut self, _call: &Call<'_>, _body: Option<&[u8]>) -> ResponseDecision {
        let mut edits = ResponseEdits::default();
        let Some(mut d) = self.passed else {
            return ResponseDecision::Continue(edits);
        };
        if let Some((key, start, end)) = &self.taken {
            let origin = outcome::origin();
            if !self.count.counts(origin.as_ref()) {
                match counters::quota_refund(key, *start, *end, 1) {
                    Ok(used) => d.remaining = d.limit.saturating_sub(used),
                    Err(e) => log::warn(&format!(
                        "quota: the unit of a call that does not count ({origin:?}) could not be given back: {e:?}"
                    )),
                }
            }
        }
        for (name, value) in headers(&d) {
            edits = edits.set_header(name, value);
        }
        ResponseDecision::Continue(edits)
    }
}

/// The quota of one call.
enum Applied {
    /// This allowance; from the named plan, or configured (`None`: `calls`
    /// and `period`, or the fallback).
    Quota(Allowance, Option<String>),
    /// The caller's plan (named) has no quota.
    Unlimited(String),
    /// `limits = "plan"`, the caller has no usable plan and there is no
    /// fallback: refuse.
    NoPlan,
}

impl Quota {
    /// Whether a call's unit may be given back (every `count` but `all`),
    /// which takes the response phase.
    pub fn refunds(&self) -> bool {
        self.count != Count::All
    }

    /// The quota of a call by `consumer`.
    fn allowance(&self, consumer: Option<&Consumer>) -> Applied {
        let fallback = match self.source {
            Source::Fixed(allowance) => return Applied::Quota(allowance, None),
            Source::Plan { fallback } => fallback,
        };
        match plans::of_caller(consumer) {
            Ok(plans::PlanLimits {
                plan,
                quota: Some(q),
                ..
            }) => Applied::Quota(
                Allowance {
                    calls: q.calls,
                    period: match q.period {
                        plans::Period::Day => Period::Day,
                        plans::Period::Week => Period::Week,
                        plans::Period::Month => Period::Month,
                    },
                },
                Some(plan),
            ),
            Ok(plans::PlanLimits { plan, .. }) => Applied::Unlimited(plan),
            Err((level, why)) => {
                log::log(
                    level,
                    &format!(
                        "quota: {why}: {}",
                        if fallback.is_some() {
                            "the fallback quota applies"
                        } else {
                            "refused (no fallback)"
                        }
                    ),
                );
                match fallback {
                    Some(allowance) => Applied::Quota(allowance, None),
                    None => Applied::NoPlan,
                }
            }
        }
    }

    /// The `period` containing `now_ms`, as Unix ms `[start, end)`.
    pub fn bounds(&self, period: Period, now_ms: u64) -> (u64, u64) {
        let (s, e) = period_bounds(now_ms as i64, self.offset_ms, period, self.week_starts);
        // Only a clock near 1970 gives a negative start.
        (s.max(0) as u64, e.max(1) as u64)
    }

    /// Whose quota a call by `consumer` uses: `None` if the call has no
    /// such subject.
    fn subject(&self, consumer: Option<&Consumer>) -> Option<String> {
        let c = consumer?;
        Some(match self.by {
            By::Consumer => plain_or_hash("c", &c.id),
            By::App => match &c.app {
                Some(app) => plain_or_hash("a", app),
                None => plain_or_hash("c", &c.id),
            },
            By::Plan => plain_or_hash("p", c.plan.as_ref()?),
        })
    }

    fn by_name(&self) -> &'static str {
        match self.by {
            By::Consumer => "consumer",
            By::App => "app",
            By::Plan => "plan",
        }
    }
}

fn period_name(period: Period) -> &'static str {
    match period {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// A plan id as a key segment: `p=id`, or `p#sha256hex` for ids that are
/// long, unusual or contain `/` (which would make key segments ambiguous).
fn plan_segment(plan: &str) -> String {
    if plan.len() <= 128 && plan.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'/') {
        format!("p={plan}")
    } else {
        format!("p#{}", sha256_hex(plan))
    }
}

/// `kind=value` for short printable values, `kind#sha256hex` otherwise (ids
/// set by a custom authentication step could be anything), so keys stay
/// short and distinct.
fn plain_or_hash(kind: &str, value: &str) -> String {
    if value.len() <= 128 && value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        format!("{kind}={value}")
    } else {
        format!("{kind}#{}", sha256_hex(value))
    }
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Milliseconds as whole seconds, rounded up.
pub fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The quota headers for a decision.
fn headers(d: &Decision) -> [(&'static str, String); 3] {
    [
        ("x-quota-limit", d.limit.to_string()),
        ("x-quota-remaining", d.remaining.to_string()),
        ("x-quota-reset", secs(d.reset_ms).to_string()),
    ]
}

tollgate_policy_sdk::export_policy!(Quota);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
