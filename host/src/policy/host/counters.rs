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

#[derive(Debug, Clone)]
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
    /// Whether this state counts a limit of `window_ms` by `algorithm`.
    fn counts_as(&self, window_ms: u64, algorithm: Algorithm) -> bool {
        match self {
            State::Window { window_ms: w, .. } => {
                *w == window_ms && algorithm == Algorithm::SlidingWindow
            }
            State::Bucket { window_ms: w, .. } => {
                *w == window_ms && algorithm == Algorithm::TokenBucket
            }
        }
    }

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
    /// `window_ms`. `now` is Unix milliseconds. A batch of one: a refused
    /// call leaves the state as it was, as in Redis.
    pub fn check_and_add(
        &self,
        key: &str,
        limit: u64,
        window_ms: u64,
        algorithm: Algorithm,
        cost: u64,
        now: u64,
    ) -> Result<Decision, String> {
        let check = LimitCheck {
            key: key.to_string(),
            limit,
            window_ms,
            algorithm,
        };
        let mut d = self.check_all(std::slice::from_ref(&check), cost, now, true)?;
        Ok(d.remove(0))
    }

    /// Check every limit for `cost`; with `commit`, add it to all of them
    /// if each has room, and to none otherwise. Atomic: the shards of all
    /// the keys are held together (taken in order). A key given twice is
    /// checked twice, the second time with the first's count. Returns one
    /// decision per limit; an allowing one in a refused batch says what
    /// would have been left.
    pub fn check_all(
        &self,
        limits: &[LimitCheck],
        cost: u64,
        now: u64,
        commit: bool,
    ) -> Result<Vec<Decision>, String> {
        if limits.len() > MAX_BATCH {
            return Err(format!(
                "{} limits in one check: at most {MAX_BATCH}",
                limits.len()
            ));
        }
        for l in limits {
            validate(&l.key, l.window_ms)?;
        }
        if let [l] = limits {
            // One limit (the common case): one shard, nothing to gather.
            let mut shard = self.shards[shard_of(&l.key)]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut state = current(
                shard.map.get(&l.key),
                l.limit,
                l.window_ms,
                l.algorithm,
                now,
            );
            let d = decide(&mut state, l.limit, cost, now);
            if commit && d.allowed {
                shard.tick(now);
                match shard.map.get_mut(&l.key) {
                    Some(s) => *s = state,
                    None => {
                        shard.map.insert(l.key.clone(), state);
                    }
                }
            }
            return Ok(vec![d]);
        }
        let mut order: Vec<usize> = limits.iter().map(|l| shard_of(&l.key)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<_> = order
            .iter()
            .map(|&i| self.shards[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let held = |key: &str| order.binary_search(&shard_of(key)).expect("locked");
        // The states as this batch leaves them (a key given twice: once).
        let mut work: Vec<(&str, State)> = Vec::with_capacity(limits.len());
        let mut decisions = Vec::with_capacity(limits.len());
        for l in limits {
            let seen = work.iter().position(|(k, _)| *k == l.key);
            let existing = match seen {
                Some(i) => Some(&work[i].1),
                None => guards[held(&l.key)].map.get(&l.key),
            };
            let mut state = current(existing, l.limit, l.window_ms, l.algorithm, now);
            decisions.push(decide(&mut state, l.limit, cost, now));
            match seen {
                Some(i) => work[i].1 = state,
                None => work.push((&l.key, state)),
            }
        }
        if commit && decisions.iter().all(|d| d.allowed) {
            for g in guards.iter_mut() {
                g.tick(now);
            }
            for (key, state) in work {
                guards[held(key)].map.insert(key.to_string(), state);
            }
        }
        Ok(decisions)
    }
}

/// One limit of [`Counters::check_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    pub key: String,
    pub limit: u64,
    pub window_ms: u64,
    pub algorithm: Algorithm,
}

/// Most limits checked together.
pub const MAX_BATCH: usize = 32;

fn validate(key: &str, window_ms: u64) -> Result<(), String> {
    if window_ms == 0 || window_ms > MAX_WINDOW_MS {
        return Err(format!("window of {window_ms} ms: must be 1 ms to 1 day"));
    }
    if key.len() > 1024 {
        return Err("key longer than 1024 bytes".into());
    }
    Ok(())
}

fn shard_of(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Shard {
    fn tick(&mut self, now: u64) {
        self.ops += 1;
        if self.ops.is_multiple_of(4096) {
            // Forget limits idle for a whole window (they are back to full).
            self.map.retain(|_, s| s.idle_since() + 1 > now);
        }
    }
}

/// The state a check starts from: `existing` if it counts the same way (a
/// key reused with another window or algorithm starts afresh).
fn current(
    existing: Option<&State>,
    limit: u64,
    window_ms: u64,
    algorithm: Algorithm,
    now: u64,
) -> State {
    match existing {
        Some(s) if s.counts_as(window_ms, algorithm) => s.clone(),
        _ => match algorithm {
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
        },
    }
}

fn decide(state: &mut State, limit: u64, cost: u64, now: u64) -> Decision {
    match state {
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
        let limit = bindings::limits::Limit {
            key,
            limit,
            window_ms,
            algorithm,
        };
        let mut d = self.check_limits(vec![limit], cost).await?;
        Ok(d.remove(0))
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
        quota_refund(&services, &key, period_start_ms, period_end_ms, cost).await
    }
}

impl bindings::limits::Host for StepState {
    async fn check_all_and_add(
        &mut self,
        limits: Vec<bindings::limits::Limit>,
        cost: u64,
    ) -> Result<Vec<bindings::counters::Decision>, ServiceError> {
        self.check_limits(limits, cost).await
    }
}

impl StepState {
    /// `counters.check-and-add` (one limit) and `limits.check-all-and-add`.
    async fn check_limits(
        &mut self,
        limits: Vec<bindings::limits::Limit>,
        cost: u64,
    ) -> Result<Vec<bindings::counters::Decision>, ServiceError> {
        self.grant("counters")?;
        if limits.len() > MAX_BATCH {
            return Err(ServiceError::Invalid(format!(
                "{} limits in one check: at most {MAX_BATCH}",
                limits.len()
            )));
        }
        let mut checks = Vec::with_capacity(limits.len());
        for l in limits {
            let key = self.api_key(&l.key);
            validate(&key, l.window_ms).map_err(ServiceError::Invalid)?;
            checks.push(LimitCheck {
                key,
                limit: l.limit,
                window_ms: l.window_ms,
                algorithm: match l.algorithm {
                    bindings::counters::Algorithm::SlidingWindow => Algorithm::SlidingWindow,
                    bindings::counters::Algorithm::TokenBucket => Algorithm::TokenBucket,
                },
            });
        }
        let services = self.services.clone();
        let decisions = check_all(&services, &checks, cost, now_ms()).await?;
        Ok(decisions.into_iter().map(to_decision).collect())
    }
}

/// Check every limit and count `cost` on all of them if each has room, on
/// none otherwise: in Redis in cluster mode (one script), falling back as
/// `[cluster] rate-limits` and `quotas` say, else on this node.
async fn check_all(
    services: &crate::policy::host::Services,
    checks: &[LimitCheck],
    cost: u64,
    now: u64,
) -> Result<Vec<Decision>, ServiceError> {
    let Some(cluster) = &services.cluster else {
        return check_all_here(services, checks, cost, now);
    };
    let day_start = now - now % MAX_WINDOW_MS;
    // Lua's numbers are doubles: past 2^53 a limit is as good as none, and
    // is counted as 2^53.
    const EXACT: u64 = 1 << 53;
    let shared: Vec<crate::cluster::RateCheck> = checks
        .iter()
        .map(|c| crate::cluster::RateCheck {
            key: c.key.clone(),
            algorithm: match c.algorithm {
                _ if c.window_ms == MAX_WINDOW_MS => crate::cluster::RateAlgorithm::Period {
                    start: day_start,
                    end: day_start + MAX_WINDOW_MS,
                },
                Algorithm::SlidingWindow => crate::cluster::RateAlgorithm::SlidingWindow,
                Algorithm::TokenBucket => crate::cluster::RateAlgorithm::TokenBucket,
            },
            limit: c.limit.min(EXACT),
            window_ms: c.window_ms,
        })
        .collect();
    match cluster
        .rate_check_all(&shared, cost.min(EXACT), None, true)
        .await
    {
        Ok(ds) => Ok(checks
            .iter()
            .zip(ds)
            .map(|(c, d)| {
                let (reset_ms, retry_after_ms) = if c.window_ms == MAX_WINDOW_MS {
                    let reset = (day_start + MAX_WINDOW_MS) - now;
                    (reset, if d.allowed { 0 } else { reset })
                } else {
                    (d.reset_ms, d.retry_after_ms)
                };
                Decision {
                    allowed: d.allowed,
                    limit: c.limit,
                    remaining: d.remaining,
                    reset_ms,
                    retry_after_ms,
                }
            })
            .collect()),
        Err(e) => {
            let metrics = crate::observe::metrics::global();
            let spec = cluster.spec();
            let days = checks.iter().any(|c| c.window_ms == MAX_WINDOW_MS);
            let rates = checks.iter().any(|c| c.window_ms != MAX_WINDOW_MS);
            let closed = crate::cluster::FailMode::Closed;
            if days && spec.quotas == closed {
                metrics.redis_fallback("quota_refused");
                return Err(ServiceError::Unavailable(e.to_string()));
            }
            if rates && spec.rate_limits == closed {
                metrics.redis_fallback("rate_limit_refused");
                return Err(ServiceError::Unavailable(e.to_string()));
            }
            if days {
                metrics.redis_fallback("quota_local");
            }
            if rates {
                metrics.redis_fallback("rate_limit_local");
            }
            // This node alone: a day in its store, the shorter limits at
            // its share of each; reported against the whole limit.
            let share = u64::from(spec.local_share);
            let local: Vec<LimitCheck> = checks
                .iter()
                .map(|c| LimitCheck {
                    limit: if c.window_ms == MAX_WINDOW_MS {
                        c.limit
                    } else {
                        c.limit.saturating_mul(share).div_ceil(100)
                    },
                    ..c.clone()
                })
                .collect();
            let ds = check_all_here(services, &local, cost, now)?;
            Ok(ds
                .into_iter()
                .zip(checks)
                .map(|(d, c)| Decision {
                    limit: c.limit,
                    ..d
                })
                .collect())
        }
    }
}

/// [`check_all`] on this node. A window of exactly one day is counted
/// durably in the store, as a quota of the current UTC day (a restart does
/// not hand out a fresh day): those first, given back if a later limit
/// refuses; then the others together in memory.
fn check_all_here(
    services: &crate::policy::host::Services,
    checks: &[LimitCheck],
    cost: u64,
    now: u64,
) -> Result<Vec<Decision>, ServiceError> {
    let day = |c: &&LimitCheck| c.window_ms == MAX_WINDOW_MS;
    let start = now - now % MAX_WINDOW_MS;
    let end = start + MAX_WINDOW_MS;
    let quotas = &services.quotas;
    let mut durable = Vec::new();
    let mut charged: Vec<&str> = Vec::new();
    let mut refused = false;
    let give_back = |charged: &[&str]| {
        for key in charged {
            if let Err(e) = quotas.refund(key, start, end, cost) {
                tracing::warn!("rate limit: giving back a day's count failed: {e}");
            }
        }
    };
    for c in checks.iter().filter(day) {
        // After a refusal, the rest are only looked at.
        let charge = if refused { 0 } else { cost };
        let d = match quotas.check_and_add(&c.key, c.limit, start, end, charge, now) {
            Ok(d) => d,
            Err(e) => {
                give_back(&charged);
                return Err(ServiceError::Unavailable(e));
            }
        };
        if charge == 0 {
            durable.push(Decision {
                allowed: d.remaining >= cost,
                ..d
            });
            continue;
        }
        if d.allowed {
            charged.push(&c.key);
        } else {
            refused = true;
        }
        durable.push(d);
    }
    let rate: Vec<LimitCheck> = checks.iter().filter(|c| !day(c)).cloned().collect();
    let rated = match services.counters.check_all(&rate, cost, now, !refused) {
        Ok(d) => d,
        Err(e) => {
            give_back(&charged);
            return Err(ServiceError::Invalid(e));
        }
    };
    if refused || rated.iter().any(|d| !d.allowed) {
        give_back(&charged);
    }
    // Back in the order asked.
    let (mut durable, mut rated) = (durable.into_iter(), rated.into_iter());
    Ok(checks
        .iter()
        .map(|c| {
            if day(&c) {
                durable.next()
            } else {
                rated.next()
            }
            .expect("a decision per limit")
        })
        .collect())
}

/// A quota refund: in Redis in cluster mode (falling back as `[cluster]
/// quotas` says), else in this node's store.
async fn quota_refund(
    services: &crate::policy::host::Services,
    key: &str,
    start: u64,
    end: u64,
    cost: u64,
) -> Result<u64, ServiceError> {
    if let Some(cluster) = &services.cluster {
        if end <= start {
            return Err(ServiceError::Invalid(format!(
                "period {start}..{end} is empty"
            )));
        }
        match cluster.quota_refund(key, start, cost).await {
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
        .refund(key, start, end, cost)
        .map_err(ServiceError::Unavailable)
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

    /// The host services over a store in `dir`.
    fn services_in(dir: &std::path::Path) -> crate::policy::host::Services {
        crate::policy::host::Services::new(crate::policy::host::ServiceSettings {
            store: Some(Store::open(dir).unwrap()),
            cache_bytes: 1 << 20,
            sink_path: None,
            outbound_ca: None,
        })
        .unwrap()
    }

    fn limit(key: &str, limit: u64, window_ms: u64, algorithm: Algorithm) -> LimitCheck {
        LimitCheck {
            key: key.into(),
            limit,
            window_ms,
            algorithm,
        }
    }

    /// A batch counts on every limit or on none: a call refused by one
    /// limit leaves the others as they were; a check without commit counts
    /// nothing; a key given twice counts twice; too many limits are refused.
    #[test]
    fn a_batch_counts_on_every_limit_or_on_none() {
        let c = Counters::default();
        let sw = Algorithm::SlidingWindow;
        let batch = [limit("second", 2, 1000, sw), limit("minute", 5, 60_000, sw)];
        let now = 1_700_000_040_000; // the start of a second and a minute
        for left in [(1, 4), (0, 3)] {
            let d = c.check_all(&batch, 1, now, true).unwrap();
            assert!(d.iter().all(|d| d.allowed));
            assert_eq!((d[0].remaining, d[1].remaining), left);
        }
        // Refused by the second; the minute says what would have been left.
        let d = c.check_all(&batch, 1, now + 10, true).unwrap();
        assert!(!d[0].allowed && d[1].allowed, "{d:?}");
        assert_eq!(d[0].retry_after_ms, 1490);
        assert_eq!(d[1].remaining, 2);
        // ... and it was not counted: three more fit in the minute.
        let d = c.check_all(&batch[1..], 3, now + 10, false).unwrap();
        assert!(d[0].allowed, "{d:?}");
        assert_eq!(d[0].remaining, 0);
        // Without commit, nothing was counted either.
        let next = now + 2000;
        for _ in 0..3 {
            let d = c.check_all(&batch, 1, next, false).unwrap();
            assert!(d.iter().all(|d| d.allowed));
            assert_eq!((d[0].remaining, d[1].remaining), (1, 2));
        }
        // The minute refuses now and then.
        for _ in 0..2 {
            assert!(c.check_all(&batch, 1, next, true).unwrap()[1].allowed);
        }
        let last = next + 2000;
        assert!(c.check_all(&batch, 1, last, true).unwrap()[1].allowed);
        let d = c.check_all(&batch, 1, last, true).unwrap();
        assert!(d[0].allowed && !d[1].allowed, "{d:?}");
        assert_eq!(
            c.check_and_add("second", 2, 1000, sw, 1, last)
                .unwrap()
                .remaining,
            0,
            "the second's refused call was counted"
        );
        // A key twice: the second check sees the first's count.
        let twice = [limit("twice", 1, 1000, sw), limit("twice", 1, 1000, sw)];
        let d = c.check_all(&twice, 1, now, true).unwrap();
        assert!(d[0].allowed && !d[1].allowed, "{d:?}");
        assert!(
            c.check_and_add("twice", 1, 1000, sw, 1, now)
                .unwrap()
                .allowed
        );
        // Bounds.
        let many: Vec<_> = (0..=MAX_BATCH)
            .map(|i| limit(&i.to_string(), 1, 1000, sw))
            .collect();
        assert!(c.check_all(&many, 1, now, true).is_err());
        assert!(c.check_all(&[limit("w", 1, 0, sw)], 1, now, true).is_err());
        assert!(c.check_all(&[], 1, now, true).unwrap().is_empty());
    }

    /// Threads racing batches of three limits over shared shards: exactly
    /// the tightest limit's calls pass, and the others counted exactly those.
    #[test]
    fn racing_batches_count_exactly_on_every_limit() {
        let c = std::sync::Arc::new(Counters::default());
        let sw = Algorithm::SlidingWindow;
        let batch = std::sync::Arc::new(vec![
            limit("loose", 1000, 60_000, sw),
            limit("tight", 137, 60_000, sw),
            limit("bucket", 500, 60_000, Algorithm::TokenBucket),
        ]);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, batch) = (c.clone(), batch.clone());
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| {
                            let d = c.check_all(&batch, 1, 120_000, true).unwrap();
                            d.iter().all(|d| d.allowed)
                        })
                        .count()
                })
            })
            .collect();
        let passed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(passed, 137);
        let d = c.check_all(&batch, 1, 120_000, false).unwrap();
        assert_eq!(
            d.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [1000 - 138, 0, 500 - 138]
        );
    }

    /// On one node a day-long limit is a durable count, given back when a
    /// shorter limit refuses the call; the batch's decisions come back in
    /// the order asked.
    #[test]
    fn a_day_long_limit_in_a_batch_is_durable_and_given_back_on_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let services = services_in(dir.path());
        let sw = Algorithm::SlidingWindow;
        let batch = [
            limit("minute", 2, 60_000, sw),
            limit("day", 3, MAX_WINDOW_MS, sw),
        ];
        let now = 1_700_006_400_000; // midnight UTC
        let day_count = |now| {
            services
                .quotas
                .check_and_add(
                    "day",
                    3,
                    now - now % MAX_WINDOW_MS,
                    now - now % MAX_WINDOW_MS + MAX_WINDOW_MS,
                    0,
                    now,
                )
                .unwrap()
                .remaining
        };
        for _ in 0..2 {
            let d = check_all_here(&services, &batch, 1, now).unwrap();
            assert!(d.iter().all(|d| d.allowed), "{d:?}");
        }
        let d = check_all_here(&services, &batch, 1, now).unwrap();
        assert!(!d[0].allowed && d[1].allowed, "{d:?}");
        assert_eq!(d[1].reset_ms, MAX_WINDOW_MS);
        assert_eq!(day_count(now), 1, "the refused call was given back");
        let later = now + 120_000;
        assert!(check_all_here(&services, &batch, 1, later)
            .unwrap()
            .iter()
            .all(|d| d.allowed));
        let d = check_all_here(&services, &batch, 1, later).unwrap();
        assert!(d[0].allowed && !d[1].allowed, "{d:?}");
        assert_eq!(d[1].retry_after_ms, MAX_WINDOW_MS - 120_000);
        // The minute did not count the call the day refused.
        let minute = check_all_here(&services, &batch[..1], 1, later).unwrap();
        assert_eq!(minute[0].remaining, 0);
        assert!(minute[0].allowed);
        assert_eq!(day_count(later), 0);
    }

    /// Batches through Redis decide as the in-memory batches do, call after
    /// call with random limits, costs and times, committed or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_batches_decide_as_the_in_memory_batches() {
        use crate::cluster::{RateAlgorithm as R, RateCheck};
        let r = crate::cluster::testing::TestRedis::start();
        let c = crate::cluster::testing::connected(&r.spec("command-timeout = \"5s\"")).await;
        let local = Counters::default();
        // Keys fixed per algorithm and window, as the plugin makes them.
        let pool: Vec<LimitCheck> = [1, 7, 1000, 60_000]
            .into_iter()
            .flat_map(|w| {
                [Algorithm::SlidingWindow, Algorithm::TokenBucket]
                    .into_iter()
                    .map(move |a| limit(&format!("{a:?}-{w}"), 0, w, a))
            })
            .collect();
        let mut seed = 5;
        let mut now = 1_700_000_000_000;
        let (mut refused, mut compared) = (0, 0);
        for call in 0..600 {
            let n = 1 + (lcg(&mut seed) % 4) as usize;
            let batch: Vec<LimitCheck> = (0..n)
                .map(|_| {
                    let mut l = pool[(lcg(&mut seed) % pool.len() as u64) as usize].clone();
                    l.limit = [1, 3, 10, 97][(lcg(&mut seed) % 4) as usize];
                    l
                })
                .collect();
            let cost = 1 + lcg(&mut seed) % 3;
            let commit = !lcg(&mut seed).is_multiple_of(5);
            let a = local.check_all(&batch, cost, now, commit).unwrap();
            let shared: Vec<RateCheck> = batch
                .iter()
                .map(|l| RateCheck {
                    key: l.key.clone(),
                    algorithm: match l.algorithm {
                        Algorithm::SlidingWindow => R::SlidingWindow,
                        Algorithm::TokenBucket => R::TokenBucket,
                    },
                    limit: l.limit,
                    window_ms: l.window_ms,
                })
                .collect();
            let b = c
                .rate_check_all(&shared, cost, Some(now), commit)
                .await
                .unwrap();
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                assert_eq!(
                    (a.allowed, a.remaining, a.reset_ms, a.retry_after_ms),
                    (b.allowed, b.remaining, b.reset_ms, b.retry_after_ms),
                    "call {call}, limit {i} of {batch:?}, cost {cost}, commit {commit}"
                );
                compared += 1;
            }
            refused += usize::from(a.iter().any(|d| !d.allowed));
            now += lcg(&mut seed) % 400;
        }
        assert!(compared > 1000, "{compared}");
        assert!(
            refused > 100,
            "only {refused} refusals: the sweep tests little"
        );
    }

    /// Through the host's path in cluster mode: a batch with a day-long
    /// limit is one script in Redis per call, and a refused call counts on
    /// no limit; with Redis gone, `rate-limits = "open"` and `quotas =
    /// "open"` count on this node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_one_round_trip_to_redis_and_counts_all_or_nothing() {
        let r = crate::cluster::testing::TestRedis::start();
        let c = crate::cluster::testing::connected(
            &r.spec("command-timeout = \"5s\"\nrate-limits = \"open\"\nquotas = \"open\""),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let services = services_in(dir.path()).with_cluster(c);
        let batch = [
            limit("second", 1000, 1000, Algorithm::TokenBucket),
            limit("minute", 5, 60_000, Algorithm::SlidingWindow),
            limit("day", 7, MAX_WINDOW_MS, Algorithm::SlidingWindow),
        ];
        assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]).trim(), "+OK");
        let now = now_ms();
        let mut passed = 0;
        for _ in 0..8 {
            let d = check_all(&services, &batch, 1, now).await.unwrap();
            passed += usize::from(d.iter().all(|d| d.allowed));
            assert_eq!(d[0].limit, 1000);
            assert!(d[2].reset_ms <= MAX_WINDOW_MS, "{d:?}");
        }
        // Unless the minute turned in between, which lets one more pass.
        assert!((5..=6).contains(&passed), "{passed}");
        let stats = r.cmd(&["INFO", "commandstats"]);
        let calls = |cmd: &str| -> u64 {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
                .and_then(|l| l.split(',').next())
                .map_or(0, |n| n.parse().unwrap())
        };
        // One EVALSHA per call, and the first time two more round trips:
        // Redis did not know the script (NOSCRIPT) and was sent it.
        let failed = |cmd: &str| -> u64 {
            stats
                .lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:")))
                .and_then(|l| l.split("failed_calls=").nth(1))
                .map_or(0, |n| n.trim().parse().unwrap())
        };
        assert_eq!(calls("evalsha") - failed("evalsha"), 8, "{stats}");
        assert!(
            failed("evalsha") <= 1 && calls("script|load") <= 1,
            "{stats}"
        );
        // The day counted the calls that passed, and only those.
        let start = now - now % MAX_WINDOW_MS;
        let keys = r.cmd(&["KEYS", &format!("*q:{start}")]);
        let key = keys
            .lines()
            .find(|l| l.contains("day"))
            .expect(&keys)
            .to_string();
        assert_eq!(
            r.cmd(&["GET", &key]).lines().nth(1),
            Some(passed.to_string().as_str()),
            "{key}"
        );
        // Redis gone: this node counts alone (a day in its store).
        drop(r);
        let d = check_all(&services, &batch, 1, now).await.unwrap();
        assert!(d.iter().all(|d| d.allowed), "{d:?}");
        assert_eq!(d[2].remaining, 6);
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
