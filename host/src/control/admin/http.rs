//! The admin REST API: its own listener, bearer tokens, roles, JSON in and
//! out. [`ROUTES`] is the one list of what it serves; the OpenAPI document
//! (`docs/admin-openapi.json`) is checked against it by the tests.

use super::chain::{self, ChainAssign};
use super::error::{decode, decode_required, AdminError};
use super::model::*;
use super::registry::{Page, Registry};
use crate::control::{ControlPlane as Gateway, EditError};
use crate::gateway::Bound;
use crate::manifest::{AdminSpec, PolicyManifest};
use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Every route the admin API serves: method and path template.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/v1/openapi.json"),
    ("GET", "/admin/v1/whoami"),
    ("GET", "/admin/v1/users"),
    ("POST", "/admin/v1/users"),
    ("GET", "/admin/v1/users/{id}"),
    ("PATCH", "/admin/v1/users/{id}"),
    ("DELETE", "/admin/v1/users/{id}"),
    ("POST", "/admin/v1/users/{id}/token"),
    ("GET", "/admin/v1/apis"),
    ("GET", "/admin/v1/apis/{name}"),
    ("GET", "/admin/v1/apis/{name}/chain"),
    ("PUT", "/admin/v1/apis/{name}/chain"),
    ("GET", "/admin/v1/products"),
    ("POST", "/admin/v1/products"),
    ("GET", "/admin/v1/products/{id}"),
    ("PATCH", "/admin/v1/products/{id}"),
    ("DELETE", "/admin/v1/products/{id}"),
    ("GET", "/admin/v1/plans"),
    ("POST", "/admin/v1/plans"),
    ("GET", "/admin/v1/plans/{id}"),
    ("PATCH", "/admin/v1/plans/{id}"),
    ("DELETE", "/admin/v1/plans/{id}"),
    ("GET", "/admin/v1/consumers"),
    ("POST", "/admin/v1/consumers"),
    ("GET", "/admin/v1/consumers/{id}"),
    ("PATCH", "/admin/v1/consumers/{id}"),
    ("DELETE", "/admin/v1/consumers/{id}"),
    ("GET", "/admin/v1/apps"),
    ("POST", "/admin/v1/apps"),
    ("GET", "/admin/v1/apps/{id}"),
    ("PATCH", "/admin/v1/apps/{id}"),
    ("DELETE", "/admin/v1/apps/{id}"),
    ("GET", "/admin/v1/subscriptions"),
    ("POST", "/admin/v1/subscriptions"),
    ("GET", "/admin/v1/subscriptions/{id}"),
    ("PATCH", "/admin/v1/subscriptions/{id}"),
    ("DELETE", "/admin/v1/subscriptions/{id}"),
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys/{id}"),
    ("PATCH", "/admin/v1/keys/{id}"),
    ("DELETE", "/admin/v1/keys/{id}"),
    ("POST", "/admin/v1/keys/{id}/rotate"),
    ("POST", "/admin/v1/keys/{id}/revoke"),
    ("GET", "/admin/v1/audit"),
];

/// The OpenAPI description, served at `GET /admin/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../../docs/admin-openapi.json");

/// What a route is about, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Public,
    WhoAmI,
    Users,
    Audit,
    Apis,
    Products,
    Plans,
    Consumers,
    Apps,
    Subscriptions,
    Keys,
}

/// The family of a route template.
pub fn family(template: &str) -> Family {
    let seg = template
        .strip_prefix("/admin/v1/")
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    match seg {
        "openapi.json" => Family::Public,
        "whoami" => Family::WhoAmI,
        "users" => Family::Users,
        "audit" => Family::Audit,
        "apis" => Family::Apis,
        "products" => Family::Products,
        "plans" => Family::Plans,
        "consumers" => Family::Consumers,
        "apps" => Family::Apps,
        "subscriptions" => Family::Subscriptions,
        _ => Family::Keys,
    }
}

/// Whether `role` may call a route of `family` (`write`: anything but GET).
pub fn may(role: Role, family: Family, write: bool) -> bool {
    use Family::*;
    match (role, family) {
        (_, Public | WhoAmI) => true,
        (Role::Administrator, _) => true,
        (_, Users | Audit) => false,
        (_, _) if !write => true,
        (Role::ApiManager, Apis | Products | Plans) => true,
        (Role::CommunityManager, Consumers | Apps | Subscriptions | Keys) => true,
        _ => false,
    }
}

/// The methods [`ROUTES`] serves at `path` (for `Allow`).
fn allowed(path: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        if let Ok(method) = m.parse::<Method>() {
            if matches!(route_exact(&method, path), Ok(Some(_))) {
                out.push(m);
            }
        }
    }
    out
}

/// Match `path` against [`ROUTES`]: the template and its parameters, or
/// 404 / 405 (the 405's `Allow` is [`allowed`]).
fn route(method: &Method, path: &str) -> Result<(&'static str, Vec<String>), AdminError> {
    match route_exact(method, path)? {
        Some(found) => Ok(found),
        None => Err(AdminError::method_not_allowed(format!(
            "{} is not allowed here; allowed: {}",
            truncate(method.as_str(), 20),
            allowed(path).join(", ")
        ))),
    }
}

/// The route for `method` at `path`; `None` when `path` is served for
/// other methods only; 404 when it is not served at all.
#[allow(clippy::type_complexity)]
fn route_exact(
    method: &Method,
    path: &str,
) -> Result<Option<(&'static str, Vec<String>)>, AdminError> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut any = false;
    for (m, template) in ROUTES {
        let t: Vec<&str> = template.split('/').collect();
        if t.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        let fits = t.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') {
                params.push((*s).to_string());
                !s.is_empty()
            } else {
                t == s
            }
        });
        if fits {
            if *m == method.as_str() {
                return Ok(Some((template, params)));
            }
            any = true;
        }
    }
    if any {
        Ok(None)
    } else {
        Err(AdminError::no_route(format!(
            "no admin API route `{}` (see GET /admin/v1/openapi.json)",
            truncate(path, 200)
        )))
    }
}

struct State {
    gateway: Arc<Gateway>,
    registry: Arc<Registry>,
    max_body: u64,
    /// The listener's address and whether it is TLS, for the OpenAPI
    /// document's `servers`.
    local: SocketAddr,
    tls: bool,
}

/// Bind the admin listener and serve it until `shutdown` turns true.
pub async fn bind(
    gateway: Arc<Gateway>,
    spec: &AdminSpec,
    base: &Path,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Bound, tokio::task::JoinHandle<()>)> {
    let addr: SocketAddr = spec
        .address
        .parse()
        .with_context(|| format!("admin: bad address `{}`", spec.address))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin: cannot bind {addr}"))?;
    let local = listener.local_addr()?;
    let tls = match &spec.tls {
        Some(t) => Some(crate::net::tls_server::acceptor(
            &crate::loader::resolve(base, &t.cert),
            &crate::loader::resolve(base, &t.key),
        )?),
        None => None,
    };
    tracing::info!(address = %local, tls = tls.is_some(), "admin API listening");
    let state = Arc::new(State {
        registry: gateway.registry.clone(),
        gateway,
        max_body: spec.max_body.0,
        local,
        tls: tls.is_some(),
    });
    let bound = Bound {
        name: "admin".into(),
        addr: local,
        tls: tls.is_some(),
    };
    let task = tokio::spawn(async move {
        let conns = Arc::new(Conns::default());
        // Refusals answered at a time (each within 2 s); past that, closed.
        let refusals = Arc::new(Semaphore::new(64));
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("admin API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let (id, evicted) = match conns.admit(peer.ip()) {
                Ok(x) => x,
                Err(why) => {
                    conns.log.refused();
                    if let Ok(permit) = refusals.clone().try_acquire_owned() {
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            let answer = async move {
                                match tls {
                                    Some(acc) => {
                                        if let Ok(s) = acc.accept(stream).await {
                                            refuse(s, why).await;
                                        }
                                    }
                                    None => refuse(stream, why).await,
                                }
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
                        });
                    }
                    continue;
                }
            };
            let state = state.clone();
            let tls = tls.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                let svc = {
                    let conns = conns.clone();
                    service_fn(move |req| {
                        let state = state.clone();
                        let conns = conns.clone();
                        async move {
                            let _busy = Busy::new(&conns, id);
                            Ok::<_, std::convert::Infallible>(handle(state, req, peer).await)
                        }
                    })
                };
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(64 * 1024);
                let conn = async {
                    match tls {
                        Some(acc) => {
                            // Bounded by the header timeout (`idle_out`).
                            let Ok(s) = acc.accept(stream).await else {
                                return;
                            };
                            let _ = b.serve_connection(TokioIo::new(s), svc).await;
                        }
                        None => {
                            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                };
                tokio::select! {
                    // A connection may not outlive a slow body forever.
                    _ = tokio::time::timeout(Duration::from_secs(300), conn) => {}
                    _ = evicted.notified() => {}
                    _ = conns.idle_out(id) => {}
                }
                conns.remove(id);
            });
        }
    });
    Ok((bound, task))
}

// ---------------------------------------------------------------------------
// The listener's defences (docs/admin-api.md, "Connections")

/// Connections the admin listener holds at most.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one client address holds at most.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// A connection with no request in progress must have sent a whole request
/// head within this long: from accept (TLS handshake included), and from
/// the end of the last response on a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The `Retry-After` of a refused connection, seconds.
const RETRY_AFTER: u64 = 1;

/// One admitted connection.
struct Conn {
    ip: IpAddr,
    /// A request is being served (its head has arrived).
    busy: bool,
    /// Since when no request has been in progress.
    idle_since: tokio::time::Instant,
    evict: Arc<tokio::sync::Notify>,
}

/// Why a connection is not admitted.
enum Refusal {
    /// The client holds its share, every one of them busy.
    Client,
    /// Every slot is busy.
    Full,
}

/// The admin listener's connections. When the listener or a client is at
/// its cap, a new connection takes the place of the oldest idle one (of
/// that client; when the whole listener is full, of the client holding the
/// most connections): idle connections cannot lock administrators out. Only
/// when every slot it could take is busy is it refused, with a 503.
#[derive(Default)]
struct Conns {
    table: std::sync::Mutex<ConnTable>,
    log: RefusalLog,
}

#[derive(Default)]
struct ConnTable {
    next: u64,
    /// By id: ids grow, so the first idle entry is the oldest.
    conns: BTreeMap<u64, Conn>,
}

impl ConnTable {
    /// The oldest idle connection, of `ip` if given.
    fn oldest_idle(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.conns
            .iter()
            .find(|(_, c)| !c.busy && ip.is_none_or(|ip| c.ip == ip))
            .map(|(id, _)| *id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            c.evict.notify_one();
        }
    }
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a connection from `ip`, evicting an idle one if needed.
    fn admit(&self, ip: IpAddr) -> Result<(u64, Arc<tokio::sync::Notify>), Refusal> {
        let mut t = self.lock();
        let mine = t.conns.values().filter(|c| c.ip == ip).count();
        if mine >= MAX_CONNECTIONS_PER_CLIENT {
            let victim = t.oldest_idle(Some(ip)).ok_or(Refusal::Client)?;
            t.evict(victim);
            self.log.evicted();
        } else if t.conns.len() >= MAX_CONNECTIONS {
            // The client with the most connections gives one up first.
            let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for c in t.conns.values().filter(|c| !c.busy) {
                *counts.entry(c.ip).or_default() += 1;
            }
            let heaviest = counts.into_iter().max_by_key(|(_, n)| *n).map(|(ip, _)| ip);
            let victim = heaviest
                .and_then(|ip| t.oldest_idle(Some(ip)))
                .ok_or(Refusal::Full)?;
            t.evict(victim);
            self.log.evicted();
        }
        t.next += 1;
        let id = t.next;
        let evict = Arc::new(tokio::sync::Notify::new());
        t.conns.insert(
            id,
            Conn {
                ip,
                busy: false,
                idle_since: tokio::time::Instant::now(),
                evict: evict.clone(),
            },
        );
        Ok((id, evict))
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(c) = self.lock().conns.get_mut(&id) {
            c.busy = busy;
            if !busy {
                c.idle_since = tokio::time::Instant::now();
            }
        }
    }

    fn remove(&self, id: u64) {
        self.lock().conns.remove(&id);
    }

    /// When connection `id` is due to be closed for idling (`None`: gone).
    fn idle_deadline(&self, id: u64) -> Option<tokio::time::Instant> {
        let t = self.lock();
        let c = t.conns.get(&id)?;
        Some(if c.busy {
            // Checked again later; a busy connection is bounded by its
            // request's own limits.
            tokio::time::Instant::now() + HEADER_TIMEOUT
        } else {
            c.idle_since + HEADER_TIMEOUT
        })
    }

    /// Returns when connection `id` has idled past its deadline.
    async fn idle_out(&self, id: u64) {
        loop {
            let Some(at) = self.idle_deadline(id) else {
                return;
            };
            if at <= tokio::time::Instant::now() {
                let idle = self.lock().conns.get(&id).is_none_or(|c| !c.busy);
                if idle {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Marks a connection busy while a request is served.
struct Busy<'a> {
    conns: &'a Conns,
    id: u64,
}

impl<'a> Busy<'a> {
    fn new(conns: &'a Conns, id: u64) -> Self {
        conns.set_busy(id, true);
        Busy { conns, id }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.conns.set_busy(self.id, false);
    }
}

/// Refusals and evictions, logged at most every few seconds.
#[derive(Default)]
struct RefusalLog {
    refused: std::sync::atomic::AtomicU64,
    evicted: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RefusalLog {
    fn evicted(&self) {
        self.evicted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.maybe_log();
    }

    fn refused(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.maybe_log();
    }

    fn maybe_log(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let (refused, evicted) = (self.refused.swap(0, Relaxed), self.evicted.swap(0, Relaxed));
        if refused > 0 {
            tracing::warn!(
                refused,
                evicted,
                max_connections = MAX_CONNECTIONS,
                max_per_client = MAX_CONNECTIONS_PER_CLIENT,
                "admin API: refused {refused} connection(s) with 503 (every slot busy) and closed {evicted} idle one(s) to make room"
            );
        } else {
            tracing::warn!(
                evicted,
                max_connections = MAX_CONNECTIONS,
                max_per_client = MAX_CONNECTIONS_PER_CLIENT,
                "admin API: at its connection cap: closed {evicted} idle connection(s) to make room for new ones"
            );
        }
    }
}

/// Answer a refused connection `503` with `Retry-After` and close it.
async fn refuse<S>(mut s: S, why: Refusal)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let msg = match why {
        Refusal::Client => format!(
            "this client holds {MAX_CONNECTIONS_PER_CLIENT} admin connections, all busy: retry in a moment"
        ),
        Refusal::Full => format!(
            "the admin API's {MAX_CONNECTIONS} connections are all busy: retry in a moment"
        ),
    };
    let body = AdminError::unavailable(msg).to_json().to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncache-control: no-store\r\nretry-after: {RETRY_AFTER}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body.as_bytes()).await.is_err() {
        return;
    }
    let _ = s.flush().await;
    let _ = s.shutdown().await;
    // Read what the client sent, so that closing does not reset the
    // connection before it reads the answer.
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

fn respond(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_response(e: &AdminError) -> Response<Full<Bytes>> {
    let mut r = respond(e.status, e.to_json());
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
        );
    }
    r
}

/// A resource as shown: never a digest of a secret.
fn view<T: Serialize>(v: &T) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or_default();
    if let Some(o) = j.as_object_mut() {
        o.remove("sha256");
        o.remove("token_sha256");
    }
    j
}

fn page_view<T: Serialize>(p: Page<T>) -> Value {
    json!({ "items": p.items.iter().map(view).collect::<Vec<_>>(), "next": p.next })
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match serve_one(&state, req).await {
        Ok((status, body)) => {
            tracing::debug!(%peer, %method, %path, status = status.as_u16(), "admin");
            if status == StatusCode::NO_CONTENT {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = status;
                return r;
            }
            respond(status, body)
        }
        Err(e) => {
            tracing::info!(%peer, %method, %path, status = e.status.as_u16(), "admin: {e}");
            let mut r = error_response(&e);
            if e.status == StatusCode::METHOD_NOT_ALLOWED {
                if let Ok(v) = HeaderValue::from_str(&allowed(&path).join(", ")) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
            }
            r
        }
    }
}

/// Run a registry call off the async workers (writes wait for the disk).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::unavailable(format!("the call failed: {e}")))?
}

/// The query string as pairs, percent-decoded; only `allowed` names.
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, AdminError> {
    let mut out = BTreeMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = percent_decode(v)?;
        if !allowed.contains(&k.as_str()) {
            return Err(AdminError::invalid(
                k.clone(),
                format!(
                    "unknown query parameter `{}`; this route takes: {}",
                    truncate(&k, 40),
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(AdminError::invalid(k, "given twice"));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, AdminError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| AdminError::bad_request("bad percent-encoding in the query"))?;
                out.push(h);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| AdminError::bad_request("the query is not UTF-8"))
}

/// `limit` and `after` of a list call (`after`: 1 to 200 characters).
fn paging(q: &BTreeMap<String, String>) -> Result<(usize, Option<String>), AdminError> {
    let limit = match q.get("limit") {
        None => 50,
        Some(s) => Some(s)
            .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| AdminError::invalid("limit", "must be a number from 1 to 500"))?,
    };
    let after = q.get("after").cloned();
    if let Some(a) = &after {
        if a.is_empty() || a.chars().count() > 200 {
            return Err(AdminError::invalid(
                "after",
                "must be 1 to 200 characters: the `next` of the previous page",
            ));
        }
    }
    Ok((limit, after))
}

/// A list filter naming a resource by its caller-chosen id.
fn id_filter(q: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, AdminError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => check_id(name, v).map(|()| Some(v.clone())),
    }
}

/// A list filter naming a resource by its generated id (`sub_` and 16 hex
/// digits).
fn generated_filter(
    q: &BTreeMap<String, String>,
    name: &str,
    prefix: &str,
) -> Result<Option<String>, AdminError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if is_generated_id(v, prefix) => Ok(Some(v.clone())),
        Some(v) => Err(AdminError::invalid(
            name,
            format!(
                "`{}` is not a {name} id: `{prefix}` and 16 hex digits",
                truncate(v, 80)
            ),
        )),
    }
}

/// `prefix` and 16 lowercase hex digits, as the registry generates ids.
fn is_generated_id(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The OpenAPI document with `servers` naming this listener: its scheme,
/// and its address (or, when it listens on every interface, the `Host` the
/// client used).
fn openapi_doc(local: SocketAddr, tls: bool, host: Option<&str>) -> Result<Value, AdminError> {
    let mut doc: Value = serde_json::from_str(OPENAPI)
        .map_err(|e| AdminError::unavailable(format!("the OpenAPI document: {e}")))?;
    let scheme = if tls { "https" } else { "http" };
    let authority = match host {
        Some(h)
            if local.ip().is_unspecified()
                && !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) =>
        {
            h.to_string()
        }
        _ => local.to_string(),
    };
    doc["servers"] = json!([{ "url": format!("{scheme}://{authority}") }]);
    Ok(doc)
}

const LIST: &[&str] = &["limit", "after"];

fn list_params<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = LIST.to_vec();
    v.extend_from_slice(extra);
    v
}

async fn serve_one(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<(StatusCode, Value), AdminError> {
    let (template, params) = route(req.method(), req.uri().path())?;
    let fam = family(template);
    let method = req.method().clone();
    let write = method != Method::GET;
    // Who is calling.
    let user = if fam == Family::Public {
        None
    } else {
        if req.headers().get_all(header::AUTHORIZATION).iter().count() > 1 {
            return Err(AdminError::bad_request(
                "send one `Authorization` header, not several",
            ));
        }
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                AdminError::unauthorized(
                    "an admin token is required: `Authorization: Bearer <token>` (`tollgate admin init` creates the first)",
                )
            })?;
        let reg = state.registry.clone();
        let user = blocking(move || reg.authenticate(&token))
            .await?
            .ok_or_else(|| AdminError::unauthorized("the admin token is not valid"))?;
        if !may(user.role, fam, write) {
            return Err(AdminError::forbidden(format!(
                "user `{}` ({}) may not {} {}",
                user.id,
                user.role.as_str(),
                if write { "change" } else { "read" },
                template.strip_prefix("/admin/v1/").unwrap_or(template)
            )));
        }
        Some(user)
    };
    let actor = user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw_query = req.uri().query().map(str::to_string);
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string());
    // The body: JSON, bounded.
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if essence != "application/json" {
                return Err(AdminError::unsupported_media_type(format!(
                    "bodies are JSON: send `Content-Type: application/json`, not `{}`",
                    truncate(essence, 80)
                )));
            }
        }
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > state.max_body {
                return Err(AdminError::too_large(state.max_body));
            }
        }
        match Limited::new(req.into_body(), state.max_body as usize)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(AdminError::too_large(state.max_body))
            }
            Err(e) => return Err(AdminError::bad_request(format!("reading the body: {e}"))),
        }
    } else {
        Bytes::new()
    };
    let p = |i: usize| params.get(i).cloned().unwrap_or_default();
    let reg = state.registry.clone();
    let q = raw_query.as_deref();
    let ok = |v: Value| Ok((StatusCode::OK, v));
    let created = |v: Value| Ok((StatusCode::CREATED, v));
    let deleted = || Ok((StatusCode::NO_CONTENT, Value::Null));
    // Routes with no query parameters refuse any.
    let no_query = || query(q, &[]).map(|_| ());
    match (method.as_str(), template) {
        ("GET", "/admin/v1/openapi.json") => {
            no_query()?;
            ok(openapi_doc(state.local, state.tls, host.as_deref())?)
        }
        ("GET", "/admin/v1/whoami") => {
            no_query()?;
            let u = user.expect("authenticated");
            ok(json!({"user": u.id, "role": u.role.as_str()}))
        }
        // -- users
        ("GET", "/admin/v1/users") => {
            let (limit, after) = paging(&query(q, LIST)?)?;
            let page =
                blocking(move || reg.list::<User>("user", after.as_deref(), limit, |_| true))
                    .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/users") => {
            no_query()?;
            let r: UserCreate = decode_required(&body)?;
            let (u, token) = blocking(move || reg.create_user(&actor, r)).await?;
            created(json!({"user": view(&u), "token": token}))
        }
        ("GET", "/admin/v1/users/{id}") => {
            no_query()?;
            let id = p(0);
            let u: User = blocking(move || reg.get_resource("user", "user", &id)).await?;
            ok(view(&u))
        }
        ("PATCH", "/admin/v1/users/{id}") => {
            no_query()?;
            let r: UserUpdate = decode_required(&body)?;
            let id = p(0);
            let u = blocking(move || reg.update_user(&actor, &id, r)).await?;
            ok(view(&u))
        }
        ("DELETE", "/admin/v1/users/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_user(&actor, &id)).await?;
            deleted()
        }
        ("POST", "/admin/v1/users/{id}/token") => {
            no_query()?;
            let _: Empty = decode(&body)?;
            let id = p(0);
            let (u, token) = blocking(move || reg.rotate_user_token(&actor, &id)).await?;
            ok(json!({"user": view(&u), "token": token}))
        }
        // -- APIs
        ("GET", "/admin/v1/apis") => {
            let (limit, after) = paging(&query(q, LIST)?)?;
            let g = state.gateway.current();
            let mut apis: Vec<&crate::loader::Api> = g
                .apis
                .iter()
                .filter(|a| after.as_deref().is_none_or(|x| &*a.name > x))
                .collect();
            apis.sort_by(|a, b| a.name.cmp(&b.name));
            let more = apis.len() > limit;
            apis.truncate(limit);
            let next = more
                .then(|| apis.last().map(|a| a.name.to_string()))
                .flatten();
            let items: Vec<Value> = apis.iter().map(|a| api_view(&g, a)).collect();
            ok(json!({"items": items, "next": next}))
        }
        ("GET", "/admin/v1/apis/{name}") => {
            no_query()?;
            let g = state.gateway.current();
            let a = find_api(&g, &p(0))?;
            ok(api_view(&g, a))
        }
        ("GET", "/admin/v1/apis/{name}/chain") => {
            no_query()?;
            let g = state.gateway.current();
            let a = find_api(&g, &p(0))?;
            ok(json!({
                "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
                "chain": chain::chain_view(&a.spec),
            }))
        }
        ("PUT", "/admin/v1/apis/{name}/chain") => {
            no_query()?;
            let r: ChainAssign = decode_required(&body)?;
            chain::check_steps(&r.chain)?;
            assign_chain(state, &actor, &p(0), r, if_match).await
        }
        // -- products
        ("GET", "/admin/v1/products") => {
            let (limit, after) = paging(&query(q, LIST)?)?;
            let page =
                blocking(move || reg.list::<Product>("product", after.as_deref(), limit, |_| true))
                    .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/products") => {
            no_query()?;
            let r: ProductCreate = decode_required(&body)?;
            let g = state.gateway.current();
            let v = blocking(move || {
                reg.create_product(&actor, r, &|a| g.apis.iter().any(|x| &*x.name == a))
            })
            .await?;
            created(view(&v))
        }
        ("GET", "/admin/v1/products/{id}") => {
            get_one::<Product>(&reg, "product", "product", p(0), q).await
        }
        ("PATCH", "/admin/v1/products/{id}") => {
            no_query()?;
            let r: ProductUpdate = decode_required(&body)?;
            let g = state.gateway.current();
            let id = p(0);
            let v = blocking(move || {
                reg.update_product(&actor, &id, r, &|a| g.apis.iter().any(|x| &*x.name == a))
            })
            .await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/products/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_product(&actor, &id)).await?;
            deleted()
        }
        // -- plans
        ("GET", "/admin/v1/plans") => {
            let qs = query(q, &list_params(&["product"]))?;
            let (limit, after) = paging(&qs)?;
            let product = id_filter(&qs, "product")?;
            let page = blocking(move || {
                reg.list::<Plan>("plan", after.as_deref(), limit, |x| {
                    product.as_ref().is_none_or(|p| &x.product == p)
                })
            })
            .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/plans") => {
            no_query()?;
            let r: PlanCreate = decode_required(&body)?;
            let v = blocking(move || reg.create_plan(&actor, r)).await?;
            created(view(&v))
        }
        ("GET", "/admin/v1/plans/{id}") => get_one::<Plan>(&reg, "plan", "plan", p(0), q).await,
        ("PATCH", "/admin/v1/plans/{id}") => {
            no_query()?;
            let r: PlanUpdate = decode_required(&body)?;
            let id = p(0);
            let v = blocking(move || reg.update_plan(&actor, &id, r)).await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/plans/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_plan(&actor, &id)).await?;
            deleted()
        }
        // -- consumers
        ("GET", "/admin/v1/consumers") => {
            let (limit, after) = paging(&query(q, LIST)?)?;
            let page = blocking(move || {
                reg.list::<Consumer>("consumer", after.as_deref(), limit, |_| true)
            })
            .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/consumers") => {
            no_query()?;
            let r: ConsumerCreate = decode_required(&body)?;
            let v = blocking(move || reg.create_consumer(&actor, r)).await?;
            created(view(&v))
        }
        ("GET", "/admin/v1/consumers/{id}") => {
            get_one::<Consumer>(&reg, "consumer", "consumer", p(0), q).await
        }
        ("PATCH", "/admin/v1/consumers/{id}") => {
            no_query()?;
            let r: ConsumerUpdate = decode_required(&body)?;
            let id = p(0);
            let v = blocking(move || reg.update_consumer(&actor, &id, r)).await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/consumers/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_consumer(&actor, &id)).await?;
            deleted()
        }
        // -- apps
        ("GET", "/admin/v1/apps") => {
            let qs = query(q, &list_params(&["consumer"]))?;
            let (limit, after) = paging(&qs)?;
            let consumer = id_filter(&qs, "consumer")?;
            let page = blocking(move || {
                reg.list::<App>("app", after.as_deref(), limit, |x| {
                    consumer.as_ref().is_none_or(|c| &x.consumer == c)
                })
            })
            .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/apps") => {
            no_query()?;
            let r: AppCreate = decode_required(&body)?;
            let v = blocking(move || reg.create_app(&actor, r)).await?;
            created(view(&v))
        }
        ("GET", "/admin/v1/apps/{id}") => get_one::<App>(&reg, "app", "app", p(0), q).await,
        ("PATCH", "/admin/v1/apps/{id}") => {
            no_query()?;
            let r: AppUpdate = decode_required(&body)?;
            let id = p(0);
            let v = blocking(move || reg.update_app(&actor, &id, r)).await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/apps/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_app(&actor, &id)).await?;
            deleted()
        }
        // -- subscriptions
        ("GET", "/admin/v1/subscriptions") => {
            let qs = query(q, &list_params(&["app", "plan", "state"]))?;
            let (limit, after) = paging(&qs)?;
            let (app, plan) = (id_filter(&qs, "app")?, id_filter(&qs, "plan")?);
            let st = match qs.get("state") {
                None => None,
                Some(s) => Some(
                    serde_json::from_value::<SubState>(Value::String(s.clone())).map_err(|_| {
                        AdminError::invalid(
                            "state",
                            "expected pending, active, rejected or suspended",
                        )
                    })?,
                ),
            };
            let page = blocking(move || {
                reg.list::<Subscription>("sub", after.as_deref(), limit, |x| {
                    app.as_ref().is_none_or(|a| &x.app == a)
                        && plan.as_ref().is_none_or(|p| &x.plan == p)
                        && st.is_none_or(|s| x.state == s)
                })
            })
            .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/subscriptions") => {
            no_query()?;
            let r: SubscriptionCreate = decode_required(&body)?;
            let v = blocking(move || reg.create_subscription(&actor, r)).await?;
            created(view(&v))
        }
        ("GET", "/admin/v1/subscriptions/{id}") => {
            get_one::<Subscription>(&reg, "sub", "subscription", p(0), q).await
        }
        ("PATCH", "/admin/v1/subscriptions/{id}") => {
            no_query()?;
            let r: SubscriptionUpdate = decode_required(&body)?;
            let id = p(0);
            let v = blocking(move || reg.update_subscription(&actor, &id, r)).await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/subscriptions/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_subscription(&actor, &id)).await?;
            deleted()
        }
        // -- keys
        ("GET", "/admin/v1/keys") => {
            let qs = query(q, &list_params(&["app", "subscription"]))?;
            let (limit, after) = paging(&qs)?;
            let (app, sub) = (
                id_filter(&qs, "app")?,
                generated_filter(&qs, "subscription", "sub_")?,
            );
            let page = blocking(move || {
                reg.list::<Key>("key", after.as_deref(), limit, |x| {
                    app.as_ref().is_none_or(|a| &x.app == a)
                        && sub.as_ref().is_none_or(|s| &x.subscription == s)
                })
            })
            .await?;
            ok(page_view(page))
        }
        ("POST", "/admin/v1/keys") => {
            no_query()?;
            let r: KeyCreate = decode_required(&body)?;
            let (k, secret) = blocking(move || reg.create_key(&actor, r)).await?;
            created(json!({"key": view(&k), "secret": secret}))
        }
        ("GET", "/admin/v1/keys/{id}") => get_one::<Key>(&reg, "key", "key", p(0), q).await,
        ("PATCH", "/admin/v1/keys/{id}") => {
            no_query()?;
            let r: KeyUpdate = decode_required(&body)?;
            let id = p(0);
            let v = blocking(move || reg.update_key(&actor, &id, r)).await?;
            ok(view(&v))
        }
        ("DELETE", "/admin/v1/keys/{id}") => {
            no_query()?;
            let id = p(0);
            blocking(move || reg.delete_key(&actor, &id)).await?;
            deleted()
        }
        ("POST", "/admin/v1/keys/{id}/rotate") => {
            no_query()?;
            let r: KeyRotate = decode(&body)?;
            let id = p(0);
            let (k, secret) = blocking(move || reg.rotate_key(&actor, &id, r)).await?;
            created(json!({"key": view(&k), "secret": secret}))
        }
        ("POST", "/admin/v1/keys/{id}/revoke") => {
            no_query()?;
            let _: Empty = decode(&body)?;
            let id = p(0);
            let v = blocking(move || reg.revoke_key(&actor, &id)).await?;
            ok(view(&v))
        }
        // -- audit
        ("GET", "/admin/v1/audit") => {
            let qs = query(q, LIST)?;
            let (limit, after) = paging(&qs)?;
            let after = match after {
                None => None,
                Some(s) => Some(
                    Some(&s)
                        .filter(|s| s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| {
                            AdminError::invalid("after", "must be a sequence number (1-19 digits)")
                        })?,
                ),
            };
            let page = blocking(move || reg.audit_page(after, limit)).await?;
            ok(page_view(page))
        }
        (m, t) => Err(AdminError::unavailable(format!(
            "route {m} {t} has no handler (a bug)"
        ))),
    }
}

/// A body that must be empty or `{}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

async fn get_one<T: serde::de::DeserializeOwned + Serialize + Send + 'static>(
    reg: &Arc<Registry>,
    kind: &'static str,
    what: &'static str,
    id: String,
    q: Option<&str>,
) -> Result<(StatusCode, Value), AdminError> {
    query(q, &[])?;
    let reg = reg.clone();
    let v: T = blocking(move || reg.get_resource(kind, what, &id)).await?;
    Ok((StatusCode::OK, view(&v)))
}

fn find_api<'a>(
    g: &'a crate::loader::Generation,
    name: &str,
) -> Result<&'a crate::loader::Api, AdminError> {
    g.apis
        .iter()
        .find(|a| &*a.name == name)
        .ok_or_else(|| AdminError::not_found("API", name))
}

fn api_view(g: &crate::loader::Generation, a: &crate::loader::Api) -> Value {
    let routes: Vec<Value> = a
        .spec
        .routes
        .iter()
        .map(|r| {
            let r = r.get_ref();
            json!({
                "name": r.name.as_ref().map(|n| n.to_string()),
                "path": r.path,
                "prefix": r.prefix,
                "hosts": r.hosts,
                "methods": r.methods,
            })
        })
        .collect();
    json!({
        "name": &*a.name,
        "manifest": a.manifest.display().to_string(),
        "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
        "routes": routes,
        "upstream": {"targets": a.spec.upstream.targets},
        "chain": chain::chain_view(&a.spec),
    })
}

async fn assign_chain(
    state: &Arc<State>,
    actor: &str,
    name: &str,
    req: ChainAssign,
    if_match: Option<String>,
) -> Result<(StatusCode, Value), AdminError> {
    let g = state.gateway.current();
    let api = find_api(&g, name)?;
    let file = api.manifest.clone();
    let detail = json!({"chain": req.chain.iter().map(chain::input_view).collect::<Vec<_>>()});
    let api_name = name.to_string();
    let result = state
        .gateway
        .apply_manifest_edit(file, move |text, on_disk| {
            if let Some(tag) = &if_match {
                if tag != on_disk && tag != "*" {
                    return Err(AdminError::precondition_failed(
                        "If-Match does not match: the manifest changed since you read it; GET the chain again",
                    ));
                }
            }
            let new_text = chain::rewrite_chain(text, &api_name, &req.chain)?;
            // The file must say exactly what was asked.
            let m: PolicyManifest = toml::from_str(&new_text).map_err(|e| {
                AdminError::unavailable(format!("the edited manifest does not parse (a bug; nothing was changed): {e}"))
            })?;
            let written = m
                .apis
                .iter()
                .find(|a| a.get_ref().name.as_str() == api_name)
                .map(|a| chain::chain_view(a.get_ref()));
            let asked: Vec<Value> = req.chain.iter().map(chain::input_view).collect();
            if written.as_ref() != Some(&asked) {
                return Err(AdminError::unavailable(
                    "the edited manifest does not say what was asked (a bug; nothing was changed)",
                ));
            }
            Ok(new_text)
        })
        .await;
    match result {
        Ok((generation, etag)) => {
            let reg = state.registry.clone();
            let actor = actor.to_string();
            let id = name.to_string();
            blocking(move || reg.audit(&actor, "assign-chain", "api", &id, detail))
                .await
                .map_err(|e| {
                    AdminError::unavailable(format!(
                        "the chain was applied, but its audit entry could not be written: {e}"
                    ))
                })?;
            let g = state.gateway.current();
            let a = find_api(&g, name)?;
            Ok((
                StatusCode::OK,
                json!({"etag": etag, "chain": chain::chain_view(&a.spec), "generation": generation}),
            ))
        }
        Err(EditError::Diverged(m)) => Err(AdminError::conflict(m)),
        Err(EditError::Io(m)) => Err(AdminError::unavailable(m)),
        Err(EditError::Refused(e)) => Err(e),
        Err(EditError::Invalid(errs)) => Err(AdminError::unprocessable(
            "chain",
            format!("the configuration with this chain does not check:\n{errs}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_and_refuse() {
        let (t, p) = route(&Method::GET, "/admin/v1/keys/key_1").unwrap();
        assert_eq!(t, "/admin/v1/keys/{id}");
        assert_eq!(p, ["key_1"]);
        assert_eq!(
            route(&Method::PUT, "/admin/v1/keys/key_1")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/nope").unwrap_err().status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/keys/").unwrap_err().status,
            404
        );
        // Every route has a family and every template is distinct.
        let mut seen = std::collections::HashSet::new();
        for (m, t) in ROUTES {
            assert!(seen.insert((m, t)));
            assert!(route(
                &m.parse().unwrap(),
                &t.replace("{id}", "x").replace("{name}", "x")
            )
            .is_ok());
        }
    }

    #[test]
    fn allow_lists_the_methods_of_a_path() {
        assert_eq!(allowed("/admin/v1/keys/key_1"), ["GET", "PATCH", "DELETE"]);
        assert_eq!(allowed("/admin/v1/apis/x/chain"), ["GET", "PUT"]);
        assert!(allowed("/admin/v1/nope").is_empty());
        let e = route(&"TRACE".parse().unwrap(), "/admin/v1/users").unwrap_err();
        assert_eq!(e.status, 405);
        assert!(e.message.contains("allowed: GET, POST"), "{e}");
    }

    #[test]
    fn servers_name_the_listener() {
        let url = |local: &str, tls, host| {
            openapi_doc(local.parse().unwrap(), tls, host).unwrap()["servers"][0]["url"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("127.0.0.1:9", false, Some("evil")),
            "http://127.0.0.1:9"
        );
        assert_eq!(url("[::1]:9", true, None), "https://[::1]:9");
        // Every interface: the Host the client used, when it is one.
        assert_eq!(
            url("0.0.0.0:9", true, Some("admin.example.com:9")),
            "https://admin.example.com:9"
        );
        assert_eq!(url("0.0.0.0:9", false, Some("a/b")), "http://0.0.0.0:9");
        assert_eq!(url("[::]:9", false, None), "http://[::]:9");
    }

    #[test]
    fn roles() {
        use Family::*;
        assert!(may(Role::Administrator, Users, true));
        assert!(!may(Role::ApiManager, Users, false));
        assert!(may(Role::ApiManager, Plans, true));
        assert!(!may(Role::ApiManager, Keys, true));
        assert!(may(Role::ApiManager, Keys, false));
        assert!(may(Role::CommunityManager, Keys, true));
        assert!(!may(Role::CommunityManager, Apis, true));
        assert!(!may(Role::ReportsUser, Consumers, true));
        assert!(may(Role::ReportsUser, Consumers, false));
        assert!(!may(Role::ReportsUser, Audit, false));
    }

    #[test]
    fn queries() {
        let q = query(
            Some("limit=5&after=a%2Fb&product=x+y"),
            &["limit", "after", "product"],
        )
        .unwrap();
        assert_eq!(q["after"], "a/b");
        assert_eq!(q["product"], "x y");
        assert!(query(Some("bogus=1"), &["limit"]).is_err());
        assert!(query(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(query(Some("limit=%zz"), &["limit"]).is_err());
        assert!(paging(&query(Some("limit=0"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("limit=501"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("limit=%2B5"), &["limit"]).unwrap()).is_err());
        assert!(paging(&query(Some("after="), &["after"]).unwrap()).is_err());
        let long = format!("after={}", "a".repeat(201));
        assert!(paging(&query(Some(&long), &["after"]).unwrap()).is_err());
        assert!(is_generated_id("sub_0123456789abcdef", "sub_"));
        assert!(!is_generated_id("sub_0123456789ABCDEF", "sub_"));
        assert!(!is_generated_id("key_0123456789abcdef", "sub_"));
    }

    #[test]
    fn admission_evicts_idle_connections_and_refuses_busy_ones() {
        let conns = Conns::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let ids_of = |ip: IpAddr| -> Vec<u64> {
            let t = conns.lock();
            t.conns
                .iter()
                .filter(|(_, c)| c.ip == ip)
                .map(|(id, _)| *id)
                .collect()
        };
        // One client: at its cap, its oldest idle connection makes room.
        let first = conns.admit(a).ok().unwrap().0;
        for _ in 1..MAX_CONNECTIONS_PER_CLIENT {
            conns.admit(a).ok().unwrap();
        }
        let (next, _) = conns.admit(a).ok().unwrap();
        let held = ids_of(a);
        assert_eq!(held.len(), MAX_CONNECTIONS_PER_CLIENT);
        assert!(!held.contains(&first) && held.contains(&next));
        // All of them busy: the next is refused; another client is not.
        for id in &held {
            conns.set_busy(*id, true);
        }
        assert!(matches!(conns.admit(a), Err(Refusal::Client)));
        for _ in 0..20 {
            conns.admit(b).ok().unwrap();
        }
        // The whole listener full: the client with the most idle
        // connections gives one up.
        let mut n = 0;
        while conns.lock().conns.len() < MAX_CONNECTIONS {
            conns
                .admit(IpAddr::from([10, 1, (n / 2) as u8, 1]))
                .ok()
                .unwrap();
            n += 1;
        }
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        conns.admit(c).ok().unwrap();
        assert_eq!(conns.lock().conns.len(), MAX_CONNECTIONS);
        assert_eq!(ids_of(b).len(), 19);
        // Every slot busy: refused.
        let all: Vec<u64> = conns.lock().conns.keys().copied().collect();
        for id in all {
            conns.set_busy(id, true);
        }
        assert!(matches!(conns.admit(c), Err(Refusal::Full)));
        conns.set_busy(next, false);
        conns.admit(c).ok().unwrap();
        assert!(!ids_of(a).contains(&next));
    }
}
