//! Host services: counters and quotas, the response cache, a key-value
//! store, consumer lookup, plan limits, outbound HTTP, signature checks, call
//! timing and an output sink.
//!
//! In a component (`wasm32`) each function calls the host; the step must be
//! granted the service in its manifest entry (`grants = ["counters"]`), or
//! the call fails with [`ServiceError::NotGranted`] (and the gateway refuses
//! to load a plugin whose imports are not granted). [`plans`] is catalogue
//! data and needs no grant.
//!
//! On native targets (unit tests) every service runs in memory, per thread,
//! with the same semantics, and [`harness`] lets a test set the clock,
//! declare consumers and plans, and answer outbound calls.

pub use crate::bindings::tollgate::policy0_1_0::cache::CachedResponse;
pub use crate::bindings::tollgate::policy0_1_0::counters::{Algorithm, Decision};
pub use crate::bindings::tollgate::policy0_1_0::http_client::{IncomingResponse, OutgoingRequest};
pub use crate::bindings::tollgate::policy0_1_0::service_types::ServiceError;
pub use crate::bindings::tollgate::policy0_1_0::timing::CallTiming;
use crate::Consumer;

#[cfg(target_arch = "wasm32")]
use crate::bindings::tollgate::policy0_1_0 as host;
#[cfg(target_arch = "wasm32")]
use crate::bindings::tollgate::policy0_2_0 as host2;

/// Rate counters (in memory on the gateway, in Redis in cluster mode) and
/// calendar quotas (durable).
pub mod counters {
    use super::*;

    /// One limit of [`check_all_and_add`].
    pub use crate::bindings::tollgate::policy0_2_0::limits::Limit;

    /// The rate limits of one call, together: add `cost` to every limit's
    /// key if each has room, and to none otherwise (a call refused by one
    /// limit does not use up the others). One decision per limit, in
    /// order; at most 32 limits. One call to the gateway, and in cluster
    /// mode one round trip to Redis, however many limits.
    pub fn check_all_and_add(limits: &[Limit], cost: u64) -> Result<Vec<Decision>, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host2::limits::check_all_and_add(limits, cost)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::check_all_and_add(limits, cost)
        }
    }

    /// Atomically add `cost` to `key` if that stays within `limit` per
    /// `window_ms` (1 ms to 1 day).
    pub fn check_and_add(
        key: &str,
        limit: u64,
        window_ms: u64,
        algorithm: Algorithm,
        cost: u64,
    ) -> Result<Decision, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::counters::check_and_add(key, limit, window_ms, algorithm, cost)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::check_and_add(key, limit, window_ms, algorithm, cost)
        }
    }

    /// Add `cost` to `key` for the period `[start_ms, end_ms)` if that stays
    /// within `limit`; durable on the gateway.
    pub fn quota_check_and_add(
        key: &str,
        limit: u64,
        start_ms: u64,
        end_ms: u64,
        cost: u64,
    ) -> Result<Decision, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::counters::quota_check_and_add(key, limit, start_ms, end_ms, cost)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::quota_check_and_add(key, limit, start_ms, end_ms, cost)
        }
    }

    /// Give back `cost` units added by [`quota_check_and_add`] for the
    /// period `[start_ms, end_ms)` (never below zero); durable on the
    /// gateway. Returns the period's count after the refund.
    pub fn quota_refund(
        key: &str,
        start_ms: u64,
        end_ms: u64,
        cost: u64,
    ) -> Result<u64, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::counters::quota_refund(key, start_ms, end_ms, cost)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::quota_refund(key, start_ms, end_ms, cost)
        }
    }
}

/// Who made the response, for the response phase (no grant needed).
pub mod outcome {
    pub use crate::bindings::tollgate::policy0_1_0::outcome::ResponseOrigin;

    /// Who made the response as it stands when this step's response phase
    /// runs; `None` in the request phase.
    pub fn origin() -> Option<ResponseOrigin> {
        #[cfg(target_arch = "wasm32")]
        {
            super::host::outcome::origin()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.origin.clone())
        }
    }
}

/// The response cache (per API).
pub mod cache {
    use super::*;

    /// A cached response and its remaining time to live in ms.
    pub fn get(key: &str) -> Option<(CachedResponse, u64)> {
        #[cfg(target_arch = "wasm32")]
        {
            host::cache::get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::cache_get(key)
        }
    }

    /// Store a response for `ttl_ms` (at most a day).
    pub fn put(key: &str, value: &CachedResponse, ttl_ms: u64) -> Result<(), ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::cache::put(key, value, ttl_ms)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::cache_put(key, value, ttl_ms)
        }
    }

    /// Remove an entry.
    pub fn delete(key: &str) {
        #[cfg(target_arch = "wasm32")]
        host::cache::delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        super::native::cache_delete(key);
    }
}

/// A durable key-value store (per plugin).
pub mod kv {
    use super::*;

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::kv::get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Ok(super::native::with(|s| s.kv.get(key).cloned()))
        }
    }

    /// Store `value` (keys up to 512 bytes, values up to the `kv` grant's
    /// `max-value`, 64 KiB by default); durable when it returns. Refused
    /// with `ServiceError::Invalid` when the namespace is full (the grant's
    /// `max-bytes` and `max-keys`).
    pub fn set(key: &str, value: &[u8]) -> Result<(), ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::kv::set(key, value)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.kv.insert(key.to_string(), value.to_vec()));
            Ok(())
        }
    }

    /// Remove `key`.
    pub fn delete(key: &str) -> Result<(), ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::kv::delete(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.kv.remove(key));
            Ok(())
        }
    }
}

/// Consumer lookup.
pub mod consumers {
    use super::*;

    /// The consumer an API key belongs to, if valid for `api`.
    pub fn lookup_key(api: &str, key: &str) -> Option<Consumer> {
        #[cfg(target_arch = "wasm32")]
        {
            host::consumers::lookup_key(api, key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.keys.get(&(api.to_string(), key.to_string())).cloned())
        }
    }

    /// A consumer by id, if it may call `api`.
    pub fn lookup_consumer(api: &str, id: &str) -> Option<Consumer> {
        #[cfg(target_arch = "wasm32")]
        {
            host::consumers::lookup_consumer(api, id)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.consumers.get(&(api.to_string(), id.to_string())).cloned())
        }
    }

    /// Who a call to `api` that presents no credential is admitted as: the
    /// consumer `anonymous` of a published product open to anonymous
    /// callers that covers `api`, or `None` (then a credential is needed).
    /// Ask it only when the request carries no credential at all: a wrong
    /// one stays refused. Same grant as the lookups (`consumers`).
    pub fn open_access(api: &str) -> Option<Consumer> {
        #[cfg(target_arch = "wasm32")]
        {
            host2::access::open_access(api)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.open.get(api).cloned())
        }
    }
}

/// The limits of the plans defined through the admin API, for policies that
/// take their limits from the caller's plan (`limits = "plan"`). No grant is
/// needed.
///
/// ```
/// use tollgate_policy_sdk::services::plans;
/// use tollgate_policy_sdk::CallContext;
///
/// fn rate_limits(ctx: &CallContext) -> Option<Vec<plans::RateLimit>> {
///     let plan = ctx.consumer.as_ref()?.plan.as_deref()?;
///     Some(plans::limits(plan)?.rate_limits)
/// }
/// # fn main() {
/// # use tollgate_policy_sdk::services::harness;
/// # use tollgate_policy_sdk::Consumer;
/// harness::set_plan(plans::PlanLimits {
///     plan: "gold".into(),
///     rate_limits: vec![plans::RateLimit { requests: 100, window_ms: 1_000 }],
///     ..plans::PlanLimits::default()
/// });
/// let ctx = CallContext {
///     consumer: Some(Consumer { id: "alice".into(), plan: Some("gold".into()), ..Consumer::default() }),
///     ..CallContext::default()
/// };
/// assert_eq!(rate_limits(&ctx).unwrap()[0].requests, 100);
/// # }
/// ```
pub mod plans {
    pub use crate::bindings::tollgate::policy0_1_0::plans::{Period, PlanLimits, Quota, RateLimit};

    /// The limits of plan `plan` (for example the caller's
    /// `consumer.plan`), if the plan exists. A change made through the admin
    /// API is seen by the next request.
    pub fn limits(plan: &str) -> Option<PlanLimits> {
        #[cfg(target_arch = "wasm32")]
        {
            super::host::plans::limits(plan)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| s.plans.get(plan).cloned())
        }
    }

    /// The limits of the caller's plan (`consumer.plan`, the consumer an
    /// authentication step set: `call.consumer()`), or why there are none and how loud that is
    /// worth logging: no consumer or no plan is `Info`; a plan the gateway
    /// does not know (any more) is `Warn`, worth the operator's attention.
    pub fn of_caller(
        consumer: Option<&crate::Consumer>,
    ) -> Result<PlanLimits, (crate::log::Level, String)> {
        use crate::log::Level;
        let Some(consumer) = consumer else {
            return Err((
                Level::Info,
                "no consumer (no authentication step set one)".into(),
            ));
        };
        let Some(plan) = &consumer.plan else {
            return Err((
                Level::Info,
                format!("consumer {:?} has no plan", consumer.id),
            ));
        };
        limits(plan).ok_or_else(|| {
            (
                Level::Warn,
                format!("plan {plan:?} of consumer {:?} is not defined", consumer.id),
            )
        })
    }
}

/// Outbound HTTP to granted hosts.
pub mod http {
    use super::*;

    /// Send a request to a granted host; the body is at most 1 MiB.
    pub fn send(req: &OutgoingRequest) -> Result<IncomingResponse, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::http_client::send(req)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::with(|s| {
                s.http_calls.push(req.url.clone());
                s.http.get(&req.url).cloned()
            })
            .ok_or_else(|| ServiceError::Unavailable(format!("no answer for {}", req.url)))
        }
    }

    /// A GET with no body.
    pub fn get(url: &str, timeout_ms: u32) -> Result<IncomingResponse, ServiceError> {
        send(&OutgoingRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms,
        })
    }
}

/// Signature checks done natively by the host.
pub mod crypto {
    use super::*;

    /// Import a JWK (RSA, EC P-256/P-384, OKP Ed25519, oct); returns a handle.
    pub fn import_jwk(jwk: &str) -> Result<u64, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::crypto::import_jwk(jwk)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::import(format!("jwk:{jwk}"))
        }
    }

    /// Import an HMAC secret; returns a handle.
    pub fn import_secret(secret: &[u8]) -> Result<u64, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::crypto::import_secret(secret)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::import(format!("secret:{}", String::from_utf8_lossy(secret)))
        }
    }

    /// `Ok(false)`: a bad signature. An error: the key does not fit `alg`.
    pub fn verify(
        alg: &str,
        key: u64,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, ServiceError> {
        #[cfg(target_arch = "wasm32")]
        {
            host::crypto::verify(alg, key, message, signature)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            super::native::verify(alg, key, message, signature)
        }
    }
}

/// Time spent so far by the call (for logging in the response phase).
pub fn timing() -> CallTiming {
    #[cfg(target_arch = "wasm32")]
    {
        host::timing::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        native::with(|s| s.timing.clone())
    }
}

/// Write one line to the operator's sink (access log).
pub fn sink_line(line: &str) {
    #[cfg(target_arch = "wasm32")]
    host::sink::write_line(line);
    #[cfg(not(target_arch = "wasm32"))]
    native::with(|s| s.sink.push(line.to_string()));
}

/// Control of the in-memory services in native unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub mod harness {
    use super::*;

    /// Forget everything (counters, cache, kv, consumers, plans, answers,
    /// lines).
    pub fn reset() {
        native::with(|s| *s = native::State::default());
    }
    /// Fix the clock seen by [`crate::clock::now_ms`] and the services.
    pub fn set_now_ms(ms: u64) {
        native::with(|s| s.now = Some(ms));
    }
    /// Declare an API key.
    pub fn add_key(api: &str, key: &str, consumer: Consumer) {
        native::with(|s| {
            s.consumers
                .insert((api.to_string(), consumer.id.clone()), consumer.clone());
            s.keys.insert((api.to_string(), key.to_string()), consumer)
        });
    }
    /// Open `api` to calls without credentials, admitted as `consumer`
    /// (what [`super::consumers::open_access`] answers for it).
    pub fn open_to_anonymous(api: &str, consumer: Consumer) {
        native::with(|s| s.open.insert(api.to_string(), consumer));
    }
    /// Declare a consumer by id.
    pub fn add_consumer(api: &str, consumer: Consumer) {
        native::with(|s| {
            s.consumers
                .insert((api.to_string(), consumer.id.clone()), consumer)
        });
    }
    /// Define a plan (replacing one with the same `plan` id), as the admin
    /// API does; [`plans::limits`] sees it at once.
    pub fn set_plan(limits: plans::PlanLimits) {
        native::with(|s| s.plans.insert(limits.plan.clone(), limits));
    }
    /// Delete a plan: [`plans::limits`] answers `None` for it.
    pub fn remove_plan(plan: &str) {
        native::with(|s| s.plans.remove(plan));
    }
    /// Answer outbound calls to `url` with `response`.
    pub fn answer(url: &str, response: IncomingResponse) {
        native::with(|s| s.http.insert(url.to_string(), response));
    }
    /// URLs called so far.
    pub fn http_calls() -> Vec<String> {
        native::with(|s| s.http_calls.clone())
    }
    /// A native signature check: the key's source (`jwk:...` or
    /// `secret:...`), the algorithm, the message and the signature.
    pub type Verifier = fn(&str, &str, &[u8], &[u8]) -> Result<bool, String>;

    /// Register a verifier for native `crypto::verify`.
    pub fn set_verifier(f: Verifier) {
        native::with(|s| s.verifier = Some(f));
    }
    /// Set what [`super::outcome::origin`] returns.
    pub fn set_origin(origin: Option<super::outcome::ResponseOrigin>) {
        native::with(|s| s.origin = origin);
    }
    /// The count of a quota period, as [`super::counters::quota_check_and_add`]
    /// keeps it (0 if nothing was counted).
    pub fn quota_count(key: &str, start_ms: u64) -> u64 {
        native::with(|s| {
            s.quotas
                .get(&(key.to_string(), start_ms))
                .copied()
                .unwrap_or(0)
        })
    }
    /// Set what [`super::timing`] returns.
    pub fn set_timing(t: CallTiming) {
        native::with(|s| s.timing = t);
    }
    /// Lines written to the sink so far.
    pub fn sink_lines() -> Vec<String> {
        native::with(|s| s.sink.clone())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::harness::Verifier;

    #[derive(Default)]
    pub struct State {
        pub now: Option<u64>,
        pub hits: HashMap<String, Vec<u64>>,
        pub buckets: HashMap<String, (f64, u64)>,
        pub quotas: HashMap<(String, u64), u64>,
        pub cache: HashMap<String, (CachedResponse, u64)>,
        pub kv: HashMap<String, Vec<u8>>,
        pub keys: HashMap<(String, String), Consumer>,
        pub consumers: HashMap<(String, String), Consumer>,
        pub open: HashMap<String, Consumer>,
        pub plans: HashMap<String, plans::PlanLimits>,
        pub http: HashMap<String, IncomingResponse>,
        pub http_calls: Vec<String>,
        pub key_sources: Vec<String>,
        pub verifier: Option<Verifier>,
        pub timing: CallTiming,
        pub origin: Option<super::outcome::ResponseOrigin>,
        pub sink: Vec<String>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        STATE.with(|s| f(&mut s.borrow_mut()))
    }

    pub fn now() -> Option<u64> {
        with(|s| s.now)
    }

    fn wall() -> u64 {
        now().unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    pub fn check_and_add(
        key: &str,
        limit: u64,
        window: u64,
        alg: Algorithm,
        cost: u64,
    ) -> Result<Decision, ServiceError> {
        if window == 0 || window > 86_400_000 {
            return Err(ServiceError::Invalid("window must be 1 ms to 1 day".into()));
        }
        let t = wall();
        with(|s| match alg {
            // Natively, an exact sliding log: the strictest reading of a
            // sliding window.
            Algorithm::SlidingWindow => {
                let hits = s.hits.entry(key.to_string()).or_default();
                hits.retain(|h| *h + window > t);
                let used = hits.len() as u64;
                if used + cost <= limit {
                    hits.extend(std::iter::repeat_n(t, cost as usize));
                    Ok(Decision {
                        allowed: true,
                        limit,
                        remaining: limit - used - cost,
                        reset_ms: window,
                        retry_after_ms: 0,
                    })
                } else {
                    let oldest = hits.first().copied().unwrap_or(t);
                    Ok(Decision {
                        allowed: false,
                        limit,
                        remaining: limit.saturating_sub(used),
                        reset_ms: window,
                        retry_after_ms: (oldest + window).saturating_sub(t).max(1),
                    })
                }
            }
            Algorithm::TokenBucket => {
                let rate = limit as f64 / window as f64;
                let (tokens, last) = s
                    .buckets
                    .entry(key.to_string())
                    .or_insert((limit as f64, t));
                if t > *last {
                    *tokens = (*tokens + (t - *last) as f64 * rate).min(limit as f64);
                    *last = t;
                }
                if *tokens >= cost as f64 {
                    *tokens -= cost as f64;
                    Ok(Decision {
                        allowed: true,
                        limit,
                        remaining: tokens.floor() as u64,
                        reset_ms: ((limit as f64 - *tokens) / rate).ceil() as u64,
                        retry_after_ms: 0,
                    })
                } else {
                    Ok(Decision {
                        allowed: false,
                        limit,
                        remaining: tokens.floor() as u64,
                        reset_ms: ((limit as f64 - *tokens) / rate).ceil() as u64,
                        retry_after_ms: ((cost as f64 - *tokens) / rate).ceil().max(1.0) as u64,
                    })
                }
            }
        })
    }

    pub fn check_all_and_add(
        limits: &[super::counters::Limit],
        cost: u64,
    ) -> Result<Vec<Decision>, ServiceError> {
        if limits.len() > 32 {
            return Err(ServiceError::Invalid(format!(
                "{} limits in one check: at most 32",
                limits.len()
            )));
        }
        // Checked one by one, then put back as they were if one refused.
        type Saved = (String, Option<Vec<u64>>, Option<(f64, u64)>);
        let saved: Vec<Saved> = with(|s| {
            limits
                .iter()
                .map(|l| {
                    let k = l.key.clone();
                    (
                        k.clone(),
                        s.hits.get(&k).cloned(),
                        s.buckets.get(&k).copied(),
                    )
                })
                .collect()
        });
        let restore = || {
            with(|s| {
                for (k, hits, bucket) in saved.iter().rev() {
                    match hits {
                        Some(h) => s.hits.insert(k.clone(), h.clone()),
                        None => s.hits.remove(k),
                    };
                    match bucket {
                        Some(b) => s.buckets.insert(k.clone(), *b),
                        None => s.buckets.remove(k),
                    };
                }
            })
        };
        let mut out = Vec::with_capacity(limits.len());
        for l in limits {
            match check_and_add(&l.key, l.limit, l.window_ms, l.algorithm, cost) {
                Ok(d) => out.push(d),
                Err(e) => {
                    restore();
                    return Err(e);
                }
            }
        }
        if out.iter().any(|d| !d.allowed) {
            restore();
        }
        Ok(out)
    }

    pub fn quota_check_and_add(
        key: &str,
        limit: u64,
        start: u64,
        end: u64,
        cost: u64,
    ) -> Result<Decision, ServiceError> {
        let t = wall();
        if end <= start || !(start..end).contains(&t) {
            return Err(ServiceError::Unavailable(
                "period does not contain the current time".into(),
            ));
        }
        with(|s| {
            let used = s.quotas.entry((key.to_string(), start)).or_insert(0);
            let reset_ms = end - t;
            if *used + cost <= limit {
                *used += cost;
                Ok(Decision {
                    allowed: true,
                    limit,
                    remaining: limit - *used,
                    reset_ms,
                    retry_after_ms: 0,
                })
            } else {
                Ok(Decision {
                    allowed: false,
                    limit,
                    remaining: limit.saturating_sub(*used),
                    reset_ms,
                    retry_after_ms: reset_ms,
                })
            }
        })
    }

    pub fn quota_refund(key: &str, start: u64, end: u64, cost: u64) -> Result<u64, ServiceError> {
        if end <= start {
            return Err(ServiceError::Unavailable("the period is empty".into()));
        }
        with(|s| match s.quotas.get_mut(&(key.to_string(), start)) {
            Some(used) => {
                *used = used.saturating_sub(cost);
                Ok(*used)
            }
            None => Ok(0),
        })
    }

    pub fn cache_get(key: &str) -> Option<(CachedResponse, u64)> {
        let t = wall();
        with(|s| {
            let (v, exp) = s.cache.get(key)?;
            (*exp > t).then(|| (v.clone(), exp - t))
        })
    }

    pub fn cache_put(key: &str, value: &CachedResponse, ttl_ms: u64) -> Result<(), ServiceError> {
        if ttl_ms == 0 || ttl_ms > 86_400_000 {
            return Err(ServiceError::Invalid("ttl must be 1 ms to 1 day".into()));
        }
        let t = wall();
        with(|s| s.cache.insert(key.to_string(), (value.clone(), t + ttl_ms)));
        Ok(())
    }

    pub fn cache_delete(key: &str) {
        with(|s| s.cache.remove(key));
    }

    pub fn import(source: String) -> Result<u64, ServiceError> {
        with(|s| {
            if let Some(i) = s.key_sources.iter().position(|k| *k == source) {
                return Ok(i as u64 + 1);
            }
            s.key_sources.push(source);
            Ok(s.key_sources.len() as u64)
        })
    }

    pub fn verify(alg: &str, key: u64, msg: &[u8], sig: &[u8]) -> Result<bool, ServiceError> {
        let (source, verifier) = with(|s| {
            (
                key.checked_sub(1)
                    .and_then(|i| s.key_sources.get(i as usize).cloned()),
                s.verifier,
            )
        });
        let source = source.ok_or_else(|| ServiceError::Invalid(format!("no key {key}")))?;
        let verifier = verifier.ok_or_else(|| {
            ServiceError::Unavailable("no verifier set: call harness::set_verifier".into())
        })?;
        verifier(&source, alg, msg, sig).map_err(ServiceError::Invalid)
    }
}
