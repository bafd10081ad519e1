//! Why a call to an upstream failed: what failed, and whether the call may
//! go to another target. The gateway's edge ([`crate::gateway::error`])
//! turns each kind into a status; nothing here knows about statuses.

use http::uri::Authority;
use std::time::Duration;

/// A failed upstream call, by what failed.
///
/// The texts are the log lines: they carry details (the target, the I/O
/// error) that the client never sees.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every target's breaker is open: nothing was sent.
    #[error("every upstream target is out of rotation after repeated failures (next probe in {retry_after:?})")]
    Open { retry_after: Duration },
    /// No connection: refused, reset while connecting, name not resolved.
    #[error("upstream unavailable: {0}")]
    Connect(String),
    /// The TCP connect did not complete within `connect-timeout`.
    #[error("upstream did not answer within {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (certificate not trusted, wrong name,
    /// client certificate refused).
    #[error("upstream unavailable: TLS with target {target} failed: {detail}")]
    Tls {
        target: Authority,
        detail: String,
        /// It failed before the request was sent, so the target cannot
        /// have acted on it.
        before_request: bool,
    },
    /// The connection closed or was reset before a response head.
    #[error("upstream sent an invalid response: {0}")]
    Closed(String),
    /// What the upstream sent is not a response the gateway can forward
    /// (not HTTP, an unsolicited 1xx, a body that broke while buffered).
    #[error("upstream sent an invalid response: {0}")]
    BadResponse(String),
    /// No response head within `response-timeout`.
    #[error("upstream did not answer within {0:?}")]
    ResponseTimeout(Duration),
    /// A response body a policy step asked to read was over its limit.
    #[error("upstream response body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The request's URI for a target could not be built (a bug, not the
    /// upstream's doing).
    #[error("building the upstream URI: {0}")]
    Uri(#[source] http::Error),
    /// The client's request body broke off while it was being forwarded:
    /// the client's doing, not counted against the target.
    #[error("the request body broke off before it was complete")]
    ClientBodyBroken,
    /// The target waited for the rest of a body the client did not send.
    #[error("request body not received within {0:?}")]
    ClientBodyStalled(Duration),
}

impl UpstreamError {
    /// Whether the failure came before the target could have processed the
    /// request, so an idempotent call with a replayable body may be sent
    /// again (to another target when there is one).
    pub fn retryable(&self) -> bool {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::Closed(_) => true,
            UpstreamError::Tls { before_request, .. } => *before_request,
            UpstreamError::Open { .. }
            | UpstreamError::BadResponse(_)
            | UpstreamError::ResponseTimeout(_)
            | UpstreamError::BodyTooLarge { .. }
            | UpstreamError::Uri(_)
            | UpstreamError::ClientBodyBroken
            | UpstreamError::ClientBodyStalled(_) => false,
        }
    }

    /// Whether the client, not the upstream, caused the failure.
    pub fn is_client(&self) -> bool {
        matches!(
            self,
            UpstreamError::ClientBodyBroken | UpstreamError::ClientBodyStalled(_)
        )
    }
}
