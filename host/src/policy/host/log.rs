//! `tollgate:policy/log`: a plugin's log lines, escaped (no forged lines, no
//! terminal escapes), cut, and within the step's log budget.

use crate::policy::bindings;
use crate::policy::LogLevel;
use crate::policy::StepState;

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG: usize = 4096;

/// Escape control characters so a plugin cannot forge log lines or send
/// terminal escapes: C0, DEL and C1 controls, the Unicode line and
/// paragraph separators, and the bidirectional formatting characters
/// (which can make a line read differently from what it holds).
pub fn escape_log(message: &str) -> String {
    escape_log_within(message, MAX_LOG)
}

/// [`escape_log`], cut at about `max` bytes.
pub fn escape_log_within(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max));
    for c in message.chars() {
        if out.len() >= max {
            out.push_str("...(truncated)");
            break;
        }
        if c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the gateway writes plugin lines at `level`.
fn written(level: LogLevel) -> bool {
    use tracing::Level;
    match level {
        LogLevel::Trace => tracing::enabled!(target: "tollgate::plugin", Level::TRACE),
        LogLevel::Debug => tracing::enabled!(target: "tollgate::plugin", Level::DEBUG),
        LogLevel::Info => tracing::enabled!(target: "tollgate::plugin", Level::INFO),
        LogLevel::Warn => tracing::enabled!(target: "tollgate::plugin", Level::WARN),
        LogLevel::Error => tracing::enabled!(target: "tollgate::plugin", Level::ERROR),
    }
}

impl bindings::log::Host for StepState {
    fn log(&mut self, level: LogLevel, message: String) {
        // A line at a level the gateway does not write costs nothing more
        // and takes nothing from the step's budget (key-auth writes one at
        // debug per call; its budget went to lines never written, and the
        // "suppressed" warnings counted them).
        let enabled = written(level);
        if !enabled || !self.log.admit(&self.request_id) {
            return;
        }
        let msg = escape_log_within(&message, self.log.limits.line_bytes);
        let (api, step, rid) = (&*self.api, &*self.step, &self.request_id);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Info => {
                tracing::info!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Error => {
                tracing::error!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_below_the_written_level_are_not_written() {
        let filter = tracing_subscriber::EnvFilter::new("info,tollgate::plugin=warn");
        let sub = tracing_subscriber::fmt().with_env_filter(filter).finish();
        tracing::subscriber::with_default(sub, || {
            assert!(!written(LogLevel::Debug));
            assert!(!written(LogLevel::Info));
            assert!(written(LogLevel::Warn));
            assert!(written(LogLevel::Error));
        });
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .finish();
        tracing::subscriber::with_default(sub, || assert!(written(LogLevel::Trace)));
    }

    #[test]
    fn log_escaping() {
        assert_eq!(escape_log("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(
            escape_log("a\r\u{85}\u{2028}\u{202e}b\u{2066}"),
            "a\\r\\u{85}\\u{2028}\\u{202e}b\\u{2066}"
        );
        let long = "x".repeat(10_000);
        assert!(escape_log(&long).len() < 4200);
    }
}
