//! The portal's listener: bind (plain or TLS) and serve it with the shared
//! admission ([`crate::net::http1`]: caps per listener and per client
//! address with idle connections evicted to make room, a header timeout —
//! a slow client's head, and an idle kept-alive connection, are cut after
//! [`HEADER_TIMEOUT`] — and a bound on a connection's life); every request
//! goes to [`super::http::handle`] within [`BODY_TIMEOUT`].

use super::Portal;
use crate::control::ControlPlane;
use crate::gateway::Bound;
use crate::manifest::PortalSpec;
use crate::net::http1::{self, Caps};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
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

/// The portal's caps; a refusal is a line of text.
const CAPS: Caps = Caps {
    name: "portal",
    max_connections: MAX_CONNECTIONS,
    max_per_client: MAX_CONNECTIONS_PER_CLIENT,
    header_timeout: HEADER_TIMEOUT,
    lifetime: CONNECTION_LIFETIME,
    max_buf: 32 * 1024,
    refusal: |m| ("text/plain; charset=utf-8", format!("{m}\n")),
};

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
        Some(t) => Some(crate::net::tls_server::acceptor(
            &crate::loader::resolve(base, &t.cert),
            &crate::loader::resolve(base, &t.key),
        )?),
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
    let task = http1::spawn(listener, tls, CAPS, shutdown, move |req, peer| {
        let portal = portal.clone();
        async move {
            // A slow body is cut: the whole request within the body
            // timeout once its head has arrived.
            match tokio::time::timeout(BODY_TIMEOUT, super::http::handle(portal, req, peer)).await {
                Ok(r) => r,
                Err(_) => {
                    let mut r = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"request timed out"),
                    ));
                    *r.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                    r
                }
            }
        }
    });
    Ok((bound, task))
}
