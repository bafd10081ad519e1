//! The analytics store: every finished call, aggregated per minute and per
//! combination of dimensions (API, route, method, status, consumer, app,
//! plan, product, key id) into sums and HDR latency histograms, kept in the
//! embedded store and rolled up per hour and per day, with the reports of
//! the admin API ([`report`]).
//!
//! - **Never in the way of a request.** [`Analytics::record`] copies the
//!   call's dimensions into a bounded queue with `try_send`: a full queue
//!   drops the record and counts it ([`Analytics::dropped`]).
//! - **One writer thread** (`tollgate-analytics`) aggregates the queue per
//!   minute in memory, and every `flush-interval` merges what it holds
//!   into the minute, hour and day buckets of the store in one atomic,
//!   durable batch (read, merge, write: it is the only writer). Each
//!   record is in all three resolutions, so reports can mix them.
//! - **Retention**: buckets older than their resolution's retention are
//!   swept, at most once a minute.
//! - **Loss bound**: what a `SIGKILL` or a power loss costs is what the
//!   writer held since its last flush: at most one `flush-interval` of
//!   calls (plus the queue, which the writer drains continuously). A
//!   graceful stop (SIGTERM, Ctrl-C) flushes first ([`Analytics::flush`]).

mod agg;
pub mod report;

pub use agg::{Agg, Dim, Dims, Sample};
pub use report::{BadParam, Query, Report};

use super::CallRecord;
use crate::domain::units::Dur;
use crate::store::Store;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The store tree of every bucket.
pub const TREE: &str = "analytics";

/// `[analytics]` in the gateway file; the section turns analytics on.
///
/// ```toml
/// [analytics]
/// flush-interval = "10s"    # also the most a SIGKILL loses
/// queue = 65536             # records waiting for the writer; beyond: dropped, counted
/// consumers = true          # keep consumer, app and key id (false: count per API only)
/// max-series = 20000        # distinct dimension sets per minute; beyond: "(other)"
/// [analytics.retention]
/// minute = "2d"
/// hour = "35d"
/// day = "400d"
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnalyticsSpec {
    /// How often the writer merges what it holds into the store: the most
    /// a `SIGKILL` loses, and how far reports lag behind.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Dur,
    /// Records queued for the writer at most; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Keep the consumer, app and key id of each call (per-consumer
    /// reports). `false`: those dimensions are left empty.
    #[serde(default = "default_true")]
    pub consumers: bool,
    /// Distinct sets of dimensions held per minute; past it, a call is
    /// counted with consumer, app, plan, product and key id `(other)`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    #[serde(default)]
    pub retention: Retention,
}

/// `[analytics.retention]`: how long buckets of each resolution are kept
/// (`90m`, `48h`, `35d`).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    #[serde(default = "default_minute_retention")]
    pub minute: Age,
    #[serde(default = "default_hour_retention")]
    pub hour: Age,
    #[serde(default = "default_day_retention")]
    pub day: Age,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minute: default_minute_retention(),
            hour: default_hour_retention(),
            day: default_day_retention(),
        }
    }
}

impl Default for AnalyticsSpec {
    fn default() -> Self {
        AnalyticsSpec {
            flush_interval: default_flush_interval(),
            queue: default_queue(),
            consumers: true,
            max_series: default_max_series(),
            retention: Retention::default(),
        }
    }
}

fn default_flush_interval() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_queue() -> usize {
    65_536
}
fn default_true() -> bool {
    true
}
fn default_max_series() -> usize {
    20_000
}
const DAY: Duration = Duration::from_secs(86_400);
fn default_minute_retention() -> Age {
    Age(2 * DAY)
}
fn default_hour_retention() -> Age {
    Age(35 * DAY)
}
fn default_day_retention() -> Age {
    Age(400 * DAY)
}

/// A retention: a duration as in the other files (`90m`, `48h`), or days
/// (`35d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Duration);

impl TryFrom<&str> for Age {
    type Error = String;
    fn try_from(s: &str) -> Result<Age, String> {
        let t = s.trim();
        if let Some(days) = t.strip_suffix('d') {
            if !days.is_empty() && days.len() <= 6 && days.bytes().all(|b| b.is_ascii_digit()) {
                let n: u64 = days
                    .parse()
                    .map_err(|_| format!("`{t}` is not a duration"))?;
                return Ok(Age(DAY * n as u32));
            }
        }
        Dur::try_from(t)
            .map(|d| Age(d.0))
            .map_err(|e| format!("{e}, or days: `35d`"))
    }
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::domain::units::from_text(d, "a retention", "\"48h\" or \"35d\"")
    }
}

impl AnalyticsSpec {
    /// What the types let through but cannot be served: each error names
    /// its key (`analytics.queue ...`).
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let f = self.flush_interval.0;
        if f < Duration::from_millis(100) || f > Duration::from_secs(300) {
            errs.push(format!(
                "analytics.flush-interval = {f:?} must be between 100ms and 5m"
            ));
        }
        if !(16..=(1 << 24)).contains(&self.queue) {
            errs.push(format!(
                "analytics.queue = {} must be between 16 and 16777216 records",
                self.queue
            ));
        }
        if !(100..=1_000_000).contains(&self.max_series) {
            errs.push(format!(
                "analytics.max-series = {} must be between 100 and 1000000",
                self.max_series
            ));
        }
        let r = &self.retention;
        for (name, age, min, max) in [
            ("minute", r.minute.0, Duration::from_secs(3600), 90 * DAY),
            ("hour", r.hour.0, DAY, 3660 * DAY),
            ("day", r.day.0, DAY, 36600 * DAY),
        ] {
            if age < min || age > max {
                errs.push(format!(
                    "analytics.retention.{name} = {} must be between {} and {}",
                    days(age),
                    days(min),
                    days(max)
                ));
            }
        }
        if r.minute.0 > r.hour.0 || r.hour.0 > r.day.0 {
            errs.push(
                "analytics.retention: minute buckets must not be kept longer than hour buckets, nor hour buckets longer than day buckets"
                    .into(),
            );
        }
        errs
    }
}

/// `2d`, `36h` or `90m`, for messages.
fn days(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

/// A bucket resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Minute,
    Hour,
    Day,
}

impl Res {
    pub const ALL: [Res; 3] = [Res::Minute, Res::Hour, Res::Day];

    /// A bucket's length, ms.
    pub fn ms(self) -> u64 {
        match self {
            Res::Minute => 60_000,
            Res::Hour => 3_600_000,
            Res::Day => 86_400_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Res::Minute => "minute",
            Res::Hour => "hour",
            Res::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.name() == s)
    }

    /// The start of the bucket holding `ms`.
    pub fn floor(self, ms: u64) -> u64 {
        ms - ms % self.ms()
    }

    /// The first bucket start at or after `ms`.
    pub fn ceil(self, ms: u64) -> u64 {
        self.floor(ms.saturating_add(self.ms() - 1))
    }

    fn byte(self) -> u8 {
        match self {
            Res::Minute => b'm',
            Res::Hour => b'h',
            Res::Day => b'd',
        }
    }

    fn from_byte(b: u8) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.byte() == b)
    }

    fn retention(self, r: &Retention) -> Duration {
        match self {
            Res::Minute => r.minute.0,
            Res::Hour => r.hour.0,
            Res::Day => r.day.0,
        }
    }
}

/// The dimensions of a queued call, as the request path had them (cheap
/// to copy there; turned into [`Dims`] at flush time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RecDims {
    api: &'static str,
    route: &'static str,
    method: http::Method,
    status: u16,
    consumer: Option<String>,
    app: Option<String>,
    plan: Option<String>,
    product: Option<String>,
    key_id: Option<String>,
}

/// Dimension values are cut to this many bytes.
const MAX_DIM: usize = 1024;

fn clip(s: &str) -> String {
    let mut n = s.len().min(MAX_DIM);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s[..n].to_string()
}

const OTHER: &str = "(other)";

impl RecDims {
    fn to_dims(&self) -> Dims {
        let o = |v: &Option<String>| v.as_deref().map(clip).unwrap_or_default();
        Dims {
            api: clip(self.api),
            route: clip(self.route),
            method: clip(self.method.as_str()),
            status: self.status,
            consumer: o(&self.consumer),
            app: o(&self.app),
            plan: o(&self.plan),
            product: o(&self.product),
            key_id: o(&self.key_id),
        }
    }

    /// The same call with the unbounded dimensions folded into `(other)`.
    fn folded(mut self) -> RecDims {
        for v in [
            &mut self.consumer,
            &mut self.app,
            &mut self.plan,
            &mut self.product,
            &mut self.key_id,
        ] {
            *v = Some(OTHER.to_string());
        }
        self
    }
}

/// One queued call.
#[derive(Debug)]
struct Rec {
    minute_ms: u64,
    dims: RecDims,
    sample: Sample,
}

impl Rec {
    fn of(c: &CallRecord, consumers: bool) -> Rec {
        let who = |v: &Option<String>| if consumers { v.clone() } else { None };
        Rec {
            minute_ms: Res::Minute.floor(c.at_ms),
            dims: RecDims {
                api: c.api,
                route: c.route,
                method: c.method.clone(),
                status: c.status,
                consumer: who(&c.consumer),
                app: who(&c.app),
                key_id: who(&c.key_id),
                plan: c.plan.clone(),
                product: c.product.clone(),
            },
            sample: Sample {
                status: c.status,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                total_us: c.total_us,
                upstream_us: c.upstream_us,
                cache_hit: c
                    .cache
                    .as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case("hit")),
                aborted: c.aborted,
                answered_by: c.answered_by.clone(),
            },
        }
    }
}

enum Msg {
    Rec(Box<Rec>),
    /// Flush now, and say whether it worked.
    Flush(SyncSender<bool>),
}

/// Counters shared by the request path and the writer.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    dropped: AtomicU64,
    folded: AtomicU64,
    flushes: AtomicU64,
    flush_errors: AtomicU64,
    /// The writer thread's kernel id (Linux; 0 elsewhere), for tests that
    /// watch how often it wakes.
    writer_tid: AtomicU64,
}

/// The running analytics store: the queue's sending end and the writer
/// thread; reports read the store directly.
pub struct Analytics {
    tx: Option<SyncSender<Msg>>,
    counters: Arc<Counters>,
    store: Store,
    spec: AnalyticsSpec,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Analytics {
    /// Start the writer thread over `store`.
    pub fn start(store: Store, spec: &AnalyticsSpec) -> anyhow::Result<Analytics> {
        let (tx, rx) = sync_channel(spec.queue);
        let counters = Arc::new(Counters::default());
        let mut writer = Writer::new(store.clone(), spec.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("tollgate-analytics".into())
            .spawn(move || {
                writer.counters.writer_tid.store(tid(), Ordering::Relaxed);
                writer.run(rx)
            })?;
        Ok(Analytics {
            tx: Some(tx),
            counters,
            store,
            spec: spec.clone(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue a finished call, never waiting: a full queue drops it, counted.
    pub fn record(&self, rec: &CallRecord) {
        let Some(tx) = &self.tx else { return };
        let msg = Msg::Rec(Box::new(Rec::of(rec, self.spec.consumers)));
        let metrics = super::metrics::global();
        match tx.try_send(msg) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                metrics.analytics_record();
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                metrics.dropped("analytics", 1);
            }
        }
    }

    /// Calls queued for the store since the start.
    pub fn records(&self) -> u64 {
        self.counters.accepted.load(Ordering::Relaxed)
    }

    /// Calls dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Calls counted under `(other)` because a minute held `max-series`
    /// distinct dimension sets already.
    pub fn folded(&self) -> u64 {
        self.counters.folded.load(Ordering::Relaxed)
    }

    /// Flushes done, and flushes that failed (the store refused the
    /// write; what they held is kept for the next).
    pub fn flushes(&self) -> (u64, u64) {
        (
            self.counters.flushes.load(Ordering::Relaxed),
            self.counters.flush_errors.load(Ordering::Relaxed),
        )
    }

    pub fn spec(&self) -> &AnalyticsSpec {
        &self.spec
    }

    /// Have the writer merge everything queued so far into the store, and
    /// wait for it up to `limit` (graceful shutdown; tests). Whether it
    /// was done in time.
    pub fn flush(&self, limit: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let until = Instant::now() + limit;
        let (done_tx, done_rx) = sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= until {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        done_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .unwrap_or(false)
    }

    /// A report over what the store holds (flushed calls).
    pub fn report(&self, q: &Query) -> Result<Report, report::RunError> {
        report::run(&self.store, q)
    }

    /// Parse a report's query parameters against this store's retention.
    pub fn query(
        &self,
        params: &std::collections::BTreeMap<String, String>,
        defaults: &report::Defaults,
    ) -> Result<Query, BadParam> {
        Query::parse(
            params,
            defaults,
            &self.spec.retention,
            crate::domain::time::Ts::now().0,
        )
    }
}

impl Drop for Analytics {
    /// Close the queue; the writer flushes what it holds and ends.
    fn drop(&mut self) {
        self.tx = None;
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The writer's state: the minute aggregates not yet in the store.
struct Writer {
    store: Store,
    spec: AnalyticsSpec,
    counters: Arc<Counters>,
    pending: HashMap<(u64, RecDims), Agg>,
    last_sweep: Option<Instant>,
}

/// The calling thread's kernel id (0 where there is none to read).
fn tid() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes nothing and only returns the caller's id.
        #[allow(unsafe_code)]
        let t = unsafe { libc::gettid() };
        t.max(0) as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// How often the writer drains the queue.
const TICK: Duration = Duration::from_millis(10);
/// Most records taken per drain before the flush clock is looked at.
const DRAIN_MAX: usize = 8192;
/// Empty drains for this long and the writer blocks on the queue.
const QUIET: Duration = Duration::from_secs(1);

impl Writer {
    fn new(store: Store, spec: AnalyticsSpec, counters: Arc<Counters>) -> Writer {
        Writer {
            store,
            spec,
            counters,
            pending: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Drain the queue every [`TICK`] (up to [`DRAIN_MAX`] at a time),
    /// and flush every flush interval. While calls come in, the writer
    /// polls rather than blocking on the queue: a blocked receiver would
    /// have every request that queues a record wake it (a futex call on the
    /// request path). After [`QUIET`] of empty drains it blocks until a
    /// record or the next flush instead, so an idle gateway's writer does
    /// not wake 100 times a second; the first record after that wakes it.
    fn run(&mut self, rx: Receiver<Msg>) {
        let every = self.spec.flush_interval.0;
        let mut next = Instant::now() + every;
        let mut quiet_since = Instant::now();
        loop {
            let mut took = false;
            for _ in 0..DRAIN_MAX {
                match rx.try_recv() {
                    Ok(m) => {
                        took = true;
                        self.take(m);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.flush_logged();
                        return;
                    }
                }
            }
            let now = Instant::now();
            if took {
                quiet_since = now;
            }
            if now >= next {
                self.flush_logged();
                next = Instant::now() + every;
                continue;
            }
            if now.duration_since(quiet_since) < QUIET {
                std::thread::sleep(TICK.min(next - now));
                continue;
            }
            match rx.recv_timeout(next - now) {
                Ok(m) => {
                    self.take(m);
                    quiet_since = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_logged();
                    return;
                }
            }
        }
    }

    /// One message from the queue.
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Rec(r) => self.add(*r),
            Msg::Flush(done) => {
                // Everything queued before it is taken: the flush covers
                // every record sent before it.
                let ok = self.flush_logged();
                let _ = done.try_send(ok);
            }
        }
    }

    fn add(&mut self, r: Rec) {
        let key = (r.minute_ms, r.dims);
        if let Some(a) = self.pending.get_mut(&key) {
            a.add(&r.sample);
            return;
        }
        let key = if self.pending.len() >= self.spec.max_series {
            self.counters.folded.fetch_add(1, Ordering::Relaxed);
            (key.0, key.1.folded())
        } else {
            key
        };
        self.pending.entry(key).or_default().add(&r.sample);
    }

    fn flush_logged(&mut self) -> bool {
        let now = crate::domain::time::Ts::now().0;
        match self.flush(now) {
            Ok(()) => true,
            Err(e) => {
                self.counters.flush_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "analytics: cannot write to the store (kept for the next flush): {e:#}"
                );
                false
            }
        }
    }

    /// Merge the pending minutes into the store's minute, hour and day
    /// buckets in one durable batch; then sweep, at most once a minute.
    fn flush(&mut self, now_ms: u64) -> anyhow::Result<()> {
        if !self.pending.is_empty() {
            let mut merged: HashMap<Vec<u8>, Agg> = HashMap::new();
            for ((minute, rd), a) in &self.pending {
                let dims = rd.to_dims();
                for res in Res::ALL {
                    let k = agg::key(res, res.floor(*minute), &dims);
                    merged.entry(k).or_default().merge(a);
                }
            }
            let mut ops = Vec::with_capacity(merged.len());
            for (k, mut a) in merged {
                if let Some(old) = self.store.get(TREE, &k)? {
                    match Agg::decode(&old) {
                        Ok(old) => a.merge(&old),
                        Err(e) => tracing::warn!(
                            "analytics: a stored bucket is unreadable ({e}); replaced"
                        ),
                    }
                }
                ops.push((k, Some(a.encode())));
            }
            self.store.apply_durable(TREE, ops)?;
            self.pending.clear();
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .last_sweep
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.sweep(now_ms)?;
            self.last_sweep = Some(Instant::now());
        }
        Ok(())
    }

    /// Remove the buckets that ended before their resolution's retention.
    fn sweep(&self, now_ms: u64) -> anyhow::Result<usize> {
        let mut n = 0;
        for res in Res::ALL {
            let keep = res.retention(&self.spec.retention).as_millis() as u64;
            let cutoff = now_ms.saturating_sub(keep);
            // A bucket goes when its end is at or before the cutoff.
            let first_kept = cutoff.saturating_sub(res.ms()).saturating_add(1);
            n += self.store.remove_range_durable(
                TREE,
                &agg::key_prefix(res, 0),
                &agg::key_prefix(res, first_kept),
            )?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
