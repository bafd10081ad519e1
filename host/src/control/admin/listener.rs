//! The admin API's listener: bind (plain or TLS), accept, and the
//! admission of connections (docs/admin-api.md, "Connections") — caps per
//! listener and per client, idle connections evicted to make room, a 503
//! with `Retry-After` when every slot is busy, a header timeout. Each
//! request goes to [`super::http::handle`].

use super::error::AdminError;
use super::http::{handle, State};
use crate::control::ControlPlane;
use crate::gateway::Bound;
use crate::manifest::AdminSpec;
use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Bind the admin listener and serve it until `shutdown` turns true.
pub async fn bind(
    gateway: Arc<ControlPlane>,
    spec: &AdminSpec,
    base: &Path,
    shutdown: watch::Receiver<bool>,
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
    let task = tokio::spawn(accept_loop(listener, tls, state, shutdown));
    Ok((bound, task))
}

/// Accept connections until `shutdown` turns true: admit each, or refuse
/// it.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
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
        match conns.admit(peer.ip()) {
            Ok((id, evicted)) => {
                let admitted = Admitted {
                    conns: conns.clone(),
                    id,
                    evicted,
                    peer,
                };
                tokio::spawn(serve_connection(
                    stream,
                    tls.clone(),
                    state.clone(),
                    admitted,
                ));
            }
            Err(why) => {
                conns.log.refused();
                refuse_soon(stream, tls.clone(), why, &refusals);
            }
        }
    }
}

/// Answer a refused connection in the background (within 2 s) while one of
/// `refusals`' permits is free; else close it at once.
fn refuse_soon(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    why: Refusal,
    refusals: &Arc<Semaphore>,
) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
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

/// An admitted connection's place in [`Conns`].
struct Admitted {
    conns: Arc<Conns>,
    id: u64,
    /// Notified when the connection is evicted to make room.
    evicted: Arc<tokio::sync::Notify>,
    peer: SocketAddr,
}

/// Serve one admitted connection (HTTP/1.1) until it closes, idles out,
/// is evicted or has lasted 300 s.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    admitted: Admitted,
) {
    let Admitted {
        conns,
        id,
        evicted,
        peer,
    } = admitted;
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

#[cfg(test)]
mod tests {
    use super::*;

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
