//! `tollgate:policy/sink`: structured lines (access logs) written off the
//! request path to a file or standard output, with the `sink` grant.

use crate::policy::bindings;
use crate::policy::host::Capability;
use crate::policy::StepState;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most bytes of lines waiting to be written; past it lines are dropped
/// and counted (a stalled disk must not grow the gateway without bound).
pub const MAX_PENDING: usize = 16 << 20;
/// How long a line waits at most before the writer writes it.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Pending bytes at which the writer is woken before its round is up.
const WAKE_AT: usize = 256 << 10;
/// Longest line kept (in characters); the rest is cut.
const MAX_LINE: usize = 64 << 10;

/// The sink for structured lines (access logs). A line is appended to a
/// buffer that a writer thread writes out every [`FLUSH_EVERY`] (sooner
/// when [`WAKE_AT`] bytes wait): off the request path, and without waking
/// the writer for every line (a channel whose writer woke per line cost
/// each logged call a futex wake-up and two thread switches). When
/// [`MAX_PENDING`] bytes wait, lines are dropped and counted rather than
/// slowing requests down. [`Sink::flush`] (at shutdown) and dropping the
/// sink write what is pending before they return.
pub struct Sink {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
    pub dropped: AtomicU64,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while a batch is written, so that a flush returns only after
    /// every line before it is out.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    text: String,
    closing: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Write out what is pending now; whether the sink is closing.
    fn write_pending(&self, batch: &mut String) -> bool {
        let mut out = lock(&self.out);
        let closing = {
            let mut p = lock(&self.pending);
            std::mem::swap(&mut p.text, batch);
            p.closing
        };
        if !batch.is_empty() {
            let _ = out.write_all(batch.as_bytes());
            let _ = out.flush();
            batch.clear();
        }
        closing
    }
}

impl Sink {
    /// Write to `path`, or to standard output when none.
    pub fn new(path: Option<PathBuf>) -> anyhow::Result<Sink> {
        let out: Box<dyn Write + Send> = match &path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|e| anyhow::anyhow!("access log {}: {e}", p.display()))?,
                )
            }
            None => Box::new(std::io::stdout()),
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(out),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("tollgate-sink".into())
            .spawn(move || writer(&s))?;
        Ok(Sink {
            shared,
            writer: Some(writer),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue one line; newlines and other control characters are escaped,
    /// and a line is cut at 64 Ki characters.
    pub fn write_line(&self, line: &str) {
        let plain = line.len() <= MAX_LINE
            && line
                .bytes()
                // ASCII controls and DEL; 0xC2 starts the C1 controls (and
                // other Latin-1 characters, which take the slow way).
                .all(|b| b >= 0x20 && b != 0x7f && b != 0xc2);
        let escaped;
        let line = if plain {
            line
        } else {
            let mut clean = String::with_capacity(line.len());
            for c in line.chars().take(MAX_LINE) {
                if c.is_control() {
                    clean.extend(c.escape_default());
                } else {
                    clean.push(c);
                }
            }
            escaped = clean;
            &escaped
        };
        let mut p = lock(&self.shared.pending);
        if p.text.len() + line.len() + 1 > MAX_PENDING {
            drop(p);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::observe::metrics::global().dropped("access_log", 1);
            return;
        }
        let before = p.text.len();
        p.text.push_str(line);
        p.text.push('\n');
        let wake = before < WAKE_AT && p.text.len() >= WAKE_AT;
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Write every line queued so far before returning.
    pub fn flush(&self) {
        self.shared.write_pending(&mut String::new());
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        lock(&self.shared.pending).closing = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread: each round (at most [`FLUSH_EVERY`], shorter when
/// woken), write what is pending; once the sink closes, write the rest and
/// end.
fn writer(shared: &Shared) {
    let mut batch = String::new();
    loop {
        {
            let p = lock(&shared.pending);
            if !p.closing && p.text.len() < WAKE_AT {
                let _ = shared.wake.wait_timeout(p, FLUSH_EVERY);
            }
        }
        if shared.write_pending(&mut batch) {
            shared.write_pending(&mut batch);
            return;
        }
        // Keep a large buffer only while lines come that fast.
        batch.shrink_to(WAKE_AT);
    }
}

impl bindings::sink::Host for StepState {
    fn write_line(&mut self, line: String) {
        if self.grants.has(&Capability::Sink) {
            self.services.sink.write_line(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lines_are_written_in_order_escaped_and_within_a_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("access.log");
        let sink = Sink::new(Some(path.clone())).unwrap();
        sink.write_line("{\"a\":1}");
        sink.write_line("two\nlines\u{85}and\u{1b}[31m");
        sink.write_line("café ü");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lines(&path).len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            lines(&path),
            vec![
                "{\"a\":1}".to_string(),
                "two\\nlines\\u{85}and\\u{1b}[31m".to_string(),
                "café ü".to_string(),
            ]
        );
        drop(sink);
    }

    #[test]
    fn flush_and_drop_write_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let sink = Sink::new(Some(path.clone())).unwrap();
        for i in 0..1000 {
            sink.write_line(&format!("line {i}"));
        }
        sink.flush();
        assert_eq!(lines(&path).len(), 1000, "flush returns after the write");
        for i in 1000..30_000 {
            sink.write_line(&format!("line {i}"));
        }
        drop(sink);
        let got = lines(&path);
        assert_eq!(got.len(), 30_000);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().len(),
            got.iter().map(|l| l.len() + 1).sum::<usize>()
        );
    }

    #[test]
    fn past_the_bound_lines_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let sink = Sink::new(Some(path.clone())).unwrap();
        // Hold the writer: nothing pending is written meanwhile.
        let out = lock(&sink.shared.out);
        let line = "x".repeat(60 << 10);
        let fits = MAX_PENDING / (line.len() + 1);
        // The writer may take one batch before it blocks on `out`.
        for _ in 0..fits * 2 + 8 {
            sink.write_line(&line);
        }
        let dropped = sink.dropped.load(Ordering::Relaxed) as usize;
        assert!(dropped >= 8, "dropped {dropped}");
        drop(out);
        drop(sink);
        let written = lines(&path).len();
        assert_eq!(
            written + dropped,
            fits * 2 + 8,
            "every line written or counted"
        );
    }
}
