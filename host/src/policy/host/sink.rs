//! `tollgate:policy/sink`: structured lines (access logs) written off the
//! request path to a file or standard output, with the `sink` grant.

use crate::policy::bindings;
use crate::policy::host::Capability;
use crate::policy::StepState;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The sink for structured lines (access logs): a bounded queue drained
/// by a writer thread, off the request path. When the queue is full, lines
/// are dropped and counted rather than slowing requests down.
pub struct Sink {
    tx: std::sync::mpsc::SyncSender<String>,
    pub dropped: AtomicU64,
}

impl Sink {
    /// Write to `path`, or to standard output when none.
    pub fn new(path: Option<PathBuf>) -> anyhow::Result<Sink> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(10_000);
        let mut out: Box<dyn Write + Send> = match &path {
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
        std::thread::Builder::new()
            .name("tollgate-sink".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::new(&mut out);
                while let Ok(line) = rx.recv() {
                    let _ = w.write_all(line.as_bytes());
                    let _ = w.write_all(b"\n");
                    while let Ok(more) = rx.try_recv() {
                        let _ = w.write_all(more.as_bytes());
                        let _ = w.write_all(b"\n");
                    }
                    let _ = w.flush();
                }
            })?;
        Ok(Sink {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue one line; newlines and other control characters are escaped.
    pub fn write_line(&self, line: &str) {
        let mut clean = String::with_capacity(line.len());
        for c in line.chars().take(64 << 10) {
            if c.is_control() {
                clean.extend(c.escape_default());
            } else {
                clean.push(c);
            }
        }
        if self.tx.try_send(clean).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl bindings::sink::Host for StepState {
    fn write_line(&mut self, line: String) {
        if self.grants.has(&Capability::Sink) {
            self.services.sink.write_line(&line);
        }
    }
}
