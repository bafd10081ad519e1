//! Configured snapshots: a step's plugin with its `configure` already run.
//!
//! Every request gets a fresh instance of every step (see the module docs of
//! [`super`]), and a fresh instance has to be configured before it can serve:
//! the plugin parses its JSON configuration again, allocates its settings and
//! grows its heap, for every step of every request. A snapshot does that once.
//! For each configured step the runtime
//!
//! 1. instruments the plugin with `wasmtime-wizer` (the component gains an
//!    export that reads its core instances' memories and globals),
//! 2. instantiates the instrumented component and calls `configure` with the
//!    step's configuration, under the step's deadline and memory cap,
//! 3. reads the instance's state back and writes a new component whose data
//!    segments and global initialisers *are* that state, and
//! 4. compiles it (through the precompiled cache) and links it once.
//!
//! Requests then instantiate the snapshot and go straight to `on-request`.
//! Isolation is unchanged: the snapshot is a component like any other, each
//! request still gets a fresh instance of it from the pooling allocator
//! (copy-on-write from the snapshot's image), and nothing a request writes
//! reaches the snapshot or another request. What is shared is exactly the
//! state `configure` leaves behind for the step's own configuration, which
//! before was recomputed, identically, by every request. (A plugin whose
//! `configure` seeds a `HashMap` shares that seed across its requests, as
//! any reused-instance host would; the seed is still random per process.)
//!
//! Snapshots are built off the request path, on a thread of their own, once
//! a configuration is loaded: until a step's snapshot is ready (or if it
//! cannot be built, which is logged) its requests configure a fresh instance
//! as before. `[plugins] snapshots = false` in the gateway file turns them
//! off (to compare, see `docs/performance.md`).

use super::{Exports, Plugin, Runtime, Step, StepState};
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;
use wasmtime::component::{ComponentExportIndex, InstancePre, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// A step's configured snapshot, linked and ready to instantiate.
#[derive(Clone)]
pub(super) struct Snapshot {
    pub(super) pre: InstancePre<StepState>,
    pub(super) exports: Exports,
    /// Its `tollgate-reset` export, when the snapshot could have one and
    /// resets are on (see [`super::reset`]).
    pub(super) reset: Option<ComponentExportIndex>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

/// Where a step's snapshot lands once built.
pub(super) type SnapshotCell = Arc<OnceLock<Snapshot>>;

/// Snapshots kept for reuse by later configurations (a reload rebuilds every
/// step; an unchanged one finds its snapshot here). Bounded, because an
/// entry no configuration uses any more still holds its compiled code: past
/// this many the map starts over (the steps serving keep theirs, and a later
/// reload finds the compiled snapshot in the plugin cache on disk).
const MAX_KEPT: usize = 128;

/// The background builder and what it has built.
#[derive(Default)]
pub(super) struct Snapshots {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// (plugin hash, configuration) -> snapshot.
    built: Mutex<HashMap<(String, String), Snapshot>>,
    /// `[plugins] reset = false`: snapshots get no in-guest reset.
    no_reset: AtomicBool,
    /// Snapshots queued and not yet built or given up on (for readiness).
    pending: std::sync::atomic::AtomicUsize,
}

/// A step to snapshot: a clone, whose snapshot cell is the serving step's.
type Job = Step;

impl Runtime {
    /// Build configured snapshots of every step configured from now on, in
    /// the background (see [`self`](crate::policy::snapshot)). `tollgate
    /// check` never calls this; `tollgate run` does.
    pub fn enable_snapshots(self: &Arc<Self>) -> Result<()> {
        let mut queue = self.snapshots.queue.lock().unwrap();
        if queue.is_some() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let weak: Weak<Runtime> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("tollgate-snapshots".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("no runtime for configured snapshots: {e}");
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    let Some(runtime) = weak.upgrade() else { break };
                    rt.block_on(runtime.fill(job));
                    runtime.snapshots.pending.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .context("starting the snapshot builder")?;
        *queue = Some(tx);
        Ok(())
    }

    /// Whether snapshots built from now on get an in-guest reset, so that
    /// `request` isolation reuses instances (see [`super::reset`]); on by
    /// default (`[plugins] reset`).
    pub fn set_resets(&self, on: bool) {
        self.snapshots.no_reset.store(!on, Ordering::Relaxed);
    }

    /// Queue a snapshot of `step`, if snapshots are on.
    pub(super) fn queue_snapshot(&self, step: &Step) {
        let queue = self.snapshots.queue.lock().unwrap();
        let Some(tx) = &*queue else { return };
        if let Some(s) = self.snapshots.built.lock().unwrap().get(&key_of(step)) {
            let _ = step.snapshot.set(s.clone());
            return;
        }
        // Counted before the builder can see it, so it never counts below 0.
        self.snapshots.pending.fetch_add(1, Ordering::AcqRel);
        if tx.send(step.clone()).is_err() {
            self.snapshots.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Configured snapshots queued and not yet settled (built, or given up
    /// on: a step whose snapshot fails serves without one). 0 when
    /// snapshots are off.
    pub fn snapshots_pending(&self) -> usize {
        self.snapshots.pending.load(Ordering::Acquire)
    }

    async fn fill(&self, step: Job) {
        let key = key_of(&step);
        let existing = self.snapshots.built.lock().unwrap().get(&key).cloned();
        let started = Instant::now();
        let snap = match existing {
            Some(s) => s,
            None => match self.build_snapshot(&step).await {
                Ok(s) => {
                    tracing::info!(
                        api = %step.api,
                        step = %step.name,
                        ms = started.elapsed().as_millis() as u64,
                        "configured snapshot ready"
                    );
                    let mut built = self.snapshots.built.lock().unwrap();
                    if built.len() >= MAX_KEPT {
                        built.clear();
                    }
                    built.insert(key, s.clone());
                    s
                }
                Err(e) => {
                    tracing::warn!(
                        api = %step.api,
                        step = %step.name,
                        "no configured snapshot (every request configures its own instance): {e:#}"
                    );
                    return;
                }
            },
        };
        let _ = step.snapshot.set(snap);
    }

    /// Compile `wasm` (a form of `plugin`) through the cache and link it.
    fn link(
        &self,
        wasm: &[u8],
        plugin: &Plugin,
        what: &str,
    ) -> Result<(InstancePre<StepState>, Exports)> {
        let (component, _) = self
            .engine
            .load_component(wasm, &plugin.path)
            .with_context(|| format!("compiling the {what}"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("linking the {what}"))?;
        // The same type check of the policy exports as at load, so that the
        // unchecked typed handles stay sound for this form of the plugin too.
        let exports = Exports::find(self.engine.engine(), &self.linker, &component)
            .with_context(|| format!("the {what}'s policy exports"))?;
        Ok((pre, exports))
    }

    /// Instrument, configure, snapshot, compile and link one step.
    pub(super) async fn build_snapshot(&self, step: &Step) -> Result<Snapshot> {
        let plugin: &Plugin = &step.plugin;
        let wizer = Wizer::new();
        let (cx, instrumented) = wizer
            .instrument_component(&plugin.wasm)
            .map_err(anyhow::Error::from)
            .context("instrumenting the component")?;
        let (pre, exports) = self.link(&instrumented, plugin, "instrumented component")?;
        let scope = super::RequestScope::default();
        let mut inst = self
            .instantiate_from(step, &scope, &pre, exports, false)
            .await
            .map_err(anyhow::Error::from)?;
        match inst.configure_at_load(step).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("configure refused: {}", e.message),
            Err(e) => return Err(e.into()),
        }
        // Reading the state back runs the instrumentation's accessors: give
        // them a deadline of their own.
        let read = step.timeout.max(SNAPSHOT_READ);
        inst.store.data_mut().deadline = super::deadline::Deadline::new(read, read);
        inst.store.set_epoch_deadline(1);
        let mut access = Access {
            store: &mut inst.store,
            instance: inst.instance,
            error: None,
        };
        let bytes = wizer
            .snapshot_component(&cx, &mut access)
            .await
            .map_err(anyhow::Error::from)
            .context("reading the configured state")?;
        if let Some(e) = access.error {
            anyhow::bail!("reading the configured state: {e}");
        }
        drop(inst);
        if !self.snapshots.no_reset.load(Ordering::Relaxed) {
            match super::reset::add_reset(&bytes) {
                Ok(with_reset) => {
                    let (pre, exports) = self.link(&with_reset, plugin, "snapshot")?;
                    let reset = reset_export(self.engine.engine(), pre.component())
                        .context("the snapshot's reset export")?;
                    return Ok(Snapshot {
                        pre,
                        exports,
                        reset: Some(reset),
                    });
                }
                Err(why) => tracing::info!(
                    api = %step.api,
                    step = %step.name,
                    "no in-guest reset ({why}): under request isolation every request gets a fresh instance"
                ),
            }
        }
        let (pre, exports) = self.link(&bytes, plugin, "snapshot")?;
        Ok(Snapshot {
            pre,
            exports,
            reset: None,
        })
    }
}

/// The index of the reset export that [`super::reset::add_reset`] added to
/// `component`, type-checked (which makes calling it through
/// [`super::plugin::typed`] sound).
fn reset_export(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Result<ComponentExportIndex> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    match ty.get_export(engine, super::reset::EXPORT).map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f)) => f
            .typecheck::<(), (bool,)>(&ty.instance_type())
            .map_err(anyhow::Error::from)?,
        _ => anyhow::bail!("no function `{}`", super::reset::EXPORT),
    }
    component
        .get_export_index(None, super::reset::EXPORT)
        .context("its export index")
}

/// Deadline for reading an instance's state back (a few calls that copy
/// its memories out).
const SNAPSHOT_READ: std::time::Duration = std::time::Duration::from_secs(5);

/// What a snapshot is keyed by: the plugin's content and the configuration.
fn key_of(step: &Step) -> (String, String) {
    (step.plugin.hash.clone(), step.config.clone())
}

/// The wizer accessors, called on the configured instance. (wizer's own
/// implementation needs its `wasmtime` feature, which turns on wasmtime's
/// GC, threads and cache in the whole host.) wizer's trait cannot fail, so
/// the first failed call records its error in `error` and every call
/// returns an empty value from then on.
struct Access<'a> {
    store: &'a mut wasmtime::Store<StepState>,
    instance: wasmtime::component::Instance,
    error: Option<String>,
}

impl Access<'_> {
    async fn call<R, O>(
        &mut self,
        iface: &str,
        func: &str,
        out: impl FnOnce(&wasmtime::Store<StepState>, R) -> O,
    ) -> Option<O>
    where
        R: wasmtime::component::Lift + wasmtime::component::ComponentType + Send + Sync + 'static,
    {
        if self.error.is_some() {
            return None;
        }
        let r = async {
            let (_, i) = self
                .instance
                .get_export(&mut *self.store, None, iface)
                .with_context(|| format!("no export `{iface}`"))?;
            let (_, f) = self
                .instance
                .get_export(&mut *self.store, Some(&i), func)
                .with_context(|| format!("no export `{iface}#{func}`"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, f)
                .map_err(anyhow::Error::from)?;
            let (v,) = f
                .call_async(&mut *self.store, ())
                .await
                .map_err(anyhow::Error::from)?;
            Ok::<_, anyhow::Error>(v)
        }
        .await;
        match r {
            Ok(v) => Some(out(self.store, v)),
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let mut contents = Some(contents);
        self.call(instance, func, |store, list: WasmList<u8>| {
            if let Some(c) = contents.take() {
                c(list.as_le_slice(store));
            }
        })
        .await;
        if let Some(c) = contents {
            c(&[]);
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, v: i32| v).await.unwrap_or(0)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, v: i64| v).await.unwrap_or(0)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, v: f32| v.to_bits())
            .await
            .unwrap_or(0)
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, v: f64| v.to_bits())
            .await
            .unwrap_or(0)
    }
}
