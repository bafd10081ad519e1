//! gRPC calls through the gateway: a call is a `POST` whose content type is
//! `application/grpc` (or `application/grpc+proto`, `+json`, ...), routed
//! by its method path (`/package.Service/Method`) and run through the
//! chain like any call; its upstream speaks HTTP/2 (`protocol = "h2c"`,
//! or `https://` with ALPN). The gateway adds what gRPC needs on top:
//!
//! - a response the gateway or a step made (auth refused, rate-limited,
//!   upstream down, a policy trap, no route) is answered the gRPC way:
//!   HTTP 200, `content-type: application/grpc`, and the outcome in
//!   `grpc-status` and `grpc-message` (a "trailers-only" response), the
//!   code mapped from the HTTP status ([`code_for`]);
//! - `grpc-timeout` is honoured: the wait for the upstream's response head
//!   is the shorter of it and `response-timeout` (exceeded:
//!   `DEADLINE_EXCEEDED`), and the upstream gets what is left of it;
//! - `te: trailers` (hop-by-hop, removed on arrival) goes upstream again;
//! - the upstream's responses (and their trailers) pass as they are,
//!   streamed both ways.

use super::context::{Fields, OutBody, Outgoing};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use std::time::Duration;

/// Whether a request is a gRPC call.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// Most a `grpc-timeout` may say: the spec allows 8 digits of any unit; a
/// deadline past this is as good as none.
const MAX_TIMEOUT: Duration = Duration::from_secs(100_000_000);

/// A `grpc-timeout` value (`1-8 digits` then `H`, `M`, `S`, `m`, `u` or `n`);
/// `None` when it is not one.
pub(crate) fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let d = match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    };
    Some(d.min(MAX_TIMEOUT))
}

/// `d` as a `grpc-timeout` value: milliseconds, or a coarser unit when
/// they take more than 8 digits (rounded up, as a deadline may be).
pub(crate) fn format_timeout(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms < 100_000_000 {
        return format!("{ms}m");
    }
    let s = u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX);
    if s < 100_000_000 {
        return format!("{s}S");
    }
    format!("{}H", s.div_ceil(3600).min(99_999_999))
}

/// The gRPC status code for a response the gateway (or a step) made with
/// HTTP `status`, after gRPC's own mapping of HTTP statuses, with the
/// gateway's refusals made precise: 429 is `RESOURCE_EXHAUSTED`, 504
/// `DEADLINE_EXCEEDED`.
pub(crate) fn code_for(status: u16) -> u8 {
    match status {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 | 405 => 12, // UNIMPLEMENTED
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        409 => 10,       // ABORTED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        499 => 1,        // CANCELLED
        500 => 13,       // INTERNAL
        501 => 12,       // UNIMPLEMENTED
        502 | 503 => 14, // UNAVAILABLE
        _ => 2,          // UNKNOWN
    }
}

/// A response the gateway or a step made, as a gRPC client expects it:
/// status 200, `grpc-status` and `grpc-message` in the headers of a
/// response without a body. The other fields stay (`retry-after`,
/// `ratelimit-*`, `www-authenticate`, ...), but those about the old body.
/// A 200 is left as it is.
pub(crate) fn as_status(out: Outgoing) -> Outgoing {
    if out.status == 200 {
        return out;
    }
    let message = match &out.body {
        OutBody::Buffered(b) => message_of(b),
        OutBody::Stream(_) => None,
    }
    .unwrap_or_else(|| {
        http::StatusCode::from_u16(out.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_string()
    });
    let mut headers = out.headers.into_map();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(h);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-status",
        HeaderValue::from(u16::from(code_for(out.status))),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", v);
    }
    Outgoing {
        status: 200,
        headers: Fields::Map(headers),
        body: OutBody::Buffered(Bytes::new()),
    }
}

/// The `error.message` of the gateway's JSON error bodies (and of the
/// standard policies'), or the body itself when it is short plain text.
fn message_of(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let m = v.pointer("/error/message").or_else(|| v.get("message"));
        return m.and_then(|m| m.as_str()).map(str::to_string);
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    (!text.is_empty() && text.len() <= 1024).then(|| text.to_string())
}

/// `grpc-message` encoding: printable ASCII but `%` as is, the rest
/// percent-encoded (of its UTF-8 bytes).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let h = |ct: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_grpc(&m)
        };
        assert!(h("application/grpc"));
        assert!(h("application/grpc+proto"));
        assert!(h("Application/GRPC+json"));
        assert!(h("application/grpc; charset=utf-8"));
        assert!(!h("application/grpc-web"));
        assert!(!h("application/json"));
        assert!(!h("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_parse_and_format() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_timeout(b"250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_timeout(b"7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_timeout(b"99999999H"), Some(MAX_TIMEOUT));
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"100x",
            b"123456789m",
            b"-1S",
            b"1.5S",
            b" 1S",
            b"\xff\xfeS",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(format_timeout(Duration::from_millis(250)), "250m");
        assert_eq!(format_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(format_timeout(MAX_TIMEOUT * 2), "55556H");
        for d in [1, 999, 100_000_001] {
            let d = Duration::from_millis(d);
            assert!(parse_timeout(format_timeout(d).as_bytes()).unwrap() >= d);
        }
    }

    #[test]
    fn gateway_refusals_become_grpc_statuses() {
        let refused = Outgoing::buffered(
            429,
            Fields::Map({
                let mut m = HeaderMap::new();
                m.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
                m.insert(header::RETRY_AFTER, "3".parse().unwrap());
                m
            }),
            Bytes::from_static(
                br#"{"error":{"code":"rate_limited","message":"too many requests: 100% used \u00e9"}}"#,
            ),
        );
        let out = as_status(refused);
        assert_eq!(out.status, 200);
        let h = out.headers.into_map();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h["grpc-message"], "too many requests: 100%25 used %C3%A9");
        assert_eq!(h["retry-after"], "3");
        assert!(matches!(out.body, OutBody::Buffered(b) if b.is_empty()));
        assert_eq!(code_for(401), 16);
        assert_eq!(code_for(502), 14);
        assert_eq!(code_for(504), 4);
        assert_eq!(code_for(418), 2);
        let ok = Outgoing::buffered(200, Fields::Map(HeaderMap::new()), Bytes::from("x"));
        assert!(matches!(as_status(ok).body, OutBody::Buffered(b) if b == "x"));
    }
}
