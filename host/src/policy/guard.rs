//! Bounds on what plugins can write into the gateway's log.
//!
//! A plugin needs no grant to log, so without bounds one plugin could fill
//! the operator's disk (one looping plugin wrote ~120 MB/s). Three bounds:
//!
//! - each step's `log` calls are rate-limited, across all its instances,
//!   to `plugin-log-rate` lines per second; lines over the limit are
//!   dropped and counted, and the next line that passes (or the step's end,
//!   at a reload or shutdown) reports how many were dropped;
//! - each line is cut to `plugin-log-line` bytes (after escaping);
//! - the warnings the host itself writes when a step traps, times out or
//!   fails are rate-limited per API and step, with the same counted report.
//!
//! And one capture: a Rust guest prints its panic message to standard error
//! (`wasi:cli/stderr`), which the host used to discard, leaving the operator
//! with `<wasm function 392>` frames. Each instance now gets a bounded
//! standard error ([`GuestStderr`]); when it traps, what it wrote (the panic
//! message) goes into the failure's log line, bounded and escaped.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a step's plugin may log. Defaults: 100 lines per second, lines
/// of at most 4 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines per second, for all instances of the step together.
    pub lines_per_sec: u32,
    /// Longest line in bytes (after escaping); longer ones are cut.
    pub line_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            lines_per_sec: DEFAULT_LOG_RATE,
            line_bytes: DEFAULT_LOG_LINE,
        }
    }
}

pub use crate::manifest::{DEFAULT_LOG_LINE, DEFAULT_LOG_RATE};
/// Largest `plugin-log-rate` accepted.
pub const MAX_LOG_RATE: u32 = 100_000;
/// Smallest and largest `plugin-log-line` accepted.
pub const LOG_LINE_RANGE: std::ops::RangeInclusive<usize> = 80..=(64 << 10);

/// Check log limits; the message starts with the setting's name
/// (`log-rate`, `log-line`) so callers can prefix `limits.plugin-`.
pub fn check_log_limits(l: &LogLimits) -> Result<(), String> {
    if l.lines_per_sec == 0 || l.lines_per_sec > MAX_LOG_RATE {
        return Err(format!(
            "log-rate = {} must be between 1 and {MAX_LOG_RATE} lines per second",
            l.lines_per_sec
        ));
    }
    if !LOG_LINE_RANGE.contains(&l.line_bytes) {
        return Err(format!(
            "log-line = {} bytes must be between {} bytes and {}KiB",
            l.line_bytes,
            LOG_LINE_RANGE.start(),
            LOG_LINE_RANGE.end() >> 10
        ));
    }
    Ok(())
}

/// What an instance's standard error keeps: enough for a panic message and
/// its location.
pub const STDERR_CAPTURE: usize = 4096;
/// How much of the captured standard error a failure's log line shows.
const STDERR_SHOWN: usize = 1024;

/// Host warnings (traps, timeouts, failures) per API and step per second.
pub const WARNINGS_PER_SEC: u64 = 10;

fn now_s() -> u64 {
    // Window 0 is "never": the first call always opens a window.
    super::host::clock::process_start().elapsed().as_secs() + 1
}

/// A one-second window shared by many threads: at most `per_sec` admitted
/// per window, the rest counted.
pub struct RateGate {
    per_sec: u64,
    window: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl RateGate {
    pub fn new(per_sec: u64) -> Self {
        RateGate {
            per_sec,
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: go ahead, and first report that `n` (maybe 0) were
    /// suppressed since the last report. `None`: suppressed (and counted).
    pub fn admit(&self) -> Option<u64> {
        let now = now_s();
        let w = self.window.load(Ordering::Acquire);
        let mut report = 0;
        if w != now
            && self
                .window
                .compare_exchange(w, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.used.store(0, Ordering::Release);
            report = self.suppressed.swap(0, Ordering::AcqRel);
        }
        if self.used.fetch_add(1, Ordering::AcqRel) < self.per_sec {
            Some(report)
        } else {
            // Keep a report this call could not make for the next one.
            self.suppressed.fetch_add(report + 1, Ordering::AcqRel);
            None
        }
    }

    /// Suppressed and not yet reported (and reset to 0).
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::AcqRel)
    }
}

/// A step's log budget, shared by its instances (and by the clones of the
/// step: a snapshot job, the serving chain).
pub struct StepLog {
    api: Arc<str>,
    step: Arc<str>,
    pub limits: LogLimits,
    lines: RateGate,
}

impl StepLog {
    pub fn new(api: Arc<str>, step: Arc<str>, limits: LogLimits) -> Self {
        StepLog {
            api,
            step,
            limits,
            lines: RateGate::new(u64::from(limits.lines_per_sec)),
        }
    }

    /// Whether the next line may be written; reports dropped lines first.
    pub fn admit(&self, request_id: &str) -> bool {
        match self.lines.admit() {
            Some(0) => true,
            Some(n) => {
                self.report(n, request_id);
                true
            }
            None => false,
        }
    }

    fn report(&self, n: u64, request_id: &str) {
        tracing::warn!(
            target: "tollgate::plugin",
            api = %self.api,
            step = %self.step,
            request_id,
            suppressed = n,
            "plugin log: suppressed {n} lines over the step's limit of {} lines per second (limits.plugin-log-rate)",
            self.limits.lines_per_sec
        );
    }
}

impl Drop for StepLog {
    fn drop(&mut self) {
        let n = self.lines.take_suppressed();
        if n > 0 {
            self.report(n, "");
        }
    }
}

impl std::fmt::Debug for StepLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepLog")
            .field("limits", &self.limits)
            .finish()
    }
}

/// The warning gates of every (API, step) that failed lately. Bounded: past
/// `MAX_GATES` entries the map starts over.
static WARN_GATES: Mutex<Option<WarnGates>> = Mutex::new(None);
/// (API, step) -> its gate.
type WarnGates = HashMap<(String, String), Arc<RateGate>>;
const MAX_GATES: usize = 4096;

/// Whether a warning about step `step` of `api` may be written now: `Some(n)`
/// with the number suppressed since the last one written, `None` to drop it.
pub fn admit_warning(api: &str, step: &str) -> Option<u64> {
    let gate = {
        let mut gates = WARN_GATES.lock().unwrap_or_else(|p| p.into_inner());
        let map = gates.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_GATES && !map.contains_key(&(api.to_string(), step.to_string())) {
            map.clear();
        }
        map.entry((api.to_string(), step.to_string()))
            .or_insert_with(|| Arc::new(RateGate::new(WARNINGS_PER_SEC)))
            .clone()
    };
    gate.admit()
}

/// A policy failure's warning, rate-limited per API and step (the one way
/// the server logs them). `suffix` is appended to the message.
pub fn warn_failure(e: &super::PolicyError, request_id: &str, api: &str, suffix: &str) {
    let step = e.step();
    match admit_warning(api, step) {
        None => {}
        Some(0) => tracing::warn!(request_id, api, "{e}{suffix}"),
        Some(n) => tracing::warn!(
            request_id,
            api,
            suppressed = n,
            "{e}{suffix} (and {n} similar warnings about step `{step}` suppressed, at most {WARNINGS_PER_SEC} per second)"
        ),
    }
}

// ---------------------------------------------------------------------------
// Standard error of an instance.

/// An instance's standard error: keeps the first [`STDERR_CAPTURE`] bytes,
/// accepts and drops the rest (a guest is never refused a write, so a
/// chatty plugin does not fail because of it).
#[derive(Clone, Default)]
pub struct GuestStderr(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

impl GuestStderr {
    fn push(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = STDERR_CAPTURE.saturating_sub(c.kept.len());
        let take = room.min(bytes.len());
        c.kept.extend_from_slice(&bytes[..take]);
        c.dropped += (bytes.len() - take) as u64;
    }

    /// Forget what was captured (an instance reused for another request).
    pub(super) fn clear(&self) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.kept.clear();
        c.dropped = 0;
    }

    /// What the guest wrote, as one escaped line of at most about 1 KiB,
    /// or `None` if it wrote nothing.
    pub fn text(&self) -> Option<String> {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&c.kept);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let mut shown = super::escape_log_within(text, STDERR_SHOWN);
        let more = c.dropped + (c.kept.len() as u64).saturating_sub(STDERR_SHOWN as u64);
        if c.dropped > 0 || shown.ends_with("(truncated)") {
            shown.push_str(&format!(" [{more} more bytes not shown]"));
        }
        Some(shown)
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_its_rate_and_counts_the_rest() {
        let g = RateGate::new(3);
        let admitted = (0..10).filter(|_| g.admit().is_some()).count();
        // A window boundary may fall inside the loop: at most two windows.
        assert!((3..=6).contains(&admitted), "{admitted}");
        let suppressed = 10 - admitted as u64;
        assert_eq!(g.take_suppressed(), suppressed);
    }

    #[test]
    fn stderr_is_bounded_and_escaped() {
        let s = GuestStderr::default();
        assert_eq!(s.text(), None);
        s.push(b"panicked at src/lib.rs:1:1:\nboom\x1b[31m\n");
        assert_eq!(
            s.text().unwrap(),
            "panicked at src/lib.rs:1:1:\\nboom\\u{1b}[31m"
        );
        s.push(&vec![b'x'; 100_000]);
        let t = s.text().unwrap();
        assert!(t.len() < STDERR_SHOWN + 100, "{}", t.len());
        assert!(t.contains("more bytes not shown"), "{t}");
    }
}
