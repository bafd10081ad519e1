//! Violations, and the RFC 9457 `application/problem+json` responses that
//! list them.

use serde::Serialize;
use tollgate_policy_sdk::{Header, Response};

/// Messages are cut to this many bytes (values are never echoed whole).
pub const MAX_MESSAGE: usize = 200;

/// Problem types.
pub const REQUEST_TYPE: &str = "https://tollgate.dev/problems/request-validation";
/// The upstream's response did not match.
pub const RESPONSE_TYPE: &str = "https://tollgate.dev/problems/response-validation";

/// Where a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum In {
    /// A path parameter.
    Path,
    /// A query parameter.
    Query,
    /// A header (including `content-type`).
    Header,
    /// The body.
    Body,
    /// The response status.
    Status,
}

impl In {
    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Body => "body",
            In::Status => "status",
        }
    }
}

/// One thing wrong with a request or a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where.
    #[serde(rename = "in")]
    pub location: In,
    /// The parameter or header, for those.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 6901 pointer into the failing value ("" for the whole value).
    pub pointer: String,
    /// The JSON Schema keyword that failed, or `required`, `content-type`,
    /// `json`, `max-depth`, `unknown`, `status`.
    pub keyword: String,
    /// One line, at most [`MAX_MESSAGE`] bytes.
    pub message: String,
}

impl Violation {
    /// A violation with its message cut to one short line.
    pub fn new(
        location: In,
        name: Option<&str>,
        pointer: impl Into<String>,
        keyword: impl Into<String>,
        message: &str,
    ) -> Self {
        Violation {
            location,
            name: name.map(String::from),
            pointer: pointer.into(),
            keyword: keyword.into(),
            message: one_line(message),
        }
    }

    /// The violation as a log line.
    pub fn log_line(&self) -> String {
        let mut at = self.location.as_str().to_string();
        if let Some(name) = &self.name {
            at.push(' ');
            at.push_str(&one_line(name));
        }
        if !self.pointer.is_empty() {
            at.push(' ');
            at.push_str(&one_line(&self.pointer));
        }
        format!("{at}: {} ({})", self.message, self.keyword)
    }
}

/// `text` on one line (control characters as spaces), cut to
/// [`MAX_MESSAGE`] bytes at a character boundary.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE + 3));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_MESSAGE {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The body of a problem response, members in RFC 9457's order.
#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    errors: &'a [Violation],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    accepted: &'a [String],
}

/// A problem response listing `violations`.
pub fn response(
    status: u16,
    kind: &str,
    title: &str,
    violations: &[Violation],
    accepted: &[String],
) -> Response {
    let detail = violations
        .first()
        .map(Violation::log_line)
        .unwrap_or_default();
    let body = Problem {
        kind,
        title,
        status,
        detail: one_line(&detail),
        errors: violations,
        accepted,
    };
    Response {
        status,
        headers: vec![Header::new("content-type", "application/problem+json")],
        body: serde_json::to_vec(&body).expect("a problem serialises"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_short_line() {
        let long = format!("a\nb{}", "é".repeat(300));
        let m = one_line(&long);
        assert!(m.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", m.len());
        assert!(m.starts_with("a b"));
        assert!(m.ends_with('…'));
        let v = Violation::new(In::Query, Some("limit"), "", "maximum", "10 > 5");
        assert_eq!(v.log_line(), "query limit: 10 > 5 (maximum)");
        let r = response(400, REQUEST_TYPE, "t", &[v], &[]);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"type\":\"https://tollgate.dev/problems/request-validation\",\"title\":\"t\",\
             \"status\":400,\"detail\":\"query limit: 10 > 5 (maximum)\",\"errors\":[{\"in\":\
             \"query\",\"name\":\"limit\",\"pointer\":\"\",\"keyword\":\"maximum\",\
             \"message\":\"10 > 5\"}]}"
        );
    }
}
