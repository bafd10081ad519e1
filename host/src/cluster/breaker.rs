//! The circuit breaker in front of Redis: after `failures` consecutive
//! failed calls (errors or timeouts) it opens, and for `cool_down` no call
//! is sent at all (each is answered at once as a fallback); then exactly one
//! call goes through as a probe: its success closes the breaker, its
//! failure opens it for another cool-down. So a dead Redis costs each
//! request nothing after the first few, not a timeout each.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: call Redis.
    Call,
    /// The cool-down is over: this call is the one probe.
    Probe,
    /// Open: do not call Redis.
    Refuse,
}

/// A breaker over a clock of milliseconds the caller supplies (monotonic).
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down_ms: u64,
    failures: AtomicU32,
    /// 0 while closed; else when the cool-down ends.
    open_until: AtomicU64,
    probing: AtomicBool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down_ms: u64) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down_ms: cool_down_ms.max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Whether a call at `now` may go to Redis.
    pub fn admit(&self, now: u64) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Call;
        }
        if now < until {
            return Admit::Refuse;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Refuse,
        }
    }

    /// A call answered. Returns `true` when this closed an open breaker.
    pub fn success(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        let was_open = self.open_until.swap(0, Ordering::AcqRel) != 0;
        self.probing.store(false, Ordering::Release);
        was_open
    }

    /// A call failed at `now`. Returns `true` when this opened the breaker
    /// (a failed probe opens it again).
    pub fn failure(&self, now: u64, probe: bool) -> bool {
        if probe {
            self.open_until
                .store(now + self.cool_down_ms, Ordering::Release);
            self.probing.store(false, Ordering::Release);
            return true;
        }
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold
            && self
                .open_until
                .compare_exchange(
                    0,
                    now + self.cool_down_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return true;
        }
        false
    }

    /// Whether it is open (refusing, or waiting for its probe) now.
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once_after_the_cool_down() {
        let b = Breaker::new(3, 1000);
        assert_eq!(b.admit(0), Admit::Call);
        assert!(!b.failure(10, false));
        assert!(!b.failure(11, false));
        // A success in between starts the count again.
        assert!(!b.success());
        assert!(!b.failure(12, false));
        assert!(!b.failure(13, false));
        assert!(b.failure(14, false), "the third in a row opens it");
        assert!(b.is_open());
        // Further failures (calls already in flight) do not move the end.
        assert!(!b.failure(500, false));
        assert_eq!(b.admit(15), Admit::Refuse);
        assert_eq!(b.admit(1013), Admit::Refuse);
        // The cool-down is over: exactly one probe, the rest still refused.
        assert_eq!(b.admit(1014), Admit::Probe);
        assert_eq!(b.admit(1014), Admit::Refuse);
        assert_eq!(b.admit(5000), Admit::Refuse);
        // The probe fails: another whole cool-down from then.
        assert!(b.failure(1020, true));
        assert_eq!(b.admit(2019), Admit::Refuse);
        assert_eq!(b.admit(2020), Admit::Probe);
        // The probe answers: closed, every call goes through again.
        assert!(b.success());
        assert!(!b.is_open());
        assert_eq!(b.admit(2021), Admit::Call);
        assert_eq!(b.admit(2022), Admit::Call);
        // And it takes `threshold` new failures to open it again.
        assert!(!b.failure(3000, false));
        assert!(!b.failure(3001, false));
        assert!(b.failure(3002, false));
    }

    #[test]
    fn racing_callers_get_one_probe() {
        let b = std::sync::Arc::new(Breaker::new(1, 10));
        assert!(b.failure(0, false));
        let probes: usize = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| b.admit(100) == Admit::Probe).count()
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(probes, 1);
    }
}
