//! The listeners: binding (one `SO_REUSEPORT` socket per worker), the
//! accept loop with its connection limit, the TLS handshake, and serving
//! each connection's requests through [`super::handle`].

use super::DataPlane;
use crate::loader;
use crate::manifest::{GatewayFile, Limits, ListenerSpec as Listener};
use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that is bound and serving.
pub struct Bound {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Tell the caller where the gateway listens (for `check` output).
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
) -> Result<(Vec<Bound>, Vec<JoinHandle<()>>)> {
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for l in &gw.listeners {
        let addr: SocketAddr = l
            .address
            .parse()
            .with_context(|| format!("listener `{}`: bad address", l.name))?;
        let serving = Arc::new(Serving::new(gateway.clone(), l)?);
        let tls = serving.tls.is_some();
        let local = if workers.is_empty() {
            bind_here(serving, l, addr, &shutdown, &mut tasks).await?
        } else {
            bind_workers(serving, l, addr, workers, &shutdown, &mut tasks)?
        };
        tracing::info!(listener = %l.name, address = %local, tls, workers = workers.len().max(1), "listening");
        bound.push(Bound {
            name: l.name.to_string(),
            addr: local,
            tls,
        });
    }
    Ok((bound, tasks))
}

/// One listener on the calling runtime.
async fn bind_here(
    serving: Arc<Serving>,
    l: &Listener,
    addr: SocketAddr,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listener `{}`: cannot bind {addr}", l.name))?;
    let local = listener.local_addr()?;
    tasks.push(tokio::spawn(accept_loop(
        serving,
        listener,
        shutdown.clone(),
    )));
    Ok(local)
}

/// One socket per worker on the same address, each registered with its
/// worker's own I/O driver. All are bound before any listens; the first
/// fixes the port when the address asks for any (port 0).
fn bind_workers(
    serving: Arc<Serving>,
    l: &Listener,
    addr: SocketAddr,
    workers: &[tokio::runtime::Handle],
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<SocketAddr> {
    let bind_err = || format!("listener `{}`: cannot bind {addr}", l.name);
    let first = reuseport_socket(addr).with_context(bind_err)?;
    let local = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.len() {
        sockets.push(reuseport_socket(local).with_context(bind_err)?);
    }
    for (socket, worker) in sockets.into_iter().zip(workers) {
        let listener = {
            let _entered = worker.enter();
            socket.listen(1024).with_context(bind_err)?
        };
        tasks.push(worker.spawn(accept_loop(serving.clone(), listener, shutdown.clone())));
    }
    Ok(local)
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

/// What every connection of one listener shares, on every worker.
struct Serving {
    gateway: Arc<DataPlane>,
    tls: Option<TlsAcceptor>,
    /// One connection limit per listener, shared by its workers.
    conns: Arc<Semaphore>,
    builder: Builder<TokioExecutor>,
    /// `request-header-timeout`: the first request's head must arrive
    /// within it.
    first_request: Duration,
    /// `send-timeout`: a client that reads nothing of a response for this
    /// long is dropped.
    send_stall: Duration,
    /// The listener's metric cells.
    cells: &'static crate::observe::metrics::ListenerCells,
}

impl Serving {
    fn new(gateway: Arc<DataPlane>, l: &Listener) -> Result<Serving> {
        let base = &gateway.base;
        let tls = match &l.tls {
            Some(t) => Some(crate::net::tls_server::acceptor(
                &loader::resolve(base, &t.cert),
                &loader::resolve(base, &t.key),
            )?),
            None => None,
        };
        let limits = gateway.limits();
        Ok(Serving {
            tls,
            conns: Arc::new(Semaphore::new(limits.max_connections)),
            builder: connection_builder(limits),
            first_request: limits.request_header_timeout.0,
            send_stall: limits.send_timeout.0,
            cells: crate::observe::metrics::global().listener_cells(l.name.as_str()),
            gateway,
        })
    }
}

/// HTTP/1.1 and HTTP/2 (by ALPN or preface) with the listeners' limits.
fn connection_builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
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
    builder
}

/// Accept connections while the listener's connection limit allows, each
/// served on a task of its own, until shutdown.
async fn accept_loop(
    serving: Arc<Serving>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            p = serving.conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let serving = serving.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(serving, stream, peer, shutdown).await;
        });
    }
}

/// One connection: the TLS handshake if the listener has TLS, then its
/// requests, until it ends or shutdown (which gives it a while to finish).
async fn serve_connection(
    serving: Arc<Serving>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let scheme = if serving.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let gateway = serving.gateway.clone();
    let cells = serving.cells;
    let svc = service_fn(move |req| {
        let gateway = gateway.clone();
        async move {
            // One request per turn: a connection whose requests are
            // answered without any wait (no route, a refused key, a
            // quarantined step) and whose client sends the next one at
            // once would otherwise be served up to 16 times per turn
            // (hyper's pipelining loop), so eight flooding clients put up
            // to 128 of their requests before anyone else's. Measured: no
            // throughput cost (tests/bench/run --baseline, 3 rounds: 1.07x
            // for 0 steps, 1.06x for 5 steps); see tests/e2e/fairness.rs.
            tokio::task::yield_now().await;
            // Boxed: hyper keeps a box the size of this future for every
            // connection, in flight or idle (its dispatcher's `in_flight`),
            // and the whole pipeline's future (policy calls, upstream) is
            // several KiB; boxed, an idle keep-alive connection holds a
            // pointer, and a request allocates the pipeline once.
            let call = Box::pin(super::pipeline::handle_on(
                &gateway,
                req,
                peer,
                scheme,
                Some(cells),
            ));
            Ok::<_, std::convert::Infallible>(call.await)
        }
    });
    // Plain or TLS, the connection is then served the same way.
    let stream = match &serving.tls {
        None => Either::Left(stream),
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
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
    let io =
        crate::net::client_io::ClientIo::new(stream, serving.first_request, serving.send_stall);
    // With upgrades: a WebSocket handshake the gateway relays takes the
    // connection over from HTTP (`gateway::websocket`).
    let conn = serving
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}
