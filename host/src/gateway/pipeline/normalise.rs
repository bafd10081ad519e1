//! The normalise phase: what the gateway refuses before it routes, and the
//! one authority and path the rest of the pipeline uses.
//!
//! Framing the gateway does not understand is refused first, then a
//! request-target over its limit and a missing, doubled or invalid Host.
//! The rest of such a request is not read, so the connection closes. A path
//! that does not normalise is refused too (the connection is kept).

use crate::gateway::error::{Failure, GatewayError};
use crate::manifest::Limits;
use crate::route::normalize_path;
use http::{header, HeaderMap};

/// A request head the gateway accepts: its one authority and its path,
/// normalised once, before routing.
#[derive(Debug)]
pub(crate) struct Normalised {
    pub authority: String,
    pub path: String,
}

/// Check the head of `parts` and normalise its authority and path.
pub(crate) fn normalise(
    parts: &http::request::Parts,
    limits: &Limits,
) -> Result<Normalised, Failure> {
    check_transfer_encoding(&parts.headers).map_err(Failure::unread)?;
    let limit = limits.max_request_target.0;
    if request_target_len(parts) as u64 > limit {
        return Err(Failure::unread(GatewayError::UriTooLong { limit }));
    }
    let authority = effective_authority(parts).map_err(Failure::unread)?;
    let path =
        normalize_path(parts.uri.path()).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    Ok(Normalised { authority, path })
}

/// The host of an authority, as the router matches it: no port, no
/// brackets around an IPv6 address.
pub(crate) fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Only `Transfer-Encoding: chunked`, once, is understood (RFC 9112 §6.1).
/// hyper reads a body as chunked when `chunked` is the last coding, so
/// `gzip, chunked` would reach the upstream still gzip-coded but without
/// its Transfer-Encoding (501), and `chunked, chunked` would be de-chunked
/// only once (400).
pub(crate) fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut chunked = 0;
    for v in headers.get_all(header::TRANSFER_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| GatewayError::BadRequest("invalid transfer-encoding".into()))?;
        for coding in v.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                return Err(GatewayError::NotImplemented(format!(
                    "transfer-coding `{}` (only chunked is supported)",
                    coding.escape_default()
                )));
            }
        }
    }
    if chunked > 1 {
        return Err(GatewayError::BadRequest(
            "transfer-encoding names chunked more than once".into(),
        ));
    }
    Ok(())
}

/// The length of the request-target as the client sent it: HTTP/1's
/// whole target (origin, absolute or authority form), HTTP/2's `:path`
/// (its `:authority` is a field of its own, bounded with the others).
pub(crate) fn request_target_len(parts: &http::request::Parts) -> usize {
    let pq = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if parts.version >= http::Version::HTTP_2 {
        return pq;
    }
    let authority = parts.uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = parts.uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    scheme + authority + pq
}

/// The request's one authority, used for routing, by the steps
/// (`RequestHead.authority` and the `host` field), in `X-Forwarded-Host`
/// and as the `Host` sent upstream with `preserve-host`:
///
/// - more than one `Host` field line is 400 (RFC 9112 §3.2);
/// - an HTTP/1.1 request without `Host` is 400, even in absolute form
///   (HTTP/1.0 may omit it; HTTP/2 has `:authority`);
/// - an authority in the request-target (HTTP/1 absolute form, HTTP/2
///   `:authority`) wins and `Host` is ignored (RFC 9112 §3.2.2, RFC 9113
///   §8.3.1), so the router and the upstream never see two different hosts;
/// - else `Host`; a value that is not a valid authority, or that carries
///   userinfo (`user@host`), is 400.
pub(crate) fn effective_authority(parts: &http::request::Parts) -> Result<String, GatewayError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest(
            "more than one Host header field".into(),
        ));
    }
    if host.is_none() && parts.version == http::Version::HTTP_11 {
        return Err(GatewayError::BadRequest(
            "HTTP/1.1 request without a Host header field".into(),
        ));
    }
    let value = match (parts.uri.authority(), host) {
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h
            .to_str()
            .map_err(|_| GatewayError::BadRequest("invalid Host header field".into()))?,
        (None, None) => return Ok(String::new()),
    };
    if value.is_empty() {
        return Ok(String::new());
    }
    if value.contains('@') || value.parse::<http::uri::Authority>().is_err() {
        return Err(GatewayError::BadRequest(format!(
            "invalid authority `{}`",
            value.escape_default()
        )));
    }
    Ok(value.to_string())
}
