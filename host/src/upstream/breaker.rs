//! Passive health checks: one circuit breaker per upstream target.
//!
//! Every call's outcome is reported to its target's breaker. After
//! `failures` consecutive failures (connect errors, timeouts, broken or
//! invalid responses, and 5xx statuses when configured) the breaker opens:
//! the picker skips the target for the cool-down. When the cool-down has
//! passed, exactly one call is let through as a probe (half-open): its
//! success closes the breaker, its failure opens it for another cool-down.
//! While a probe is in flight, other calls skip the target.
//!
//! ```text
//!            failures in a row >= N               cool-down passed
//!   Closed ---------------------------> Open ---------------------> HalfOpen
//!     ^                                  ^   (next call is the probe)  |
//!     |          probe succeeded         |      probe failed           |
//!     +----------------------------------+-----------------------------+
//! ```
//!
//! State changes are returned to the caller as [`Transition`]s, exactly once
//! each, so they are logged once rather than per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A breaker's settings (from the manifest's `[api.upstream.breaker]`).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub failures: u32,
    /// How long an open breaker keeps its target out of rotation.
    pub cool_down: Duration,
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through; `failures` is the current run of failures.
    Closed { failures: u32 },
    /// Calls skip the target until `until`.
    Open { until: Instant },
    /// One probe call is in flight; other calls skip the target.
    HalfOpen,
}

/// A state change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed -> open after this many failures in a row.
    Opened { failures: u32 },
    /// Open -> half-open: a probe is on its way.
    HalfOpened,
    /// Half-open -> open: the probe failed.
    Reopened,
    /// Half-open -> closed: the probe succeeded.
    Closed,
}

impl Transition {
    /// The state's name after this transition, for logs.
    pub fn state(&self) -> &'static str {
        match self {
            Transition::Opened { .. } | Transition::Reopened => "open",
            Transition::HalfOpened => "half-open",
            Transition::Closed => "closed",
        }
    }
}

/// Whether a call may use the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes, as an ordinary call.
    Yes,
    /// Yes, as the half-open probe (its outcome decides the state).
    Probe,
    /// No: try another target; this one may be tried again at `retry_at`.
    No { retry_at: Instant },
}

/// One target's breaker.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

/// How long callers are told to wait while a probe is in flight.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state (for tests and logs).
    pub fn state(&self) -> State {
        *self.lock()
    }

    /// May a call use this target now?
    pub fn admit(&self, now: Instant) -> (Admit, Option<Transition>) {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => (Admit::Yes, None),
            State::Open { until } if now < until => (Admit::No { retry_at: until }, None),
            State::Open { .. } => {
                *s = State::HalfOpen;
                (Admit::Probe, Some(Transition::HalfOpened))
            }
            State::HalfOpen => (
                Admit::No {
                    retry_at: now + PROBE_WAIT,
                },
                None,
            ),
        }
    }

    /// Report a call's outcome. `probe` says whether the call was admitted
    /// as the probe; outcomes of ordinary calls that finish while the
    /// breaker is open or half-open (they started before it opened) are
    /// ignored: only the probe decides.
    pub fn report(&self, probe: bool, ok: bool, now: Instant) -> Option<Transition> {
        if self.settings.failures == 0 {
            return None;
        }
        let mut s = self.lock();
        match (*s, probe) {
            (State::HalfOpen, true) if ok => {
                *s = State::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (State::HalfOpen, true) => {
                *s = State::Open {
                    until: now + self.settings.cool_down,
                };
                Some(Transition::Reopened)
            }
            (State::Closed { .. }, _) if ok => {
                *s = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, _) => {
                let failures = failures.saturating_add(1);
                if failures >= self.settings.failures {
                    *s = State::Open {
                        until: now + self.settings.cool_down,
                    };
                    Some(Transition::Opened { failures })
                } else {
                    *s = State::Closed { failures };
                    None
                }
            }
            _ => None,
        }
    }

    /// A probe ended without an outcome (the call was dropped, e.g. the
    /// client went away): let the next call probe instead.
    pub fn abandon_probe(&self, now: Instant) {
        let mut s = self.lock();
        if *s == State::HalfOpen {
            *s = State::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            failures,
            cool_down: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_n_failures_in_a_row_and_says_so_once() {
        let b = breaker(3);
        let t = Instant::now();
        assert_eq!(b.report(false, false, t), None);
        assert_eq!(b.report(false, false, t), None);
        // A success resets the run.
        assert_eq!(b.report(false, true, t), None);
        assert_eq!(b.report(false, false, t), None);
        assert_eq!(b.report(false, false, t), None);
        assert_eq!(
            b.report(false, false, t),
            Some(Transition::Opened { failures: 3 })
        );
        // Late failures of calls already in flight change nothing and log nothing.
        assert_eq!(b.report(false, false, t), None);
        assert_eq!(
            b.admit(t + Duration::from_secs(1)),
            (
                Admit::No {
                    retry_at: t + Duration::from_secs(10)
                },
                None
            )
        );
    }

    #[test]
    fn one_probe_after_the_cool_down() {
        let b = breaker(1);
        let t = Instant::now();
        assert_eq!(
            b.report(false, false, t),
            Some(Transition::Opened { failures: 1 })
        );
        let later = t + Duration::from_secs(11);
        assert_eq!(b.admit(later), (Admit::Probe, Some(Transition::HalfOpened)));
        // Only one probe at a time.
        assert!(matches!(b.admit(later).0, Admit::No { .. }));
        // An ordinary call's late success does not close it.
        assert_eq!(b.report(false, true, later), None);
        assert_eq!(b.state(), State::HalfOpen);
        // The probe fails: open again for a whole cool-down.
        assert_eq!(b.report(true, false, later), Some(Transition::Reopened));
        assert!(matches!(b.admit(later).0, Admit::No { .. }));
        let later2 = later + Duration::from_secs(10);
        assert_eq!(b.admit(later2).0, Admit::Probe);
        assert_eq!(b.report(true, true, later2), Some(Transition::Closed));
        assert_eq!(b.admit(later2), (Admit::Yes, None));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let b = breaker(1);
        let t = Instant::now();
        b.report(false, false, t);
        let later = t + Duration::from_secs(11);
        assert_eq!(b.admit(later).0, Admit::Probe);
        b.abandon_probe(later);
        assert_eq!(b.admit(later).0, Admit::Probe);
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let b = breaker(0);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(b.report(false, false, t), None);
        }
        assert_eq!(b.admit(t), (Admit::Yes, None));
    }
}
