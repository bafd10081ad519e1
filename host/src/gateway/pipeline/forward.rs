//! The upstream phase: the request as the chain left it, prepared for the
//! upstream (the gateway's `X-Forwarded-*`, `x-request-id`, framing) and
//! sent through the API's [`crate::upstream::Upstream`].

use super::context::{wit_to_headers, Ctx, Fields, OutBody, Outgoing};
use crate::gateway::error::{Failure, GatewayError};
use crate::gateway::websocket;
use crate::observe::trace::{CallSpan, ChildSpan};
use crate::policy::host::ResponseOrigin;
use crate::upstream::{self, Outbound, OutboundBody, UpstreamBody, UpstreamError};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

/// Call the upstream and take its response as the one the response chain
/// starts from.
pub(crate) async fn upstream(cx: &mut Ctx<'_>) -> Result<Outgoing, Failure> {
    let started = std::time::Instant::now();
    let result = call_upstream(cx).await;
    cx.timing().upstream_us = started.elapsed().as_micros() as u64;
    let mut resp = result?;
    // A WebSocket handshake the upstream accepted: the switch goes back to
    // the client, and both connections are relayed once it has it.
    let switched = cx.upgrade.is_some() && websocket::is_switch(resp.status(), resp.headers());
    // Otherwise the gateway asked for no protocol switch (Upgrade is
    // hop-by-hop), so a 101 (or any 1xx as a final answer) is not a
    // response it can forward: handing it on would leave the client
    // believing in a tunnel that does not exist.
    if resp.status().is_informational() && !switched {
        let detail = format!("unsolicited {} response", resp.status());
        return Err(UpstreamError::BadResponse(detail).into());
    }
    if switched {
        let upstream_side = hyper::upgrade::on(&mut resp);
        let client_side = cx.upgrade.take().expect("checked above");
        let spec = cx.api.spec.websocket.clone().unwrap_or_default();
        let writes_sink = cx
            .api
            .steps
            .iter()
            .any(|s| s.grants.has(&crate::policy::host::Capability::Sink));
        cx.tunnel = Some(websocket::Tunnel {
            client: client_side,
            upstream: upstream_side,
            settings: spec,
            api: cx.api.name.clone(),
            request_id: cx.request_id().to_string(),
            services: writes_sink.then(|| cx.gateway.runtime.services().clone()),
        });
    }
    let (parts, body) = resp.into_parts();
    cx.set_origin(ResponseOrigin::Upstream(parts.status.as_u16()));
    let mut headers = parts.headers;
    upstream::strip_hop_by_hop(&mut headers);
    if switched {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // The gateway parses the frames itself: no extension applies.
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    Ok(Outgoing {
        status: parts.status.as_u16(),
        headers: Fields::Map(headers),
        body: OutBody::Stream(body),
    })
}

/// Send the request as the chain left it through the API's upstream, which
/// picks the target (round-robin, skipping open breakers), sets `Host`, and
/// retries what may be retried.
/// With `[otel]`, the call has a client span, whose context goes upstream
/// as `traceparent` (and `tracestate`).
async fn call_upstream(cx: &mut Ctx<'_>) -> Result<Response<UpstreamBody>, Failure> {
    let span = cx.trace.as_ref().map(|t| upstream_span(t, cx));
    let mut out = outbound(cx)?;
    if let Some(span) = &span {
        span.inject(&mut out.headers);
    }
    let result = cx.api.upstream.forward(out).await;
    if let Some(span) = span {
        match &result {
            Ok(resp) => span.end("response", Some(resp.status().as_u16()), None),
            Err(e) => span.end("error", None, Some(e.to_string())),
        }
    }
    Ok(result?)
}

/// The upstream call's span: its targets (`server.address` and
/// `server.port` when there is one) and the retries it may make.
fn upstream_span(trace: &CallSpan, cx: &Ctx<'_>) -> ChildSpan {
    let up = &cx.api.upstream;
    let mut attrs = vec![
        KeyValue::new("http.request.method", cx.head.method.clone()),
        KeyValue::new(
            "tollgate.upstream.targets",
            up.targets
                .iter()
                .map(|t| t.authority.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        KeyValue::new("tollgate.upstream.max_retries", i64::from(up.retries)),
    ];
    if let [only] = up.targets.as_slice() {
        attrs.push(KeyValue::new(
            "server.address",
            only.authority.host().to_string(),
        ));
        if let Some(port) = only.authority.port_u16() {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    trace.child(format!("upstream {}", cx.api.name), SpanKind::Client, attrs)
}

/// The request for the upstream: its fields are the map as they arrived
/// (already stripped) when no step ran, else `head.headers`.
fn outbound(cx: &mut Ctx<'_>) -> Result<Outbound, Failure> {
    let head = &cx.head;
    let mut pq = String::with_capacity(head.path.len() + 16);
    pq.push_str(&head.path);
    if let Some(q) = &head.query {
        pq.push('?');
        pq.push_str(q);
    }
    let path_and_query = http::uri::PathAndQuery::try_from(pq)
        .map_err(|e| GatewayError::Internal(format!("building the upstream URI: {e}")))?;
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| GatewayError::BadRequest("invalid method".into()))?;
    let mut headers = match cx.headers.take() {
        Some(m) => m,
        None => {
            let mut h = wit_to_headers(&head.headers);
            upstream::strip_hop_by_hop(&mut h);
            h
        }
    };
    if cx.upgrade.is_some() {
        // The handshake goes on (Upgrade is hop-by-hop: removed on arrival),
        // without extensions: the gateway parses the frames itself.
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    }
    let original_host = forwarding_fields(cx, &mut headers);
    let deadline = grpc_fields(cx, &mut headers)?;
    let body = outbound_body(cx, &mut headers);
    Ok(Outbound {
        method,
        path_and_query,
        headers,
        original_host,
        body,
        deadline,
    })
}

/// For a gRPC call: `te: trailers` again (hop-by-hop, removed on arrival;
/// gRPC servers may require it), and its `grpc-timeout` as what is left of
/// it now, returned as the deadline for the upstream's answer. A deadline
/// already past is `DEADLINE_EXCEEDED` without calling the upstream.
fn grpc_fields(
    cx: &Ctx<'_>,
    headers: &mut HeaderMap,
) -> Result<Option<std::time::Duration>, Failure> {
    if !super::grpc::is_grpc(headers) {
        return Ok(None);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    let Some(timeout) = headers
        .get("grpc-timeout")
        .and_then(|v| super::grpc::parse_timeout(v.as_bytes()))
    else {
        // Unreadable: not passed on as if it were a deadline.
        headers.remove("grpc-timeout");
        return Ok(None);
    };
    let spent = cx.timing().start.elapsed();
    let Some(left) = timeout.checked_sub(spent).filter(|d| !d.is_zero()) else {
        return Err(UpstreamError::ResponseTimeout(timeout).into());
    };
    if let Ok(v) = HeaderValue::from_str(&super::grpc::format_timeout(left)) {
        headers.insert("grpc-timeout", v);
    }
    Ok(Some(left))
}

/// Set the fields the gateway vouches for: `X-Forwarded-*` from what it
/// saw, and `x-request-id`; `Host` is removed (the upstream sets it per
/// target). Returns the client's `Host`, for `preserve-host`.
fn forwarding_fields(cx: &Ctx<'_>, headers: &mut HeaderMap) -> Option<HeaderValue> {
    let authority = &cx.head.authority;
    let original_host = headers
        .get(header::HOST)
        .cloned()
        .or_else(|| HeaderValue::from_str(authority).ok());
    upstream::set_forwarded(
        headers,
        &cx.peer.ip().to_string(),
        cx.head.scheme.as_str(),
        original_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or(Some(super::normalise::host_of(authority))),
    );
    headers.remove(header::HOST);
    if let Ok(v) = HeaderValue::from_str(cx.request_id()) {
        headers.insert("x-request-id", v);
    }
    original_host
}

/// The body for the upstream, and the framing fields that go with it.
fn outbound_body(cx: &mut Ctx<'_>, headers: &mut HeaderMap) -> OutboundBody {
    let placeholder = OutboundBody::Buffered(Bytes::new());
    match std::mem::replace(&mut cx.body, placeholder) {
        // A streamed body of unknown length (chunked, or HTTP/2 without
        // content-length) goes upstream chunked whatever the method:
        // otherwise hyper sends a GET's or DELETE's body as no body at all.
        OutboundBody::Stream(incoming) => {
            if !http_body::Body::is_end_stream(&incoming)
                && http_body::Body::size_hint(&incoming).exact().is_none()
            {
                headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            OutboundBody::Stream(incoming)
        }
        OutboundBody::Buffered(b) => {
            headers.remove(header::CONTENT_LENGTH);
            OutboundBody::Buffered(b)
        }
    }
}
