//! `tollgate:policy/clock`: wall-clock and monotonic time.

use crate::policy::bindings;
use crate::policy::StepState;
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

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
