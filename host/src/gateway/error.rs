//! Every failure on the data path, classified by its source (the client,
//! the upstream, a policy, the gateway itself), and the one place each
//! becomes a status, a response and a log line. [`Failure`] is what the
//! pipeline's phases return; its exit (`pipeline::fail`) uses what is here.

use crate::policy::PolicyError;
use crate::upstream::UpstreamError;
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
    /// A version set's path, but a version the set does not have (or
    /// none, and the set has no default).
    #[error("{}", unknown_version_message(.set, .versions, .given.as_deref()))]
    UnknownVersion {
        set: String,
        versions: Vec<String>,
        given: Option<String>,
    },
    /// A retired API: its calls are answered 410, pointing at its successor.
    #[error("api `{api}` is retired{}", .successor.as_ref().map(|(s, _)| format!(": use `{s}`")).unwrap_or_default())]
    Retired {
        api: String,
        /// The successor's name and the call's URL on it.
        successor: Option<(String, String)>,
    },
    // -- the upstream (what the client caused while the call was under
    //    way, and the gateway's own slips, are mapped out by `From`)
    #[error(transparent)]
    Upstream(UpstreamError),
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
            GatewayError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            GatewayError::Retired { .. } => StatusCode::GONE,
            GatewayError::Upstream(u) => upstream_status(u),
            GatewayError::Policy(p) => match p {
                PolicyError::Trap { .. }
                | PolicyError::Memory { .. }
                | PolicyError::BadOutput { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                PolicyError::Timeout { .. }
                | PolicyError::Busy { .. }
                | PolicyError::Quarantined { .. }
                | PolicyError::Saturated { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
            GatewayError::UnknownVersion { .. } => "unknown_version",
            GatewayError::Retired { .. } => "api_retired",
            GatewayError::Upstream(u) => upstream_code(u),
            GatewayError::Policy(PolicyError::Trap { .. }) => "policy_failed",
            GatewayError::Policy(PolicyError::Memory { .. }) => "policy_memory_exceeded",
            GatewayError::Policy(PolicyError::BadOutput { .. }) => "policy_invalid_output",
            GatewayError::Policy(PolicyError::Timeout { .. }) => "policy_timeout",
            GatewayError::Policy(PolicyError::Busy { .. })
            | GatewayError::Policy(PolicyError::Saturated { .. }) => "policy_busy",
            GatewayError::Policy(PolicyError::Quarantined { .. }) => "policy_quarantined",
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
            | GatewayError::UnknownVersion { .. }
            | GatewayError::Retired { .. } => self.to_string(),
            GatewayError::Upstream(u) => upstream_message(u),
            GatewayError::Policy(PolicyError::Timeout { step, .. }) => {
                format!("policy step `{step}` timed out")
            }
            GatewayError::Policy(PolicyError::Busy { .. } | PolicyError::Saturated { .. }) => {
                "gateway busy, retry later".into()
            }
            GatewayError::Policy(PolicyError::Quarantined { step, .. }) => {
                format!("policy step `{step}` is failing and paused; retry later")
            }
            GatewayError::Policy(p) => format!("policy step `{}` failed", policy_step(p)),
            GatewayError::Internal(_) => "internal error".into(),
        }
    }

    /// The one mapping from a failure to what the client gets.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        if matches!(
            self,
            GatewayError::UnknownVersion { .. } | GatewayError::Retired { .. }
        ) {
            return self.problem(request_id);
        }
        error_response(
            self.status(),
            self.code(),
            &self.public_message(),
            request_id,
            self,
        )
    }
}

/// What a call naming no version, or a version a set does not have, is
/// told: the versions there are (what it named is shown only when it could
/// be a version: a 10 KB header is not echoed).
fn unknown_version_message(set: &str, versions: &[String], given: Option<&str>) -> String {
    let named = match given {
        Some(g) if crate::manifest::Version::try_from(g.to_string()).is_ok() => {
            format!("version `{g}` is not a version of `{set}`")
        }
        Some(_) => format!("the version named is not a version of `{set}`"),
        None => format!("the call names no version of `{set}`"),
    };
    format!("{named}; its versions: {}", versions.join(", "))
}

impl GatewayError {
    /// An `application/problem+json` answer (RFC 9457) for the version
    /// errors: `type`, `title`, `status`, `detail`, and the same `code` and
    /// `request_id` as the gateway's other errors.
    fn problem(&self, request_id: &str) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "detail": self.public_message(),
            "code": self.code(),
            "request_id": request_id,
        });
        let mut link = None;
        match self {
            GatewayError::UnknownVersion { set, versions, .. } => {
                body["version_set"] = set.as_str().into();
                body["versions"] = versions.clone().into();
            }
            GatewayError::Retired { api, successor } => {
                body["api"] = api.as_str().into();
                if let Some((name, url)) = successor {
                    body["successor"] = name.as_str().into();
                    body["successor_url"] = url.as_str().into();
                    link =
                        HeaderValue::from_str(&format!("<{url}>; rel=\"successor-version\"")).ok();
                }
            }
            _ => {}
        }
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        if let Some(l) = link {
            h.insert(header::LINK, l);
        }
        resp
    }
}

impl From<UpstreamError> for GatewayError {
    /// The edge's view of an upstream failure: what the client caused while
    /// the call was under way is the client's error, a URI the gateway could
    /// not build is its own, the rest is the upstream's.
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::ClientBodyBroken => GatewayError::BadRequest(e.to_string()),
            UpstreamError::ClientBodyStalled(d) => GatewayError::RequestTimeout(d),
            UpstreamError::Uri(_) => GatewayError::Internal(e.to_string()),
            e => GatewayError::Upstream(e),
        }
    }
}

fn upstream_status(e: &UpstreamError) -> StatusCode {
    match e {
        UpstreamError::Open { .. } => StatusCode::SERVICE_UNAVAILABLE,
        UpstreamError::ConnectTimeout(_) | UpstreamError::ResponseTimeout(_) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        UpstreamError::Connect(_)
        | UpstreamError::Tls { .. }
        | UpstreamError::Closed(_)
        | UpstreamError::BadResponse(_)
        | UpstreamError::BodyTooLarge { .. } => StatusCode::BAD_GATEWAY,
        // As their `From` mapping has them.
        UpstreamError::Uri(_) => StatusCode::INTERNAL_SERVER_ERROR,
        UpstreamError::ClientBodyBroken => StatusCode::BAD_REQUEST,
        UpstreamError::ClientBodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
    }
}

fn upstream_code(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Open { .. } => "upstream_circuit_open",
        UpstreamError::Connect(_) | UpstreamError::Tls { .. } => "upstream_unavailable",
        UpstreamError::ConnectTimeout(_) | UpstreamError::ResponseTimeout(_) => "upstream_timeout",
        UpstreamError::Closed(_) | UpstreamError::BadResponse(_) => "upstream_invalid_response",
        UpstreamError::BodyTooLarge { .. } => "upstream_body_too_large",
        UpstreamError::Uri(_) => "internal_error",
        UpstreamError::ClientBodyBroken => "bad_request",
        UpstreamError::ClientBodyStalled(_) => "request_timeout",
    }
}

/// What the client reads of an upstream failure: its kind, not the target
/// or the I/O error behind it.
fn upstream_message(e: &UpstreamError) -> String {
    match e {
        UpstreamError::ConnectTimeout(_)
        | UpstreamError::ResponseTimeout(_)
        | UpstreamError::ClientBodyStalled(_) => e.to_string(),
        UpstreamError::Connect(_) | UpstreamError::Tls { .. } => "upstream unavailable".into(),
        UpstreamError::Open { .. } => {
            "upstream unavailable: every target failed recently; retry later".into()
        }
        UpstreamError::Closed(_)
        | UpstreamError::BadResponse(_)
        | UpstreamError::BodyTooLarge { .. } => "upstream sent an invalid response".into(),
        UpstreamError::Uri(_) => "internal error".into(),
        UpstreamError::ClientBodyBroken => format!("bad request: {e}"),
    }
}

impl GatewayError {
    /// Log this failure of a call to `api`: the upstream's at `warn` (an
    /// open circuit is already logged when it opens), the gateway's own at
    /// `error`, a policy's rate-limited per API and step (a step failing on
    /// every call must not flood the log), the client's at `debug`.
    pub fn log(&self, request_id: &str, api: &str) {
        match self {
            GatewayError::Policy(p) => crate::policy::guard::warn_failure(p, request_id, api, ""),
            GatewayError::Upstream(UpstreamError::Open { .. }) => {
                tracing::debug!(request_id, api, "{self}")
            }
            GatewayError::Upstream(UpstreamError::Uri(_)) | GatewayError::Internal(_) => {
                tracing::error!(request_id, api, "{self}")
            }
            GatewayError::Upstream(u) if !u.is_client() => {
                tracing::warn!(request_id, api, "{self}")
            }
            _ => tracing::debug!(request_id, api, "{self}"),
        }
    }
}

/// A failure on its way to the pipeline's one exit: what went wrong, and
/// whether the connection may carry another request after the response.
#[derive(Debug)]
pub struct Failure {
    pub error: GatewayError,
    /// The request was refused for its framing, its head or its declared
    /// size, and the rest of it is not read: nothing after it on the
    /// connection can be trusted to start a new request.
    pub unread: bool,
}

impl Failure {
    /// A failure that leaves the rest of the request unread.
    pub fn unread(error: GatewayError) -> Failure {
        Failure {
            error,
            unread: true,
        }
    }

    /// Whether the connection closes after the response: when the request
    /// was left unread, or its body stopped arriving (waiting longer for
    /// it would hold the connection for a client that does not send).
    pub fn closes_connection(&self) -> bool {
        self.unread || matches!(self.error, GatewayError::RequestTimeout(_))
    }
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure {
            error,
            unread: false,
        }
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        GatewayError::from(e).into()
    }
}

impl From<PolicyError> for Failure {
    fn from(e: PolicyError) -> Self {
        GatewayError::Policy(e).into()
    }
}

fn policy_step(p: &PolicyError) -> &str {
    p.step()
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
    if matches!(
        err,
        GatewayError::Policy(PolicyError::Busy { .. } | PolicyError::Saturated { .. })
    ) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let GatewayError::Policy(PolicyError::Quarantined { left, .. }) = err {
        h.insert(header::RETRY_AFTER, HeaderValue::from(whole_secs(*left)));
    }
    if let GatewayError::Upstream(UpstreamError::Open { retry_after }) = err {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(whole_secs(*retry_after)),
        );
    }
    resp
}

/// Whole seconds, rounded up, at least 1 (for `Retry-After`).
fn whole_secs(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses_by_source() {
        let p = |e: PolicyError| GatewayError::Policy(e).status().as_u16();
        assert_eq!(GatewayError::NoRoute.status().as_u16(), 404);
        let u = |e: UpstreamError| GatewayError::from(e).status().as_u16();
        assert_eq!(u(UpstreamError::Connect("x".into())), 502);
        assert_eq!(
            u(UpstreamError::ResponseTimeout(Duration::from_secs(1))),
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
                limit: Default::default(),
                kind: crate::policy::TimeoutKind::Running,
            }),
            503
        );
        assert_eq!(p(PolicyError::Busy { step: "a".into() }), 503);
    }

    #[test]
    fn a_quarantined_or_saturated_step_is_503_with_its_code_and_retry_after() {
        let e = GatewayError::Policy(PolicyError::Quarantined {
            step: "auth".into(),
            left: Duration::from_millis(4200),
        });
        let r = e.to_response("rid");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "policy_quarantined");
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let e = GatewayError::Policy(PolicyError::Saturated {
            step: "auth".into(),
            limit: 1,
            waited: Duration::from_millis(50),
        });
        let r = e.to_response("rid");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "policy_busy");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
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
            let e = GatewayError::from(UpstreamError::Open {
                retry_after: Duration::from_millis(ms),
            });
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
