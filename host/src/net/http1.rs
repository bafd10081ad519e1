//! An HTTP/1.1 server for the listeners people and tools use directly —
//! the admin API and the developer portal — with the admission both need
//! (docs/admin-api.md, "Connections"): caps per listener and per client
//! address, idle connections evicted to make room, a refusal (503 with
//! `Retry-After`) only when every slot it could take is busy, a header
//! timeout (TLS handshake included) and a bound on a connection's life.
//! TLS offers `http/1.1` only in ALPN: these listeners speak nothing else.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// A listener's caps and its refusal.
#[derive(Clone, Copy)]
pub struct Caps {
    /// The listener, in logs and refusals ("admin API", "portal").
    pub name: &'static str,
    /// Connections held at most.
    pub max_connections: usize,
    /// Connections one client address holds at most.
    pub max_per_client: usize,
    /// A connection with no request in progress must have sent a whole
    /// request head within this long: from accept (TLS handshake included),
    /// and from the end of the last response on a kept-alive connection.
    pub header_timeout: Duration,
    /// No connection lives longer.
    pub lifetime: Duration,
    /// hyper's read buffer (bounds a request head).
    pub max_buf: usize,
    /// A refusal's `content-type` and body, from its message.
    pub refusal: fn(&str) -> (&'static str, String),
}

/// The `Retry-After` of a refused connection, seconds.
const RETRY_AFTER: u64 = 1;

/// Serve `listener` until `shutdown` turns true: admit each connection or
/// refuse it, and answer each request of an admitted one with `handler`.
pub fn spawn<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    caps: Caps,
    shutdown: watch::Receiver<bool>,
    handler: H,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let tls = tls.map(|acc| {
        let mut config = (**acc.config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(accept_loop(
        listener,
        tls,
        caps,
        shutdown,
        Arc::new(handler),
    ))
}

/// Accept connections until `shutdown` turns true: admit each, or refuse
/// it.
async fn accept_loop<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    caps: Caps,
    mut shutdown: watch::Receiver<bool>,
    handler: Arc<H>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let conns = Arc::new(Conns::new(caps));
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
                tracing::warn!("{}: accept failed: {e}", caps.name);
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
                    handler.clone(),
                    admitted,
                ));
            }
            Err(why) => {
                conns.log.refused(&conns.caps);
                refuse_soon(stream, tls.clone(), conns.refusal(why), &refusals);
            }
        }
    }
}

/// Answer a refused connection in the background (within 2 s) while one of
/// `refusals`' permits is free; else close it at once.
fn refuse_soon(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    answer: (&'static str, String),
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
                        refuse(s, answer).await;
                    }
                }
                None => refuse(stream, answer).await,
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
/// is evicted or has lasted its lifetime.
async fn serve_connection<H, F>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
    admitted: Admitted,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let Admitted {
        conns,
        id,
        evicted,
        peer,
    } = admitted;
    let svc = {
        let conns = conns.clone();
        service_fn(move |req| {
            let answer = handler(req, peer);
            let conns = conns.clone();
            async move {
                let _busy = Busy::new(&conns, id);
                Ok::<_, std::convert::Infallible>(answer.await)
            }
        })
    };
    let mut b = hyper::server::conn::http1::Builder::new();
    let caps = conns.caps;
    b.timer(TokioTimer::new())
        .header_read_timeout(caps.header_timeout)
        .max_buf_size(caps.max_buf);
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
        _ = tokio::time::timeout(caps.lifetime, conn) => {}
        _ = evicted.notified() => {}
        _ = conns.idle_out(id) => {}
    }
    conns.remove(id);
}

// ---------------------------------------------------------------------------
// Admission

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

/// A listener's connections. When the listener or a client is at its cap, a new connection takes the place of the oldest idle one (of
/// that client; when the whole listener is full, of the client holding the
/// most connections): idle connections cannot lock administrators out. Only
/// when every slot it could take is busy is it refused, with a 503.
struct Conns {
    caps: Caps,
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
    fn new(caps: Caps) -> Conns {
        Conns {
            caps,
            table: Default::default(),
            log: RefusalLog::default(),
        }
    }

    /// What a refused connection is answered.
    fn refusal(&self, why: Refusal) -> (&'static str, String) {
        let c = &self.caps;
        let msg = match why {
            Refusal::Client => format!(
                "this client holds {} {} connections, all busy: retry in a moment",
                c.max_per_client, c.name
            ),
            Refusal::Full => format!(
                "the {}'s {} connections are all busy: retry in a moment",
                c.name, c.max_connections
            ),
        };
        (c.refusal)(&msg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a connection from `ip`, evicting an idle one if needed.
    fn admit(&self, ip: IpAddr) -> Result<(u64, Arc<tokio::sync::Notify>), Refusal> {
        let mut t = self.lock();
        let mine = t.conns.values().filter(|c| c.ip == ip).count();
        if mine >= self.caps.max_per_client {
            let victim = t.oldest_idle(Some(ip)).ok_or(Refusal::Client)?;
            t.evict(victim);
            self.log.evicted(&self.caps);
        } else if t.conns.len() >= self.caps.max_connections {
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
            self.log.evicted(&self.caps);
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
            tokio::time::Instant::now() + self.caps.header_timeout
        } else {
            c.idle_since + self.caps.header_timeout
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
    fn evicted(&self, caps: &Caps) {
        self.evicted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.maybe_log(caps);
    }

    fn refused(&self, caps: &Caps) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.maybe_log(caps);
    }

    fn maybe_log(&self, caps: &Caps) {
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
                max_connections = caps.max_connections,
                max_per_client = caps.max_per_client,
                "{}: refused {refused} connection(s) with 503 (every slot busy) and closed {evicted} idle one(s) to make room",
                caps.name
            );
        } else {
            tracing::warn!(
                evicted,
                max_connections = caps.max_connections,
                max_per_client = caps.max_per_client,
                "{}: at its connection cap: closed {evicted} idle connection(s) to make room for new ones",
                caps.name
            );
        }
    }
}

/// Answer a refused connection `503` with `Retry-After` and close it.
async fn refuse<S>(mut s: S, (content_type, body): (&'static str, String))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {content_type}\r\ncache-control: no-store\r\nretry-after: {RETRY_AFTER}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
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
        let caps = Caps {
            name: "test",
            max_connections: 256,
            max_per_client: 32,
            header_timeout: Duration::from_secs(5),
            lifetime: Duration::from_secs(300),
            max_buf: 64 * 1024,
            refusal: |m| ("text/plain", m.to_string()),
        };
        let (max, per_client) = (caps.max_connections, caps.max_per_client);
        let conns = Conns::new(caps);
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
        for _ in 1..per_client {
            conns.admit(a).ok().unwrap();
        }
        let (next, _) = conns.admit(a).ok().unwrap();
        let held = ids_of(a);
        assert_eq!(held.len(), per_client);
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
        while conns.lock().conns.len() < max {
            conns
                .admit(IpAddr::from([10, 1, (n / 2) as u8, 1]))
                .ok()
                .unwrap();
            n += 1;
        }
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        conns.admit(c).ok().unwrap();
        assert_eq!(conns.lock().conns.len(), max);
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
