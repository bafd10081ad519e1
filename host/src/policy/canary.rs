//! Canary versions of a step: a second plugin (or the same plugin with
//! another configuration) serving a fixed share of the consumers, with
//! figures per version and an automatic rollback.
//!
//! - **Selection** ([`Canary::choose`]): per call, a fixed hash (FNV-1a 64
//!   with a murmur3 finaliser; no per-process keys) of the step's name and
//!   the call's sticky key — `consumer:<id>` once a step before identified
//!   the consumer, else `client:<ip>` (the address without its port) — maps
//!   the call to one of 10 000 slots; slots below the canary's share (in
//!   hundredths of a percent) get the canary. The same consumer gets the
//!   same version on every call, in every process and after every reload
//!   that keeps the percent. The chosen version serves both phases of the
//!   call.
//! - **Figures** ([`Figures`]): calls, failed calls, traps, timeouts, other
//!   step errors and 5xx answers, per version, counted when a call ends.
//! - **Rollback**: over a sliding window (ten buckets of a tenth of it), a
//!   canary that served at least `min-calls` calls of which more than
//!   `failures` percent failed (a step error of the canary in either phase,
//!   fail-open or not, or a 5xx answer to the call) is switched off: one
//!   atomic flag, checked by every later selection, so from the call that
//!   crossed the threshold on every new call gets the stable version (calls
//!   already running on the canary finish on it). It is logged once, at
//!   WARN, with the figures. The runtime remembers the rollback by the
//!   canary's fingerprint ([`Rollbacks`]): a reload that keeps the step and
//!   its canary as they were (plugins' contents, configurations, percent)
//!   keeps it rolled back; changing any of them, or a restart, starts it
//!   again.

use super::{PolicyError, Step};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slots a selection key maps to: a percent with two decimals.
pub const SLOTS: u32 = 10_000;
/// Buckets of a rollback window.
const BUCKETS: usize = 10;
/// The suffix of a canary version's step name (`limit@canary`): its log
/// lines, failures and quarantine name it so. A manifest's step name cannot
/// contain `@`.
pub const CANARY_SUFFIX: &str = "@canary";

/// Which version of a step served a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    #[default]
    Stable,
    Canary,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }
}

/// How a step's phase failed, for the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Trap,
    Timeout,
    /// Memory, busy, quarantined, an invalid result.
    Other,
}

impl Fault {
    pub fn of(e: &PolicyError) -> Fault {
        match e {
            PolicyError::Trap { .. } => Fault::Trap,
            PolicyError::Timeout { .. } => Fault::Timeout,
            _ => Fault::Other,
        }
    }
}

/// What one call of a step with a canary carries to its end: the version
/// chosen, and the first failure of that version in the call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Served {
    pub version: Version,
    pub fault: Option<Fault>,
}

/// When a canary is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackLimits {
    /// The failure rate above which it is, in hundredths of a percent.
    pub failures: u32,
    /// Calls it must have served within the window first.
    pub min_calls: u64,
    pub window: Duration,
}

impl Default for RollbackLimits {
    fn default() -> Self {
        RollbackLimits {
            failures: 500,
            min_calls: 20,
            window: Duration::from_secs(60),
        }
    }
}

/// Check rollback limits; the message starts with the key at fault.
pub fn check_rollback_limits(l: &RollbackLimits) -> Result<(), String> {
    if l.min_calls == 0 || l.min_calls > 1_000_000 {
        return Err(format!(
            "rollback.min-calls = {} must be between 1 and 1000000",
            l.min_calls
        ));
    }
    if l.window < Duration::from_secs(1) || l.window > Duration::from_secs(3600) {
        return Err(format!(
            "rollback.window = {:?} must be between 1s and 1h",
            l.window
        ));
    }
    if l.failures >= SLOTS {
        return Err(
            "rollback.failures = 100 would never roll back: give a rate below 100".to_string(),
        );
    }
    Ok(())
}

/// One version's figures since the configuration was loaded.
#[derive(Debug, Default)]
pub struct Figures {
    calls: AtomicU64,
    failed: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    answers_5xx: AtomicU64,
}

/// A copy of [`Figures`], for the admin API and logs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct FiguresView {
    /// Calls the version served (that ended).
    pub calls: u64,
    /// Calls with a step error of the version or a 5xx answer.
    pub failed: u64,
    pub traps: u64,
    pub timeouts: u64,
    /// Other step errors: memory, busy, quarantined, invalid results.
    pub errors: u64,
    /// Calls it served answered with a 5xx, whatever made the answer.
    pub answers_5xx: u64,
}

impl Figures {
    fn record(&self, fault: Option<Fault>, failed: bool, status: u16) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let n = match fault {
            Some(Fault::Trap) => Some(&self.traps),
            Some(Fault::Timeout) => Some(&self.timeouts),
            Some(Fault::Other) => Some(&self.errors),
            None => None,
        };
        if let Some(n) = n {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if status >= 500 {
            self.answers_5xx.fetch_add(1, Ordering::Relaxed);
        }
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn view(&self) -> FiguresView {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FiguresView {
            calls: g(&self.calls),
            failed: g(&self.failed),
            traps: g(&self.traps),
            timeouts: g(&self.timeouts),
            errors: g(&self.errors),
            answers_5xx: g(&self.answers_5xx),
        }
    }
}

/// A sliding window of calls and failures: `BUCKETS` buckets of a tenth of
/// the window each, a bucket reused once it is a window old.
#[derive(Debug)]
struct Window {
    bucket: Duration,
    /// Per bucket: its index since `start`, calls, failed.
    buckets: [(u64, u64, u64); BUCKETS],
    start: Instant,
}

impl Window {
    fn new(window: Duration, start: Instant) -> Window {
        Window {
            bucket: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(u64::MAX, 0, 0); BUCKETS],
            start,
        }
    }

    /// Count one call; the calls and failures within the window after it.
    fn record(&mut self, now: Instant, failed: bool) -> (u64, u64) {
        let i =
            (now.saturating_duration_since(self.start).as_nanos() / self.bucket.as_nanos()) as u64;
        let b = &mut self.buckets[(i % BUCKETS as u64) as usize];
        if b.0 != i {
            *b = (i, 0, 0);
        }
        b.1 += 1;
        b.2 += u64::from(failed);
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 + (BUCKETS as u64) > i && b.0 <= i)
            .fold((0, 0), |(c, f), b| (c + b.1, f + b.2))
    }
}

/// The rollbacks a runtime remembers across reloads, by canary fingerprint.
#[derive(Debug, Default)]
pub struct Rollbacks(Mutex<HashSet<u64>>);

impl Rollbacks {
    fn contains(&self, key: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
    }

    fn insert(&self, key: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    }
}

/// A step's canary version and its state (shared by the step's clones).
#[derive(Debug)]
pub struct Canary {
    /// The new version: a step of the canary's plugin and configuration,
    /// named `<step>@canary`, with the step's limits and grants.
    pub step: Step,
    /// Its share, in hundredths of a percent.
    pub share: u32,
    pub rollback: RollbackLimits,
    rolled_back: AtomicBool,
    window: Mutex<Window>,
    figures: [Figures; 2],
    /// The fingerprint under which [`Rollbacks`] remembers a rollback.
    fingerprint: u64,
    rollbacks: Arc<Rollbacks>,
}

/// What the admin API shows of a canary.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    pub step: String,
    pub stable_plugin: String,
    pub canary_plugin: String,
    /// The configured share, in percent.
    pub percent: f64,
    pub rolled_back: bool,
    pub stable: FiguresView,
    pub canary: FiguresView,
}

impl Canary {
    /// The canary `step` of `stable` for `share` hundredths of a percent of
    /// the keys, rolled back already if `rollbacks` remembers it.
    pub fn new(
        stable: &Step,
        step: Step,
        share: u32,
        rollback: RollbackLimits,
        rollbacks: Arc<Rollbacks>,
    ) -> Canary {
        let fingerprint = {
            let mut h = Fnv::new();
            for part in [
                &*stable.api,
                &*stable.name,
                &stable.plugin.hash,
                &stable.config,
                &step.plugin.hash,
                &step.config,
                &share.to_string(),
            ] {
                h.write(part.as_bytes());
                h.write(&[0]);
            }
            h.finish()
        };
        let rolled_back = rollbacks.contains(fingerprint);
        if rolled_back {
            tracing::warn!(
                api = %stable.api,
                step = %stable.name,
                "canary `{}` stays rolled back (it was, and neither it nor the step changed): every call gets plugin `{}`",
                step.plugin.name,
                stable.plugin.name
            );
        }
        Canary {
            window: Mutex::new(Window::new(rollback.window, Instant::now())),
            step,
            share,
            rollback,
            rolled_back: AtomicBool::new(rolled_back),
            figures: Default::default(),
            fingerprint,
            rollbacks,
        }
    }

    /// The version a call with sticky key `key` gets at step `step`.
    pub fn choose(&self, step: &str, key: &str) -> Version {
        if self.rolled_back.load(Ordering::Acquire) || slot(step, key) >= self.share {
            Version::Stable
        } else {
            Version::Canary
        }
    }

    /// Whether the canary was rolled back.
    pub fn rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Acquire)
    }

    /// Count a call of the step that ended with `status`, and roll the
    /// canary back if it served it and that crossed the threshold.
    pub fn settle(&self, stable: &Step, served: Served, status: u16) {
        let failed = served.fault.is_some() || status >= 500;
        let i = served.version as usize;
        self.figures[i].record(served.fault, failed, status);
        if served.version != Version::Canary || self.rolled_back() {
            return;
        }
        let (calls, failures) = self
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(Instant::now(), failed);
        if !crosses(&self.rollback, calls, failures) {
            return;
        }
        if self
            .rolled_back
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.rollbacks.insert(self.fingerprint);
            let (s, c) = (self.figures[0].view(), self.figures[1].view());
            tracing::warn!(
                api = %stable.api,
                step = %stable.name,
                version = "canary",
                window_calls = calls,
                window_failed = failures,
                canary_traps = c.traps,
                canary_timeouts = c.timeouts,
                canary_errors = c.errors,
                canary_5xx = c.answers_5xx,
                stable_calls = s.calls,
                stable_failed = s.failed,
                "canary `{}` rolled back: {failures} of its last {calls} calls failed (over {}%, window {:?}); every call now gets plugin `{}` until the step or its canary changes",
                self.step.plugin.name,
                f64::from(self.rollback.failures) / 100.0,
                self.rollback.window,
                stable.plugin.name
            );
        }
    }

    /// The figures of `version` since the load.
    pub fn figures(&self, version: Version) -> FiguresView {
        self.figures[version as usize].view()
    }

    /// What the admin API shows.
    pub fn view(&self, stable: &Step) -> CanaryView {
        CanaryView {
            step: stable.name.to_string(),
            stable_plugin: stable.plugin.name.clone(),
            canary_plugin: self.step.plugin.name.clone(),
            percent: f64::from(self.share) / 100.0,
            rolled_back: self.rolled_back(),
            stable: self.figures(Version::Stable),
            canary: self.figures(Version::Canary),
        }
    }
}

impl Step {
    /// This step with a canary version.
    pub fn with_canary(mut self, canary: Canary) -> Step {
        self.canary = Some(Arc::new(canary));
        self
    }

    /// The step serving a call that chose `version` (itself without a
    /// canary).
    pub fn version(&self, version: Version) -> &Step {
        match (&self.canary, version) {
            (Some(c), Version::Canary) => &c.step,
            _ => self,
        }
    }

    /// The step and its canary version, if any.
    pub fn versions(&self) -> impl Iterator<Item = &Step> {
        std::iter::once(self).chain(self.canary.as_deref().map(|c| &c.step))
    }

    /// The step's name in its chain, as the plugin sees it (`limit` for
    /// `limit@canary`).
    pub fn chain_name(&self) -> &str {
        self.name.strip_suffix(CANARY_SUFFIX).unwrap_or(&self.name)
    }
}

/// Whether `failures` of `calls` within the window call for a rollback:
/// at least `min-calls` calls, and a failure rate above `failures`.
fn crosses(l: &RollbackLimits, calls: u64, failures: u64) -> bool {
    calls >= l.min_calls && failures * u64::from(SLOTS) > u64::from(l.failures) * calls
}

/// The sticky key of a call: its consumer once known, else its client's
/// address without the port.
pub fn sticky_key(consumer: Option<&str>, client: std::net::IpAddr) -> String {
    match consumer {
        Some(c) => format!("consumer:{c}"),
        None => format!("client:{client}"),
    }
}

/// The slot (0 to [`SLOTS`] - 1) of `key` at step `step`.
pub fn slot(step: &str, key: &str) -> u32 {
    let mut h = Fnv::new();
    h.write(step.as_bytes());
    h.write(&[0]);
    h.write(key.as_bytes());
    ((u128::from(h.finish()) * u128::from(SLOTS)) >> 64) as u32
}

/// FNV-1a 64 with murmur3's finaliser (FNV alone spreads short keys that
/// differ in their last bytes poorly over the high bits).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^ (k >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_is_spread_evenly_and_fixed() {
        // 100 000 consumers: each tenth of the slots gets 10% ± 0.5%.
        let mut tenths = [0u32; 10];
        for i in 0..100_000 {
            tenths[(slot("limit", &format!("consumer:c{i}")) / 1000) as usize] += 1;
        }
        for t in tenths {
            assert!((9_500..=10_500).contains(&t), "{tenths:?}");
        }
        // Fixed across processes and builds: no per-process keys.
        assert_eq!(
            slot("limit", "consumer:alice"),
            slot("limit", "consumer:alice")
        );
        assert_eq!(slot("limit", "consumer:alice"), 7_855);
        // Another step sorts consumers otherwise.
        let same = (0..1000)
            .filter(|i| {
                let k = format!("consumer:c{i}");
                (slot("a", &k) < 1000) == (slot("b", &k) < 1000)
            })
            .count();
        assert!(same < 900, "{same}");
    }

    #[test]
    fn a_window_counts_what_is_recent() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10), t0);
        assert_eq!(w.record(t0, true), (1, 1));
        assert_eq!(w.record(t0 + Duration::from_secs(5), false), (2, 1));
        // 9.9s on: the first bucket is still in.
        assert_eq!(w.record(t0 + Duration::from_millis(9_900), false), (3, 1));
        // 10s on: it has left, the one of 5s has not.
        assert_eq!(w.record(t0 + Duration::from_secs(10), false), (3, 0));
        // Long after: only the call itself.
        assert_eq!(w.record(t0 + Duration::from_secs(100), true), (1, 1));
    }

    #[test]
    fn a_rollback_needs_min_calls_and_a_rate_above_the_threshold() {
        let l = RollbackLimits {
            failures: 500,
            min_calls: 20,
            window: Duration::from_secs(60),
        };
        // A canary failing every call: rolled back on its 20th.
        assert!(!crosses(&l, 19, 19));
        assert!(crosses(&l, 20, 20));
        // 5% is not above 5%; one more failure is.
        assert!(!crosses(&l, 20, 1));
        assert!(crosses(&l, 20, 2));
        assert!(!crosses(&l, 100, 5));
        assert!(crosses(&l, 100, 6));
        // A threshold of 0: any failure, once min-calls are in.
        let zero = RollbackLimits { failures: 0, ..l };
        assert!(!crosses(&zero, 20, 0));
        assert!(crosses(&zero, 20, 1));
    }

    #[test]
    fn rollback_limits_are_checked() {
        let ok = RollbackLimits::default();
        assert!(check_rollback_limits(&ok).is_ok());
        let e = check_rollback_limits(&RollbackLimits { min_calls: 0, ..ok }).unwrap_err();
        assert!(e.starts_with("rollback.min-calls"), "{e}");
        let w = Duration::from_millis(10);
        let e = check_rollback_limits(&RollbackLimits { window: w, ..ok }).unwrap_err();
        assert!(e.starts_with("rollback.window"), "{e}");
        let e = check_rollback_limits(&RollbackLimits {
            failures: SLOTS,
            ..ok
        })
        .unwrap_err();
        assert!(e.starts_with("rollback.failures"), "{e}");
    }
}
