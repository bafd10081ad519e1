//! `tollgate:policy/clock`: wall-clock and monotonic time.

use crate::policy::bindings;
use crate::policy::StepState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// When this process first asked (the monotonic clock's zero).
pub(crate) fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl bindings::clock::Host for StepState {
    fn now_ms(&mut self) -> u64 {
        self::now_ms()
    }

    fn monotonic_ns(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }
}

/// A wall clock fixed by [`fix_now_ms`]; 0 is the real clock.
static FIXED_NOW_MS: AtomicU64 = AtomicU64::new(0);

/// Fix the wall clock that policies and the host services of this process
/// see at `ms` (Unix milliseconds; 0 goes back to the real clock). Only the
/// policy test host (`tollgate policy test-host`) calls it, for the test
/// harness's `set_now_ms`; a serving gateway never does. The monotonic clock
/// is not affected.
pub fn fix_now_ms(ms: u64) {
    FIXED_NOW_MS.store(ms, Ordering::Relaxed);
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    let fixed = FIXED_NOW_MS.load(Ordering::Relaxed);
    if fixed != 0 {
        return fixed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
