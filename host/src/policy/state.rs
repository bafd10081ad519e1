//! The per-step store data: what a policy instance's imports see
//! ([`StepState`]: the step, its grants, the host services, the request it
//! serves) and its memory limiter. Each WIT interface's `Host` impl for it
//! is in [`super::host`], one file per interface.

use super::bindings::service_types::ServiceError;
use super::deadline::Deadline;
use super::guard;
use super::host::{CallTiming, Grants, Services};
use super::Step;
use crate::domain::consumer::{ConsumerSource, Sources};
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The per-store state a policy instance sees through its imports.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemLimiter,
    pub(super) api: Arc<str>,
    pub(super) step: Arc<str>,
    pub(super) request_id: String,
    /// The limits of the phase running now.
    pub(super) deadline: Deadline,
    pub(super) services: Arc<Services>,
    pub(super) grants: Arc<Grants>,
    pub(super) plugin: Arc<str>,
    pub(super) scope: RequestScope,
    /// The step's log budget.
    pub(super) log: Arc<guard::StepLog>,
    /// What the instance wrote to standard error (bounded).
    pub(super) stderr: guard::GuestStderr,
    /// The call a 0.2.0 phase handles, while it runs.
    pub(super) call: super::host::calls::CallData,
}

/// What a step instance knows about the request it serves.
#[derive(Clone)]
pub struct RequestScope {
    pub request_id: String,
    /// Where the `consumers` and `plans` interfaces look callers and plans
    /// up: the configuration generation's (its manifests' consumers, then
    /// the control plane's, in the order the loader put them).
    pub consumers: Arc<dyn ConsumerSource>,
    /// Filled in by the server as the call proceeds.
    pub timing: Arc<Mutex<CallTiming>>,
}

impl Default for RequestScope {
    /// No request id, no consumers, fresh timing.
    fn default() -> Self {
        RequestScope {
            request_id: String::new(),
            consumers: Arc::new(Sources::default()),
            timing: Default::default(),
        }
    }
}

impl StepState {
    /// The state of a new instance of `step` serving `scope`: no files,
    /// no environment, standard error kept (bounded), the step's memory
    /// cap, and the step's deadlines from now.
    pub(super) fn new(step: &Step, scope: &RequestScope, services: Arc<Services>) -> StepState {
        let stderr = guard::GuestStderr::default();
        StepState {
            wasi: WasiCtxBuilder::new().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            limiter: MemLimiter {
                max: step.memory,
                exceeded: false,
                grown: 0,
            },
            api: step.api.clone(),
            step: step.name.clone(),
            request_id: scope.request_id.clone(),
            deadline: Deadline::new(step.timeout, step.wall_timeout),
            services,
            grants: step.grants.clone(),
            plugin: step.plugin.name.as_str().into(),
            scope: scope.clone(),
            log: step.log.clone(),
            stderr,
            call: Default::default(),
        }
    }

    /// The same state, made ready for another request of `step` (worker
    /// isolation, see [`super::reuse`]): its request id and scope, a fresh
    /// deadline, an empty standard-error capture, the step's log budget.
    /// What the guest keeps in its own memory stays: that is the level.
    pub(super) fn reuse_for(&mut self, step: &Step, scope: &RequestScope) {
        self.request_id.clone_from(&scope.request_id);
        self.scope = scope.clone();
        self.deadline = Deadline::new(step.timeout, step.wall_timeout);
        self.stderr.clear();
        self.log = step.log.clone();
    }

    /// Whether the host's resource table holds anything of the guest's.
    pub(super) fn holds_resources(&self) -> bool {
        !self.table.is_empty()
    }

    /// Ok when the step was granted the service `name`.
    pub(super) fn grant(&self, name: &str) -> Result<(), ServiceError> {
        if self.grants.has_named(name) {
            Ok(())
        } else {
            Err(ServiceError::NotGranted(format!(
                "step `{}` was not granted `{name}`",
                self.step
            )))
        }
    }

    /// `key` in this API's namespace (counters, quotas, cache).
    pub(super) fn api_key(&self, key: &str) -> String {
        format!("{}\0{key}", self.api)
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps a store's linear memory at the step's `memory` and remembers when a
/// growth was refused (so the failure reads as a memory error, not a trap).
pub(super) struct MemLimiter {
    pub(super) max: usize,
    pub(super) exceeded: bool,
    /// Bytes of linear memory allocated so far, over all the instance's
    /// memories (what it was created with, then every growth).
    pub(super) grown: usize,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            return Ok(false);
        }
        self.grown += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
