//! The request pipeline: named phases over a per-request context, and one
//! failure exit.
//!
//! ```text
//! accept -> normalise -> route -> request chain -> upstream -> response chain -> finish
//!               |          |            |              |        (reverse)    ^
//!               +----------+--> fail ---|--------------|---------------------|--> finish
//!                                       +--------------+--> fail ------------+
//! ```
//!
//! - **accept** gives the call its request id and timings (`Arrival`);
//! - **normalise** (`normalise`) refuses framing, targets and
//!   authorities it cannot trust and normalises the path;
//! - **route** finds the API; from here on the call's state is a
//!   `Ctx`;
//! - **request chain** (`request::request_chain`) runs the steps in
//!   order until one answers or fails;
//! - **upstream** (`forward::upstream`) sends the request on;
//! - **response chain** (`response::response_chain`) runs the response
//!   phase of the steps that ran, in reverse, over whatever the response is
//!   by then (the upstream's, a step's, or an error);
//! - **finish** sets `x-request-id` and hands the response to hyper;
//!   for an API with `[api.record]`, `recording` notes the request before
//!   the request chain and the response as it leaves.
//!
//! Every failure, in any phase, leaves through `fail`: it is logged,
//! mapped to its response ([`GatewayError::to_response`]) and decides
//! whether the connection is kept ([`Failure::closes_connection`]).
//! Failures before routing answer at once; later ones still go through
//! the response chain of the steps that ran.

mod context;
mod forward;
mod grpc;
mod lifecycle;
mod normalise;
mod oauth;
mod observed;
mod recording;
mod request;
mod response;
#[cfg(test)]
mod tests;

#[doc(hidden)]
pub use context::{headers_to_wit, wit_to_headers};

use crate::gateway::error::{Failure, GatewayError};
use crate::gateway::DataPlane;
use crate::loader::{Api, Generation, REVISION_PREFIX};
use crate::observe::metrics::ListenerCells;
use crate::policy::host::{CallTiming, ResponseOrigin};
use crate::policy::{CallContext, Header, RequestHead, RequestScope};
use crate::route::{strip_first_segment, Route, RouteMatch, VersionFrom};
use crate::upstream::{self, BoxError, OutboundBody, ProxyBody};
use bytes::Bytes;
use context::{Ctx, Fields, OutBody, Outgoing};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use normalise::{normalise, Normalised};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One call, start to end.
pub async fn handle(
    gateway: &DataPlane,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<ProxyBody> {
    handle_on(gateway, req, peer, scheme, None).await
}

/// [`handle`] for a listener, counted in its metric cells.
pub async fn handle_on(
    gateway: &DataPlane,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
    listener: Option<&'static ListenerCells>,
) -> Response<ProxyBody> {
    let arrival = Arrival::new(peer, scheme);
    let started = context::lock(&arrival.timing).start;
    let observed = observed::wanted(gateway).then(|| observed::Start::now(listener));
    let gen = gateway.current();
    let (parts, body) = req.into_parts();
    // A gRPC call gets the gateway's own answers as gRPC statuses.
    let grpc = grpc::is_grpc(&parts.headers);
    let answer = |out: Outgoing| if grpc { grpc::as_status(out) } else { out };
    let normalised = normalise(&parts, gateway.limits());
    if let (Some(server), Ok(n)) = (&gateway.oauth, &normalised) {
        if crate::domain::oauth::is_endpoint(&n.path) {
            let answered =
                oauth::answer(server.clone(), &parts, body, n, scheme, gateway.limits()).await;
            let out = answered.unwrap_or_else(|f| fail(f, &arrival.request_id, ""));
            let resp = finish(out, &arrival.request_id);
            return match observed {
                Some(start) => {
                    let rec = observed::unrouted(parts.method, peer, scheme, start);
                    observed::watch(&gateway.observe, rec, started, resp)
                }
                None => resp,
            };
        }
    }
    let routed = normalised.and_then(|n| route(&gen, &parts, n));
    match routed {
        Err(failure) => {
            let out = answer(fail(failure, &arrival.request_id, ""));
            let resp = finish(out, &arrival.request_id);
            match observed {
                Some(start) => {
                    let rec = observed::unrouted(parts.method, peer, scheme, start);
                    observed::watch(&gateway.observe, rec, started, resp)
                }
                None => resp,
            }
        }
        Ok(mut routed) => {
            let route = routed.route;
            let method = parts.method.clone();
            let notice = routed.notice.take();
            let mut cx = enter(gateway, &gen, routed, arrival, parts, body);
            let out = match notice.as_ref().and_then(|n| n.gone(&cx.api.name)) {
                // Retired: no step, no upstream.
                Some(gone) => cx.fail(gone.into()),
                None => match recording::begin(&mut cx).await {
                    Ok(()) => proxy(&mut cx).await,
                    Err(failure) => cx.fail(failure),
                },
            };
            let mut out = response::response_chain(&mut cx, out).await;
            if let Some(n) = &notice {
                n.apply(&mut out);
            }
            // What the upstream answered passes as it is; what the gateway
            // or a step answered becomes a gRPC status for a gRPC call.
            // (Asked only for a gRPC call: the timings are behind a lock.)
            let out = if grpc && !matches!(cx.timing().origin, Some(ResponseOrigin::Upstream(_))) {
                answer(out)
            } else {
                out
            };
            let resp = finish(out, cx.request_id());
            if let Some(tunnel) = cx.tunnel.take() {
                // Relayed only if the client gets the switch: a response
                // step may have answered otherwise.
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    crate::gateway::websocket::spawn(tunnel);
                }
            }
            let resp = recording::end(&mut cx, resp);
            match observed {
                Some(start) => {
                    let rec = observed::routed(&mut cx, route, method, start);
                    observed::watch(&gateway.observe, rec, started, resp)
                }
                None => resp,
            }
        }
    }
}

/// The accept phase: what a call has before anything is checked.
pub(crate) struct Arrival {
    pub request_id: String,
    pub timing: Arc<Mutex<CallTiming>>,
    pub peer: SocketAddr,
    /// `http` or `https`, as the client reached the listener.
    pub scheme: &'static str,
}

impl Arrival {
    pub fn new(peer: SocketAddr, scheme: &'static str) -> Arrival {
        Arrival {
            request_id: uuid::Uuid::new_v4().simple().to_string(),
            timing: Arc::new(Mutex::new(CallTiming::new())),
            peer,
            scheme,
        }
    }
}

/// A request the router matched.
pub(crate) struct Routed<'g> {
    pub api: &'g Api,
    pub route: &'g Route,
    pub captures: Vec<(String, String)>,
    pub normalised: Normalised,
    /// A deprecated or retired API's notice.
    pub notice: Option<lifecycle::Notice>,
}

/// The route phase: the API for the request's host, path and method (and
/// the version it names); a 404 or a 405 (with `Allow`) when there is
/// none. A path version's segment is removed from the path, and a path
/// under `/.rev/{api}/{number}` goes to that staged revision.
pub(crate) fn route<'g>(
    gen: &'g Generation,
    parts: &http::request::Parts,
    mut normalised: Normalised,
) -> Result<Routed<'g>, Failure> {
    let host = normalise::host_of(&normalised.authority);
    let method = parts.method.as_str();
    if let Some(found) = revision(gen, host, &normalised.path, method) {
        let (api, route, captures, rest) = found?;
        normalised.path = rest;
        return Ok(Routed {
            api,
            route,
            captures,
            normalised,
            notice: None,
        });
    }
    let query = parts.uri.query();
    let version_of = |from: &VersionFrom| match from {
        VersionFrom::Header(h) => parts.headers.get(h.as_str()).and_then(|v| v.to_str().ok()),
        VersionFrom::Query(q) => lifecycle::query_value(query, q),
        VersionFrom::Path => None,
    };
    match gen
        .router
        .route_versioned(host, &normalised.path, method, &version_of)
    {
        RouteMatch::Found { route, captures } => {
            let api = &gen.apis[route.api];
            let notice = lifecycle::notice(api, route, &normalised.path, query);
            if route.version.as_ref().is_some_and(|v| v.strip) {
                normalised.path = strip_first_segment(&normalised.path).to_string();
            }
            Ok(Routed {
                api,
                route,
                captures,
                normalised,
                notice,
            })
        }
        RouteMatch::UnknownVersion { set, given } => Err(GatewayError::UnknownVersion {
            set: set.name.clone(),
            versions: set.versions.iter().map(|v| v.to_string()).collect(),
            given,
        }
        .into()),
        RouteMatch::MethodNotAllowed { allow } => {
            Err(GatewayError::MethodNotAllowed { allow }.into())
        }
        RouteMatch::NotFound => Err(GatewayError::NoRoute.into()),
    }
}

/// A revision's API, route and captures, and the path after its address,
/// for a path under `/.rev/{api}/{number}`; `None` for any other path.
#[allow(clippy::type_complexity)]
fn revision<'g>(
    gen: &'g Generation,
    host: &str,
    path: &str,
    method: &str,
) -> Option<Result<(&'g Api, &'g Route, Vec<(String, String)>, String), Failure>> {
    let rest = path.strip_prefix('/')?.strip_prefix(REVISION_PREFIX)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut parts = rest.splitn(4, '/').skip(1);
    let (name, number) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let rest = format!("/{}", parts.next().unwrap_or(""));
    let Some(rev) = number
        .parse::<u32>()
        .ok()
        .and_then(|n| gen.revisions.get(&(name.to_string(), n)))
    else {
        return Some(Err(GatewayError::NoRoute.into()));
    };
    Some(match rev.router.route(host, &rest, method) {
        RouteMatch::Found { route, captures } => Ok((&rev.api, route, captures, rest)),
        RouteMatch::MethodNotAllowed { allow } => {
            Err(GatewayError::MethodNotAllowed { allow }.into())
        }
        _ => Err(GatewayError::NoRoute.into()),
    })
}

/// The routed request becomes the call's context: its one authority as
/// `Host` (for the steps and, with `preserve-host`, the upstream), without
/// hop-by-hop fields and without what a client may not claim (see
/// [`upstream::strip_client_identity`]).
pub(crate) fn enter<'g>(
    gateway: &'g DataPlane,
    gen: &Generation,
    routed: Routed<'g>,
    arrival: Arrival,
    parts: http::request::Parts,
    body: Incoming,
) -> Ctx<'g> {
    let Routed {
        api,
        route,
        captures,
        normalised: Normalised { authority, path },
        notice: _,
    } = routed;
    let mut parts = parts;
    // A WebSocket handshake where the route allows it: the client's side
    // is kept for the relay, and the `Upgrade` fields go upstream again
    // (`forward`); elsewhere they are dropped as hop-by-hop, as always.
    let upgrade = (crate::gateway::websocket::is_upgrade(&parts)
        && crate::gateway::websocket::allowed(api.spec.websocket.as_ref(), &route.name))
    .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
    .flatten();
    let mut headers = parts.headers;
    // Without an authority in the target, a non-empty `Host` already is it.
    if parts.uri.authority().is_some() || authority.is_empty() {
        match HeaderValue::from_str(&authority) {
            Ok(v) if !authority.is_empty() => {
                headers.insert(header::HOST, v);
            }
            _ => {
                headers.remove(header::HOST);
            }
        }
    }
    upstream::strip_hop_by_hop(&mut headers);
    upstream::strip_client_identity(&mut headers);
    let trace = context::call_span(
        gateway,
        &parts.method,
        &headers,
        api,
        &route.name,
        &path,
        &arrival.request_id,
    );
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let head = RequestHead {
        method: parts.method.as_str().to_string(),
        scheme: arrival.scheme.to_string(),
        authority,
        path,
        query: parts.uri.query().map(str::to_string),
        // Filled from `headers` before the first step (see `Fields`).
        headers: Vec::new(),
    };
    let scope = RequestScope {
        request_id: arrival.request_id.clone(),
        consumers: gen.consumers.clone(),
        timing: arrival.timing,
    };
    let call = CallContext {
        request_id: arrival.request_id,
        client_addr: arrival.peer.to_string(),
        api: api.name.to_string(),
        route: route.name.clone(),
        captures,
        consumer: None,
        step: String::new(),
    };
    Ctx {
        gateway,
        api,
        call,
        head,
        headers: Some(headers),
        body: OutboundBody::Stream(body),
        declared_len,
        scope,
        chain: api
            .chains
            .chains
            .get(route.chain)
            .map_or(&[][..], Vec::as_slice),
        instances: Vec::with_capacity(api.steps.len()),
        peer: arrival.peer,
        record: None,
        trace,
        upgrade,
        tunnel: None,
    }
}

/// The request chain, then the upstream unless a step answered: the
/// response the response chain starts from.
async fn proxy(cx: &mut Ctx<'_>) -> Outgoing {
    let out = match request::request_chain(cx).await {
        Ok(request::Chain::Through) => forward::upstream(cx).await,
        Ok(request::Chain::Answered { step, out }) => {
            cx.set_origin(ResponseOrigin::Step(step));
            Ok(out)
        }
        Err(failure) => Err(failure),
    };
    out.unwrap_or_else(|failure| cx.fail(failure))
}

impl Ctx<'_> {
    /// [`fail`] for a routed call, which also records that the gateway
    /// made the response (for `outcome`).
    pub fn fail(&self, failure: Failure) -> Outgoing {
        let out = fail(failure, self.request_id(), &self.api.name);
        self.set_origin(ResponseOrigin::Gateway(out.status));
        out
    }
}

/// The one failure exit: log the failure, turn it into the response the
/// client gets, and close the connection after it unless the connection
/// can be trusted to carry another request.
pub(crate) fn fail(failure: Failure, request_id: &str, api: &str) -> Outgoing {
    failure.error.log(request_id, api);
    let (parts, body) = failure.error.to_response(request_id).into_parts();
    let mut out = Outgoing::buffered(
        parts.status.as_u16(),
        Fields::Map(parts.headers),
        full_bytes(body),
    );
    if failure.closes_connection() {
        match &mut out.headers {
            Fields::Map(m) => {
                m.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Fields::Wit(v) => v.push(Header {
                name: "connection".into(),
                value: b"close".to_vec(),
            }),
        }
    }
    out
}

/// The bytes of a whole in-memory body.
fn full_bytes(b: Full<Bytes>) -> Bytes {
    use http_body::Body;
    let mut b = b;
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::Pin::new(&mut b).poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(f))) => f.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The response as hyper sends it, with the call's `x-request-id`.
fn finish(out: Outgoing, request_id: &str) -> Response<ProxyBody> {
    let mut headers = out.headers.into_map();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    let body: ProxyBody = match out.body {
        OutBody::Stream(b) => b.map_err(|e| Box::new(e) as BoxError).boxed(),
        OutBody::Buffered(b) => {
            headers.remove(header::CONTENT_LENGTH);
            Full::new(b).map_err(|e| match e {}).boxed()
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(out.status).unwrap_or(StatusCode::BAD_GATEWAY);
    *resp.headers_mut() = headers;
    resp
}
