//! `request-size-limit`: refuse request bodies larger than a limit.
//!
//! ```toml
//! [config]
//! max-bytes = "1MiB"     # or an integer number of bytes: 1048576
//! ```
//!
//! A `Content-Length` over the limit gets `413` at once; a malformed one
//! `400`. The policy also asks the gateway for the body up to `max-bytes`,
//! so bodies without a length (chunked) are counted too: the gateway
//! answers `413` itself once a body passes the largest limit of the chain,
//! and this step answers `413` for a body over its own limit that the
//! gateway buffered for a step with a larger one. See `README.md`.

#![forbid(unsafe_code)]

pub mod size;

use serde::Deserialize;
use tollgate_policy_sdk::{
    export_policy, json_error, BodyAccess, Call, ConfigError, Phases, Policy, PolicyInfo,
    RequestDecision, RequestEdits,
};

/// The step configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The largest request body accepted, in bytes.
    pub max_bytes: size::Size,
}

/// The `request-size-limit` policy.
#[derive(Debug)]
pub struct RequestSizeLimit {
    max: u32,
}

/// What the `Content-Length` fields of a request say.
#[derive(Debug, PartialEq, Eq)]
pub enum DeclaredLength {
    /// No `Content-Length` field.
    Absent,
    /// One length (repeated identical values count as one), as decimal
    /// digits without leading zeros: it may be larger than any integer type.
    Length(String),
    /// A value that is not a length, or values that disagree.
    Invalid(String),
}

/// Read the values of every `Content-Length` field of a request, in order
/// (`Call::header_values("content-length")`). RFC 9110 §8.6: the value is
/// `1*DIGIT`; a recipient may accept a list of identical values
/// (`5, 5`, or the field repeated), anything else is an error.
pub fn declared_length(values: &[Vec<u8>]) -> DeclaredLength {
    let mut seen: Option<String> = None;
    for value in values {
        let value = value.as_slice();
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return DeclaredLength::Invalid(format!(
                    "Content-Length {} is not a number of bytes",
                    shown(value)
                ));
            }
            let digits = match item.iter().position(|&b| b != b'0') {
                Some(start) => &item[start..],
                None => b"0",
            };
            // ASCII digits only, so this is valid UTF-8.
            let digits = String::from_utf8_lossy(digits).into_owned();
            match &seen {
                Some(previous) if *previous != digits => {
                    return DeclaredLength::Invalid(format!(
                        "conflicting Content-Length values {} and {}",
                        short_number(previous),
                        short_number(&digits)
                    ));
                }
                Some(_) => {}
                None => seen = Some(digits),
            }
        }
    }
    match seen {
        Some(digits) => DeclaredLength::Length(digits),
        None => DeclaredLength::Absent,
    }
}

/// A header value for a message: quoted, and cut after 40 bytes.
fn shown(value: &[u8]) -> String {
    if value.len() > 40 {
        format!("{:?}...", String::from_utf8_lossy(&value[..40]))
    } else {
        format!("{:?}", String::from_utf8_lossy(value))
    }
}

/// A decimal number for a message, cut when it is absurdly long.
fn short_number(digits: &str) -> String {
    if digits.len() > 20 {
        format!("{}... ({} digits)", &digits[..20], digits.len())
    } else {
        digits.to_string()
    }
}

/// Without the optional white space (spaces and tabs) around a list item.
fn trim_ows(mut item: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = item {
        item = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = item {
        item = rest;
    }
    item
}

/// Whether the decimal `digits` (no leading zeros) exceed `max`.
fn digits_exceed(digits: &str, max: u32) -> bool {
    let max = max.to_string();
    digits.len() > max.len() || (digits.len() == max.len() && digits > max.as_str())
}

impl RequestSizeLimit {
    /// The limit in bytes.
    pub fn max_bytes(&self) -> u32 {
        self.max
    }

    fn too_large(&self, detail: &str) -> RequestDecision {
        RequestDecision::Respond(json_error(
            413,
            "payload_too_large",
            &format!(
                "the request body {detail}; this API accepts at most {} bytes",
                self.max
            ),
        ))
    }
}

impl Policy for RequestSizeLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(RequestSizeLimit {
            max: config.max_bytes.0,
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            // The gateway buffers at most this much and answers 413 itself
            // for more (unless a later step asked for a larger body).
            body: BodyAccess {
                request: Some(self.max),
                response: None,
            },
            // Nothing to do on the response, whatever the configuration.
            phases: Phases::REQUEST,
        }
    }

    fn on_request(&mut self, call: &Call<'_>, body: Option<&[u8]>) -> RequestDecision {
        // The only request field this step reads.
        match declared_length(&call.header_values("content-length")) {
            DeclaredLength::Invalid(message) => {
                return RequestDecision::Respond(json_error(
                    400,
                    "invalid_content_length",
                    &message,
                ))
            }
            DeclaredLength::Length(digits) if digits_exceed(&digits, self.max) => {
                return self.too_large(&format!(
                    "is {} bytes (Content-Length)",
                    short_number(&digits)
                ));
            }
            _ => {}
        }
        // The body as the gateway buffered it: its limit is the largest of
        // the chain, which may be more than ours.
        if let Some(body) = body {
            if body.len() as u64 > u64::from(self.max) {
                return self.too_large(&format!("is {} bytes", body.len()));
            }
        }
        RequestDecision::Continue(RequestEdits::default())
    }
}

export_policy!(RequestSizeLimit);

#[cfg(test)]
mod tests;
