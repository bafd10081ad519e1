//! One bad policy must not slow the others: what every call of a step
//! passes through before it runs ([`StepGate`], one per step, shared by the
//! step's clones like its log budget).
//!
//! Two bounds:
//!
//! - **A quarantine** (a circuit breaker for policies). A step whose calls
//!   trap, run out of time or memory, or return something invalid
//!   `failures` times within `window`, in at least half of its calls there,
//!   is not run for a cool-down: its calls are answered by its
//!   fail-open/closed rule without running (skipped with a warning, or 503
//!   `policy_quarantined`). After the cool-down one call runs as a probe;
//!   if it succeeds the step runs again, if it fails the next cool-down is
//!   twice as long (up to `max-cool-down`). A step that stays healthy for
//!   `max-cool-down` after a trip starts again from the first cool-down.
//! - **Bounded concurrency, for calls that keep running.** At most
//!   `concurrency` calls of the step may *keep running* at once (default:
//!   one fewer than the serving workers, at least one), so a looping or
//!   slow policy can never keep every worker busy. A call takes one of
//!   those places only once it has run for [`PLACE_AFTER_TICKS`] epoch
//!   ticks of its own (a millisecond or two; [`super::deadline`] counts
//!   them): the cheap calls of a healthy step finish long before and never
//!   wait for one another, so a step costs no serialisation across workers
//!   (measured: one place per step on two workers cost 25% of the standard
//!   chain's throughput). A call that needs a place and finds none waits
//!   for one up to `queue-timeout` (default: the step's `wall-timeout`:
//!   waiting is not running), then ends with 503 `policy_busy`. Once a call
//!   of the step has needed a place, the step is *slow* for [`SLOW_FOR`]:
//!   its calls take their place before they start (before an instance is
//!   made), so a looping step holds at most `concurrency` instances, not
//!   one per waiting client. A call waiting in an outbound host call gives
//!   its place back while it waits ([`lend`]); it takes one again if it
//!   keeps running after.
//!
//! A call's place lives in its [`Seat`], which the call's future carries
//! as a task-local: the epoch callback that counts the call's running time
//! and the host calls it makes find it there.

use super::PolicyError;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Epoch ticks of its own running after which a call needs a place (the
/// first tick may be partial, or time the thread was descheduled: two are
/// at least one whole tick of running).
pub const PLACE_AFTER_TICKS: u64 = 2;

/// How long a step stays slow (its calls take their place before they
/// start) after one of its calls last needed a place.
pub const SLOW_FOR: Duration = Duration::from_secs(10);

/// When a step is quarantined. Defaults: 5 failures within 10 s (and at
/// least half of the calls there), a first cool-down of 5 s, doubling per
/// repeated trip up to 1 min.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineLimits {
    pub failures: u32,
    pub window: Duration,
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl Default for QuarantineLimits {
    fn default() -> Self {
        QuarantineLimits {
            failures: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(60),
        }
    }
}

/// A step's gate settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Calls of the step that may run at once.
    pub concurrency: usize,
    /// How long a call that needs a place waits for one.
    pub queue_timeout: Duration,
    pub quarantine: QuarantineLimits,
}

impl GateLimits {
    /// The defaults for a step with this wall-clock bound.
    pub fn for_wall_timeout(wall_timeout: Duration) -> GateLimits {
        GateLimits {
            concurrency: default_concurrency(),
            queue_timeout: wall_timeout,
            quarantine: QuarantineLimits::default(),
        }
    }
}

/// One fewer than the serving workers, at least one: a step's long calls
/// can never keep every worker busy.
pub fn default_concurrency() -> usize {
    crate::net::workers::count().saturating_sub(1).max(1)
}

/// Largest `concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 100_000;
/// Largest `failures` accepted.
pub const MAX_FAILURES: u32 = 100_000;
/// Longest `window`, `cool-down`, `max-cool-down` and `queue-timeout`.
pub const MAX_GATE_TIME: Duration = Duration::from_secs(3600);

/// Check gate settings; the message starts with the setting's name
/// (`concurrency`, `queue-timeout`, `quarantine.failures`, ...) so callers
/// can prefix `limits.step-`.
pub fn check_gate_limits(l: &GateLimits) -> Result<(), String> {
    if !(1..=MAX_CONCURRENCY).contains(&l.concurrency) {
        return Err(format!(
            "concurrency = {} must be between 1 and {MAX_CONCURRENCY}",
            l.concurrency
        ));
    }
    let q = &l.quarantine;
    if !(1..=MAX_FAILURES).contains(&q.failures) {
        return Err(format!(
            "quarantine.failures = {} must be between 1 and {MAX_FAILURES}",
            q.failures
        ));
    }
    let range = Duration::from_millis(1)..=MAX_GATE_TIME;
    for (name, d) in [
        ("queue-timeout", l.queue_timeout),
        ("quarantine.window", q.window),
        ("quarantine.cool-down", q.cool_down),
        ("quarantine.max-cool-down", q.max_cool_down),
    ] {
        if !range.contains(&d) {
            return Err(format!("{name} = {d:?} must be between 1ms and 1h"));
        }
    }
    if q.max_cool_down < q.cool_down {
        return Err(format!(
            "quarantine.max-cool-down = {:?} must be at least quarantine.cool-down = {:?}",
            q.max_cool_down, q.cool_down
        ));
    }
    Ok(())
}

/// A step's gate: its quarantine and its concurrency bound.
#[derive(Debug)]
pub struct StepGate {
    pub limits: GateLimits,
    slots: Arc<Semaphore>,
    /// The step is slow until this many milliseconds after `born` (0: it
    /// has never been).
    slow_until_ms: AtomicU64,
    born: Instant,
    breaker: Mutex<Breaker>,
}

/// What the gate decided for one call.
pub enum Admit {
    /// Run the call, as the probe of a quarantined step when `probe`.
    Run { probe: bool },
    /// Do not run it: the step is quarantined for this much longer.
    Quarantined { left: Duration },
}

impl StepGate {
    pub fn new(limits: GateLimits) -> StepGate {
        StepGate {
            limits,
            slots: Arc::new(Semaphore::new(limits.concurrency)),
            slow_until_ms: AtomicU64::new(0),
            born: Instant::now(),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    /// A call of the step needed a place at `now`: the step is slow for
    /// [`SLOW_FOR`] from then.
    pub fn mark_slow(&self, now: Instant) {
        let until = now.saturating_duration_since(self.born) + SLOW_FOR;
        self.slow_until_ms
            .fetch_max(until.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the step's calls take their place before they start.
    pub fn is_slow(&self, now: Instant) -> bool {
        let at = now.saturating_duration_since(self.born).as_millis() as u64;
        at < self.slow_until_ms.load(Ordering::Relaxed)
    }

    /// Places free right now (for tests).
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// Let a call of `step` in: refused while the step is quarantined (but
    /// for its probe); while the step is slow, once a place is free,
    /// waiting up to the queue timeout. `check_quarantine` is false for a
    /// response phase (its request phase was admitted).
    pub async fn enter(
        self: &Arc<Self>,
        step: &str,
        check_quarantine: bool,
    ) -> Result<Pass, PolicyError> {
        let now = Instant::now();
        let probe = if check_quarantine {
            match self.admit(now) {
                Admit::Run { probe } => probe,
                Admit::Quarantined { left } => {
                    return Err(PolicyError::Quarantined {
                        step: step.to_string(),
                        left,
                    })
                }
            }
        } else {
            false
        };
        // Made now, so a probe that never gets a place is given back.
        let pass = Pass {
            seat: Arc::new(Seat {
                gate: self.clone(),
                permit: Mutex::new(None),
                refused: AtomicBool::new(false),
            }),
            probe,
        };
        if self.is_slow(now) {
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => self.wait_for_place().await.ok_or_else(|| self.busy(step))?,
            };
            *pass.seat.permit.lock().unwrap() = Some(permit);
        }
        Ok(pass)
    }

    /// A place, waiting up to the queue timeout; `None` if none came free.
    async fn wait_for_place(&self) -> Option<OwnedSemaphorePermit> {
        let wait = self.limits.queue_timeout;
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => None,
        }
    }

    /// The error of a call that waited for a place in vain.
    fn busy(&self, step: &str) -> PolicyError {
        PolicyError::Saturated {
            step: step.to_string(),
            limit: self.limits.concurrency,
            waited: self.limits.queue_timeout,
        }
    }

    /// The quarantine's answer for a call now.
    pub fn admit(&self, now: Instant) -> Admit {
        self.breaker.lock().unwrap().admit(now)
    }

    /// Count a call's outcome (`failed`: it trapped, ran out of time or
    /// memory, or returned something invalid). True when this trips the
    /// quarantine.
    pub fn record(&self, now: Instant, failed: bool, probe: bool) -> bool {
        let q = &self.limits.quarantine;
        self.breaker.lock().unwrap().record(now, failed, probe, q)
    }

    /// A probe ended without an outcome (the call was dropped): the next
    /// call may probe.
    fn probe_abandoned(&self) {
        self.breaker.lock().unwrap().probing = false;
    }
}

tokio::task_local! {
    /// The seat of the step call this task is running.
    static SEAT: Arc<Seat>;
}

/// Run one phase of `step` (`fut`) through its gate: refused while the step
/// is quarantined (for a request phase), or when it needs a place and none
/// comes free in time; its outcome counted for the quarantine.
pub async fn guarded<T>(
    step: &super::Step,
    request_phase: bool,
    fut: impl Future<Output = Result<T, PolicyError>>,
) -> Result<T, PolicyError> {
    let pass = step.gate.enter(&step.name, request_phase).await?;
    let mut result = SEAT.scope(pass.seat.clone(), fut).await;
    if pass.seat.refused.load(Ordering::Acquire) {
        // Interrupted because it waited for a place in vain: busy, not the
        // step's failure.
        result = Err(step.gate.busy(&step.name));
    }
    pass.done(&step.api, &step.name, &result);
    result
}

/// What the epoch callback does after a tick of a call's running.
pub enum Tick {
    /// Go on.
    Run,
    /// Wait for this (a place) first.
    Wait(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// End the call: it waited for a place in vain.
    Refused,
}

/// The current call has run `ran` ticks: past [`PLACE_AFTER_TICKS`] it
/// needs a place (and its step is slow). Outside a gated call (a step's
/// configuration at load) there is nothing to take.
pub fn on_tick(ran: u64) -> Tick {
    SEAT.try_with(|seat| seat.on_tick(ran)).unwrap_or(Tick::Run)
}

/// Run `f` (an outbound host call of the current call) with the call's
/// place, if it holds one, given back: other calls of the step may run
/// meanwhile. The call takes a place again if it keeps running after.
pub async fn lend<F: Future>(f: F) -> F::Output {
    let _ = SEAT.try_with(|seat| seat.permit.lock().unwrap().take());
    f.await
}

/// One call's hold on its step's gate.
#[derive(Debug)]
pub struct Seat {
    gate: Arc<StepGate>,
    /// Its place, once it has one.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// It waited for a place in vain: the next tick ends it.
    refused: AtomicBool,
}

impl Seat {
    fn on_tick(self: &Arc<Self>, ran: u64) -> Tick {
        if self.refused.load(Ordering::Acquire) {
            return Tick::Refused;
        }
        if ran < PLACE_AFTER_TICKS {
            return Tick::Run;
        }
        self.gate.mark_slow(Instant::now());
        let mut permit = self.permit.lock().unwrap();
        if permit.is_some() {
            return Tick::Run;
        }
        if let Ok(p) = self.gate.slots.clone().try_acquire_owned() {
            *permit = Some(p);
            return Tick::Run;
        }
        let seat = self.clone();
        Tick::Wait(Box::pin(async move {
            match seat.gate.wait_for_place().await {
                Some(p) => *seat.permit.lock().unwrap() = Some(p),
                None => seat.refused.store(true, Ordering::Release),
            }
        }))
    }

    /// Whether the call holds a place now (for tests).
    pub fn placed(&self) -> bool {
        self.permit.lock().unwrap().is_some()
    }
}

/// A call's pass through the gate; give its outcome with [`Pass::done`].
#[derive(Debug)]
pub struct Pass {
    seat: Arc<Seat>,
    probe: bool,
}

impl Pass {
    /// The call ended with `result`: counted for the quarantine (a host
    /// resource running out, `Busy`, is not the step's failure). Logs when
    /// it trips the quarantine.
    pub fn done<T>(mut self, api: &str, step: &str, result: &Result<T, PolicyError>) {
        let failed = matches!(
            result,
            Err(PolicyError::Trap { .. }
                | PolicyError::Timeout { .. }
                | PolicyError::Memory { .. }
                | PolicyError::BadOutput { .. })
        );
        let probe = std::mem::take(&mut self.probe);
        let gate = &self.seat.gate;
        if gate.record(Instant::now(), failed, probe) {
            let b = gate.breaker.lock().unwrap();
            tracing::warn!(
                api,
                step,
                cool_down = ?b.cool_down,
                "step `{step}` quarantined: it failed {} of its last {} calls; its calls are answered by its fail-open/closed rule until a probe succeeds",
                b.last_failures,
                b.last_calls
            );
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.probe {
            self.seat.gate.probe_abandoned();
        }
        // The place goes back now, even while something (a stray clone of
        // the seat) still holds the seat.
        self.seat.permit.lock().unwrap().take();
    }
}

/// Buckets per window: the window slides in tenths.
const BUCKETS: u32 = 10;

/// The quarantine's state.
#[derive(Debug, Default)]
struct Breaker {
    /// (bucket number, calls, failures), oldest first, within the window.
    buckets: VecDeque<(u64, u32, u32)>,
    /// Set while quarantined: calls are refused until then.
    open_until: Option<Instant>,
    /// A probe is running.
    probing: bool,
    /// The cool-down of the last trip.
    cool_down: Duration,
    /// When the last probe succeeded (the doubling is forgotten after
    /// `max-cool-down` without a trip).
    closed_at: Option<Instant>,
    /// The counts that tripped it last (for the log).
    last_calls: u32,
    last_failures: u32,
    /// Where bucket numbers count from.
    origin: Option<Instant>,
}

impl Breaker {
    fn admit(&mut self, now: Instant) -> Admit {
        let Some(until) = self.open_until else {
            return Admit::Run { probe: false };
        };
        if now < until {
            return Admit::Quarantined { left: until - now };
        }
        if self.probing {
            // One probe at a time; the rest are answered as before.
            return Admit::Quarantined {
                left: Duration::from_secs(1),
            };
        }
        self.probing = true;
        Admit::Run { probe: true }
    }

    fn record(&mut self, now: Instant, failed: bool, probe: bool, q: &QuarantineLimits) -> bool {
        if probe {
            self.probing = false;
            if failed {
                self.trip(now, q, true);
                return true;
            }
            self.open_until = None;
            self.closed_at = Some(now);
            self.buckets.clear();
            return false;
        }
        if self.open_until.is_some() {
            // A call admitted before the trip, or a response phase.
            return false;
        }
        let origin = *self.origin.get_or_insert(now);
        let width = (q.window / BUCKETS).max(Duration::from_micros(1));
        let n = (now.saturating_duration_since(origin).as_nanos() / width.as_nanos()) as u64;
        while self
            .buckets
            .front()
            .is_some_and(|b| b.0 + u64::from(BUCKETS) <= n)
        {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some(b) if b.0 == n => {
                b.1 += 1;
                b.2 += u32::from(failed);
            }
            _ => self.buckets.push_back((n, 1, u32::from(failed))),
        }
        if !failed {
            return false;
        }
        let (calls, failures) = self
            .buckets
            .iter()
            .fold((0, 0), |(c, f), b| (c + b.1, f + b.2));
        if failures >= q.failures && failures * 2 >= calls {
            self.last_calls = calls;
            self.last_failures = failures;
            self.trip(now, q, false);
            return true;
        }
        false
    }

    /// Quarantine from `now`: the first cool-down, or twice the last one
    /// after a failed probe or when it tripped again soon after closing.
    fn trip(&mut self, now: Instant, q: &QuarantineLimits, probe_failed: bool) {
        let again = probe_failed
            || self
                .closed_at
                .is_some_and(|c| now.saturating_duration_since(c) < q.max_cool_down);
        self.cool_down = if again && !self.cool_down.is_zero() {
            (self.cool_down * 2).min(q.max_cool_down)
        } else {
            q.cool_down
        };
        self.open_until = Some(now + self.cool_down);
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GateLimits {
        GateLimits {
            concurrency: 1,
            queue_timeout: Duration::from_millis(50),
            quarantine: QuarantineLimits::default(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn runs(a: Admit) -> Option<bool> {
        match a {
            Admit::Run { probe } => Some(probe),
            Admit::Quarantined { .. } => None,
        }
    }

    /// Trip the gate at `t0` with five failures 1 ms apart; returns when.
    fn trip(g: &StepGate, t0: Instant) -> Instant {
        let mut tripped = false;
        for i in 0..5 {
            assert!(!tripped);
            tripped = g.record(t0 + ms(i), true, false);
        }
        assert!(tripped, "the fifth failure trips it");
        t0 + ms(4)
    }

    #[test]
    fn five_failures_in_the_window_trip_it_and_it_refuses_for_the_cool_down() {
        let g = StepGate::new(limits());
        let t0 = Instant::now();
        assert_eq!(runs(g.admit(t0)), Some(false));
        let at = trip(&g, t0);
        match g.admit(at + ms(1)) {
            Admit::Quarantined { left } => assert_eq!(left, Duration::from_secs(5) - ms(1)),
            Admit::Run { .. } => panic!("runs while quarantined"),
        }
        assert_eq!(runs(g.admit(at + Duration::from_secs(5) - ms(1))), None);
    }

    #[test]
    fn failures_spread_beyond_the_window_or_among_successes_do_not_trip_it() {
        let g = StepGate::new(limits());
        let t0 = Instant::now();
        // One failure every 3 s: never 5 within 10 s.
        for i in 0..20 {
            assert!(!g.record(t0 + Duration::from_secs(3 * i), true, false));
        }
        // Five failures among twenty calls: under half.
        let g = StepGate::new(limits());
        for i in 0..20u64 {
            assert!(!g.record(t0 + ms(i), i % 4 == 0, false));
        }
        assert_eq!(runs(g.admit(t0 + ms(30))), Some(false));
    }

    #[test]
    fn after_the_cool_down_one_probe_runs_and_its_success_closes_it() {
        let g = StepGate::new(limits());
        let at = trip(&g, Instant::now());
        let after = at + Duration::from_secs(5);
        assert_eq!(runs(g.admit(after)), Some(true), "the probe");
        assert_eq!(runs(g.admit(after)), None, "one probe at a time");
        assert!(!g.record(after + ms(1), false, true));
        assert_eq!(runs(g.admit(after + ms(2))), Some(false));
        assert_eq!(runs(g.admit(after + ms(3))), Some(false));
    }

    #[test]
    fn a_failed_probe_doubles_the_cool_down_up_to_the_maximum() {
        let g = StepGate::new(limits());
        let mut at = trip(&g, Instant::now());
        let mut expected = Duration::from_secs(5);
        for want in [10, 20, 40, 60, 60] {
            at += expected;
            assert_eq!(runs(g.admit(at - ms(1))), None);
            assert_eq!(runs(g.admit(at)), Some(true), "probe after {expected:?}");
            assert!(g.record(at, true, true), "a failed probe trips it again");
            expected = Duration::from_secs(want);
            match g.admit(at) {
                Admit::Quarantined { left } => assert_eq!(left, expected),
                Admit::Run { .. } => panic!("runs after a failed probe"),
            }
        }
    }

    #[test]
    fn tripping_soon_after_closing_doubles_and_later_starts_over() {
        let g = StepGate::new(limits());
        let at = trip(&g, Instant::now());
        let after = at + Duration::from_secs(5);
        assert_eq!(runs(g.admit(after)), Some(true));
        g.record(after, false, true);
        // Soon after: twice the cool-down.
        let again = trip(&g, after + ms(10));
        assert!(
            matches!(g.admit(again), Admit::Quarantined { left } if left == Duration::from_secs(10))
        );
        let after = again + Duration::from_secs(10);
        assert_eq!(runs(g.admit(after)), Some(true));
        g.record(after, false, true);
        // Healthy for longer than max-cool-down: the first cool-down again.
        let later = trip(&g, after + Duration::from_secs(61));
        assert!(
            matches!(g.admit(later), Admit::Quarantined { left } if left == Duration::from_secs(5))
        );
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let g = Arc::new(StepGate::new(GateLimits {
            quarantine: QuarantineLimits {
                cool_down: ms(1),
                ..QuarantineLimits::default()
            },
            ..limits()
        }));
        trip(&g, Instant::now());
        std::thread::sleep(ms(5));
        rt.block_on(async {
            let probe = g.enter("s", true).await.expect("the probe runs");
            assert!(matches!(
                g.enter("s", true).await,
                Err(PolicyError::Quarantined { .. })
            ));
            drop(probe);
            let probe = g.enter("s", true).await.expect("another probe");
            probe.done("a", "s", &Ok::<(), PolicyError>(()));
            let pass = g.enter("s", true).await.expect("closed");
            drop(pass);
        });
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn the_calls_of_a_healthy_step_take_no_place() {
        let g = Arc::new(StepGate::new(limits()));
        rt().block_on(async {
            let a = g.enter("s", true).await.unwrap();
            let b = g.enter("s", true).await.expect("no wait for a place");
            assert_eq!(g.free(), 1);
            // A tick into its running: still none.
            let tick = SEAT.scope(a.seat.clone(), async { on_tick(1) }).await;
            assert!(matches!(tick, Tick::Run));
            assert!(!a.seat.placed());
            assert!(!g.is_slow(Instant::now()));
            drop((a, b));
        });
    }

    #[test]
    fn a_call_that_keeps_running_takes_a_place_and_makes_its_step_slow() {
        let g = Arc::new(StepGate::new(limits()));
        rt().block_on(async {
            let a = g.enter("s", true).await.unwrap();
            let b = g.enter("s", true).await.unwrap();
            let tick = SEAT.scope(a.seat.clone(), async { on_tick(PLACE_AFTER_TICKS) });
            assert!(matches!(tick.await, Tick::Run), "a free place, taken");
            assert!(a.seat.placed());
            assert_eq!(g.free(), 0);
            assert!(g.is_slow(Instant::now()));
            // The other keeps running too: it waits its queue timeout for
            // the place, then is refused, and its next tick ends it.
            let started = Instant::now();
            let Tick::Wait(wait) = SEAT.scope(b.seat.clone(), async { on_tick(2) }).await else {
                panic!("no place, yet no wait")
            };
            wait.await;
            assert!(started.elapsed() >= ms(50));
            assert!(!b.seat.placed());
            let tick = SEAT.scope(b.seat.clone(), async { on_tick(3) }).await;
            assert!(matches!(tick, Tick::Refused));
            // A call that waits gets the place the first one gives back.
            let c = g.enter("s", true).await;
            assert!(
                matches!(c, Err(PolicyError::Saturated { limit: 1, .. })),
                "while slow, calls take their place before they start"
            );
            let g2 = g.clone();
            let waiting =
                tokio::spawn(async move { g2.enter("s", true).await.map(|p| p.seat.placed()) });
            tokio::time::sleep(ms(10)).await;
            drop(a);
            assert_eq!(
                waiting.await.unwrap().ok(),
                Some(true),
                "the waiting call ran"
            );
            drop(b);
        });
        assert_eq!(g.free(), 1, "the places come back");
    }

    #[test]
    fn a_step_is_slow_for_a_while_after_its_last_long_call() {
        let g = StepGate::new(limits());
        let t = Instant::now();
        assert!(!g.is_slow(t));
        g.mark_slow(t);
        assert!(g.is_slow(t + SLOW_FOR - ms(10)));
        assert!(!g.is_slow(t + SLOW_FOR + ms(10)));
        // A later one extends it; an earlier one does not shorten it.
        g.mark_slow(t + ms(500));
        g.mark_slow(t);
        assert!(g.is_slow(t + SLOW_FOR + ms(10)));
    }

    #[test]
    fn a_call_in_a_host_call_gives_its_place_back() {
        let g = Arc::new(StepGate::new(limits()));
        g.mark_slow(Instant::now());
        rt().block_on(async {
            let pass = g.enter("s", true).await.unwrap();
            assert!(pass.seat.placed());
            let g2 = g.clone();
            // While it waits in its host call, another call runs.
            SEAT.scope(pass.seat.clone(), async {
                lend(async move {
                    let other = g2.enter("s", true).await.expect("the place given back");
                    drop(other);
                })
                .await
            })
            .await;
            assert!(
                !pass.seat.placed(),
                "it takes one again only if it keeps running"
            );
            assert_eq!(g.free(), 1);
            let tick = SEAT.scope(pass.seat.clone(), async { on_tick(5) }).await;
            assert!(matches!(tick, Tick::Run));
            assert!(pass.seat.placed());
            drop(pass);
        });
        assert_eq!(g.free(), 1, "no place gained or lost");
    }
}
