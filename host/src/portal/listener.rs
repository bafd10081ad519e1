//! The portal's listener: bind (plain or TLS), accept, and admit
//! connections within caps (per listener and per client address), each
//! with a header timeout (a slow client's head, and an idle kept-alive
//! connection, are cut after [`HEADER_TIMEOUT`]) and a bound on its whole
//! life; every request goes to [`super::http::handle`].

use super::Portal;
use crate::control::ControlPlane;
use crate::gateway::Bound;
use crate::manifest::PortalSpec;
use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Connections the portal holds at most.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one client address holds at most.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// A request head must arrive within this long (from accept, TLS
/// handshake included, and between requests on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's body must arrive within this long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// Bind the portal's listener and serve it until `shutdown` turns true.
pub async fn bind(
    control: Arc<ControlPlane>,
    spec: &PortalSpec,
    base: &Path,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Bound, tokio::task::JoinHandle<()>)> {
    let addr: SocketAddr = spec
        .address
        .parse()
        .with_context(|| format!("portal: bad address `{}`", spec.address))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("portal: cannot bind {addr}"))?;
    let local = listener.local_addr()?;
    let tls = match &spec.tls {
        Some(t) => {
            let acc = crate::net::tls_server::acceptor(
                &crate::loader::resolve(base, &t.cert),
                &crate::loader::resolve(base, &t.key),
            )?;
            // The portal speaks HTTP/1.1 only: offer only that in ALPN.
            let mut config = (**acc.config()).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let portal = Arc::new(Portal::new(control, spec, base, local, tls.is_some())?);
    tracing::info!(address = %local, tls = tls.is_some(), url = %portal.public_url, "developer portal listening");
    let bound = Bound {
        name: "portal".into(),
        addr: local,
        tls: tls.is_some(),
    };
    if let (Some(smtp), Some(outbox)) = (&spec.smtp, &portal.outbox) {
        let relay = super::outbox::Relay::new(outbox.clone(), smtp, base)?;
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = relay.run() => {}
                _ = stop.changed() => {}
            }
        });
    }
    let task = tokio::spawn(accept_loop(listener, tls, portal, shutdown));
    Ok((bound, task))
}

/// Connections held, per client address.
#[derive(Default)]
struct Held {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Held`], given back when dropped.
struct Slot {
    held: Arc<Mutex<Held>>,
    ip: IpAddr,
}

impl Slot {
    fn take(held: &Arc<Mutex<Held>>, ip: IpAddr) -> Option<Slot> {
        let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = h.per_ip.get(&ip).copied().unwrap_or(0);
        if h.total >= MAX_CONNECTIONS || mine >= MAX_CONNECTIONS_PER_CLIENT {
            return None;
        }
        h.total += 1;
        *h.per_ip.entry(ip).or_default() += 1;
        Some(Slot {
            held: held.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        h.total -= 1;
        if let Some(n) = h.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                h.per_ip.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    portal: Arc<Portal>,
    mut shutdown: watch::Receiver<bool>,
) {
    let held = Arc::new(Mutex::new(Held::default()));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("portal: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over a cap: closed at once (a browser retries).
        let Some(slot) = Slot::take(&held, peer.ip()) else {
            continue;
        };
        let (tls, portal) = (tls.clone(), portal.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let portal = portal.clone();
                async move {
                    // A slow body is cut: the whole request within the
                    // body timeout once its head has arrived.
                    let answer =
                        tokio::time::timeout(BODY_TIMEOUT, super::http::handle(portal, req, peer))
                            .await;
                    match answer {
                        Ok(r) => Ok::<_, std::convert::Infallible>(r),
                        Err(_) => {
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"request timed out"),
                            ));
                            *r.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
                            r.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                            Ok(r)
                        }
                    }
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(32 * 1024);
            let conn = async {
                match tls {
                    Some(acc) => {
                        let Ok(Ok(s)) =
                            tokio::time::timeout(HEADER_TIMEOUT, acc.accept(stream)).await
                        else {
                            return;
                        };
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                    None => {
                        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            };
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}
