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
//! Counting uses the gateway's atomic `counters::check_and_add`, so of N
//! concurrent calls racing one limit exactly as many as it allows pass.
//! See `README.md` for the reference, including how several limits are
//! combined.

#![forbid(unsafe_code)]

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_policy_sdk::services::{counters, Algorithm, Decision, ServiceError};
use tollgate_policy_sdk::{
    header_values, log, valid_header_name, CallContext, ConfigError, Policy, RequestDecision,
    RequestEdits, RequestHead, Response, ResponseDecision, ResponseEdits, ResponseHead,
};

/// Most limits one step may declare.
pub const MAX_LIMITS: usize = 16;
/// Values longer than this (or not UTF-8, or with characters outside
/// printable ASCII) are hashed into the counter key.
const MAX_PLAIN_VALUE: usize = 128;

/// The step configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// One or more limits; a call passes only if every one allows it.
    pub limits: Vec<LimitConfig>,
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

/// One configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The window.
    pub per: Per,
    /// Calls allowed per window.
    pub requests: u64,
    /// What is counted separately.
    pub by: By,
}

/// The configured policy, and (for the response phase) the decision the
/// request phase made.
#[derive(Debug)]
pub struct RateLimit {
    limits: Vec<Limit>,
    algorithm: Algorithm,
    status: u16,
    fail_open: bool,
    /// Set by a request phase that let the call through.
    passed: Option<Decision>,
    /// The counters service (replaced in unit tests to simulate failures).
    counter: CounterFn,
}

type CounterFn = fn(&str, u64, u64, Algorithm, u64) -> Result<Decision, ServiceError>;

impl Policy for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.limits.is_empty() {
            return Err(ConfigError::at("limits", "give at least one limit"));
        }
        if config.limits.len() > MAX_LIMITS {
            return Err(ConfigError::at(
                "limits",
                format!("at most {MAX_LIMITS} limits per step"),
            ));
        }
        let mut limits: Vec<Limit> = Vec::new();
        for (i, l) in config.limits.iter().enumerate() {
            if l.requests == 0 || l.requests > 1_000_000_000_000 {
                return Err(ConfigError::at(
                    format!("limits.{i}.requests"),
                    "must be between 1 and 1000000000000",
                ));
            }
            let by = By::parse(&l.by).map_err(|m| ConfigError::at(format!("limits.{i}.by"), m))?;
            if limits.iter().any(|o| o.per == l.per && o.by == by) {
                return Err(ConfigError::at(
                    format!("limits.{i}"),
                    format!(
                        "another limit already counts per {} by {:?}: keep the stricter one",
                        l.per.name(),
                        by.tag()
                    ),
                ));
            }
            limits.push(Limit {
                per: l.per,
                requests: l.requests,
                by,
            });
        }
        if !(400..=599).contains(&config.status) {
            return Err(ConfigError::at(
                "status",
                "must be an error status, 400 to 599",
            ));
        }
        Ok(RateLimit {
            limits,
            algorithm: match config.algorithm {
                AlgorithmConfig::SlidingWindow => Algorithm::SlidingWindow,
                AlgorithmConfig::TokenBucket => Algorithm::TokenBucket,
            },
            status: config.status,
            fail_open: config.fail_open,
            passed: None,
            counter: counters::check_and_add,
        })
    }

    fn on_request(
        &mut self,
        ctx: &CallContext,
        req: &RequestHead,
        _body: Option<&[u8]>,
    ) -> RequestDecision {
        let keys: Vec<String> = (0..self.limits.len())
            .map(|i| self.key(i, ctx, req))
            .collect();
        match self.check(&keys) {
            Ok(Outcome::Pass(d)) => {
                self.passed = Some(d);
                RequestDecision::Continue(RequestEdits::default())
            }
            Ok(Outcome::Refuse(i, d)) => {
                let limit = &self.limits[i];
                log::info(&format!(
                    "rate-limit: refused by limit {i} ({} per {} by {})",
                    limit.requests,
                    limit.per.name(),
                    limit.by.tag()
                ));
                let retry = secs(d.retry_after_ms).max(1);
                let mut r = Response::json_error(
                    self.status,
                    "rate_limited",
                    &format!(
                        "too many requests: the limit is {} per {}; retry in {retry} s",
                        limit.requests,
                        limit.per.name()
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
                        "rate-limit: counters failed, letting the call through (fail-open): {what}"
                    ));
                    RequestDecision::Continue(RequestEdits::default())
                } else {
                    log::error(&format!(
                        "rate-limit: counters failed, refusing the call: {what}"
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
    /// The counter key of limit `i` for this call. The step name keeps two
    /// rate-limit steps of one API apart (the host adds the API); the value
    /// comes last, so no value can make two keys equal.
    fn key(&self, i: usize, ctx: &CallContext, req: &RequestHead) -> String {
        let limit = &self.limits[i];
        let ip = || format!("ip={}", client_ip(&ctx.client_addr));
        let subject = match &limit.by {
            By::Api => String::new(),
            By::Ip => ip(),
            By::Consumer => match &ctx.consumer {
                Some(c) => plain_or_hash("c", c.id.as_bytes()),
                None => ip(),
            },
            By::App => match &ctx.consumer {
                Some(c) => match &c.app {
                    Some(app) => plain_or_hash("a", app.as_bytes()),
                    None => plain_or_hash("c", c.id.as_bytes()),
                },
                None => ip(),
            },
            By::Header(name) => {
                let values: Vec<&[u8]> = header_values(&req.headers, name).collect();
                if values.is_empty() {
                    ip()
                } else {
                    // Several fields count as their comma-joined list.
                    plain_or_hash("h", &values.join(&b","[..]))
                }
            }
        };
        format!(
            "rl/{}/{i}/{}/{}/{subject}",
            ctx.step,
            limit.per.window_ms(),
            limit.by.tag()
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
    fn check(&self, keys: &[String]) -> Result<Outcome, ServiceError> {
        let n = self.limits.len();
        let run = |i: usize, cost: u64| {
            (self.counter)(
                &keys[i],
                self.limits[i].requests,
                self.limits[i].per.window_ms(),
                self.algorithm,
                cost,
            )
        };
        let mut charged: Vec<Option<Decision>> = vec![None; n];
        if n > 1 {
            let mut empty = Vec::new();
            for i in 1..n {
                let d = run(i, 0)?;
                if !d.allowed || d.remaining == 0 {
                    empty.push(i);
                }
            }
            // The real refusal (and its retry time) comes from a cost-1 check,
            // which counts nothing when it refuses.
            let mut refusal: Option<(usize, Decision)> = None;
            for i in empty {
                let d = run(i, 1)?;
                if d.allowed {
                    // The window moved on in between: this limit is charged.
                    charged[i] = Some(d);
                } else if refusal.is_none_or(|(_, r)| d.retry_after_ms > r.retry_after_ms) {
                    refusal = Some((i, d));
                }
            }
            if let Some((i, d)) = refusal {
                return Ok(Outcome::Refuse(i, d));
            }
        }
        for (i, slot) in charged.iter_mut().enumerate() {
            if slot.is_none() {
                let d = run(i, 1)?;
                if !d.allowed {
                    return Ok(Outcome::Refuse(i, d));
                }
                *slot = Some(d);
            }
        }
        // Report the limit closest to being exhausted (the later reset on a
        // tie).
        let tightest = charged
            .into_iter()
            .flatten()
            .min_by(|a, b| {
                a.remaining
                    .cmp(&b.remaining)
                    .then(b.reset_ms.cmp(&a.reset_ms))
            })
            .expect("at least one limit");
        Ok(Outcome::Pass(tightest))
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
        let digest = Sha256::digest(value);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{kind}#{hex}")
    }
}

tollgate_policy_sdk::export_policy!(RateLimit);

// The tests use the SDK's native harness, which exists only off wasm32.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
