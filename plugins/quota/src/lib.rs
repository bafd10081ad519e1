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
//! ```
//!
//! See `README.md` for the reference.

#![forbid(unsafe_code)]

pub mod calendar;

use calendar::{parse_offset, parse_weekday, period_bounds, Period, Weekday};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_policy_sdk::services::{counters, Decision, ServiceError};
use tollgate_policy_sdk::{
    clock, log, CallContext, ConfigError, Policy, PolicyInfo, RequestDecision, RequestEdits,
    RequestHead, Response, ResponseDecision, ResponseEdits, ResponseHead,
};

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Calls allowed per period.
    pub calls: u64,
    /// The calendar period.
    pub period: PeriodConfig,
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

/// The configured policy and what the request phase decided.
#[derive(Debug)]
pub struct Quota {
    calls: u64,
    period: Period,
    by: By,
    offset_ms: i64,
    week_starts: Weekday,
    status: u16,
    fail_open: bool,
    passed: Option<Decision>,
    counter: CounterFn,
}

type CounterFn = fn(&str, u64, u64, u64, u64) -> Result<Decision, ServiceError>;

impl Policy for Quota {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.calls == 0 {
            return Err(ConfigError::at("calls", "must be at least 1"));
        }
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
            calls: config.calls,
            period: match config.period {
                PeriodConfig::Day => Period::Day,
                PeriodConfig::Week => Period::Week,
                PeriodConfig::Month => Period::Month,
            },
            by: config.by,
            offset_ms,
            week_starts,
            status: config.status,
            fail_open: config.fail_open,
            passed: None,
            counter: counters::quota_check_and_add,
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo::default()
    }

    fn on_request(
        &mut self,
        ctx: &CallContext,
        _req: &RequestHead,
        _body: Option<&[u8]>,
    ) -> RequestDecision {
        let Some(subject) = self.subject(ctx) else {
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
        let (start, end) = self.bounds(now);
        let key = format!(
            "quota/{}/{}/{}/{subject}",
            ctx.step,
            self.period_name(),
            self.by_name()
        );
        match (self.counter)(&key, self.calls, start, end, 1) {
            Ok(d) if d.allowed => {
                self.passed = Some(d);
                RequestDecision::Continue(RequestEdits::default())
            }
            Ok(d) => {
                let retry = secs(d.retry_after_ms).max(1);
                log::info(&format!(
                    "quota: {subject} used its {} calls this {}",
                    self.calls,
                    self.period_name()
                ));
                let mut r = Response::json_error(
                    self.status,
                    "quota_exceeded",
                    &format!(
                        "the quota of {} calls per {} is used up; it renews in {retry} s",
                        self.calls,
                        self.period_name()
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

    fn on_response(
        &mut self,
        _ctx: &CallContext,
        _req: &RequestHead,
        _resp: &ResponseHead,
        _body: Option<&[u8]>,
    ) -> ResponseDecision {
        let mut edits = ResponseEdits::default();
        if let Some(d) = &self.passed {
            for (name, value) in headers(d) {
                edits = edits.set_header(name, value);
            }
        }
        ResponseDecision::Continue(edits)
    }
}

impl Quota {
    /// The period containing `now_ms`, as Unix ms `[start, end)`.
    pub fn bounds(&self, now_ms: u64) -> (u64, u64) {
        let (s, e) = period_bounds(now_ms as i64, self.offset_ms, self.period, self.week_starts);
        // Only a clock near 1970 gives a negative start.
        (s.max(0) as u64, e.max(1) as u64)
    }

    /// Whose quota this call uses: `None` if the call has no such subject.
    fn subject(&self, ctx: &CallContext) -> Option<String> {
        let c = ctx.consumer.as_ref()?;
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

    fn period_name(&self) -> &'static str {
        match self.period {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// `kind=value` for short printable values, `kind#sha256hex` otherwise (ids
/// set by a custom authentication step could be anything), so keys stay
/// short and distinct.
fn plain_or_hash(kind: &str, value: &str) -> String {
    if value.len() <= 128 && value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        format!("{kind}={value}")
    } else {
        let hex: String = Sha256::digest(value.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{kind}#{hex}")
    }
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
