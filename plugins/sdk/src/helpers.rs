//! Conveniences on the WIT types: header lookup, validation, builders.

use crate::{Header, HeaderOp, RequestEdits, Response, ResponseEdits};

/// The value of the first header field called `name` (ASCII
/// case-insensitive), if any.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The value of the first header field called `name`, if any and if it is
/// valid UTF-8.
pub fn header_str<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    header(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The values of every header field called `name` (ASCII case-insensitive),
/// in order.
pub fn header_values<'a>(
    headers: &'a [Header],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Whether `name` is a valid header field name: a non-empty RFC 9110 token
/// (`A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~`).
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `value` may be sent as a header field value: no CR, LF or NUL.
pub fn valid_header_value(value: &[u8]) -> bool {
    !value.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

/// A JSON error response: `{"error":{"code":..,"message":..}}` with
/// `content-type: application/json`.
pub fn json_error(status: u16, code: &str, message: &str) -> Response {
    Response::json_error(status, code, message)
}

impl Header {
    /// A header field. `name` should be lower-case.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl HeaderOp {
    /// Replace every field called `name` by this one.
    pub fn set(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeaderOp::Set(Header::new(name, value))
    }

    /// Add a field, keeping existing ones with the same name.
    pub fn append(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeaderOp::Append(Header::new(name, value))
    }

    /// Remove every field called `name`.
    pub fn remove(name: impl Into<String>) -> Self {
        HeaderOp::Remove(name.into())
    }
}

impl Response {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON error response: `{"error":{"code":..,"message":..}}` with
    /// `content-type: application/json`.
    pub fn json_error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        Response::new(status)
            .header("content-type", "application/json")
            .body(body.to_string())
    }
}

impl RequestEdits {
    /// Add a [`HeaderOp::Set`].
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(HeaderOp::set(name, value));
        self
    }

    /// Add a [`HeaderOp::Append`].
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(HeaderOp::append(name, value));
        self
    }

    /// Add a [`HeaderOp::Remove`].
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(HeaderOp::remove(name));
        self
    }

    /// Add a [`HeaderOp::Set`] for the response: the gateway applies it
    /// where this step's response phase would run, so a step that only
    /// adds response headers needs no response phase.
    pub fn set_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        self.response_headers.push(HeaderOp::set(name, value));
        self
    }

    /// Add a [`HeaderOp::Append`] for the response.
    pub fn append_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        self.response_headers.push(HeaderOp::append(name, value));
        self
    }

    /// Add a [`HeaderOp::Remove`] for the response.
    pub fn remove_response_header(mut self, name: impl Into<String>) -> Self {
        self.response_headers.push(HeaderOp::remove(name));
        self
    }
}

impl ResponseEdits {
    /// Add a [`HeaderOp::Set`].
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(HeaderOp::set(name, value));
        self
    }

    /// Add a [`HeaderOp::Append`].
    pub fn append_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(HeaderOp::append(name, value));
        self
    }

    /// Add a [`HeaderOp::Remove`].
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(HeaderOp::remove(name));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive() {
        let headers = vec![
            Header::new("x-a", "1"),
            Header::new("X-B", vec![0xff]),
            Header::new("x-a", "2"),
        ];
        assert_eq!(header(&headers, "X-A"), Some(&b"1"[..]));
        assert_eq!(header_values(&headers, "x-a").count(), 2);
        assert_eq!(header(&headers, "x-b"), Some(&[0xff][..]));
        assert_eq!(header_str(&headers, "x-b"), None);
        assert_eq!(header_str(&headers, "x-c"), None);
    }

    #[test]
    fn header_validation() {
        assert!(valid_header_name("x-api-version"));
        assert!(valid_header_name("X_Weird!#$%&'*+.^`|~9"));
        assert!(!valid_header_name(""));
        assert!(!valid_header_name("x foo"));
        assert!(!valid_header_name("x:foo"));
        assert!(!valid_header_name("é"));
        assert!(valid_header_value(b"anything \t goes \xff"));
        assert!(!valid_header_value(b"a\rb"));
        assert!(!valid_header_value(b"a\nb"));
        assert!(!valid_header_value(b"a\0b"));
    }

    #[test]
    fn json_error_escapes() {
        let r = json_error(429, "too_many", "slow \"down\"");
        assert_eq!(r.status, 429);
        assert_eq!(
            header_str(&r.headers, "content-type"),
            Some("application/json")
        );
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"error":{"code":"too_many","message":"slow \"down\""}}"#
        );
    }
}
