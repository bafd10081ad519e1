//! `tollgate:policy/counters`: rate counters in memory (sliding window,
//! token bucket) and calendar quotas persisted in the store. Every check is
//! an atomic check-and-add: of N callers racing one limit, exactly as many
//! as the limit allows pass. Keys are in the calling API's namespace.

use super::clock::now_ms;
use crate::policy::bindings;
use crate::policy::bindings::service_types::ServiceError;
use crate::policy::StepState;
use crate::store::Store;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Longest in-memory window.
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
    pub retry_after_ms: u64,
}

/// Which algorithm a limit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    SlidingWindow,
    TokenBucket,
}

#[derive(Debug)]
enum State {
    Window {
        window_ms: u64,
        start: u64,
        prev: u64,
        curr: u64,
    },
    Bucket {
        window_ms: u64,
        tokens: f64,
        last: u64,
    },
}

impl State {
    fn idle_since(&self) -> u64 {
        match self {
            State::Window {
                start, window_ms, ..
            } => start + window_ms,
            State::Bucket {
                last, window_ms, ..
            } => last + window_ms,
        }
    }
}

const SHARDS: usize = 32;

/// In-memory counters, sharded to keep lock contention low.
pub struct Counters {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, State>,
    ops: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl Counters {
    /// Atomically add `cost` to `key` if that stays within `limit` per
    /// `window_ms`. `now` is Unix milliseconds.
    pub fn check_and_add(
        &self,
        key: &str,
        limit: u64,
        window_ms: u64,
        algorithm: Algorithm,
        cost: u64,
        now: u64,
    ) -> Result<Decision, String> {
        if window_ms == 0 || window_ms > MAX_WINDOW_MS {
            return Err(format!("window of {window_ms} ms: must be 1 ms to 1 day"));
        }
        if key.len() > 1024 {
            return Err("key longer than 1024 bytes".into());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        shard.ops += 1;
        if shard.ops.is_multiple_of(4096) {
            // Forget limits idle for a whole window (they are back to full).
            shard.map.retain(|_, s| s.idle_since() + 1 > now);
        }
        // A key reused with another window or algorithm starts afresh.
        let fresh = || match algorithm {
            Algorithm::SlidingWindow => State::Window {
                window_ms,
                start: now - now % window_ms,
                prev: 0,
                curr: 0,
            },
            Algorithm::TokenBucket => State::Bucket {
                window_ms,
                tokens: limit as f64,
                last: now,
            },
        };
        let state = shard.map.entry(key.to_string()).or_insert_with(fresh);
        let matches = match state {
            State::Window { window_ms: w, .. } => {
                *w == window_ms && algorithm == Algorithm::SlidingWindow
            }
            State::Bucket { window_ms: w, .. } => {
                *w == window_ms && algorithm == Algorithm::TokenBucket
            }
        };
        if !matches {
            *state = fresh();
        }
        Ok(match state {
            State::Window {
                window_ms,
                start,
                prev,
                curr,
            } => sliding(*window_ms, start, prev, curr, limit, cost, now),
            State::Bucket {
                window_ms,
                tokens,
                last,
            } => bucket(*window_ms, tokens, last, limit, cost, now),
        })
    }
}

fn sliding(
    window: u64,
    start: &mut u64,
    prev: &mut u64,
    curr: &mut u64,
    limit: u64,
    cost: u64,
    now: u64,
) -> Decision {
    let aligned = now - now % window;
    if aligned != *start {
        *prev = if aligned == *start + window { *curr } else { 0 };
        *curr = 0;
        *start = aligned;
    }
    let elapsed = now - *start;
    let estimate = weighted(*prev, window - elapsed, window).saturating_add(*curr);
    if estimate.saturating_add(cost) <= limit {
        *curr += cost;
        Decision {
            allowed: true,
            limit,
            remaining: limit - estimate - cost,
            reset_ms: until_empty(window, elapsed, *prev, *curr),
            retry_after_ms: 0,
        }
    } else {
        Decision {
            allowed: false,
            limit,
            remaining: limit.saturating_sub(estimate),
            reset_ms: until_empty(window, elapsed, *prev, *curr),
            retry_after_ms: until_room(window, elapsed, *prev, *curr, limit, cost),
        }
    }
}

/// The previous window's count as seen `left` ms before the current window
/// ends: `ceil(count * left / window)`, in integers so that the check and
/// the retry time computed from it agree to the millisecond.
fn weighted(count: u64, left: u64, window: u64) -> u64 {
    (u128::from(count) * u128::from(left)).div_ceil(u128::from(window)) as u64
}

/// The first millisecond `e` into a window, not before `from`, at which a
/// previous window of `prev` weighs at most `room`: `weighted(prev, window -
/// e, window) <= room`, that is `prev * (window - e) <= room * window`.
/// Always at most `window` (where the previous window weighs nothing).
fn first_fit(window: u64, prev: u64, room: u64, from: u64) -> u64 {
    if prev == 0 {
        return from;
    }
    let span = (u128::from(room) * u128::from(window) / u128::from(prev)).min(u128::from(window));
    (window - span as u64).max(from)
}

/// Milliseconds from `elapsed` into the current window until a call of
/// `cost` passes, if no other call is counted meanwhile: later in this
/// window once `prev` has decayed enough, or in the next one, where `curr`
/// is the previous window and decays in turn. A cost above the limit never
/// passes: then the time until the window is empty.
fn until_room(window: u64, elapsed: u64, prev: u64, curr: u64, limit: u64, cost: u64) -> u64 {
    if cost > limit {
        return until_empty(window, elapsed, prev, curr).max(1);
    }
    if let Some(room) = limit.checked_sub(curr.saturating_add(cost)) {
        let at = first_fit(window, prev, room, elapsed);
        if at < window {
            return (at - elapsed).max(1);
        }
    }
    (window - elapsed) + first_fit(window, curr, limit - cost, 0)
}

/// Milliseconds from `elapsed` into the current window until nothing
/// counted so far weighs anything: the end of the next window if this one
/// counted calls, else the end of this one if the previous did.
fn until_empty(window: u64, elapsed: u64, prev: u64, curr: u64) -> u64 {
    if curr > 0 {
        2 * window - elapsed
    } else if prev > 0 {
        window - elapsed
    } else {
        0
    }
}

/// Tokens a check may be short of `cost` by and still pass: far below one
/// token, far above the rounding of a refill computed in steps.
const TOKEN_SLACK: f64 = 1e-9;

fn bucket(
    window: u64,
    tokens: &mut f64,
    last: &mut u64,
    limit: u64,
    cost: u64,
    now: u64,
) -> Decision {
    let rate = limit as f64 / window as f64; // tokens per ms
    if now > *last {
        *tokens = (*tokens + (now - *last) as f64 * rate).min(limit as f64);
        *last = now;
    }
    let cost_f = cost as f64;
    if *tokens + TOKEN_SLACK >= cost_f {
        *tokens = (*tokens - cost_f).max(0.0);
        let reset_ms = if rate > 0.0 {
            ((limit as f64 - *tokens) / rate).ceil() as u64
        } else {
            0
        };
        Decision {
            allowed: true,
            limit,
            remaining: tokens.floor() as u64,
            reset_ms,
            retry_after_ms: 0,
        }
    } else {
        let wait = if rate > 0.0 && cost <= limit {
            // The refill the next check computes, `tokens + wait * rate`,
            // must reach `cost` at `now + wait`: step past any rounding.
            let mut wait = ((cost_f - *tokens) / rate).ceil() as u64;
            while *tokens + wait as f64 * rate + TOKEN_SLACK < cost_f {
                wait += 1;
            }
            while wait > 1 && *tokens + (wait - 1) as f64 * rate + TOKEN_SLACK >= cost_f {
                wait -= 1;
            }
            wait
        } else {
            window
        };
        Decision {
            allowed: false,
            limit,
            remaining: tokens.floor() as u64,
            reset_ms: ((limit as f64 - *tokens) / rate.max(f64::MIN_POSITIVE)).ceil() as u64,
            retry_after_ms: wait.max(1),
        }
    }
}

/// Calendar quotas, persisted: a restart does not reset them.
pub struct Quotas {
    store: Option<Store>,
    lock: Mutex<()>,
}

impl Quotas {
    pub fn new(store: Option<Store>) -> Self {
        Quotas {
            store,
            lock: Mutex::new(()),
        }
    }

    /// Atomically add `cost` for the period `[start, end)` if that stays
    /// within `limit`; durable before it returns `allowed`.
    pub fn check_and_add(
        &self,
        key: &str,
        limit: u64,
        start: u64,
        end: u64,
        cost: u64,
        now: u64,
    ) -> Result<Decision, String> {
        if end <= start || !(start..end).contains(&now) {
            return Err(format!(
                "period {start}..{end} does not contain the current time {now}"
            ));
        }
        if key.len() > 1024 {
            return Err("key longer than 1024 bytes".into());
        }
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| "no store in this process (tollgate check)".to_string())?;
        let reset_ms = end - now;
        let k = format!("{key}\0{start}");
        // One writer at a time in this process; the store's compare-and-swap
        // keeps the count exact regardless.
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = store.quota_get(k.as_bytes()).map_err(|e| e.to_string())?;
        if current.saturating_add(cost) > limit {
            return Ok(Decision {
                allowed: false,
                limit,
                remaining: limit.saturating_sub(current),
                reset_ms,
                retry_after_ms: reset_ms,
            });
        }
        store
            .quota_set_durable(k.as_bytes(), current + cost, end)
            .map_err(|e| e.to_string())?;
        Ok(Decision {
            allowed: true,
            limit,
            remaining: limit - current - cost,
            reset_ms,
            retry_after_ms: 0,
        })
    }
}

impl Quotas {
    /// Atomically take `cost` back from the count of the period `[start,
    /// end)`, never below zero; durable before it returns. A period with
    /// nothing counted is left alone. Returns the count after the refund.
    pub fn refund(&self, key: &str, start: u64, end: u64, cost: u64) -> Result<u64, String> {
        if end <= start {
            return Err(format!("period {start}..{end} is empty"));
        }
        if key.len() > 1024 {
            return Err("key longer than 1024 bytes".into());
        }
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| "no store in this process (tollgate check)".to_string())?;
        let k = format!("{key}\0{start}");
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = store.quota_get(k.as_bytes()).map_err(|e| e.to_string())?;
        if current == 0 || cost == 0 {
            return Ok(current);
        }
        let left = current.saturating_sub(cost);
        store
            .quota_set_durable(k.as_bytes(), left, end)
            .map_err(|e| e.to_string())?;
        Ok(left)
    }
}

fn to_decision(d: crate::policy::host::counters::Decision) -> bindings::counters::Decision {
    bindings::counters::Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_ms: d.reset_ms,
        retry_after_ms: d.retry_after_ms,
    }
}

impl bindings::counters::Host for StepState {
    async fn check_and_add(
        &mut self,
        key: String,
        limit: u64,
        window_ms: u64,
        algorithm: bindings::counters::Algorithm,
        cost: u64,
    ) -> Result<bindings::counters::Decision, ServiceError> {
        self.grant("counters")?;
        use crate::policy::host::counters::Algorithm as A;
        let alg = match algorithm {
            bindings::counters::Algorithm::SlidingWindow => A::SlidingWindow,
            bindings::counters::Algorithm::TokenBucket => A::TokenBucket,
        };
        let key = self.api_key(&key);
        let now = now_ms();
        let services = self.services.clone();
        if window_ms == crate::policy::host::counters::MAX_WINDOW_MS {
            // A day-long window is counted durably (as a fixed, aligned
            // window), so a restart does not hand out a fresh day.
            let start = now - now % window_ms;
            return quota_check(&services, &key, limit, start, start + window_ms, cost, now)
                .await
                .map(to_decision);
        }
        if let Some(cluster) = &services.cluster {
            if window_ms == 0 || window_ms > MAX_WINDOW_MS {
                return Err(ServiceError::Invalid(format!(
                    "window of {window_ms} ms: must be 1 ms to 1 day"
                )));
            }
            if key.len() > 1024 {
                return Err(ServiceError::Invalid("key longer than 1024 bytes".into()));
            }
            let ra = match alg {
                A::SlidingWindow => crate::cluster::RateAlgorithm::SlidingWindow,
                A::TokenBucket => crate::cluster::RateAlgorithm::TokenBucket,
            };
            // Lua's numbers are doubles: past 2^53 a limit is as good as
            // none, and is counted as 2^53.
            const EXACT: u64 = 1 << 53;
            match cluster
                .rate_check(&key, ra, limit.min(EXACT), window_ms, cost.min(EXACT), None)
                .await
            {
                Ok(d) => {
                    return Ok(bindings::counters::Decision {
                        allowed: d.allowed,
                        limit,
                        remaining: d.remaining,
                        reset_ms: d.reset_ms,
                        retry_after_ms: d.retry_after_ms,
                    })
                }
                Err(e) => {
                    let metrics = crate::observe::metrics::global();
                    if cluster.spec().rate_limits == crate::cluster::FailMode::Closed {
                        metrics.redis_fallback("rate_limit_refused");
                        return Err(ServiceError::Unavailable(e.to_string()));
                    }
                    metrics.redis_fallback("rate_limit_local");
                    // This node alone, at its share of the limit; reported
                    // against the whole limit.
                    let share = u64::from(cluster.spec().local_share);
                    let local = (limit.saturating_mul(share)).div_ceil(100);
                    return services
                        .counters
                        .check_and_add(&key, local, window_ms, alg, cost, now)
                        .map(|d| {
                            let mut d = to_decision(d);
                            d.limit = limit;
                            d
                        })
                        .map_err(ServiceError::Invalid);
                }
            }
        }
        services
            .counters
            .check_and_add(&key, limit, window_ms, alg, cost, now)
            .map(to_decision)
            .map_err(ServiceError::Invalid)
    }

    async fn quota_check_and_add(
        &mut self,
        key: String,
        limit: u64,
        period_start_ms: u64,
        period_end_ms: u64,
        cost: u64,
    ) -> Result<bindings::counters::Decision, ServiceError> {
        self.grant("counters")?;
        let key = self.api_key(&key);
        let services = self.services.clone();
        quota_check(
            &services,
            &key,
            limit,
            period_start_ms,
            period_end_ms,
            cost,
            now_ms(),
        )
        .await
        .map(to_decision)
    }

    async fn quota_refund(
        &mut self,
        key: String,
        period_start_ms: u64,
        period_end_ms: u64,
        cost: u64,
    ) -> Result<u64, ServiceError> {
        self.grant("counters")?;
        let key = self.api_key(&key);
        let services = self.services.clone();
        if let Some(cluster) = &services.cluster {
            if period_end_ms <= period_start_ms {
                return Err(ServiceError::Invalid(format!(
                    "period {period_start_ms}..{period_end_ms} is empty"
                )));
            }
            match cluster.quota_refund(&key, period_start_ms, cost).await {
                Ok(n) => return Ok(n),
                Err(e) if cluster.spec().quotas == crate::cluster::FailMode::Closed => {
                    return Err(ServiceError::Unavailable(e.to_string()))
                }
                // Open: the unit was counted locally while Redis was away,
                // so give it back there.
                Err(_) => {}
            }
        }
        services
            .quotas
            .refund(&key, period_start_ms, period_end_ms, cost)
            .map_err(ServiceError::Unavailable)
    }
}

/// A quota check: in Redis in cluster mode (falling back as `[cluster]
/// quotas` says), else in this node's store.
async fn quota_check(
    services: &crate::policy::host::Services,
    key: &str,
    limit: u64,
    start: u64,
    end: u64,
    cost: u64,
    now: u64,
) -> Result<Decision, ServiceError> {
    if let Some(cluster) = &services.cluster {
        if end <= start || !(start..end).contains(&now) {
            return Err(ServiceError::Unavailable(format!(
                "period {start}..{end} does not contain the current time {now}"
            )));
        }
        let reset_ms = end - now;
        match cluster.quota_check(key, limit, start, end, cost).await {
            Ok((allowed, count)) => {
                return Ok(Decision {
                    allowed,
                    limit,
                    remaining: limit.saturating_sub(count),
                    reset_ms,
                    retry_after_ms: if allowed { 0 } else { reset_ms },
                })
            }
            Err(e) => {
                let metrics = crate::observe::metrics::global();
                if cluster.spec().quotas == crate::cluster::FailMode::Closed {
                    metrics.redis_fallback("quota_refused");
                    return Err(ServiceError::Unavailable(e.to_string()));
                }
                metrics.redis_fallback("quota_local");
            }
        }
    }
    services
        .quotas
        .check_and_add(key, limit, start, end, cost, now)
        .map_err(ServiceError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_counts_exactly() {
        let c = Counters::default();
        let t = 1_000_000;
        for i in 0..5 {
            let d = c
                .check_and_add("k", 5, 1000, Algorithm::SlidingWindow, 1, t)
                .unwrap();
            assert!(d.allowed, "{i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = c
            .check_and_add("k", 5, 1000, Algorithm::SlidingWindow, 1, t + 10)
            .unwrap();
        assert!(!d.allowed);
        // Not at the window's end (t + 1000), where the five still weigh
        // five: 4/5 of the next window must pass first.
        assert_eq!(d.retry_after_ms, 990 + 200);
        assert_eq!(d.reset_ms, 990 + 1000);
        // Half a window later the previous window still weighs half.
        let d = c
            .check_and_add("k", 5, 1000, Algorithm::SlidingWindow, 1, t + 1500)
            .unwrap();
        assert!(d.allowed);
        // Two windows later: all free.
        let d = c
            .check_and_add("k", 5, 1000, Algorithm::SlidingWindow, 5, t + 3000)
            .unwrap();
        assert!(d.allowed);
    }

    /// A small deterministic generator, so the sweeps below are repeatable.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    /// Fill a limit with calls at irregular times, and at every refusal
    /// check that `retry_after_ms` is exact: a call one millisecond earlier
    /// is still refused, a call at that time passes (and is counted, and the
    /// filling goes on from there).
    fn retry_after_is_exact(algorithm: Algorithm) {
        let mut seed = 7;
        let mut refusals = 0;
        for window in [1, 7, 1000, 2000, 60_000] {
            for limit in [1, 2, 3, 5, 10, 97] {
                for cost in [1, 2, 3] {
                    if cost > limit {
                        continue;
                    }
                    let c = Counters::default();
                    let mut now = 1_700_000_000_000 + lcg(&mut seed) % 100_000;
                    for _ in 0..60 {
                        let d = c
                            .check_and_add("k", limit, window, algorithm, cost, now)
                            .unwrap();
                        if d.allowed {
                            // Mostly quick calls, some pauses.
                            now += match lcg(&mut seed) % 4 {
                                0 => lcg(&mut seed) % (2 * window),
                                _ => lcg(&mut seed) % (window / 10 + 1),
                            };
                            continue;
                        }
                        refusals += 1;
                        let wait = d.retry_after_ms;
                        let what = format!(
                            "{algorithm:?} window {window} limit {limit} cost {cost}: refused at {now}, retry after {wait}"
                        );
                        assert!(wait >= 1, "{what}");
                        assert!(d.reset_ms >= wait, "{what}: reset {}", d.reset_ms);
                        if wait > 1 {
                            let early = c
                                .check_and_add("k", limit, window, algorithm, cost, now + wait - 1)
                                .unwrap();
                            assert!(!early.allowed, "{what}: passed 1 ms early");
                        }
                        now += wait;
                        let on_time = c
                            .check_and_add("k", limit, window, algorithm, cost, now)
                            .unwrap();
                        assert!(on_time.allowed, "{what}: refused again then");
                    }
                }
            }
        }
        assert!(
            refusals > 500,
            "only {refusals} refusals: the sweep tests little"
        );
    }

    #[test]
    fn sliding_window_retry_after_is_exactly_when_the_call_passes() {
        retry_after_is_exact(Algorithm::SlidingWindow);
    }

    #[test]
    fn token_bucket_retry_after_is_exactly_when_the_call_passes() {
        retry_after_is_exact(Algorithm::TokenBucket);
    }

    #[test]
    fn sliding_window_reset_is_when_nothing_counted_weighs_any_more() {
        let c = Counters::default();
        let t = 2_000_000 + 500;
        for _ in 0..3 {
            assert!(
                c.check_and_add("r", 3, 2000, Algorithm::SlidingWindow, 1, t)
                    .unwrap()
                    .allowed
            );
        }
        let d = c
            .check_and_add("r", 3, 2000, Algorithm::SlidingWindow, 1, t)
            .unwrap();
        assert!(!d.allowed);
        // The three weigh fully until the window ends (1500 ms), then decay
        // over the next window: one unit of room after 2/3 of it.
        assert_eq!(d.retry_after_ms, 1500 + 667);
        assert_eq!(d.reset_ms, 1500 + 2000);
        // The whole limit is back at the reset, not a millisecond before.
        assert!(
            !c.check_and_add(
                "r",
                3,
                2000,
                Algorithm::SlidingWindow,
                3,
                t + d.reset_ms - 1
            )
            .unwrap()
            .allowed
        );
        assert!(
            c.check_and_add("r", 3, 2000, Algorithm::SlidingWindow, 3, t + d.reset_ms)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn token_bucket_refills() {
        let c = Counters::default();
        let t = 5_000;
        for _ in 0..10 {
            assert!(
                c.check_and_add("b", 10, 1000, Algorithm::TokenBucket, 1, t)
                    .unwrap()
                    .allowed
            );
        }
        let d = c
            .check_and_add("b", 10, 1000, Algorithm::TokenBucket, 1, t)
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 100);
        assert!(
            c.check_and_add("b", 10, 1000, Algorithm::TokenBucket, 1, t + 100)
                .unwrap()
                .allowed
        );
        // A cost larger than the bucket never passes.
        assert!(
            !c.check_and_add("b", 10, 1000, Algorithm::TokenBucket, 11, t + 10_000)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn racing_threads_get_exactly_the_limit() {
        let c = std::sync::Arc::new(Counters::default());
        let passed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, passed) = (c.clone(), passed.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if c.check_and_add(
                            "race",
                            137,
                            60_000,
                            Algorithm::SlidingWindow,
                            1,
                            120_000,
                        )
                        .unwrap()
                        .allowed
                        {
                            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(passed.load(std::sync::atomic::Ordering::Relaxed), 137);
    }

    /// The Redis scripts decide exactly as the in-memory algorithms: same
    /// allowed, remaining, reset and retry-after, call after call, at the
    /// same irregular times (passed to the script instead of Redis's clock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_scripts_decide_as_the_in_memory_counters() {
        use crate::cluster::RateAlgorithm as R;
        let r = crate::cluster::testing::TestRedis::start();
        let c = crate::cluster::testing::connected(&r.spec("command-timeout = \"5s\"")).await;
        let mut seed = 11;
        let (mut compared, mut refused) = (0, 0);
        for (alg, ra) in [
            (Algorithm::SlidingWindow, R::SlidingWindow),
            (Algorithm::TokenBucket, R::TokenBucket),
        ] {
            for window in [1, 7, 1000, 60_000] {
                for limit in [1, 3, 10, 97] {
                    for cost in [1, 2, 5] {
                        let local = Counters::default();
                        let key = format!("t\0{alg:?}-{window}-{limit}-{cost}");
                        let mut now = 1_700_000_000_000 + lcg(&mut seed) % 100_000;
                        for i in 0..25 {
                            let a = local
                                .check_and_add(&key, limit, window, alg, cost, now)
                                .unwrap();
                            let b = c
                                .rate_check(&key, ra, limit, window, cost, Some(now))
                                .await
                                .unwrap();
                            assert_eq!(
                                (a.allowed, a.remaining, a.reset_ms, a.retry_after_ms),
                                (b.allowed, b.remaining, b.reset_ms, b.retry_after_ms),
                                "{key}, call {i} at {now}: memory vs redis"
                            );
                            compared += 1;
                            refused += usize::from(!a.allowed);
                            now += match lcg(&mut seed) % 4 {
                                0 => lcg(&mut seed) % (2 * window),
                                _ => lcg(&mut seed) % (window / 10 + 1),
                            };
                        }
                    }
                }
            }
        }
        assert_eq!(compared, 2400);
        assert!(
            refused > 400,
            "only {refused} refusals: the sweep tests little"
        );
    }

    /// Racing tasks over Redis get exactly the limit (Redis's own clock).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_calls_through_redis_get_exactly_the_limit() {
        let r = crate::cluster::testing::TestRedis::start();
        let c = crate::cluster::testing::connected(&r.spec("command-timeout = \"5s\"")).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut passed = 0;
                    for _ in 0..100 {
                        let d = c
                            .rate_check(
                                "race",
                                crate::cluster::RateAlgorithm::SlidingWindow,
                                137,
                                3_600_000,
                                1,
                                None,
                            )
                            .await
                            .unwrap();
                        passed += usize::from(d.allowed);
                    }
                    passed
                })
            })
            .collect();
        let mut passed = 0;
        for t in tasks {
            passed += t.await.unwrap();
        }
        // An hour-long window: its turn within the test would let a few
        // more pass (the previous hour decays); a turn is rare, allow it.
        assert!((137..=138).contains(&passed), "{passed} passed");
    }

    #[test]
    fn bad_windows_are_refused() {
        let c = Counters::default();
        assert!(c
            .check_and_add("k", 1, 0, Algorithm::SlidingWindow, 1, 1)
            .is_err());
        assert!(c
            .check_and_add("k", 1, MAX_WINDOW_MS + 1, Algorithm::TokenBucket, 1, 1)
            .is_err());
    }

    #[test]
    fn quotas_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Quotas::new(Some(Store::open(dir.path()).unwrap()));
            for _ in 0..3 {
                assert!(q.check_and_add("c", 3, 0, 1000, 1, 10).unwrap().allowed);
            }
            assert!(!q.check_and_add("c", 3, 0, 1000, 1, 10).unwrap().allowed);
        }
        // sled's background flusher lets go of the lock shortly after drop.
        let store = (0..100)
            .find_map(|_| {
                Store::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("the store reopens");
        let q = Quotas::new(Some(store));
        let d = q.check_and_add("c", 3, 0, 1000, 1, 20).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reset_ms, 980);
        // The next period starts afresh.
        assert!(
            q.check_and_add("c", 3, 1000, 2000, 1, 1500)
                .unwrap()
                .allowed
        );
        assert!(q.check_and_add("c", 3, 0, 1000, 1, 1500).is_err());
    }

    #[test]
    fn quota_refunds_give_units_back_durably_and_never_below_zero() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Quotas::new(Some(Store::open(dir.path()).unwrap()));
            for _ in 0..3 {
                assert!(q.check_and_add("c", 3, 0, 1000, 1, 10).unwrap().allowed);
            }
            assert!(!q.check_and_add("c", 3, 0, 1000, 1, 10).unwrap().allowed);
            assert_eq!(q.refund("c", 0, 1000, 1).unwrap(), 2);
            // The unit given back is there for the next call.
            let d = q.check_and_add("c", 3, 0, 1000, 1, 20).unwrap();
            assert!(d.allowed);
            assert_eq!(d.remaining, 0);
            assert_eq!(q.refund("c", 0, 1000, 2).unwrap(), 1);
            // More than was counted: zero, not below (nor a wrap-around).
            assert_eq!(q.refund("c", 0, 1000, 5).unwrap(), 0);
            assert_eq!(q.refund("c", 0, 1000, 1).unwrap(), 0);
            assert_eq!(
                q.check_and_add("c", 3, 0, 1000, 3, 30).unwrap().remaining,
                0
            );
            assert_eq!(q.refund("c", 0, 1000, 1).unwrap(), 2);
            // Other periods and keys are untouched; nothing counted stays so.
            assert_eq!(q.refund("c", 1000, 2000, 1).unwrap(), 0);
            assert_eq!(q.refund("other", 0, 1000, 1).unwrap(), 0);
            assert!(q.refund("c", 1000, 1000, 1).is_err());
        }
        let store = (0..100)
            .find_map(|_| {
                Store::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("the store reopens");
        // The refund was durable: 2 of 3 used after the restart.
        let q = Quotas::new(Some(store));
        let d = q.check_and_add("c", 3, 0, 1000, 1, 40).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }
}
