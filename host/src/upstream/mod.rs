//! The upstream side: pooled keep-alive connections, round-robin over
//! targets with a circuit breaker each ([`crate::upstream::breaker`]), timeouts,
//! bounded retries of idempotent calls, and the header rules of a
//! well-behaved proxy (hop-by-hop fields removed per RFC 9110 §7.6.1,
//! `X-Forwarded-*` set by the gateway and never trusted from clients).
//!
//! Failures and what they cost (each a kind of [`UpstreamError`]; the
//! status is the gateway edge's mapping, `crate::gateway::error`):
//!
//! | the upstream ...                         | client gets | breaker  | retried (idempotent, no streamed body) |
//! |------------------------------------------|-------------|----------|----------------------------------------|
//! | refuses the connection                   | 502         | failure  | yes                                    |
//! | fails the TLS handshake (certificate not trusted, wrong name, client certificate refused) | 502 | failure | yes, when it failed while connecting |
//! | does not complete the connect in time    | 504         | failure  | yes                                    |
//! | closes or resets before a response head  | 502         | failure  | yes                                    |
//! | sends something that is not HTTP         | 502         | failure  | no                                     |
//! | sends no response head in time           | 504         | failure  | no                                     |
//! | answers 5xx                              | that 5xx    | if `count-5xx` | no                               |
//! | stalls or breaks mid-body                | cut off     | —        | no (the head is already on its way)    |
//!
//! When every target's breaker is open the call is answered 503 at once,
//! with `Retry-After`.
//!
//! `https://` targets are reached over TLS ([`crate::net::tls_client`]): HTTP/2
//! when the target picks `h2` by ALPN, else HTTP/1.1. The TLS handshake is
//! bounded by `response-timeout` (`connect-timeout` covers the TCP connect).

pub mod breaker;
mod counted;
mod error;

use crate::manifest::UpstreamSpec;
use crate::net::error_chain;
use crate::net::tls_client::{self, ClientTls, Connector, Trust};
use crate::upstream::breaker::{Admit, Breaker, BreakerSettings, Transition};
use bytes::Bytes;
use counted::Counted;
pub use error::UpstreamError;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The error type of bodies passing through the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A body passing through the gateway.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Most retries a manifest may ask for.
pub const MAX_RETRIES: u32 = 10;

/// One upstream target.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: http::uri::Authority,
    /// `Host` for calls to this target (unless the API preserves it).
    host: Option<HeaderValue>,
    /// Prepended to the request path (no trailing slash; empty for none).
    pub base_path: String,
}

/// An API's upstream: its targets, their breakers and the connection pool.
pub struct Upstream {
    /// The API's name, for logs.
    api: String,
    pub targets: Vec<Target>,
    breakers: Vec<Breaker>,
    next: AtomicUsize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_timeout: Duration,
    pub retries: u32,
    count_5xx: bool,
    pub preserve_host: bool,
    /// `http` or `https`, the same for every target.
    scheme: Scheme,
    /// One connection pool per serving worker (see [`crate::net::workers`]).
    client: crate::net::workers::PerWorker<Client<Counted<Connector>, ProxyBody>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("api", &self.api)
            .field("targets", &self.targets)
            .finish()
    }
}

/// A request ready for the upstream, before a target is chosen.
pub struct Outbound {
    pub method: Method,
    /// Path and query as the upstream sees them, without the target's base
    /// path (which is prepended per target).
    pub path_and_query: PathAndQuery,
    /// Everything but `Host`.
    pub headers: HeaderMap,
    /// The client's `Host`, sent when `preserve-host` is on.
    pub original_host: Option<HeaderValue>,
    pub body: OutboundBody,
    /// A shorter wait for the response head than `response-timeout` (a
    /// gRPC call's deadline).
    pub deadline: Option<Duration>,
}

/// The request body as the gateway holds it.
pub enum OutboundBody {
    /// Still arriving from the client: sent as it comes, never replayed.
    Stream(Incoming),
    /// Whole in memory (read for a policy step, or empty): replayable.
    Buffered(Bytes),
}

/// A call's claim on a target: its outcome must be reported to the
/// target's breaker; a probe dropped without an outcome is given back.
struct Lease<'a> {
    up: &'a Upstream,
    index: usize,
    probe: bool,
    reported: bool,
}

impl Lease<'_> {
    fn report(mut self, ok: bool) {
        self.reported = true;
        let t = self.up.breakers[self.index].report(self.probe, ok, Instant::now());
        self.up.log_transition(self.index, t);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.up.breakers[self.index].abandon_probe(Instant::now());
        }
    }
}

/// Safe to send twice (RFC 9110 §9.2.2), as far as retries go here.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The TLS settings of an upstream whose targets are `https://`; TLS fields
/// on `http://` targets are refused. Paths are relative to `base`.
fn tls_settings(
    spec: &UpstreamSpec,
    base: &Path,
    https: bool,
) -> Result<Option<ClientTls>, String> {
    let set: Vec<&str> = [
        ("ca-file", spec.ca_file.is_some()),
        ("client-cert", spec.client_cert.is_some()),
        ("client-key", spec.client_key.is_some()),
        ("tls-server-name", spec.tls_server_name.is_some()),
        ("insecure-skip-verify", spec.insecure_skip_verify),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if !https {
        return match set.as_slice() {
            [] => Ok(None),
            [one] => Err(format!(
                "`{one}` only applies to https:// targets; these are http://"
            )),
            _ => Err(format!(
                "`{}` only apply to https:// targets; these are http://",
                set.join("`, `")
            )),
        };
    }
    let path = |p: &std::path::PathBuf| crate::manifest::resolve(base, p);
    let trust = match (spec.insecure_skip_verify, &spec.ca_file) {
        (true, Some(_)) => return Err(
            "`insecure-skip-verify = true` turns off the check that `ca-file` is for: set one or the other"
                .into(),
        ),
        (true, None) => Trust::Nobody,
        (false, Some(p)) => Trust::CaFile(path(p)),
        (false, None) => Trust::System,
    };
    let identity = match (&spec.client_cert, &spec.client_key) {
        (Some(c), Some(k)) => Some((path(c), path(k))),
        (None, None) => None,
        (Some(_), None) => {
            return Err("`client-cert` needs `client-key` (the certificate's private key)".into())
        }
        (None, Some(_)) => {
            return Err("`client-key` needs `client-cert` (the certificate it belongs to)".into())
        }
    };
    let server_name = match &spec.tls_server_name {
        None => None,
        Some(s) => Some(tls_client::server_name(s).map_err(|e| format!("`tls-server-name`: {e}"))?),
    };
    Ok(Some(ClientTls {
        trust,
        identity,
        server_name,
    }))
}

/// The targets of `spec`, and the scheme they all share.
fn parse_targets(spec: &UpstreamSpec) -> Result<(Vec<Target>, Scheme), String> {
    if spec.targets.is_empty() {
        return Err("`targets` must name at least one `http://host:port`".into());
    }
    let mut targets = Vec::new();
    let mut scheme: Option<Scheme> = None;
    for t in &spec.targets {
        let uri: Uri = t
            .parse()
            .map_err(|_| format!("target `{t}` is not a URL like http://host:port"))?;
        let this = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(format!("target `{t}` must start with http:// or https://")),
        };
        match &scheme {
            Some(s) if *s != this => {
                return Err(format!(
                    "target `{t}` is {this}:// but an earlier one is {s}://: every target of an upstream has the same scheme"
                ))
            }
            _ => scheme = Some(this),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("target `{t}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("target `{t}` cannot have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        targets.push(Target {
            host: HeaderValue::from_str(authority.as_str()).ok(),
            authority,
            base_path,
        });
    }
    Ok((targets, scheme.unwrap_or(Scheme::HTTP)))
}

/// The timeouts, retries and breaker of `spec`, checked.
fn check_limits(spec: &UpstreamSpec) -> Result<BreakerSettings, String> {
    for (name, d) in [
        ("connect-timeout", spec.connect_timeout),
        ("response-timeout", spec.response_timeout),
        ("body-timeout", spec.body_timeout),
    ] {
        if d.0.is_zero() {
            return Err(format!("`{name}` must be longer than 0"));
        }
    }
    if spec.retries > MAX_RETRIES {
        return Err(format!(
            "`retries = {}` is too many: at most {MAX_RETRIES}",
            spec.retries
        ));
    }
    if spec.breaker.failures > 0 && spec.breaker.cool_down.0.is_zero() {
        return Err("`breaker.cool-down` must be longer than 0 (or set `breaker.failures = 0` to turn the breaker off)".into());
    }
    Ok(BreakerSettings {
        failures: spec.breaker.failures,
        cool_down: spec.breaker.cool_down.0,
    })
}

/// The connection pools (one per serving worker) for `spec`'s targets,
/// over TLS when `tls` is set.
fn client_pools(
    api: &str,
    spec: &UpstreamSpec,
    tls: Option<&ClientTls>,
    http2: bool,
) -> Result<crate::net::workers::PerWorker<Client<Counted<Connector>, ProxyBody>>, String> {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(spec.connect_timeout.0));
    conn.set_nodelay(true);
    conn.set_keepalive(Some(Duration::from_secs(60)));
    let conn = match tls {
        None => tls_client::plain_connector(conn),
        Some(tls) => {
            if matches!(tls.trust, Trust::Nobody) {
                tracing::warn!(
                    api,
                    "INSECURE: upstream certificates are not verified (`insecure-skip-verify = true`): anyone on the network path can impersonate the upstream and read its traffic; use `ca-file` instead"
                );
            }
            tls_client::connector(tls, conn, true, http2)?
        }
    };
    let conn = Counted::new(conn, crate::observe::metrics::global().conn_cells(api));
    let h2c = spec.protocol == crate::manifest::UpstreamProtocol::H2c;
    Ok(crate::net::workers::PerWorker::new(|| {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(hyper_util::rt::TokioTimer::new());
        if h2c {
            // HTTP/2 with prior knowledge: one connection per target and
            // worker carries every call (streams), kept alive by pings.
            b.http2_only(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .http2_keep_alive_interval(Duration::from_secs(20))
                .http2_keep_alive_timeout(Duration::from_secs(10))
                .http2_keep_alive_while_idle(true);
        }
        b.build(conn.clone())
    }))
}

impl Upstream {
    /// Build an API's upstream; file paths in `spec` are relative to `base`
    /// (the manifest's folder).
    pub fn new(api: &str, spec: &UpstreamSpec, base: &Path) -> Result<Self, String> {
        Self::with_websocket(api, spec, base, false)
    }

    /// [`Upstream::new`] for an API that relays WebSocket connections
    /// (`websocket`): its `https://` targets are not offered h2 (no ALPN),
    /// since a handshake cannot switch an HTTP/2 connection.
    pub fn with_websocket(
        api: &str,
        spec: &UpstreamSpec,
        base: &Path,
        websocket: bool,
    ) -> Result<Self, String> {
        let (targets, scheme) = parse_targets(spec)?;
        if spec.protocol == crate::manifest::UpstreamProtocol::H2c && scheme == Scheme::HTTPS {
            return Err("`protocol = \"h2c\"` is HTTP/2 without TLS, for http:// targets: https:// targets speak HTTP/2 when they offer it (ALPN)".into());
        }
        let settings = check_limits(spec)?;
        let tls = tls_settings(spec, base, scheme == Scheme::HTTPS)?;
        let client = client_pools(api, spec, tls.as_ref(), !websocket)?;
        Ok(Upstream {
            api: api.to_string(),
            breakers: targets.iter().map(|_| Breaker::new(settings)).collect(),
            targets,
            next: AtomicUsize::new(0),
            connect_timeout: spec.connect_timeout.0,
            response_timeout: spec.response_timeout.0,
            body_timeout: spec.body_timeout.0,
            retries: spec.retries,
            count_5xx: spec.breaker.count_5xx,
            preserve_host: spec.preserve_host,
            scheme,
            client,
        })
    }

    /// The breaker of target `i` (for tests and diagnostics).
    pub fn breaker(&self, i: usize) -> &Breaker {
        &self.breakers[i]
    }

    fn log_transition(&self, i: usize, t: Option<Transition>) {
        let Some(t) = t else { return };
        let target = self.targets[i].authority.as_str();
        let m = crate::observe::metrics::global();
        match t {
            Transition::Opened { .. } | Transition::Reopened => m.breaker(&self.api, target, true),
            Transition::Closed => m.breaker(&self.api, target, false),
            Transition::HalfOpened => {}
        }
        match t {
            Transition::Opened { failures } => tracing::warn!(
                api = %self.api,
                target,
                state = t.state(),
                failures,
                "upstream target taken out of rotation after {failures} failures in a row"
            ),
            Transition::Reopened => tracing::warn!(
                api = %self.api,
                target,
                state = t.state(),
                "upstream target probe failed; out of rotation again"
            ),
            Transition::HalfOpened => tracing::info!(
                api = %self.api,
                target,
                state = t.state(),
                "upstream target cool-down over; probing"
            ),
            Transition::Closed => tracing::info!(
                api = %self.api,
                target,
                state = t.state(),
                "upstream target probe succeeded; back in rotation"
            ),
        }
    }

    /// The next target round-robin whose breaker admits a call, preferring
    /// targets not in `tried`; or, when none admits one, the earliest time
    /// one will.
    fn pick(&self, tried: &[usize]) -> Result<Lease<'_>, Instant> {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut retry_at: Option<Instant> = None;
        for pass_tried in [false, true] {
            for k in 0..n {
                let i = (start + k) % n;
                if tried.contains(&i) != pass_tried {
                    continue;
                }
                let (admit, t) = self.breakers[i].admit(now);
                self.log_transition(i, t);
                match admit {
                    Admit::Yes | Admit::Probe => {
                        return Ok(Lease {
                            up: self,
                            index: i,
                            probe: admit == Admit::Probe,
                            reported: false,
                        })
                    }
                    Admit::No { retry_at: at } => {
                        retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
                    }
                }
            }
        }
        Err(retry_at.unwrap_or(now))
    }

    /// Send `out` to a target, retrying an idempotent call with a
    /// replayable body on another target when the connection failed before
    /// any response, and report every attempt to its target's breaker.
    pub async fn forward(&self, out: Outbound) -> Result<Response<UpstreamBody>, UpstreamError> {
        let wait = out
            .deadline
            .map_or(self.response_timeout, |d| d.min(self.response_timeout));
        let mut call = Call::new(out, self.retries);
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let lease = self.admit(&tried)?;
            tried.push(lease.index);
            let req = call.request(self, &self.targets[lease.index])?;
            match self.send_once(req, lease.index, wait).await {
                Ok(resp) => return Ok(self.answered(lease, resp)),
                Err(e) => self.failed(lease, e, &mut call)?,
            }
        }
    }

    /// The target for the next attempt ([`Upstream::pick`]), or the circuit
    /// open error when every breaker refuses.
    fn admit(&self, tried: &[usize]) -> Result<Lease<'_>, UpstreamError> {
        self.pick(tried).map_err(|retry_at| UpstreamError::Open {
            retry_after: retry_at.saturating_duration_since(Instant::now()),
        })
    }

    /// A response head arrived: report the attempt and hand the response
    /// on, its body bounded by `body-timeout`.
    fn answered(&self, lease: Lease<'_>, resp: Response<Incoming>) -> Response<UpstreamBody> {
        let failed = self.count_5xx && resp.status().is_server_error();
        lease.report(!failed);
        let idle = self.body_timeout;
        resp.map(|b| UpstreamBody::new(b, idle))
    }

    /// An attempt failed: `Ok` to try again, else the call's error. A
    /// failure the client caused (its body broke off or stalled) is not
    /// reported to the target's breaker (else a client could take targets
    /// out of rotation for everyone).
    fn failed(
        &self,
        lease: Lease<'_>,
        e: UpstreamError,
        call: &mut Call,
    ) -> Result<(), UpstreamError> {
        let timed_out = matches!(e, UpstreamError::ResponseTimeout(_));
        // Returning before `report` drops the lease, which reports nothing
        // (a probe is handed to the next call).
        match call.client_body() {
            Some(BODY_BROKEN) => return Err(UpstreamError::ClientBodyBroken),
            // The target waited for the rest of a body the client did not
            // send: the client's timeout.
            Some(BODY_WAITING) if timed_out => {
                return Err(UpstreamError::ClientBodyStalled(self.response_timeout))
            }
            Some(BODY_SENDING) if timed_out => return Err(e),
            _ => {}
        }
        let index = lease.index;
        lease.report(false);
        let metrics = crate::observe::metrics::global();
        metrics.upstream_failure(&self.api, self.targets[index].authority.as_str());
        if e.retryable() && call.attempt < call.retries {
            call.attempt += 1;
            metrics.upstream_retry(&self.api);
            tracing::debug!(
                api = %self.api,
                target = self.targets[index].authority.as_str(),
                attempt = call.attempt,
                "{e}; retrying"
            );
            return Ok(());
        }
        Err(e)
    }

    /// The URI of `pq` on `target` (its base path prepended).
    fn uri(&self, target: &Target, pq: &PathAndQuery) -> Result<Uri, UpstreamError> {
        let pq = if target.base_path.is_empty() {
            pq.clone()
        } else {
            let mut joined = String::with_capacity(target.base_path.len() + pq.as_str().len());
            joined.push_str(&target.base_path);
            joined.push_str(pq.as_str());
            PathAndQuery::try_from(joined).map_err(|e| UpstreamError::Uri(e.into()))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(UpstreamError::Uri)
    }

    /// One attempt: wait for the response head within the response timeout.
    async fn send_once(
        &self,
        req: Request<ProxyBody>,
        index: usize,
        wait: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(wait, self.client.get().request(req)).await {
            Err(_) => Err(UpstreamError::ResponseTimeout(wait)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.classify(&e, index)),
        }
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error, index: usize) -> UpstreamError {
        let text = error_chain(e);
        // A refused handshake, or the target refusing ours (TLS 1.3 reports
        // a refused client certificate on the first read): named as such,
        // with the target, since the fix is in certificates, not in the
        // network. HTTP/2 keeps only the text of an I/O error, hence the
        // second look.
        let tls = match tls_client::tls_failure(e) {
            Some(t) => Some(t.to_string()),
            None => text
                .find("received fatal alert")
                .map(|i| text[i..].to_string()),
        };
        if let Some(detail) = tls {
            return UpstreamError::Tls {
                target: self.targets[index].authority.clone(),
                before_request: e.is_connect() || detail.starts_with("received fatal alert"),
                detail,
            };
        }
        if e.is_connect() {
            let timed_out = io_kinds(e).any(|k| k == std::io::ErrorKind::TimedOut)
                || text.contains("timed out")
                || text.contains("timeout");
            return if timed_out {
                UpstreamError::ConnectTimeout(self.connect_timeout)
            } else {
                UpstreamError::Connect(text)
            };
        }
        // Anything the upstream sent that does not parse as a response is
        // a response: it is not retried.
        let parse = hyper_errors(e).any(|h| h.is_parse() || h.is_parse_status());
        let closed = !parse
            && (hyper_errors(e).any(|h| {
                h.is_incomplete_message() || h.is_canceled() || h.is_body_write_aborted()
            }) || io_kinds(e).any(|k| {
                use std::io::ErrorKind as K;
                matches!(
                    k,
                    K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
                )
            }));
        if closed {
            UpstreamError::Closed(text)
        } else {
            UpstreamError::BadResponse(text)
        }
    }
}

/// One call across its attempts: the request as prepared, the body (or its
/// replayable copy) and how many attempts are left.
struct Call {
    method: Method,
    path_and_query: PathAndQuery,
    headers: HeaderMap,
    original_host: Option<HeaderValue>,
    /// The body for the first attempt; later ones send `replay`.
    body: Option<OutboundBody>,
    replay: Option<Bytes>,
    /// Retries allowed: none unless the method is idempotent and the body
    /// replayable.
    retries: u32,
    attempt: u32,
    /// How far a streaming client body got: a body that breaks off, or
    /// that is still arriving when the response timeout fires, is the
    /// client's doing, not the target's.
    client_body: Option<Arc<AtomicU8>>,
}

impl Call {
    fn new(out: Outbound, retries: u32) -> Call {
        let Outbound {
            method,
            path_and_query,
            headers,
            original_host,
            body,
            deadline: _,
        } = out;
        // An empty body from the client is as good as a buffered one.
        let body = match body {
            OutboundBody::Stream(b) if b.is_end_stream() => OutboundBody::Buffered(Bytes::new()),
            b => b,
        };
        let replay = match &body {
            OutboundBody::Buffered(b) => Some(b.clone()),
            OutboundBody::Stream(_) => None,
        };
        let retries = if idempotent(&method) && replay.is_some() {
            retries
        } else {
            0
        };
        Call {
            method,
            path_and_query,
            headers,
            original_host,
            body: Some(body),
            replay,
            retries,
            attempt: 0,
            client_body: None,
        }
    }

    /// The state of the streaming client body, if there is one.
    fn client_body(&self) -> Option<u8> {
        self.client_body.as_ref().map(|s| s.load(Ordering::Acquire))
    }

    /// The request for this attempt to `target`: its URI, the body (the
    /// replayable copy after the first attempt) and `Host` (the client's
    /// with `preserve-host`, else the target's).
    fn request(
        &mut self,
        up: &Upstream,
        target: &Target,
    ) -> Result<Request<ProxyBody>, UpstreamError> {
        let uri = up.uri(target, &self.path_and_query)?;
        let body: ProxyBody = match self.body.take() {
            Some(OutboundBody::Stream(b)) => {
                let state = Arc::new(AtomicU8::new(BODY_SENDING));
                self.client_body = Some(state.clone());
                ClientBody { inner: b, state }.boxed()
            }
            Some(OutboundBody::Buffered(b)) => full(b),
            None => full(self.replay.clone().unwrap_or_default()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        // The last attempt takes the headers; earlier ones copy them.
        *req.headers_mut() = if self.attempt < self.retries {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        let host = if up.preserve_host {
            self.original_host.clone()
        } else {
            target.host.clone()
        };
        if let Some(h) = host {
            req.headers_mut().insert(header::HOST, h);
        }
        Ok(req)
    }
}

fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|e| match e {}).boxed()
}

/// The errors in `e`'s source chain, starting with `e`.
fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn hyper_errors<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a hyper::Error> {
    sources(e).filter_map(|e| e.downcast_ref::<hyper::Error>())
}

fn io_kinds<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = std::io::ErrorKind> + 'a {
    sources(e).filter_map(|e| e.downcast_ref::<std::io::Error>().map(|io| io.kind()))
}

/// [`ClientBody`] states.
const BODY_SENDING: u8 = 0;
const BODY_SENT: u8 = 1;
const BODY_BROKEN: u8 = 2;
/// Waiting for the client to send more of the body.
const BODY_WAITING: u8 = 3;

pin_project_lite::pin_project! {
    /// A request body streaming from the client to the upstream, noting
    /// whether it was sent whole, broke off, or is waiting for the client.
    struct ClientBody {
        #[pin]
        inner: Incoming,
        state: Arc<AtomicU8>,
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Poll::Ready(r) = this.inner.as_mut().poll_frame(cx) else {
            this.state.store(BODY_WAITING, Ordering::Release);
            return Poll::Pending;
        };
        let state = match &r {
            Some(Err(_)) => BODY_BROKEN,
            None => BODY_SENT,
            Some(Ok(_)) if this.inner.is_end_stream() => BODY_SENT,
            Some(Ok(_)) => BODY_SENDING,
        };
        this.state.store(state, Ordering::Release);
        Poll::Ready(r.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why an upstream response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error("upstream response body broken: {0}")]
    Broken(#[source] hyper::Error),
    #[error("upstream response body stalled for {0:?}")]
    Stalled(Duration),
}

pin_project_lite::pin_project! {
    /// An upstream response body that fails when the upstream sends nothing
    /// for `idle` while the gateway waits for more (`body-timeout`). A
    /// failed body makes the server cut the client's response off (HTTP/1:
    /// the connection closes before the declared length or the last chunk;
    /// HTTP/2: the stream is reset), so a short body never looks complete.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        idle: Duration,
        // Created only when the body has to wait.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        armed: bool,
        done: bool,
    }
}

impl UpstreamBody {
    pub fn new(inner: Incoming, idle: Duration) -> UpstreamBody {
        UpstreamBody {
            inner,
            idle,
            timer: None,
            armed: false,
            done: false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(r) => {
                *this.armed = false;
                Poll::Ready(r.map(|r| {
                    r.map_err(|e| {
                        *this.done = true;
                        tracing::warn!(
                            "upstream response body broken, cutting the response off: {e}"
                        );
                        UpstreamBodyError::Broken(e)
                    })
                }))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + *this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*this.armed {
                    timer.as_mut().reset(deadline);
                    *this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        *this.done = true;
                        tracing::warn!(
                            "upstream response body stalled for {:?}, cutting the response off",
                            this.idle
                        );
                        Poll::Ready(Some(Err(UpstreamBodyError::Stalled(*this.idle))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The hop-by-hop fields a proxy never forwards.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Remove hop-by-hop fields, including those a `Connection` field names.
///
/// One pass over the names first: most messages carry none of these, and
/// then nothing is removed (each `remove` hashes and probes the map).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(|n| is_hop_by_hop(n.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Fields that claim who the client is or which URL it asked for. A client
/// can send any of them, so the gateway never passes them on as sent: it
/// removes them on arrival, before the request chain, and sets the
/// `X-Forwarded-*` fields itself when it calls the upstream.
const CLIENT_IDENTITY: [&str; 15] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    // Path overrides some frameworks (IIS, Symfony, Zend) honour instead
    // of the request line: a route bypass if passed through.
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
];

fn claims_identity(name: &str) -> bool {
    CLIENT_IDENTITY.contains(&name) || name.starts_with("x-consumer-")
}

/// Remove what a client may not claim: the fields in `CLIENT_IDENTITY`
/// and every `x-consumer-*` field (only an authentication step sets those,
/// after this runs).
pub fn strip_client_identity(h: &mut HeaderMap) {
    let claimed: Vec<HeaderName> = h
        .keys()
        .filter(|n| claims_identity(n.as_str()))
        .cloned()
        .collect();
    for n in claimed {
        h.remove(n);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Set the forwarding fields from what the gateway itself saw, replacing
/// any set before (client-sent ones are already gone, see
/// [`strip_client_identity`]; other fields a policy step set are kept).
pub fn set_forwarded(h: &mut HeaderMap, client_ip: &str, scheme: &str, host: Option<&str>) {
    // `insert` below replaces the fields it sets; these are only removed.
    let stale: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            matches!(
                n.as_str(),
                "forwarded" | "x-forwarded-port" | "x-real-ip" | "x-forwarded-host"
            )
        })
        .cloned()
        .collect();
    for n in stale {
        h.remove(n);
    }
    if let Ok(v) = HeaderValue::from_str(client_ip) {
        h.insert(X_FORWARDED_FOR, v);
    } else {
        h.remove(X_FORWARDED_FOR);
    }
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        h.insert(X_FORWARDED_HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn client_identity_removed_and_the_rest_kept() {
        let mut h = HeaderMap::new();
        for n in CLIENT_IDENTITY {
            h.append(n, HeaderValue::from_static("6.6.6.6"));
            h.append(n, HeaderValue::from_static("7.7.7.7"));
        }
        h.insert("x-consumer-id", HeaderValue::from_static("admin"));
        h.insert("x-consumer-custom-id", HeaderValue::from_static("admin"));
        h.insert("x-consumer", HeaderValue::from_static("kept: no prefix"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_client_identity(&mut h);
        let mut left: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-consumer"]);
        // Nothing to remove: the map is left as it was.
        let before = h.clone();
        strip_client_identity(&mut h);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_not_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        set_forwarded(&mut h, "127.0.0.1", "https", Some("api.example.com"));
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn targets() {
        let spec = |t: &str| UpstreamSpec {
            targets: vec![t.to_string()],
            connect_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            response_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            body_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            retries: 1,
            preserve_host: false,
            breaker: Default::default(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            insecure_skip_verify: false,
            protocol: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let new = |s: &UpstreamSpec| Upstream::new("t", s, Path::new("."));
        let err = |s: &UpstreamSpec| new(s).map(|_| ()).unwrap_err();
        rt.block_on(async {
            assert_eq!(
                new(&spec("http://a:1/base/")).unwrap().targets[0].base_path,
                "/base"
            );
            assert!(new(&spec("ftp://a")).is_err());
            assert!(new(&spec("http://a:1/?q")).is_err());
            let mut s = spec("http://a:1");
            s.retries = MAX_RETRIES + 1;
            assert!(err(&s).contains("retries"));
            let mut s = spec("http://a:1");
            s.body_timeout = crate::manifest::Dur(Duration::ZERO);
            assert!(err(&s).contains("body-timeout"));
            let mut s = spec("http://a:1");
            s.breaker.cool_down = crate::manifest::Dur(Duration::ZERO);
            assert!(err(&s).contains("cool-down"));
            s.breaker.failures = 0;
            assert!(new(&s).is_ok());
        });
    }

    #[test]
    fn tls_fields() {
        let spec = |targets: &[&str]| UpstreamSpec {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            connect_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            response_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            body_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            retries: 1,
            preserve_host: false,
            breaker: Default::default(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            insecure_skip_verify: true,
            protocol: Default::default(),
        };
        let new = |s: &UpstreamSpec| Upstream::new("t", s, Path::new("."));
        let err = |s: &UpstreamSpec| new(s).map(|_| ()).unwrap_err();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let up = new(&spec(&["https://a:1", "https://b:2/base"])).unwrap();
            assert_eq!(up.scheme, Scheme::HTTPS);
            let e = err(&spec(&["https://a:1", "http://b:2"]));
            assert!(e.contains("same scheme"), "{e}");
            let mut s = spec(&["http://a:1"]);
            s.tls_server_name = Some("a.internal".into());
            let e = err(&s);
            assert!(
                e.contains("`tls-server-name`, `insecure-skip-verify` only apply to https://"),
                "{e}"
            );
            let mut s = spec(&["https://a:1"]);
            s.tls_server_name = Some("a.internal:443".into());
            assert!(err(&s).contains("`tls-server-name`: `a.internal:443`"));
            let mut s = spec(&["https://a:1"]);
            s.client_cert = Some("c.pem".into());
            assert!(err(&s).contains("`client-cert` needs `client-key`"));
            let mut s = spec(&["https://a:1"]);
            s.ca_file = Some("ca.pem".into());
            assert!(err(&s).contains("`insecure-skip-verify = true` turns off"));
            s.insecure_skip_verify = false;
            let e = err(&s);
            assert!(
                e.contains("`ca-file`") && e.contains("ca.pem: cannot read"),
                "{e}"
            );
        });
    }

    /// An upstream of one target at `addr`, with one retry and a breaker
    /// that opens after `failures` failures.
    fn one_target(addr: std::net::SocketAddr, failures: u32) -> Upstream {
        let spec = UpstreamSpec {
            targets: vec![format!("http://{addr}")],
            connect_timeout: crate::manifest::Dur(Duration::from_millis(500)),
            response_timeout: crate::manifest::Dur(Duration::from_millis(300)),
            body_timeout: crate::manifest::Dur(Duration::from_secs(1)),
            retries: 1,
            preserve_host: false,
            breaker: crate::manifest::BreakerSpec {
                failures,
                cool_down: crate::manifest::Dur(Duration::from_secs(30)),
                count_5xx: false,
            },
            ca_file: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            insecure_skip_verify: false,
            protocol: Default::default(),
        };
        Upstream::new("t", &spec, Path::new(".")).unwrap()
    }

    fn get() -> Outbound {
        Outbound {
            method: Method::GET,
            path_and_query: PathAndQuery::from_static("/x"),
            headers: HeaderMap::new(),
            original_host: None,
            body: OutboundBody::Buffered(Bytes::new()),
            deadline: None,
        }
    }

    async fn fails(up: &Upstream) -> UpstreamError {
        match up.forward(get()).await {
            Ok(r) => panic!("answered {}", r.status()),
            Err(e) => e,
        }
    }

    /// A loopback "upstream" that does `with` to every connection.
    async fn peer<F, Fut>(with: F) -> std::net::SocketAddr
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(with(s));
            }
        });
        addr
    }

    /// Real failures, each classified by what failed and whether it may be
    /// retried; a target out of rotation answers at once.
    #[tokio::test]
    async fn failures_are_classified_by_what_failed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Refused: nothing listens on a port just freed.
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = fails(&one_target(refused, 0)).await;
        assert!(matches!(e, UpstreamError::Connect(_)), "{e:?}");
        assert!(e.retryable() && !e.is_client());
        // Closed before a response head.
        let closes = peer(|mut s| async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        })
        .await;
        let e = fails(&one_target(closes, 0)).await;
        assert!(matches!(e, UpstreamError::Closed(_)), "{e:?}");
        assert!(e.retryable());
        // Not HTTP.
        let garbage = peer(|mut s| async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        })
        .await;
        let e = fails(&one_target(garbage, 0)).await;
        assert!(matches!(e, UpstreamError::BadResponse(_)), "{e:?}");
        assert!(!e.retryable());
        // No response head within `response-timeout`.
        let silent = peer(|s| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        })
        .await;
        let e = fails(&one_target(silent, 0)).await;
        assert!(
            matches!(e, UpstreamError::ResponseTimeout(d) if d == Duration::from_millis(300)),
            "{e:?}"
        );
        assert!(!e.retryable());
        // After one failure the breaker is open: the next call is refused
        // at once, with the time to the next probe. (A POST is not retried;
        // a GET's retry would already find the breaker open.)
        let up = one_target(refused, 1);
        let post = Outbound {
            method: Method::POST,
            ..get()
        };
        assert!(matches!(
            up.forward(post).await,
            Err(UpstreamError::Connect(_))
        ));
        match up.forward(get()).await {
            Err(UpstreamError::Open { retry_after }) => {
                assert!(retry_after > Duration::from_secs(25), "{retry_after:?}")
            }
            other => panic!("{:?}", other.map(|r| r.status())),
        }
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "TRACE", "PURGE"] {
            assert!(!idempotent(&m.parse().unwrap()), "{m}");
        }
    }
}
