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

impl bindings::log::Host for StepState {
    fn log(&mut self, level: LogLevel, message: String) {
        if !self.log.admit(&self.request_id) {
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
