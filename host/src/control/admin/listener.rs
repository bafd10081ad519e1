//! The admin API's listener: bind (plain or TLS) and serve it with the
//! shared admission ([`crate::net::http1`]: docs/admin-api.md,
//! "Connections") under the caps below. Each request goes to
//! [`super::http::handle`].

use super::error::AdminError;
use super::http::{handle, State};
use crate::control::ControlPlane;
use crate::gateway::Bound;
use crate::manifest::AdminSpec;
use crate::net::http1::{self, Caps};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Connections the admin listener holds at most.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one client address holds at most.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// A connection with no request in progress must have sent a whole request
/// head within this long: from accept (TLS handshake included), and from
/// the end of the last response on a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin listener's caps; a refusal is a JSON problem.
const CAPS: Caps = Caps {
    name: "admin API",
    max_connections: MAX_CONNECTIONS,
    max_per_client: MAX_CONNECTIONS_PER_CLIENT,
    header_timeout: HEADER_TIMEOUT,
    // A connection may not outlive a slow body forever.
    lifetime: Duration::from_secs(300),
    max_buf: 64 * 1024,
    refusal: |m| {
        (
            "application/json",
            AdminError::unavailable(m).to_json().to_string(),
        )
    },
};

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
    let task = http1::spawn(listener, tls, CAPS, shutdown, move |req, peer| {
        handle(state.clone(), req, peer)
    });
    Ok((bound, task))
}
