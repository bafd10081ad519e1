//! The OAuth authorization server's endpoints ([`crate::domain::oauth`]):
//! a call to one of its paths is answered before routing, with the body
//! read under the same limits as any other (a form is at most
//! [`MAX_FORM_BODY`] bytes, read within the request-body timeout) and the
//! answer made on the blocking pool (an issued token is written durably).

use super::context::{Fields, Outgoing};
use super::normalise::Normalised;
use super::Failure;
use crate::domain::oauth::{AuthorizationServer, OAuthCall, MAX_FORM_BODY};
use crate::gateway::error::GatewayError;
use crate::manifest::Limits;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::sync::Arc;

/// Answer one call to an endpoint of `server`.
pub(crate) async fn answer(
    server: Arc<dyn AuthorizationServer>,
    parts: &http::request::Parts,
    body: Incoming,
    normalised: &Normalised,
    scheme: &'static str,
    limits: &Limits,
) -> Result<Outgoing, Failure> {
    let body = if parts.method == http::Method::POST {
        read_form(parts, body, limits).await?
    } else {
        Bytes::new()
    };
    let one = |name: header::HeaderName| -> Option<String> {
        let mut values = parts.headers.get_all(name).iter();
        let v = values.next()?;
        if values.next().is_some() {
            return None;
        }
        v.to_str().ok().map(str::to_string)
    };
    let (authorization, content_type) = (one(header::AUTHORIZATION), one(header::CONTENT_TYPE));
    let method = parts.method.as_str().to_string();
    let path = normalised.path.clone();
    let origin = format!("{scheme}://{}", normalised.authority);
    let head = parts.method == http::Method::HEAD;
    let answer = tokio::task::spawn_blocking(move || {
        server.answer(OAuthCall {
            method: &method,
            path: &path,
            authorization: authorization.as_deref(),
            content_type: content_type.as_deref(),
            body: &body,
            origin: &origin,
        })
    })
    .await
    .map_err(|e| GatewayError::Internal(format!("the OAuth endpoint failed: {e}")))?;
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(answer.body)
    };
    Ok(Outgoing::buffered(
        answer.status,
        Fields::Map(headers),
        body,
    ))
}

/// The form body: refused unread past [`MAX_FORM_BODY`] when the length is
/// declared, and as soon as it grows past it otherwise.
async fn read_form(
    parts: &http::request::Parts,
    body: Incoming,
    limits: &Limits,
) -> Result<Bytes, Failure> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = GatewayError::PayloadTooLarge {
        limit: MAX_FORM_BODY,
    };
    if declared.is_some_and(|n| n > MAX_FORM_BODY as u64) {
        return Err(Failure::unread(too_large));
    }
    let timeout = limits.request_body_timeout.0;
    match tokio::time::timeout(timeout, Limited::new(body, MAX_FORM_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Err(_) => Err(GatewayError::RequestTimeout(timeout).into()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large.into()),
        Ok(Err(e)) => {
            Err(GatewayError::BadRequest(format!("reading the request body: {e}")).into())
        }
    }
}
