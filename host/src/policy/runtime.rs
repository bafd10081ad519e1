//! The runtime ([`Runtime`], one per process): loads plugins, checks step
//! configurations with the plugin's own `configure` ([`Step`]), and gives
//! each request a sandboxed instance of each step ([`StepInstance`]) under
//! the step's deadline and memory cap: a fresh one, or under `worker`
//! isolation a warm one its worker kept ([`super::reuse`]).

use super::bindings::{access, limits, types2, v01, v02};
use super::deadline;
use super::host::{Capability, Grants, Services};
use super::plugin::{
    typed, ConfigureRet, ConfigureRet01, ConfigureSig, Exports, OnRequestRet, OnRequestRet01,
    OnRequestSig, OnRequestSig01, OnResponseRet, OnResponseSig, OnResponseSig01, Plugin, Version,
};
use super::reuse::{self, Isolation};
use super::state::{RequestScope, StepState};
use super::{
    escape_log, gate, guard, snapshot, BodyAccess, CallContext, EngineLimits, Phases, PolicyEngine,
    PolicyError, PolicyInfo, RequestDecision, RequestEdits, RequestHead, ResponseDecision,
    ResponseHead, StepConfigError, WitConfigError,
};
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{ComponentExportIndex, Func, HasSelf, Instance, Linker, Resource};
use wasmtime::{Store, Trap};

/// A configured step of a chain. A clone is the same step: it shares the
/// snapshot cell.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: Arc<str>,
    pub api: Arc<str>,
    pub plugin: Arc<Plugin>,
    pub config: String,
    pub info: PolicyInfo,
    pub timeout: Duration,
    /// The wall-clock bound of a phase, host calls included
    /// ([`Step::with_wall_timeout`]; see [`super::deadline`]).
    pub wall_timeout: Duration,
    pub memory: usize,
    pub fail_open: bool,
    pub grants: Arc<Grants>,
    /// The configured snapshot requests instantiate, once built.
    pub(super) snapshot: snapshot::SnapshotCell,
    /// How much the step's plugin may log (shared by the step's clones).
    pub(super) log: Arc<guard::StepLog>,
    /// Whether and how long its instances are reused (see [`reuse`]).
    pub(super) reuse: Arc<reuse::StepReuse>,
    /// The step's quarantine and concurrency bound (shared by its clones).
    pub gate: Arc<gate::StepGate>,
    /// A second version serving a share of the calls (see [`super::canary`]).
    pub canary: Option<Arc<super::canary::Canary>>,
    /// When it runs (`when`): calls for which this is false skip the step
    /// before any instance is taken.
    pub when: Option<Arc<super::condition::Condition>>,
    /// Its metric cells, resolved on first use (shared by its clones).
    cells: Arc<std::sync::OnceLock<Arc<crate::observe::metrics::StepCells>>>,
}

impl Step {
    /// The step's metric cells (labelled with its API and its name, so a
    /// canary version counts apart).
    pub fn cells(&self) -> &crate::observe::metrics::StepCells {
        self.cells.get_or_init(|| {
            let phases = crate::observe::metrics::StepPhases {
                request: self.has_request(),
                response: self.has_response(),
            };
            crate::observe::metrics::global().step_cells(&self.api, &self.name, phases)
        })
    }

    /// This step with other log limits (the default ones until then).
    pub fn with_log_limits(mut self, limits: guard::LogLimits) -> Step {
        self.log = Arc::new(guard::StepLog::new(
            self.api.clone(),
            self.name.clone(),
            limits,
        ));
        self
    }

    /// This step with another isolation level (`request` until then), and
    /// under `worker` the uses and idle time after which an instance is
    /// discarded.
    pub fn with_isolation(mut self, isolation: Isolation, max_uses: u64, idle: Duration) -> Step {
        self.reuse = reuse::StepReuse::new(isolation, max_uses, idle);
        self
    }

    /// Whether the gateway calls the step's request phase.
    pub fn has_request(&self) -> bool {
        self.info.phases.contains(Phases::REQUEST)
    }

    /// Whether the gateway calls the step's response phase.
    pub fn has_response(&self) -> bool {
        self.info.phases.contains(Phases::RESPONSE)
    }

    /// The step's isolation level.
    pub fn isolation(&self) -> Isolation {
        self.reuse.isolation
    }

    /// This step with another wall-clock bound (the default one,
    /// [`deadline::default_wall_timeout`], until then).
    pub fn with_wall_timeout(mut self, wall_timeout: Duration) -> Step {
        self.wall_timeout = wall_timeout;
        self
    }

    /// This step, run only where `when` is true (always without one).
    pub fn with_condition(mut self, when: Option<Arc<super::condition::Condition>>) -> Step {
        self.when = when;
        self
    }

    /// This step with other gate limits (the defaults for its timeout until
    /// then).
    pub fn with_gate_limits(mut self, limits: gate::GateLimits) -> Step {
        self.gate = Arc::new(gate::StepGate::new(limits));
        self
    }

    /// The step's log limits.
    pub fn log_limits(&self) -> guard::LogLimits {
        self.log.limits
    }

    /// Whether requests skip `configure` (a configured snapshot is ready).
    pub fn snapshotted(&self) -> bool {
        self.snapshot.get().is_some()
    }
}

/// The runtime: one per process, shared by every configuration generation.
pub struct Runtime {
    pub(super) engine: PolicyEngine,
    pub(super) linker: Linker<StepState>,
    plugins: Mutex<HashMap<String, Arc<Plugin>>>,
    live: Arc<AtomicUsize>,
    max_instances: usize,
    services: Arc<Services>,
    pub(super) snapshots: snapshot::Snapshots,
    reuse: reuse::Reuse,
    /// The canaries rolled back so far (see [`super::canary::Rollbacks`]).
    rollbacks: Arc<super::canary::Rollbacks>,
}

/// Keeps one instance slot taken while alive.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    pub fn new(
        limits: EngineLimits,
        cache_dir: Option<PathBuf>,
        services: Arc<Services>,
    ) -> Result<Self> {
        let max_instances = limits.max_instances as usize;
        let engine = PolicyEngine::new(&limits, cache_dir)?;
        let mut linker = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // 0.1.0's world: every host service. 0.2.0 imports those same
        // services, and adds its call resource and its types.
        v01::PolicyHost::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        v02::tollgate::policy0_2_0::calls::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        types2::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
        limits::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
        access::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(anyhow::Error::from)?;
        Ok(Runtime {
            engine,
            linker,
            plugins: Mutex::new(HashMap::new()),
            live: Arc::new(AtomicUsize::new(0)),
            max_instances,
            services,
            snapshots: Default::default(),
            reuse: Default::default(),
            rollbacks: Default::default(),
        })
    }

    /// Instances alive right now (for tests and metrics), idle ones in
    /// the pools included.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Instances serving a request right now: alive and not idle in a pool
    /// (for tests and metrics; the two counts are read one after the
    /// other).
    pub fn instances_in_use(&self) -> usize {
        self.live_instances().saturating_sub(self.idle_instances())
    }

    /// Write every access-log line queued so far (at shutdown).
    pub fn flush_logs(&self) {
        self.services.sink.flush();
    }

    /// How many requests fresh and warm instances served, and how many
    /// warm ones were discarded (for tests and metrics).
    pub fn reuse_counts(&self) -> reuse::ReuseCounts {
        self.reuse.counts()
    }

    /// Instances kept warm for worker steps right now (part of
    /// [`Runtime::live_instances`]).
    pub fn idle_instances(&self) -> usize {
        self.reuse.idle()
    }

    /// Give back the instance of `step` once the request is done with it,
    /// after its last phase returned normally: a worker step's instance may
    /// serve another request; any other is dropped. Dropping an instance
    /// instead (every failure) discards it.
    pub async fn release(&self, step: &Step, mut inst: StepInstance) {
        step.cells().memory(inst.store.data().limiter.grown);
        if step.reuse.isolation == Isolation::Request {
            if inst.reset.is_none() {
                return;
            }
            if !self.reuse.has_room(step) {
                self.reuse.discard(vec![inst], step, "the pool is full");
                return;
            }
            if !inst.reset(step).await {
                self.reuse.discard(vec![inst], step, "no reset");
                return;
            }
        }
        self.reuse.release(step, inst);
    }

    /// The canaries this runtime rolled back, remembered across reloads.
    pub fn rollbacks(&self) -> &Arc<super::canary::Rollbacks> {
        &self.rollbacks
    }

    /// The host services every step uses.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Load a plugin file, reusing an already loaded one with the same
    /// content. Fails with a clear message if the file is not a policy
    /// component or imports something the host does not offer.
    pub fn load_plugin(&self, name: &str, path: &Path) -> Result<Arc<Plugin>> {
        let wasm = std::fs::read(path)
            .with_context(|| format!("plugin `{name}`: cannot read {}", path.display()))?;
        if !wasm.starts_with(b"\0asm") {
            anyhow::bail!(
                "plugin `{name}` ({}) is not WebAssembly (the file does not start with `\\0asm`)",
                path.display()
            );
        }
        if wasm.get(4..8) == Some(&[1, 0, 0, 0]) {
            anyhow::bail!(
                "plugin `{name}` ({}) is a core WebAssembly module, not a component: build it for wasm32-wasip2",
                path.display()
            );
        }
        let (component, hash) = self.engine.load_component(&wasm, path).with_context(|| {
            format!(
                "plugin `{name}` ({}) is not a valid component",
                path.display()
            )
        })?;
        if let Some(p) = self.plugins.lock().unwrap().get(&hash) {
            if p.name == name {
                return Ok(p.clone());
            }
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin `{name}` ({}) needs something this host does not offer",
                    path.display()
                )
            })?;
        let exports = Exports::find(self.engine.engine(), &self.linker, &component)
            .with_context(|| format!("plugin `{name}` ({})", path.display()))?;
        let mut needs: Vec<&'static str> = component
            .component_type()
            .imports(self.engine.engine())
            .filter_map(|(n, _)| Capability::for_import(n))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        let plugin = Arc::new(Plugin {
            name: name.to_string(),
            path: path.to_path_buf(),
            hash: hash.clone(),
            needs,
            pre,
            exports,
            wasm: wasm.into(),
        });
        self.plugins.lock().unwrap().insert(hash, plugin.clone());
        Ok(plugin)
    }

    /// Check a step's configuration with the plugin's own `configure` and
    /// build the step.
    #[allow(clippy::too_many_arguments)]
    pub fn configure_step(
        &self,
        api: &str,
        name: &str,
        plugin: Arc<Plugin>,
        config: String,
        timeout: Duration,
        memory: usize,
        fail_open: bool,
        grants: Grants,
    ) -> Result<Step, StepConfigError> {
        let missing: Vec<&str> = plugin
            .needs
            .iter()
            .copied()
            .filter(|n| !grants.has_named(n))
            .collect();
        if !missing.is_empty() {
            return Err(StepConfigError::NotGranted {
                plugin: plugin.name.clone(),
                missing: missing.join(", "),
            });
        }
        let (name, api): (Arc<str>, Arc<str>) = (name.into(), api.into());
        let log = Arc::new(guard::StepLog::new(
            api.clone(),
            name.clone(),
            guard::LogLimits::default(),
        ));
        let mut step = Step {
            name,
            api,
            plugin,
            config,
            info: PolicyInfo {
                body: BodyAccess {
                    request: None,
                    response: None,
                },
                phases: Phases::REQUEST | Phases::RESPONSE,
            },
            timeout,
            wall_timeout: deadline::default_wall_timeout(timeout),
            memory,
            fail_open,
            grants: Arc::new(grants),
            snapshot: Default::default(),
            log,
            reuse: Default::default(),
            gate: Arc::new(gate::StepGate::new(gate::GateLimits::for_wall_timeout(
                deadline::default_wall_timeout(timeout),
            ))),
            canary: None,
            when: None,
            cells: Default::default(),
        };
        let outcome = block_on(async {
            let mut inst = self
                .instantiate_unconfigured(&step, &RequestScope::default())
                .await
                .map_err(|e| StepConfigError::Failed(e.to_string()))?;
            Ok::<_, StepConfigError>(inst.configure_at_load(&step).await)
        })?;
        match outcome {
            Ok(Ok(info)) => {
                step.info = info;
                self.queue_snapshot(&step);
                Ok(step)
            }
            Ok(Err(e)) => Err(StepConfigError::Rejected {
                field: e.field,
                message: e.message,
            }),
            Err(e) => Err(StepConfigError::Failed(e.to_string())),
        }
    }

    async fn instantiate_unconfigured(
        &self,
        step: &Step,
        scope: &RequestScope,
    ) -> Result<StepInstance, PolicyError> {
        let plugin = &step.plugin;
        self.instantiate_from(step, scope, &plugin.pre, plugin.exports, true)
            .await
    }

    /// A new instance of `pre` (the plugin, its instrumented form, or a
    /// configured snapshot) in a store of its own for `step`.
    pub(super) async fn instantiate_from(
        &self,
        step: &Step,
        scope: &RequestScope,
        pre: &wasmtime::component::InstancePre<StepState>,
        exports: Exports,
        limited: bool,
    ) -> Result<StepInstance, PolicyError> {
        // Only the snapshot builder is not `limited` (nor counted as live):
        // one instance at a time, within the pool's headroom over
        // `max-instances`.
        let slot = limited.then(|| {
            let taken = self.live.fetch_add(1, Ordering::AcqRel);
            (taken, Slot(self.live.clone()))
        });
        // Idle warm instances hold slots too: one goes before a 503.
        if slot
            .as_ref()
            .is_some_and(|(taken, _)| *taken >= self.max_instances)
            && !self.reuse.evict_one()
        {
            return Err(PolicyError::Busy {
                step: step.name.to_string(),
            });
        }
        let state = StepState::new(step, scope, self.services.clone());
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Running time counted in ticks the guest runs, within a
        // wall-clock bound; a yield to the executor at every tick.
        deadline::arm(&mut store, |s| &mut s.deadline);
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) => {
                let mut inst_err = classify(&step.name, step, &store, e);
                if let PolicyError::Trap { detail, .. } = &mut inst_err {
                    if detail.contains("pooling") || detail.contains("concurrency limit") {
                        return Err(PolicyError::Busy {
                            step: step.name.to_string(),
                        });
                    }
                }
                return Err(inst_err);
            }
        };
        Ok(StepInstance {
            store,
            instance,
            exports,
            _slot: slot.map(|(_, s)| s),
            uses: Default::default(),
            reset: None,
        })
    }

    /// An instance for one request, configured and ready for its phases:
    /// a warm one for a worker step when its worker keeps one, else a
    /// fresh one. The deadline covers `configure` and `on-request`.
    pub async fn instantiate(
        &self,
        step: &Step,
        scope: &RequestScope,
    ) -> Result<StepInstance, PolicyError> {
        use crate::observe::metrics::Source;
        if let Some(warm) = self.reuse.take(step, scope) {
            step.cells()
                .instance(if step.reuse.isolation == Isolation::Request {
                    Source::Reset
                } else {
                    Source::Warm
                });
            return Ok(warm);
        }
        step.cells().instance(Source::Fresh);
        self.reuse.served_fresh(step, scope);
        if let Some(snap) = step.snapshot.get() {
            // Configured already: the snapshot is the state `configure`
            // left, and the deadline covers `on-request` alone.
            let mut inst = self
                .instantiate_from(step, scope, &snap.pre, snap.exports, true)
                .await?;
            inst.reset = snap.reset;
            return Ok(inst);
        }
        let mut inst = self.instantiate_unconfigured(step, scope).await?;
        match inst.configure(step).await {
            Ok(Ok(_)) => Ok(inst),
            Ok(Err(e)) => Err(PolicyError::BadOutput {
                step: step.name.to_string(),
                detail: format!(
                    "configure rejected a configuration it accepted at load: {}",
                    e.message
                ),
            }),
            Err(e) => Err(e),
        }
    }

    /// The engine wrapper (for benchmarks).
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }
}

/// Run a future to completion from synchronous code (loading and checking
/// configurations), on a thread of its own with a small runtime, so it works
/// whether or not the caller is inside a tokio runtime.
fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f)
        })
        .join()
        .expect("the configuration check thread panicked")
    })
}

fn classify(
    step_name: &str,
    step: &Step,
    store: &Store<StepState>,
    e: wasmtime::Error,
) -> PolicyError {
    let step_s = step_name.to_string();
    if store.data().limiter.exceeded {
        return PolicyError::Memory {
            step: step_s,
            limit: step.memory,
        };
    }
    if let Some(big) = e.downcast_ref::<super::output::OutputTooLarge>() {
        return PolicyError::BadOutput {
            step: step_s,
            detail: big.to_string(),
        };
    }
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        let kind = store.data().deadline.kind(Instant::now());
        return PolicyError::Timeout {
            step: step_s,
            limit: store.data().deadline.limit(kind),
            kind,
        };
    }
    // The trap itself, not wasmtime's backtrace of unnamed frames (which
    // filled the line and cut the message off); the backtrace at debug.
    tracing::debug!(api = %step.api, step = step_name, "step failed: {e:?}");
    let mut detail = match e.downcast_ref::<Trap>() {
        // Its Display starts with "wasm trap: ".
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    if detail.len() > 512 {
        let mut cut = 512;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push_str("...");
    }
    let mut detail = escape_log(&detail);
    // A plugin built with its names kept (`tollgate policy build --names`):
    // where it trapped, as the guest's own functions.
    if let Some(at) = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(guest_frames)
    {
        detail.push_str(" at ");
        detail.push_str(&escape_log(&at));
    }
    // A Rust guest's panic message is on its standard error.
    if let Some(text) = store.data().stderr.text() {
        detail.push_str("; the plugin wrote to stderr: ");
        detail.push_str(&text);
    }
    PolicyError::Trap {
        step: step_s,
        detail,
    }
}

/// The innermost named frames of `bt` that are the plugin's own code (not
/// Rust's standard library, panic machinery or the bindings), innermost
/// first, at most 4 and 300 bytes; `None` without names.
fn guest_frames(bt: &wasmtime::WasmBacktrace) -> Option<String> {
    const RUNTIME: [&str; 9] = [
        "std::",
        "core::",
        "alloc::",
        "__rust",
        "rust_panic",
        "rust_begin_unwind",
        "wit_bindgen",
        "abort",
        "panic_",
    ];
    let names: Vec<String> = bt
        .frames()
        .iter()
        .filter_map(|f| f.func_name())
        .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
        .filter(|n| {
            let n = n.trim_start_matches('<');
            !RUNTIME.iter().any(|r| n.starts_with(r))
                && !n.starts_with("tollgate_policy_sdk::__private")
                && !n.starts_with("tollgate_policy_sdk::bindings")
                && !n.starts_with("tollgate:policy/")
                && !n.contains("::rt::")
        })
        .take(4)
        .collect();
    if names.is_empty() {
        return None;
    }
    let mut at = names.join(" < ");
    if at.len() > 300 {
        let mut cut = 300;
        while !at.is_char_boundary(cut) {
            cut -= 1;
        }
        at.truncate(cut);
        at.push_str("...");
    }
    Some(at)
}

/// Least running time `configure` gets at load and for a snapshot (a
/// request that configures its own instance has the step's deadline).
pub const LOAD_CONFIGURE_TIMEOUT: Duration = Duration::from_secs(1);

/// One instance of one step for one request.
pub struct StepInstance {
    pub(super) store: Store<StepState>,
    pub(super) instance: Instance,
    exports: Exports,
    _slot: Option<Slot>,
    /// Requests served, for worker isolation.
    pub(super) uses: reuse::Uses,
    /// The snapshot's reset export, for request isolation (see
    /// [`super::reset`]).
    pub(super) reset: Option<ComponentExportIndex>,
}

impl StepInstance {
    fn func(&mut self, index: ComponentExportIndex) -> Func {
        self.instance
            .get_func(&mut self.store, index)
            .expect("found in this component at load")
    }

    pub(super) async fn configure(
        &mut self,
        step: &Step,
    ) -> Result<Result<PolicyInfo, WitConfigError>, PolicyError> {
        self.configure_within(step, step.timeout, step.wall_timeout)
            .await
    }

    /// `configure` at load or for a snapshot, off the request path: with
    /// at least [`LOAD_CONFIGURE_TIMEOUT`] of running time, so a policy
    /// that compiles a large document (`validate` over an OpenAPI
    /// description) is not held to a per-request deadline.
    pub(super) async fn configure_at_load(
        &mut self,
        step: &Step,
    ) -> Result<Result<PolicyInfo, WitConfigError>, PolicyError> {
        let t = step.timeout.max(LOAD_CONFIGURE_TIMEOUT);
        self.configure_within(step, t, step.wall_timeout.max(t))
            .await
    }

    async fn configure_within(
        &mut self,
        step: &Step,
        timeout: Duration,
        wall_timeout: Duration,
    ) -> Result<Result<PolicyInfo, WitConfigError>, PolicyError> {
        self.store.data_mut().deadline = deadline::Deadline::new(timeout, wall_timeout);
        self.store.set_epoch_deadline(1);
        let wall = self.store.data().deadline.wall();
        let r = match self.exports.version {
            Version::V02 => {
                let f = typed::<ConfigureSig<'_>, ConfigureRet>(self.func(self.exports.configure));
                deadline::by_wall(wall, f.call_async(&mut self.store, (&step.config,)))
                    .await
                    .map(|(r,)| r)
            }
            Version::V01 => {
                let f =
                    typed::<ConfigureSig<'_>, ConfigureRet01>(self.func(self.exports.configure));
                deadline::by_wall(wall, f.call_async(&mut self.store, (&step.config,)))
                    .await
                    .map(|(r,)| r.map(info_from_01))
            }
        };
        r.map_err(|e| classify(&step.name, step, &self.store, e))
    }

    /// Run `on-request`. The caller must not call this twice. `ctx` and
    /// `req` are lent to a 0.2.0 plugin's call handle meanwhile (moved
    /// into the store and back, unchanged).
    pub async fn on_request(
        &mut self,
        step: &Step,
        ctx: &mut CallContext,
        req: &mut RequestHead,
        body: Option<&[u8]>,
    ) -> Result<RequestDecision, PolicyError> {
        let wall = self.store.data().deadline.wall();
        let r = match self.exports.version {
            Version::V02 => {
                let f = typed::<OnRequestSig<'_>, OnRequestRet>(self.func(self.exports.on_request));
                self.swap_call(ctx, req, None);
                let call = f.call_async(&mut self.store, (Resource::new_borrow(0), body));
                let r = deadline::by_wall(wall, call).await;
                self.swap_call(ctx, req, None);
                r.map(|(r,)| r.0)
            }
            Version::V01 => {
                let f =
                    typed::<OnRequestSig01<'_>, OnRequestRet01>(self.func(self.exports.on_request));
                let call = f.call_async(&mut self.store, (&*ctx, &*req, body));
                deadline::by_wall(wall, call)
                    .await
                    .map(|(r,)| decision_from_01(r.0))
            }
        };
        r.map_err(|e| classify(&step.name, step, &self.store, e))
    }

    /// Run `on-response` with a fresh deadline (`ctx`, `req` and `resp`
    /// lent as in [`StepInstance::on_request`]).
    pub async fn on_response(
        &mut self,
        step: &Step,
        ctx: &mut CallContext,
        req: &mut RequestHead,
        resp: &mut ResponseHead,
        body: Option<&[u8]>,
    ) -> Result<ResponseDecision, PolicyError> {
        self.store.data_mut().deadline.restart();
        self.store.set_epoch_deadline(1);
        let wall = self.store.data().deadline.wall();
        let r = match self.exports.version {
            Version::V02 => {
                let f =
                    typed::<OnResponseSig<'_>, OnResponseRet>(self.func(self.exports.on_response));
                self.swap_call(ctx, req, Some(&mut *resp));
                let call = f.call_async(&mut self.store, (Resource::new_borrow(0), body));
                let r = deadline::by_wall(wall, call).await;
                self.swap_call(ctx, req, Some(resp));
                r.map(|(r,)| r.0)
            }
            Version::V01 => {
                let f = typed::<OnResponseSig01<'_>, OnResponseRet>(
                    self.func(self.exports.on_response),
                );
                let call = f.call_async(&mut self.store, (&*ctx, &*req, &*resp, body));
                deadline::by_wall(wall, call).await.map(|(r,)| r.0)
            }
        };
        r.map_err(|e| classify(&step.name, step, &self.store, e))
    }

    /// Swap the call's data with the store's, for the call handle: once
    /// before the call (lends it), once after (takes it back). The
    /// response's headers are moved, its status copied.
    fn swap_call(
        &mut self,
        ctx: &mut CallContext,
        req: &mut RequestHead,
        resp: Option<&mut ResponseHead>,
    ) {
        let call = &mut self.store.data_mut().call;
        std::mem::swap(&mut call.ctx, ctx);
        std::mem::swap(&mut call.head, req);
        if let Some(resp) = resp {
            match call.resp.take() {
                Some(lent) => resp.headers = lent.headers,
                None => {
                    call.resp = Some(ResponseHead {
                        status: resp.status,
                        headers: std::mem::take(&mut resp.headers),
                    })
                }
            }
        }
    }

    /// Put the instance back into its snapshot's state, for the next
    /// request of its step (request isolation): true when that worked and
    /// it may serve again. Never after a memory-cap hit, nor while the
    /// host holds resources of the guest's (a handle the reset would
    /// forget); under its own deadline.
    pub(super) async fn reset(&mut self, step: &Step) -> bool {
        let Some(index) = self.reset else {
            return false;
        };
        let state = self.store.data_mut();
        if state.limiter.exceeded || state.holds_resources() {
            return false;
        }
        state.deadline = deadline::Deadline::new(step.timeout, step.wall_timeout);
        let wall = state.deadline.wall();
        self.store.set_epoch_deadline(1);
        let f = typed::<(), (bool,)>(self.func(index));
        matches!(
            deadline::by_wall(wall, f.call_async(&mut self.store, ())).await,
            Ok((true,))
        )
    }

    /// The `tollgate:policy` version of the instance's plugin.
    pub fn version(&self) -> Version {
        self.exports.version
    }
}

/// A 0.1.0 plugin's policy info in 0.2.0's terms: it always has a request
/// phase.
fn info_from_01(i: v01::tollgate::policy::types::PolicyInfo) -> PolicyInfo {
    let mut phases = Phases::REQUEST;
    if i.wants_response {
        phases |= Phases::RESPONSE;
    }
    PolicyInfo {
        body: i.body,
        phases,
    }
}

/// A 0.1.0 plugin's request decision in 0.2.0's terms: no response
/// headers.
fn decision_from_01(d: v01::tollgate::policy::types::RequestDecision) -> RequestDecision {
    use v01::tollgate::policy::types::RequestDecision as D01;
    match d {
        D01::Continue(e) => RequestDecision::Continue(RequestEdits {
            headers: e.headers,
            response_headers: Vec::new(),
            path: e.path,
            query: e.query,
            body: e.body,
            consumer: e.consumer,
        }),
        D01::Respond(r) => RequestDecision::Respond(r),
    }
}
