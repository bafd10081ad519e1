//! Network plumbing both planes share: TLS for listeners
//! ([`tls_server`]) and for the gateway's outbound connections
//! ([`tls_client`]), deadlines on client connections that hyper does not
//! enforce ([`client_io`]), and the serving workers' per-thread state
//! ([`workers`]).

pub mod client_io;
pub mod http1;
pub mod tls_client;
pub mod tls_server;
pub mod workers;

/// An error and its sources, `: `-separated, for logs and messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
