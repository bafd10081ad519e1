//! The composition root: builds the store, the policy runtime, the data
//! plane ([`crate::gateway`]) and the control plane ([`crate::control`]),
//! and hands each only what it needs. Nothing below this module knows
//! that both planes exist.

use crate::control::{ControlPlane, ReloadOutcome};
use crate::gateway::{Bound, DataPlane};
use crate::loader::{self, Generation};
use crate::manifest::GatewayFile;
use crate::policy::{self, Runtime};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// A running gateway: its data plane, its control plane and the store they
/// share.
pub struct Gateway {
    pub data: Arc<DataPlane>,
    pub control: Arc<ControlPlane>,
    /// The policy runtime (the data plane's).
    pub runtime: Arc<Runtime>,
    /// The control plane's state (admin users, plans, keys ...).
    pub registry: Arc<crate::control::admin::Registry>,
    _store: crate::store::Store,
}

impl Gateway {
    /// Load the gateway file and everything it names, or explain why not.
    pub fn load(gw_path: &Path) -> Result<(Arc<Gateway>, GatewayFile)> {
        let gw_path = gw_path
            .canonicalize()
            .with_context(|| format!("cannot open {}", gw_path.display()))?;
        let mut inputs = loader::Inputs::default();
        let gw = loader::read_gateway_file_recording(&gw_path, &mut inputs)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = gw_path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let data_dir = loader::resolve(&base, &gw.data_dir);
        let store = crate::store::Store::open(&data_dir)?;
        // The control plane's consumers, keys and plans: kept for the
        // control plane, and injected into the policy services as the
        // source every generation asks after its own manifests.
        let registry = Arc::new(crate::control::admin::Registry::new(store.clone()));
        let cluster = match &gw.cluster {
            Some(spec) => {
                let mut spec = spec.clone();
                spec.ca_file = spec.ca_file.map(|p| loader::resolve(&base, &p));
                let spec = &spec;
                let c = crate::cluster::Cluster::start(spec)?;
                // Serve from Redis from the first call when it is up; start
                // anyway (and fall back) when it is not.
                if !c.wait_connected(spec.connect_timeout.0) {
                    tracing::warn!(
                        "[cluster]: Redis not reachable at start; serving with the fallbacks until it is"
                    );
                }
                Some(c)
            }
            None => None,
        };
        // A cluster's shared control plane: the registry's role is set
        // before anything writes to it (the OAuth server's first key).
        let replica = match (&cluster, gw.cluster.as_ref().and_then(|c| c.role)) {
            (Some(c), Some(role)) => Some(crate::control::replica::Replica::start(
                c.clone(),
                registry.clone(),
                role,
            )),
            _ => None,
        };
        let services = Arc::new({
            let s = crate::policy::host::Services::new(crate::policy::host::ServiceSettings {
                store: Some(store.clone()),
                cache_bytes: gw.cache.max_bytes.0,
                sink_path: gw
                    .access_log
                    .path
                    .as_ref()
                    .map(|p| loader::resolve(&base, p)),
                outbound_ca: gw
                    .outbound
                    .ca_file
                    .as_ref()
                    .map(|p| loader::resolve(&base, p)),
            })?
            .with_consumers(registry.clone());
            match cluster.clone() {
                Some(c) => s.with_cluster(c),
                None => s,
            }
        });
        let runtime = Arc::new(Runtime::new(
            policy::EngineLimits {
                max_instances: gw.limits.max_instances,
            },
            Some(match &gw.plugins.cache_dir {
                Some(dir) => loader::resolve(&base, dir),
                None => data_dir.join("plugin-cache"),
            }),
            services,
        )?);
        if gw.plugins.snapshots {
            runtime.set_resets(gw.plugins.reset);
            runtime.enable_snapshots()?;
        }
        let generation =
            loader::build_recording(&gw_path, &gw, &runtime, &Default::default(), &mut inputs)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let observe = Arc::new(crate::observe::Observers {
            metrics: {
                let m = crate::observe::metrics::global();
                m.configure(&gw.metrics);
                m
            },
            metrics_on: gw.metrics.enabled,
            metrics_public: gw.metrics.public,
            analytics: match &gw.analytics {
                Some(spec) => Some(crate::observe::analytics::Analytics::start(
                    store.clone(),
                    spec,
                )?),
                None => None,
            },
            tracer: match &gw.otel {
                Some(spec) => Some(crate::observe::trace::Tracer::start(spec)?),
                None => None,
            },
        });
        let oauth = match &gw.oauth {
            Some(spec) => Some(
                crate::control::oauth::OAuthServer::start(registry.clone(), spec.clone())
                    .map_err(|e| anyhow::anyhow!("[oauth]: {e}"))?,
            ),
            None => None,
        };
        let data = Arc::new(
            DataPlane::new(runtime.clone(), generation, gw.limits.clone(), base)
                .with_observers(observe)
                .with_oauth(
                    oauth
                        .clone()
                        .map(|o| o as Arc<dyn crate::domain::oauth::AuthorizationServer>),
                ),
        );
        let control = Arc::new(
            ControlPlane::new(data.clone(), registry.clone(), gw_path, inputs)
                .with_oauth(oauth)
                .with_replica(replica.clone()),
        );
        if let Some(r) = &replica {
            r.attach(&control);
        }
        let gateway = Arc::new(Gateway {
            data,
            control,
            runtime,
            registry,
            _store: store,
        });
        Ok((gateway, gw))
    }

    /// The configuration serving right now.
    pub fn current(&self) -> Arc<Generation> {
        self.data.current()
    }

    /// Build the whole configuration anew and swap it in (see
    /// [`ControlPlane::reload`]).
    pub async fn reload(&self) -> ReloadOutcome {
        self.control.reload().await
    }

    /// Watch the configuration files and reload on change, and on SIGHUP.
    pub fn spawn_reloaders(&self, watch_files: bool, debounce: std::time::Duration) {
        self.control.spawn_reloaders(watch_files, debounce);
    }
}

/// Bind every listener, the admin API and the portal, and serve until `shutdown` turns
/// true; then stop accepting and let connections finish. Connections run on
/// the calling runtime (tests, tools); the binary uses [`serve_on`] with
/// one single-threaded runtime per core.
pub async fn serve(
    gateway: Arc<Gateway>,
    gw: &GatewayFile,
    shutdown: watch::Receiver<bool>,
) -> Result<(Vec<Bound>, Vec<tokio::task::JoinHandle<()>>)> {
    serve_on(gateway, gw, shutdown, &[]).await
}

/// Like [`serve`], with the listeners served by each of `workers` (see
/// [`crate::gateway::serve_on`]). The admin API always runs on the calling
/// runtime.
pub async fn serve_on(
    gateway: Arc<Gateway>,
    gw: &GatewayFile,
    shutdown: watch::Receiver<bool>,
    workers: &[tokio::runtime::Handle],
) -> Result<(Vec<Bound>, Vec<tokio::task::JoinHandle<()>>)> {
    let (mut bound, mut tasks) =
        crate::gateway::serve_on(gateway.data.clone(), gw, shutdown.clone(), workers).await?;
    gateway.control.set_listeners(
        bound
            .iter()
            .map(|b| (if b.tls { "https" } else { "http" }, b.addr))
            .collect(),
    );
    let base = gateway
        .control
        .gw_path()
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if let Some(admin) = &gw.admin {
        let (b, task) = crate::control::admin::listener::bind(
            gateway.control.clone(),
            admin,
            &base,
            shutdown.clone(),
        )
        .await?;
        bound.push(b);
        tasks.push(task);
    }
    if let Some(portal) = &gw.portal {
        let (b, task) =
            crate::portal::listener::bind(gateway.control.clone(), portal, &base, shutdown).await?;
        bound.push(b);
        tasks.push(task);
    }
    Ok((bound, tasks))
}

/// mimalloc's `purge_delay` option: its index in `mi_option_t` (the same
/// in mimalloc 2 and 3) and the default mimalloc 3 gives it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT_MS: std::os::raw::c_long = 1000;

/// How long mimalloc keeps memory that was freed before returning it to the
/// OS, in milliseconds, unless `MIMALLOC_PURGE_DELAY` says otherwise:
/// mimalloc 2's default. Measured with `tests/bench/steps --isolation
/// request` (2 runs each): no CPU difference beyond the runs' noise against
/// 1 s, 0.1–0.2 page faults per request more; 0 ms cost the 0-step path
/// ~20% more CPU (0.7 faults per request).
pub const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// Have mimalloc (the `tollgate` binary's allocator) return freed memory to
/// the OS sooner. mimalloc 3 waits 1 s, and purges only when the process
/// allocates or frees again, so what a burst of requests freed (or the
/// start: compiling plugins, building snapshots) stayed resident while the
/// gateway idled: with the 5-step chain, 115 MB after a load test against
/// the figure in `docs/performance.md` ("Memory"). Left alone when the
/// operator set `MIMALLOC_PURGE_DELAY`, or when the option is not where
/// mimalloc 3 keeps it (its value is not mimalloc 3's default).
pub fn tune_allocator() {
    // SAFETY: plain option reads and writes of the linked mimalloc, which
    // may be called at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}
