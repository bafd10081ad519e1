//! What can go wrong in a client command, and how each case reads on stderr.
//!
//! Every message is one `error: ...` line, sometimes followed by `hint: ...`
//! lines that say what to do about it. The admin API's own JSON errors are
//! turned into `error: <message> (field: <field>)` by [`api_error_message`].

use serde::Deserialize;

/// A failed client command. [`report`] renders it for stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line input found before any request was sent: a field
    /// that is not `FIELD=VALUE`, JSON that does not parse, an unreadable file.
    #[error("{0}")]
    Usage(String),
    /// The call needs a token and none was given.
    #[error(
        "no admin token: pass --token or set TOLLGATE_ADMIN_TOKEN\n\
         hint: the first administrator's token is printed by `tollgate admin init --config <gateway file>`; \
         every token lost: stop the gateway, then `tollgate admin recover --config <gateway file> --user <administrator>`"
    )]
    NoToken,
    /// Nothing answered at the URL (refused, unresolvable, timed out).
    #[error(
        "cannot reach the admin API at {url}: {cause}\n\
         hint: is the gateway running, with an `[admin]` section in its gateway file? \
         Use the `[admin] address` from that file as --url (or TOLLGATE_ADMIN_URL)"
    )]
    Connect { url: String, cause: String },
    /// The request failed after connecting (TLS, a reset connection...).
    #[error("request to {url} failed: {cause}")]
    Transport { url: String, cause: String },
    /// The admin API answered with an error status.
    #[error("{}", api_error_message(*status, body))]
    Api { status: u16, body: String },
    /// A success status with a body that is not JSON: probably not the admin API.
    #[error(
        "{url} answered HTTP {status} with a body that is not JSON ({detail})\n\
         hint: is this the admin listener (`[admin] address`) and not a gateway listener?"
    )]
    NotJson {
        url: String,
        status: u16,
        detail: String,
    },
}

/// The whole stderr text for an error: `error: ...` and any hint lines.
pub fn report(e: &Error) -> String {
    format!("error: {e}")
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(default)]
    field: Option<String>,
}

/// The message for an error answer: the API's own `{"error": {...}}` when
/// the body is one, otherwise the status and the start of the body. Adds a
/// hint line for `401` and `403`.
pub fn api_error_message(status: u16, body: &str) -> String {
    let mut msg = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => match error.field {
            Some(field) if !field.is_empty() => format!("{} (field: {field})", error.message),
            _ => error.message,
        },
        Err(_) => {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let snippet: String = body.trim().chars().take(200).collect();
            let mut m = format!("HTTP {status} {reason}").trim_end().to_string();
            if !snippet.is_empty() {
                m.push_str(": ");
                m.push_str(&snippet);
            }
            m
        }
    };
    match status {
        401 => msg.push_str(
            "\nhint: check the token (--token or TOLLGATE_ADMIN_TOKEN); \
             `tollgate admin users token <id>` issues a new one",
        ),
        403 => msg
            .push_str("\nhint: the token's role may not do this; `tollgate admin whoami` shows it"),
        _ => {}
    }
    msg
}

/// An error and its sources, joined with `: ` (reqwest's own message alone
/// rarely says "connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_with_field() {
        let body = r#"{"error":{"status":400,"code":"invalid","message":"`per` must be one of second, minute, hour, day","field":"rate_limits[0].per"}}"#;
        let e = Error::Api {
            status: 400,
            body: body.into(),
        };
        assert_eq!(
            report(&e),
            "error: `per` must be one of second, minute, hour, day (field: rate_limits[0].per)"
        );
    }

    #[test]
    fn api_error_without_field() {
        let body =
            r#"{"error":{"status":409,"code":"conflict","message":"product `shop` has plans"}}"#;
        assert_eq!(api_error_message(409, body), "product `shop` has plans");
        let null_field =
            r#"{"error":{"status":404,"code":"not_found","message":"no such plan","field":null}}"#;
        assert_eq!(api_error_message(404, null_field), "no such plan");
    }

    #[test]
    fn api_error_hints_for_auth() {
        let body = r#"{"error":{"status":401,"code":"unauthorized","message":"unknown token"}}"#;
        let text = api_error_message(401, body);
        assert!(
            text.starts_with("unknown token\nhint: check the token"),
            "{text}"
        );
        let body = r#"{"error":{"status":403,"code":"forbidden","message":"reports-user may not change plans"}}"#;
        assert!(api_error_message(403, body).contains("whoami"));
    }

    #[test]
    fn non_json_error_names_the_status() {
        assert_eq!(
            api_error_message(502, "<html>bad gateway</html>\n"),
            "HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
        assert_eq!(api_error_message(500, ""), "HTTP 500 Internal Server Error");
        let long = "x".repeat(1000);
        assert_eq!(
            api_error_message(500, &long).len(),
            "HTTP 500 Internal Server Error: ".len() + 200
        );
    }

    #[test]
    fn connect_error_hints_at_the_admin_address() {
        let e = Error::Connect {
            url: "http://127.0.0.1:8001/admin/v1/whoami".into(),
            cause: "Connection refused".into(),
        };
        let text = report(&e);
        assert!(text.starts_with(
            "error: cannot reach the admin API at http://127.0.0.1:8001/admin/v1/whoami: Connection refused\n"
        ));
        assert!(text.contains("`[admin] address`"));
    }

    #[test]
    fn no_token_says_how_to_get_one() {
        let text = report(&Error::NoToken);
        assert!(text.contains("TOLLGATE_ADMIN_TOKEN"));
        assert!(text.contains("tollgate admin init"));
        assert!(text.contains("tollgate admin recover"));
    }
}
