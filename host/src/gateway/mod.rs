//! The gateway: listeners (HTTP/1.1 and HTTP/2, optionally TLS with ALPN),
//! the per-request pipeline, and atomic configuration swaps.
//!
//! ```text
//! accept -> limits + path normalisation -> route -> request chain
//!        -> upstream -> response chain (reverse) -> client
//! ```

pub mod error;

use crate::gateway::error::GatewayError;
use crate::loader::{self, Generation};
use crate::manifest::{GatewayFile, Limits};
use crate::policy::host::{CallTiming, ResponseOrigin};
use crate::policy::{
    self, CallContext, Header, PolicyError, RequestDecision, RequestHead, ResponseDecision,
    ResponseHead, Runtime, StepInstance,
};
use crate::route::{normalize_path, RouteMatch};
use crate::upstream::{self, BoxError, ProxyBody};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::either::Either;

/// The data plane's state: the serving configuration generation, the
/// policy runtime and the listeners' limits. The control plane swaps
/// generations in through [`DataPlane::install`]; requests read
/// [`DataPlane::current`] once and finish on that generation.
pub struct DataPlane {
    pub runtime: Arc<Runtime>,
    current: ArcSwap<Generation>,
    limits: Limits,
    /// The folder of the gateway file: relative paths of listeners'
    /// certificates are resolved against it.
    base: PathBuf,
    /// Bumped on every configuration swap after the first (for tests and logs).
    pub generation: std::sync::atomic::AtomicU64,
}

impl DataPlane {
    pub fn new(runtime: Arc<Runtime>, first: Generation, limits: Limits, base: PathBuf) -> Self {
        DataPlane {
            runtime,
            current: ArcSwap::from_pointee(first),
            limits,
            base,
            generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The configuration serving right now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Swap in `g`; returns its generation number. Requests in flight
    /// finish on the generation they started with.
    pub fn install(&self, g: Generation) -> u64 {
        self.current.store(Arc::new(g));
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// The listeners' limits (from the gateway file at start).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A listener that is bound and serving.
pub struct Bound {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// A listening socket bound with `SO_REUSEPORT`, so that each worker can
/// have its own on the same address and the kernel spreads connections
/// over them.
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Bind every listener and serve until `shutdown` turns true; then stop
/// accepting and let connections finish. Every listener is served by each of `workers`: one
/// socket per worker on the same address (`SO_REUSEPORT`), so a connection
/// is accepted, served, proxied and answered on one thread, without
/// hand-offs between threads (thread-per-core, as nginx and haproxy run).
/// With no workers, everything runs on the calling runtime (tests, tools).
pub async fn serve_on(
    gateway: Arc<DataPlane>,
    gw: &GatewayFile,
    shutdown: watch::Receiver<bool>,
    workers: &[tokio::runtime::Handle],
) -> Result<(Vec<Bound>, Vec<tokio::task::JoinHandle<()>>)> {
    let base = gateway.base.clone();
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for l in &gw.listeners {
        let addr: SocketAddr = l
            .address
            .parse()
            .with_context(|| format!("listener `{}`: bad address", l.name))?;
        let tls = match &l.tls {
            Some(t) => Some(crate::net::tls_server::acceptor(
                &loader::resolve(&base, &t.cert),
                &loader::resolve(&base, &t.key),
            )?),
            None => None,
        };
        // One connection limit per listener, shared by its workers.
        let conns = Arc::new(Semaphore::new(gateway.limits().max_connections));
        let local = if workers.is_empty() {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listener `{}`: cannot bind {addr}", l.name))?;
            let local = listener.local_addr()?;
            tasks.push(tokio::spawn(accept_loop(
                gateway.clone(),
                listener,
                tls.clone(),
                conns,
                shutdown.clone(),
            )));
            local
        } else {
            // Bind them all before any listens; the first fixes the port
            // when the address asks for any (port 0).
            let bind_err = || format!("listener `{}`: cannot bind {addr}", l.name);
            let first = reuseport_socket(addr).with_context(bind_err)?;
            let local = first.local_addr()?;
            let mut sockets = vec![first];
            for _ in 1..workers.len() {
                sockets.push(reuseport_socket(local).with_context(bind_err)?);
            }
            for (socket, worker) in sockets.into_iter().zip(workers) {
                let listener = {
                    // Registered with the worker's own I/O driver.
                    let _entered = worker.enter();
                    socket.listen(1024).with_context(bind_err)?
                };
                tasks.push(worker.spawn(accept_loop(
                    gateway.clone(),
                    listener,
                    tls.clone(),
                    conns.clone(),
                    shutdown.clone(),
                )));
            }
            local
        };
        tracing::info!(listener = %l.name, address = %local, tls = tls.is_some(), workers = workers.len().max(1), "listening");
        bound.push(Bound {
            name: l.name.to_string(),
            addr: local,
            tls: tls.is_some(),
        });
    }
    Ok((bound, tasks))
}

async fn accept_loop(
    gateway: Arc<DataPlane>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conns: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = gateway.limits().clone();
    let (first_request, send_stall) = (limits.request_header_timeout.0, limits.send_timeout.0);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_header_timeout.0)
        .max_buf_size((limits.max_header_bytes.0 as usize).max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes.0 as u32)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    let builder = Arc::new(builder);
    let tls_scheme = tls.is_some();
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let scheme = if tls_scheme { "https" } else { "http" };
            let svc = service_fn(move |req| {
                let gateway = gateway.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&gateway, req, peer, scheme).await)
                }
            });
            // Plain or TLS, the connection is then served the same way.
            let stream = match tls {
                None => Either::Left(stream),
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let io = crate::net::client_io::ClientIo::new(stream, first_request, send_stall);
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
                }
            }
        });
    }
}

/// Largest refused request body the gateway still reads (and discards) so
/// the client can read the 413.
const DRAIN_MAX: u64 = 1 << 20;

/// A response on its way back through the chain.
struct Outgoing {
    status: u16,
    headers: Fields,
    body: OutBody,
}

/// Header fields on their way through the gateway: hyper's map as they
/// arrived, turned into the WIT list only when a step is called, and into
/// a map again at the end. With no steps nothing is converted.
enum Fields {
    Map(HeaderMap),
    Wit(Vec<Header>),
}

impl Fields {
    /// The fields as a step sees them (converted the first time).
    fn wit(&mut self) -> &mut Vec<Header> {
        if let Fields::Map(m) = self {
            *self = Fields::Wit(headers_to_wit(m));
        }
        match self {
            Fields::Wit(v) => v,
            Fields::Map(_) => unreachable!("converted above"),
        }
    }

    fn into_map(self) -> HeaderMap {
        match self {
            Fields::Map(m) => m,
            Fields::Wit(v) => wit_to_headers(&v),
        }
    }
}

enum OutBody {
    Stream(upstream::UpstreamBody),
    Buffered(Bytes),
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// (Public for the fuzz targets in `host/fuzz-targets`; not API.)
#[doc(hidden)]
pub fn headers_to_wit(h: &HeaderMap) -> Vec<Header> {
    h.iter()
        .map(|(n, v)| Header {
            name: n.as_str().to_string(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

/// (Public for the fuzz targets in `host/fuzz-targets`; not API.)
#[doc(hidden)]
pub fn wit_to_headers(hs: &[Header]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(hs.len());
    for h in hs {
        // Names and values were checked when a step set them, and the
        // others came from hyper; anything odd is dropped, never forwarded.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) {
            map.append(n, v);
        }
    }
    map
}

fn error_outgoing(err: &GatewayError, request_id: &str) -> Outgoing {
    let resp = err.to_response(request_id);
    let (parts, body) = resp.into_parts();
    let bytes = body_bytes(body);
    Outgoing {
        status: parts.status.as_u16(),
        headers: Fields::Map(parts.headers),
        body: OutBody::Buffered(bytes),
    }
}

fn body_bytes(b: Full<Bytes>) -> Bytes {
    use http_body::Body;
    let mut b = b;
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::Pin::new(&mut b).poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(f))) => f.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

fn log_failure(err: &GatewayError, request_id: &str, api: &str) {
    match err {
        // Rate-limited per API and step: a step failing on every call
        // must not flood the log.
        GatewayError::Policy(p) => policy::guard::warn_failure(p, request_id, api, ""),
        GatewayError::UpstreamConnect(_)
        | GatewayError::UpstreamTimeout(_)
        | GatewayError::UpstreamProtocol(_)
        | GatewayError::UpstreamBodyTooLarge { .. } => tracing::warn!(request_id, api, "{err}"),
        GatewayError::Internal(_) => tracing::error!(request_id, api, "{err}"),
        _ => tracing::debug!(request_id, api, "{err}"),
    }
}

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

/// A request body the gateway read did not arrive within
/// `limits.request-body-timeout`.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body timed out")
    }
}

impl std::error::Error for BodyTimedOut {}

/// Close the connection after this response: the rest of the request was
/// not read (or could not be framed), so nothing after it on the connection
/// can be trusted to start a new request.
fn closing(mut out: Outgoing) -> Outgoing {
    match &mut out.headers {
        Fields::Map(m) => {
            m.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Fields::Wit(v) => v.push(Header {
            name: "connection".into(),
            value: b"close".to_vec(),
        }),
    }
    out
}

/// Only `Transfer-Encoding: chunked`, once, is understood (RFC 9112 §6.1).
/// hyper reads a body as chunked when `chunked` is the last coding, so
/// `gzip, chunked` would reach the upstream still gzip-coded but without
/// its Transfer-Encoding (501), and `chunked, chunked` would be de-chunked
/// only once (400).
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), GatewayError> {
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
fn request_target_len(parts: &http::request::Parts) -> usize {
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
fn effective_authority(parts: &http::request::Parts) -> Result<String, GatewayError> {
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

/// One call, start to end.
pub async fn handle(
    gateway: &DataPlane,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<ProxyBody> {
    let request_id = new_request_id();
    let timing = Arc::new(std::sync::Mutex::new(crate::policy::host::CallTiming::new()));
    let gen = gateway.current();
    let (parts, body) = req.into_parts();

    // Framing the gateway does not understand is refused first, then a
    // request-target over its limit and a missing, doubled or invalid Host.
    // The rest of such a request is not read: the connection closes.
    if let Err(err) = check_transfer_encoding(&parts.headers) {
        return finish(closing(error_outgoing(&err, &request_id)), &request_id);
    }
    let limit = gateway.limits().max_request_target.0;
    if request_target_len(&parts) as u64 > limit {
        let err = GatewayError::UriTooLong { limit };
        return finish(closing(error_outgoing(&err, &request_id)), &request_id);
    }
    let authority = match effective_authority(&parts) {
        Ok(a) => a,
        Err(err) => return finish(closing(error_outgoing(&err, &request_id)), &request_id),
    };

    // Path normalisation: once, before routing.
    let path = match normalize_path(parts.uri.path()) {
        Ok(p) => p,
        Err(e) => {
            let err = GatewayError::BadRequest(e.to_string());
            return finish(error_outgoing(&err, &request_id), &request_id);
        }
    };
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();

    let (route, captures) = match gen.router.route(&host, &path, parts.method.as_str()) {
        RouteMatch::Found { route, captures } => (route, captures),
        RouteMatch::MethodNotAllowed { allow } => {
            let err = GatewayError::MethodNotAllowed { allow };
            return finish(error_outgoing(&err, &request_id), &request_id);
        }
        RouteMatch::NotFound => {
            return finish(
                error_outgoing(&GatewayError::NoRoute, &request_id),
                &request_id,
            );
        }
    };
    let api = &gen.apis[route.api];

    let mut headers = parts.headers;
    // The one authority, for the steps and the upstream (`Host` with
    // `preserve-host`, `X-Forwarded-Host`) as for the router. Without an
    // authority in the target, a non-empty `Host` already is it.
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
    let mut head = RequestHead {
        method: parts.method.as_str().to_string(),
        scheme: scheme.to_string(),
        authority: authority.clone(),
        path,
        query: parts.uri.query().map(str::to_string),
        // Filled from `headers` before the first step (see `Fields`).
        headers: Vec::new(),
    };
    let mut ctx = CallContext {
        request_id: request_id.clone(),
        client_addr: peer.to_string(),
        api: api.name.to_string(),
        route: route.name.clone(),
        captures,
        consumer: None,
        step: String::new(),
    };

    // The request body streams unless a step asks for it; then it is read
    // (up to the largest limit any step asked for) just before the first
    // such step, so steps before it (authentication, IP filters) can refuse
    // the call without the gateway reading the body.
    let mut req_body: Result<Incoming, Option<Bytes>> = Ok(body);
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // The request's fields stay hyper's map unless a step runs; then
    // `head.headers` holds them from the first step on.
    let mut headers = Some(headers);

    let scope = policy::RequestScope {
        request_id: request_id.clone(),
        consumers: gen.consumers.clone(),
        timing: timing.clone(),
    };

    // The request chain.
    let mut instances: Vec<Option<StepInstance>> = Vec::with_capacity(api.steps.len());
    let mut early: Option<Outgoing> = None;
    // The step that answered instead of the upstream, if one did.
    let mut answered_by: Option<Arc<str>> = None;
    let body_timeout = gateway.limits().request_body_timeout.0;
    for step in &api.steps {
        ctx.step.clear();
        ctx.step.push_str(&step.name);
        if step.info.body.request.is_some() && req_body.is_ok() {
            let limit = api.request_body_limit.unwrap_or(0);
            if let Some(n) = declared_len.filter(|n| *n > limit as u64) {
                // Refused unread. A small body is drained first, so the
                // client (still sending) reads the 413 rather than a reset;
                // a large one is not read at all.
                if n <= DRAIN_MAX {
                    if let Ok(stream) = std::mem::replace(&mut req_body, Err(None)) {
                        let drain = Limited::new(stream, DRAIN_MAX as usize).collect();
                        let _ = tokio::time::timeout(body_timeout, drain).await;
                    }
                }
                let err = GatewayError::PayloadTooLarge { limit };
                early = Some(closing(error_outgoing(&err, &request_id)));
                instances.push(None);
                break;
            }
            let Ok(stream) = std::mem::replace(&mut req_body, Err(None)) else {
                unreachable!()
            };
            let read = Limited::new(stream, limit).collect();
            match tokio::time::timeout(body_timeout, read)
                .await
                .unwrap_or_else(|_| Err(BodyTimedOut.into()))
            {
                Ok(c) => req_body = Err(Some(c.to_bytes())),
                Err(e) if e.is::<BodyTimedOut>() => {
                    let err = GatewayError::RequestTimeout(body_timeout);
                    early = Some(closing(error_outgoing(&err, &request_id)));
                    instances.push(None);
                    break;
                }
                Err(e) => {
                    let err = if e.is::<http_body_util::LengthLimitError>() {
                        GatewayError::PayloadTooLarge { limit }
                    } else {
                        GatewayError::BadRequest(format!("reading the request body: {e}"))
                    };
                    early = Some(error_outgoing(&err, &request_id));
                    instances.push(None);
                    break;
                }
            }
        }
        if let Some(map) = headers.take() {
            head.headers = headers_to_wit(&map);
        }
        let started = std::time::Instant::now();
        let result = run_request_step(gateway, step, &ctx, &mut head, &mut req_body, &scope).await;
        timing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .steps
            .push((step.name.to_string(), started.elapsed().as_micros() as u64));
        match result {
            Ok((inst, decision)) => match decision {
                StepResult::Continue(consumer) => {
                    // A step without a response phase is done: its instance
                    // goes back to the pool now, not after the upstream call
                    // (fewer slots in use at once, and the slot is reused
                    // while its pages are still in cache).
                    instances.push(step.info.wants_response.then_some(inst));
                    if consumer.is_some() {
                        ctx.consumer = consumer;
                    }
                }
                StepResult::Respond(out) => {
                    // As the contract says: the response chain runs for the
                    // steps before this one, not for the one that answered.
                    instances.push(None);
                    early = Some(out);
                    answered_by = Some(step.name.clone());
                    break;
                }
            },
            Err(e) if step.fail_open && !matches!(e, PolicyError::BadOutput { .. }) => {
                policy::guard::warn_failure(&e, &request_id, &api.name, "; skipped (fail-open)");
                instances.push(None);
            }
            Err(e) => {
                let err = GatewayError::Policy(e);
                log_failure(&err, &request_id, &api.name);
                instances.push(None);
                early = Some(error_outgoing(&err, &request_id));
                break;
            }
        }
    }

    // The upstream.
    let upstream_result = if early.is_none() {
        let started = std::time::Instant::now();
        let r = call_upstream(
            api,
            &head,
            headers,
            req_body,
            peer,
            &host,
            scheme,
            &request_id,
        )
        .await;
        timing.lock().unwrap_or_else(|p| p.into_inner()).upstream_us =
            started.elapsed().as_micros() as u64;
        Some(r)
    } else {
        None
    };
    let mut origin = None;
    let out = match early {
        Some(o) => o,
        None => match upstream_result.expect("called when no step answered") {
            // The gateway never asks for a protocol switch (Upgrade is
            // hop-by-hop), so a 101 (or any 1xx as a final answer) is not a
            // response it can forward: handing it on would leave the client
            // believing in a tunnel that does not exist.
            Ok(resp) if resp.status().is_informational() => {
                let err = GatewayError::UpstreamProtocol(format!(
                    "unsolicited {} response",
                    resp.status()
                ));
                log_failure(&err, &request_id, &api.name);
                error_outgoing(&err, &request_id)
            }
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                origin = Some(ResponseOrigin::Upstream(parts.status.as_u16()));
                let mut h = parts.headers;
                upstream::strip_hop_by_hop(&mut h);
                Outgoing {
                    status: parts.status.as_u16(),
                    headers: Fields::Map(h),
                    body: OutBody::Stream(body),
                }
            }
            // The client stopped sending its body: the rest of it is not
            // read, so the connection closes.
            Err(err @ GatewayError::RequestTimeout(_)) => {
                log_failure(&err, &request_id, &api.name);
                closing(error_outgoing(&err, &request_id))
            }
            Err(err) => {
                log_failure(&err, &request_id, &api.name);
                error_outgoing(&err, &request_id)
            }
        },
    };

    let origin = match (origin, answered_by) {
        (Some(upstream), _) => upstream,
        (None, Some(step)) => ResponseOrigin::Step(step),
        (None, None) => ResponseOrigin::Gateway(out.status),
    };
    set_origin(&timing, origin);

    // The response chain, in reverse.
    let out = run_response_chain(
        api,
        &mut instances,
        &mut ctx,
        &head,
        out,
        &request_id,
        &timing,
    )
    .await;
    drop(instances);
    finish(out, &request_id)
}

enum StepResult {
    Continue(Option<policy::Consumer>),
    Respond(Outgoing),
}

async fn run_request_step(
    gateway: &DataPlane,
    step: &policy::Step,
    ctx: &CallContext,
    head: &mut RequestHead,
    body: &mut Result<Incoming, Option<Bytes>>,
    scope: &policy::RequestScope,
) -> Result<(StepInstance, StepResult), PolicyError> {
    let mut inst = gateway.runtime.instantiate(step, scope).await?;
    let wants_body = step.info.body.request.is_some();
    let body_view: Option<&[u8]> = match (&*body, wants_body) {
        (Err(Some(b)), true) => Some(b),
        (Err(None), true) => Some(&[]),
        _ => None,
    };
    let decision = inst.on_request(step, ctx, head, body_view).await?;
    match decision {
        RequestDecision::Continue(edits) => {
            policy::apply_header_ops(&step.name, &mut head.headers, edits.headers)?;
            if let Some(p) = edits.path {
                head.path = policy::check_path(&step.name, &p)?;
            }
            if let Some(q) = edits.query {
                policy::check_query(&step.name, &q)?;
                head.query = if q.is_empty() { None } else { Some(q) };
            }
            if let Some(b) = edits.body {
                if !wants_body {
                    return Err(PolicyError::BadOutput {
                        step: step.name.to_string(),
                        detail: "returned a request body without asking for body access".into(),
                    });
                }
                *body = Err(Some(Bytes::from(b)));
            }
            Ok((inst, StepResult::Continue(edits.consumer)))
        }
        RequestDecision::Respond(resp) => {
            policy::check_response(&step.name, &resp)?;
            Ok((
                inst,
                StepResult::Respond(Outgoing {
                    status: resp.status,
                    headers: Fields::Wit(resp.headers),
                    body: OutBody::Buffered(Bytes::from(resp.body)),
                }),
            ))
        }
    }
}

/// Call the upstream with `head` and its fields: `map` as they arrived
/// (already stripped) when no step ran, else `head.headers`.
#[allow(clippy::too_many_arguments)]
async fn call_upstream(
    api: &loader::Api,
    head: &RequestHead,
    map: Option<HeaderMap>,
    body: Result<Incoming, Option<Bytes>>,
    peer: SocketAddr,
    host: &str,
    scheme: &str,
    request_id: &str,
) -> Result<Response<upstream::UpstreamBody>, GatewayError> {
    let up = &api.upstream;
    let mut pq = String::with_capacity(head.path.len() + 16);
    pq.push_str(&head.path);
    if let Some(q) = &head.query {
        pq.push('?');
        pq.push_str(q);
    }
    let pq = http::uri::PathAndQuery::try_from(pq)
        .map_err(|e| GatewayError::Internal(format!("building the upstream URI: {e}")))?;
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| GatewayError::BadRequest("invalid method".into()))?;
    let mut headers = match map {
        Some(m) => m,
        None => {
            let mut h = wit_to_headers(&head.headers);
            upstream::strip_hop_by_hop(&mut h);
            h
        }
    };
    let original_host = headers
        .get(header::HOST)
        .cloned()
        .or_else(|| HeaderValue::from_str(&head.authority).ok());
    upstream::set_forwarded(
        &mut headers,
        &peer.ip().to_string(),
        scheme,
        original_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or(Some(host)),
    );
    headers.remove(header::HOST);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    // A streamed body of unknown length (chunked, or HTTP/2 without
    // content-length) goes upstream chunked whatever the method: otherwise
    // hyper sends a GET's or DELETE's body as no body at all.
    if let Ok(incoming) = &body {
        if !http_body::Body::is_end_stream(incoming)
            && http_body::Body::size_hint(incoming).exact().is_none()
        {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
    let body = match body {
        Ok(incoming) => upstream::OutboundBody::Stream(incoming),
        Err(b) => {
            headers.remove(header::CONTENT_LENGTH);
            upstream::OutboundBody::Buffered(b.unwrap_or_default())
        }
    };
    // The upstream picks the target (round-robin, skipping open breakers),
    // sets `Host`, and retries what may be retried.
    up.forward(upstream::Outbound {
        method,
        path_and_query: pq,
        headers,
        original_host,
        body,
    })
    .await
}

/// Record who made the response as it stands, for the `outcome` interface.
fn set_origin(timing: &std::sync::Mutex<CallTiming>, origin: ResponseOrigin) {
    timing.lock().unwrap_or_else(|p| p.into_inner()).origin = Some(origin);
}

async fn run_response_chain(
    api: &loader::Api,
    instances: &mut [Option<StepInstance>],
    ctx: &mut CallContext,
    head: &RequestHead,
    mut out: Outgoing,
    request_id: &str,
    timing: &std::sync::Mutex<CallTiming>,
) -> Outgoing {
    // Buffer the response body only if a step that will run asks for it.
    let limit = api
        .steps
        .iter()
        .zip(instances.iter())
        .filter(|(s, i)| i.is_some() && s.info.wants_response)
        .filter_map(|(s, _)| s.info.body.response.map(|n| n as usize))
        .max();
    if let (Some(limit), OutBody::Stream(_)) = (limit, &out.body) {
        let OutBody::Stream(body) =
            std::mem::replace(&mut out.body, OutBody::Buffered(Bytes::new()))
        else {
            unreachable!()
        };
        match Limited::new(body, limit).collect().await {
            Ok(c) => out.body = OutBody::Buffered(c.to_bytes()),
            Err(e) => {
                let err = if e.is::<http_body_util::LengthLimitError>() {
                    GatewayError::UpstreamBodyTooLarge { limit }
                } else {
                    GatewayError::UpstreamProtocol(format!("reading the response body: {e}"))
                };
                log_failure(&err, request_id, &api.name);
                out = error_outgoing(&err, request_id);
                set_origin(timing, ResponseOrigin::Gateway(out.status));
            }
        }
    }
    for (step, inst) in api.steps.iter().zip(instances.iter_mut()).rev() {
        let Some(inst) = inst.as_mut() else { continue };
        if !step.info.wants_response {
            continue;
        }
        ctx.step.clear();
        ctx.step.push_str(&step.name);
        let wants_body = step.info.body.response.is_some();
        let resp_head = ResponseHead {
            status: out.status,
            headers: std::mem::take(out.headers.wit()),
        };
        let body_view: Option<&[u8]> = match (&out.body, wants_body) {
            (OutBody::Buffered(b), true) => Some(b),
            _ => None,
        };
        let result = inst
            .on_response(step, ctx, head, &resp_head, body_view)
            .await;
        out.headers = Fields::Wit(resp_head.headers);
        let applied = result.and_then(|d| match d {
            ResponseDecision::Continue(edits) => {
                policy::apply_header_ops(&step.name, out.headers.wit(), edits.headers)?;
                if let Some(s) = edits.status {
                    if !(200..=599).contains(&s) {
                        return Err(PolicyError::BadOutput {
                            step: step.name.to_string(),
                            detail: format!("status {s} (must be 200 to 599)"),
                        });
                    }
                    out.status = s;
                }
                if let Some(b) = edits.body {
                    if !wants_body {
                        return Err(PolicyError::BadOutput {
                            step: step.name.to_string(),
                            detail: "returned a response body without asking for body access"
                                .into(),
                        });
                    }
                    out.body = OutBody::Buffered(Bytes::from(b));
                }
                Ok(())
            }
            ResponseDecision::Respond(resp) => {
                policy::check_response(&step.name, &resp)?;
                out = Outgoing {
                    status: resp.status,
                    headers: Fields::Wit(resp.headers),
                    body: OutBody::Buffered(Bytes::from(resp.body)),
                };
                set_origin(timing, ResponseOrigin::Step(step.name.clone()));
                Ok(())
            }
        });
        if let Err(e) = applied {
            if step.fail_open && !matches!(e, PolicyError::BadOutput { .. }) {
                policy::guard::warn_failure(&e, request_id, &api.name, "; skipped (fail-open)");
                continue;
            }
            let err = GatewayError::Policy(e);
            log_failure(&err, request_id, &api.name);
            out = error_outgoing(&err, request_id);
            set_origin(timing, ResponseOrigin::Gateway(out.status));
        }
    }
    out
}

/// Tell the caller where the gateway file lives (for `check` output).
pub fn describe(bound: &[Bound]) -> String {
    bound
        .iter()
        .map(|b| {
            format!(
                "{} on {}://{}",
                b.name,
                if b.tls { "https" } else { "http" },
                b.addr
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: http::Version, target: &str, hosts: &[&str]) -> http::request::Parts {
        let mut b = Request::builder().version(version).uri(target);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_effective_authority_is_one_value() {
        use http::Version as V;
        let ok = |v, t, h: &[&str]| effective_authority(&parts(v, t, h)).unwrap();
        let refused = |v, t, h: &[&str]| {
            matches!(
                effective_authority(&parts(v, t, h)),
                Err(GatewayError::BadRequest(_))
            )
        };
        assert_eq!(ok(V::HTTP_11, "/x", &["a.example:8080"]), "a.example:8080");
        // Absolute form and HTTP/2 `:authority` win over Host.
        assert_eq!(
            ok(V::HTTP_11, "http://b.example/x", &["a.example"]),
            "b.example"
        );
        assert_eq!(
            ok(V::HTTP_2, "http://b.example/x", &["a.example"]),
            "b.example"
        );
        assert_eq!(ok(V::HTTP_2, "http://b.example/x", &[]), "b.example");
        assert_eq!(ok(V::HTTP_2, "/x", &["a.example"]), "a.example");
        assert_eq!(ok(V::HTTP_10, "/x", &[]), "");
        assert_eq!(ok(V::HTTP_11, "/x", &[""]), "");
        assert_eq!(ok(V::HTTP_11, "/x", &["[::1]:80"]), "[::1]:80");
        assert!(refused(V::HTTP_11, "/x", &[]));
        assert!(refused(V::HTTP_11, "http://b.example/x", &[]));
        assert!(refused(V::HTTP_11, "/x", &["a", "a"]));
        assert!(refused(V::HTTP_10, "/x", &["a", "b"]));
        assert!(refused(V::HTTP_2, "/x", &["a", "b"]));
        assert!(refused(V::HTTP_11, "/x", &["a b"]));
        assert!(refused(V::HTTP_11, "/x", &["u@a.example"]));
        assert!(refused(V::HTTP_11, "http://u@b.example/x", &["b.example"]));
    }

    #[test]
    fn the_request_target_length_is_what_the_client_sent() {
        use http::Version as V;
        let len = |v, t| request_target_len(&parts(v, t, &[]));
        assert_eq!(len(V::HTTP_11, "/abc?q=1"), 8);
        assert_eq!(len(V::HTTP_11, "http://b.example/abc"), 20);
        assert_eq!(len(V::HTTP_2, "http://b.example/abc"), 4);
    }
}
