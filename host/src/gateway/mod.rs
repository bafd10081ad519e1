//! The data plane: the configuration generation serving right now
//! ([`DataPlane`]), the listeners ([`listener`]: HTTP/1.1 and HTTP/2,
//! optionally TLS with ALPN) and the request pipeline ([`pipeline`]): named
//! phases over a per-request context, with one failure exit ([`error`])
//! that makes every failure a response and decides whether the connection
//! is kept.
//!
//! ```text
//! accept -> normalise -> route -> request chain -> upstream -> response chain -> finish
//!               |          |            |              |        (reverse)    ^
//!               +----------+--> fail ---|--------------|---------------------|--> finish
//!                                       +--------------+--> fail ------------+
//! ```
//!
//! A failure before routing is answered at once; one in the request chain
//! or at the upstream becomes the response the response chain runs over
//! (a failing response step replaces the response in turn).
//!
//! The control plane swaps generations in through [`DataPlane::install`];
//! a request reads the current one once and finishes on it.

pub mod error;
pub mod listener;
pub mod pipeline;
pub(crate) mod websocket;

pub use listener::{describe, serve_on, Bound};
pub use pipeline::handle;
#[doc(hidden)]
pub use pipeline::{headers_to_wit, wit_to_headers};

use crate::loader::Generation;
use crate::manifest::Limits;
use crate::observe::Observers;
use crate::policy::Runtime;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Metrics, analytics and traces: every finished call is handed to them.
    pub observe: Arc<Observers>,
    /// The OAuth authorization server's endpoints (`[oauth]`), answered
    /// before routing.
    pub oauth: Option<Arc<dyn crate::domain::oauth::AuthorizationServer>>,
}

impl DataPlane {
    pub fn new(runtime: Arc<Runtime>, first: Generation, limits: Limits, base: PathBuf) -> Self {
        DataPlane {
            runtime,
            current: ArcSwap::from_pointee(first),
            limits,
            base,
            generation: std::sync::atomic::AtomicU64::new(1),
            observe: Arc::new(Observers::metrics_only()),
            oauth: None,
        }
    }

    /// The data plane answering the OAuth endpoints with `server`.
    pub fn with_oauth(
        mut self,
        server: Option<Arc<dyn crate::domain::oauth::AuthorizationServer>>,
    ) -> Self {
        self.oauth = server;
        self
    }

    /// The data plane with these observers instead of metrics alone.
    pub fn with_observers(mut self, observe: Arc<Observers>) -> Self {
        observe.metrics.set_generation(1);
        self.observe = observe;
        self
    }

    /// The configuration serving right now.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Swap in `g`; returns its generation number. Requests in flight
    /// finish on the generation they started with.
    pub fn install(&self, g: Generation) -> u64 {
        self.current.store(Arc::new(g));
        let n = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.observe.metrics.set_generation(n);
        n
    }

    /// The listeners' limits (from the gateway file at start).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
