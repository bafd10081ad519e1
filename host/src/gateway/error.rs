//! Every failure on the data path, classified by its source, and the one
//! function that turns it into a response.

use crate::policy::PolicyError;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Where a failure came from.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    // -- the client
    #[error("no route for this request")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<String> },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request-target longer than {limit} bytes")]
    UriTooLong { limit: u64 },
    #[error("request body not received within {0:?}")]
    RequestTimeout(std::time::Duration),
    #[error("not implemented: {0}")]
    NotImplemented(String),
    // -- the upstream
    #[error("upstream unavailable: {0}")]
    UpstreamConnect(String),
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(String),
    #[error("upstream response body larger than {limit} bytes")]
    UpstreamBodyTooLarge { limit: usize },
    #[error("every upstream target is out of rotation after repeated failures (next probe in {retry_after:?})")]
    UpstreamOpen { retry_after: std::time::Duration },
    // -- a policy
    #[error(transparent)]
    Policy(#[from] PolicyError),
    // -- ourselves
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// The status for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            GatewayError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            GatewayError::UpstreamConnect(_)
            | GatewayError::UpstreamProtocol(_)
            | GatewayError::UpstreamBodyTooLarge { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Policy(p) => match p {
                PolicyError::Trap { .. }
                | PolicyError::Memory { .. }
                | PolicyError::BadOutput { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                PolicyError::Timeout { .. } | PolicyError::Busy { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::UriTooLong { .. } => "uri_too_long",
            GatewayError::RequestTimeout(_) => "request_timeout",
            GatewayError::NotImplemented(_) => "not_implemented",
            GatewayError::UpstreamConnect(_) => "upstream_unavailable",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::UpstreamProtocol(_) => "upstream_invalid_response",
            GatewayError::UpstreamBodyTooLarge { .. } => "upstream_body_too_large",
            GatewayError::UpstreamOpen { .. } => "upstream_circuit_open",
            GatewayError::Policy(PolicyError::Trap { .. }) => "policy_failed",
            GatewayError::Policy(PolicyError::Memory { .. }) => "policy_memory_exceeded",
            GatewayError::Policy(PolicyError::BadOutput { .. }) => "policy_invalid_output",
            GatewayError::Policy(PolicyError::Timeout { .. }) => "policy_timeout",
            GatewayError::Policy(PolicyError::Busy { .. }) => "policy_busy",
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// The message a client may see: client errors say what was wrong;
    /// upstream, policy and internal errors say only what kind of failure
    /// it was (the details go to the log).
    fn public_message(&self) -> String {
        match self {
            GatewayError::NoRoute
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BadRequest(_)
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::UriTooLong { .. }
            | GatewayError::RequestTimeout(_)
            | GatewayError::NotImplemented(_)
            | GatewayError::UpstreamTimeout(_) => self.to_string(),
            GatewayError::UpstreamConnect(_) => "upstream unavailable".into(),
            GatewayError::UpstreamOpen { .. } => {
                "upstream unavailable: every target failed recently; retry later".into()
            }
            GatewayError::UpstreamProtocol(_) | GatewayError::UpstreamBodyTooLarge { .. } => {
                "upstream sent an invalid response".into()
            }
            GatewayError::Policy(PolicyError::Timeout { step, .. }) => {
                format!("policy step `{step}` timed out")
            }
            GatewayError::Policy(PolicyError::Busy { .. }) => "gateway busy, retry later".into(),
            GatewayError::Policy(p) => format!("policy step `{}` failed", policy_step(p)),
            GatewayError::Internal(_) => "internal error".into(),
        }
    }

    /// The one mapping from a failure to what the client gets.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        error_response(
            self.status(),
            self.code(),
            &self.public_message(),
            request_id,
            self,
        )
    }
}

fn policy_step(p: &PolicyError) -> &str {
    match p {
        PolicyError::Trap { step, .. }
        | PolicyError::Timeout { step, .. }
        | PolicyError::Memory { step, .. }
        | PolicyError::Busy { step }
        | PolicyError::BadOutput { step, .. } => step,
    }
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
    err: &GatewayError,
) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": { "status": status.as_u16(), "code": code, "message": message, "request_id": request_id }
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if let GatewayError::MethodNotAllowed { allow } = err {
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            h.insert(header::ALLOW, v);
        }
    }
    if matches!(err, GatewayError::Policy(PolicyError::Busy { .. })) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let GatewayError::UpstreamOpen { retry_after } = err {
        // Whole seconds, rounded up, at least 1.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_source() {
        let p = |e: PolicyError| GatewayError::Policy(e).status().as_u16();
        assert_eq!(GatewayError::NoRoute.status().as_u16(), 404);
        assert_eq!(
            GatewayError::UpstreamConnect("x".into()).status().as_u16(),
            502
        );
        assert_eq!(
            GatewayError::UpstreamTimeout(std::time::Duration::from_secs(1))
                .status()
                .as_u16(),
            504
        );
        assert_eq!(
            p(PolicyError::Trap {
                step: "a".into(),
                detail: "d".into()
            }),
            500
        );
        assert_eq!(
            p(PolicyError::Timeout {
                step: "a".into(),
                limit: Default::default()
            }),
            503
        );
        assert_eq!(p(PolicyError::Busy { step: "a".into() }), 503);
    }

    #[test]
    fn circuit_open_is_503_with_retry_after_in_whole_seconds() {
        for (ms, secs) in [
            (0, "1"),
            (200, "1"),
            (1000, "1"),
            (1001, "2"),
            (29_500, "30"),
        ] {
            let e = GatewayError::UpstreamOpen {
                retry_after: std::time::Duration::from_millis(ms),
            };
            let r = e.to_response("rid");
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], secs, "{ms} ms");
        }
    }

    #[test]
    fn internal_detail_not_leaked() {
        let e = GatewayError::Policy(PolicyError::Trap {
            step: "auth".into(),
            detail: "secret stack".into(),
        });
        let r = e.to_response("rid");
        let body = format!("{:?}", r.body());
        assert!(!body.contains("secret stack"));
    }
}
