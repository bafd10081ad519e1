//! The policy runtime: loads plugins, checks step configurations, and runs
//! one step of a chain on a fresh, sandboxed instance.
//!
//! Isolation model: every request gets a fresh instance per step (from a
//! pre-linked `InstancePre` and the pooling allocator), used for that
//! request's `on-request` and `on-response` and then dropped. The instance
//! comes from the step's configured snapshot once that is built (the plugin
//! with `configure` already run for the step's configuration, see
//! [`snapshot`]); until then it is configured first. Nothing a plugin keeps
//! in memory can reach another request, and a trapped instance is never
//! called again (see `benches/instances.rs` for the cost compared with
//! reusing instances).

mod bindings;
pub mod engine;
pub mod guard;
pub mod host;
pub mod snapshot;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::policy::host::consumers::Directory;
use crate::policy::host::{CallTiming, Capability, Grants, Services};
use bindings::exports::tollgate::policy::policy::Guest as PolicyExports;
pub use bindings::log::Level as LogLevel;
use bindings::service_types::ServiceError;
pub use bindings::types::{
    BodyAccess, CallContext, ConfigError as WitConfigError, Consumer, Header, HeaderOp, PolicyInfo,
    RequestDecision, RequestEdits, RequestHead, Response, ResponseDecision, ResponseEdits,
    ResponseHead,
};
use bindings::{PolicyHost, PolicyHostPre};
pub use engine::{EngineLimits, PolicyEngine};
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, TypedFunc};

/// Most header operations or headers a step may return in one decision.
pub const MAX_HEADERS_OUT: usize = 1000;

/// Why a step failed. Each maps to a status in [`crate::gateway::error`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("step `{step}` trapped: {detail}")]
    Trap { step: String, detail: String },
    #[error("step `{step}` exceeded its deadline of {limit:?}")]
    Timeout { step: String, limit: Duration },
    #[error("step `{step}` exceeded its memory cap of {limit} bytes")]
    Memory { step: String, limit: usize },
    #[error("step `{step}`: no policy instance free (limit reached)")]
    Busy { step: String },
    #[error("step `{step}` returned an invalid result: {detail}")]
    BadOutput { step: String, detail: String },
}

impl PolicyError {
    /// The step that failed.
    pub fn step(&self) -> &str {
        match self {
            PolicyError::Trap { step, .. }
            | PolicyError::Timeout { step, .. }
            | PolicyError::Memory { step, .. }
            | PolicyError::Busy { step }
            | PolicyError::BadOutput { step, .. } => step,
        }
    }
}

/// A rejected step configuration, before the caller adds file and API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepConfigError {
    /// The plugin's own validation said no.
    #[error("{}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Rejected {
        field: Option<String>,
        message: String,
    },
    /// The plugin imports host services the step was not granted.
    #[error("plugin `{plugin}` uses {missing}, which this step was not granted: add them to the step's `grants`")]
    NotGranted { plugin: String, missing: String },
    /// The plugin failed while validating.
    #[error("the plugin failed while checking its configuration: {0}")]
    Failed(String),
}

/// The per-store state a policy instance sees through its imports.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemLimiter,
    api: Arc<str>,
    step: Arc<str>,
    request_id: String,
    /// When the phase running now must be done.
    deadline: Instant,
    services: Arc<Services>,
    grants: Arc<Grants>,
    plugin: Arc<str>,
    scope: RequestScope,
    /// The step's log budget.
    log: Arc<guard::StepLog>,
    /// What the instance wrote to standard error (bounded).
    stderr: guard::GuestStderr,
}

/// What a step instance knows about the request it serves.
#[derive(Clone, Default)]
pub struct RequestScope {
    pub request_id: String,
    /// The consumers of the configuration generation serving the call.
    pub consumers: Arc<Directory>,
    /// Filled in by the server as the call proceeds.
    pub timing: Arc<Mutex<CallTiming>>,
}

impl StepState {
    fn grant(&self, name: &str) -> Result<(), ServiceError> {
        if self.grants.has_named(name) {
            Ok(())
        } else {
            Err(ServiceError::NotGranted(format!(
                "step `{}` was not granted `{name}`",
                self.step
            )))
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemLimiter {
    max: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            return Ok(false);
        }
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

/// Longest log message a plugin may write; longer ones are cut.
const MAX_LOG: usize = 4096;

/// Escape control characters so a plugin cannot forge log lines or send
/// terminal escapes: C0, DEL and C1 controls, the Unicode line and
/// paragraph separators, and the bidirectional formatting characters
/// (which can make a line read differently from what it holds).
pub fn escape_log(message: &str) -> String {
    escape_log_within(message, MAX_LOG)
}

/// [`escape_log`], cut at about `max` bytes.
pub fn escape_log_within(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max));
    for c in message.chars() {
        if out.len() >= max {
            out.push_str("...(truncated)");
            break;
        }
        if c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl bindings::log::Host for StepState {
    fn log(&mut self, level: LogLevel, message: String) {
        if !self.log.admit(&self.request_id) {
            return;
        }
        let msg = escape_log_within(&message, self.log.limits.line_bytes);
        let (api, step, rid) = (&*self.api, &*self.step, &self.request_id);
        match level {
            LogLevel::Trace => {
                tracing::trace!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Debug => {
                tracing::debug!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Info => {
                tracing::info!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Warn => {
                tracing::warn!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
            LogLevel::Error => {
                tracing::error!(target: "tollgate::plugin", api, step, request_id = rid, "{msg}")
            }
        }
    }
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl bindings::clock::Host for StepState {
    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn monotonic_ns(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }
}

impl bindings::types::Host for StepState {}

impl bindings::service_types::Host for StepState {}

fn to_decision(d: crate::policy::host::counters::Decision) -> bindings::counters::Decision {
    bindings::counters::Decision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_ms: d.reset_ms,
        retry_after_ms: d.retry_after_ms,
    }
}

impl bindings::counters::Host for StepState {
    fn check_and_add(
        &mut self,
        key: String,
        limit: u64,
        window_ms: u64,
        algorithm: bindings::counters::Algorithm,
        cost: u64,
    ) -> Result<bindings::counters::Decision, ServiceError> {
        self.grant("counters")?;
        use crate::policy::host::counters::Algorithm as A;
        let alg = match algorithm {
            bindings::counters::Algorithm::SlidingWindow => A::SlidingWindow,
            bindings::counters::Algorithm::TokenBucket => A::TokenBucket,
        };
        let key = self.api_key(&key);
        let now = now_ms();
        if window_ms == crate::policy::host::counters::MAX_WINDOW_MS {
            // A day-long window is counted durably (as a fixed, aligned
            // window), so a restart does not hand out a fresh day.
            let start = now - now % window_ms;
            return self
                .services
                .quotas
                .check_and_add(&key, limit, start, start + window_ms, cost, now)
                .map(to_decision)
                .map_err(ServiceError::Unavailable);
        }
        self.services
            .counters
            .check_and_add(&key, limit, window_ms, alg, cost, now)
            .map(to_decision)
            .map_err(ServiceError::Invalid)
    }

    fn quota_check_and_add(
        &mut self,
        key: String,
        limit: u64,
        period_start_ms: u64,
        period_end_ms: u64,
        cost: u64,
    ) -> Result<bindings::counters::Decision, ServiceError> {
        self.grant("counters")?;
        let key = self.api_key(&key);
        self.services
            .quotas
            .check_and_add(&key, limit, period_start_ms, period_end_ms, cost, now_ms())
            .map(to_decision)
            .map_err(ServiceError::Unavailable)
    }

    fn quota_refund(
        &mut self,
        key: String,
        period_start_ms: u64,
        period_end_ms: u64,
        cost: u64,
    ) -> Result<u64, ServiceError> {
        self.grant("counters")?;
        let key = self.api_key(&key);
        self.services
            .quotas
            .refund(&key, period_start_ms, period_end_ms, cost)
            .map_err(ServiceError::Unavailable)
    }
}

impl bindings::cache::Host for StepState {
    fn get(&mut self, key: String) -> Option<(bindings::cache::CachedResponse, u64)> {
        self.grant("cache").ok()?;
        let k = self.api_key(&key);
        let v = self.services.cache.get(&k)?;
        let left = v.expires.checked_duration_since(Instant::now())?;
        Some((
            bindings::cache::CachedResponse {
                status: v.status,
                headers: v
                    .headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                body: v.body.to_vec(),
            },
            left.as_millis() as u64,
        ))
    }

    fn put(
        &mut self,
        key: String,
        value: bindings::cache::CachedResponse,
        ttl_ms: u64,
    ) -> Result<(), ServiceError> {
        self.grant("cache")?;
        let ttl = Duration::from_millis(ttl_ms);
        if ttl.is_zero() || ttl > crate::policy::host::MAX_CACHE_TTL {
            return Err(ServiceError::Invalid("ttl must be 1 ms to 1 day".into()));
        }
        if key.len() > 4096 {
            return Err(ServiceError::Invalid("key longer than 4096 bytes".into()));
        }
        let k = self.api_key(&key);
        self.services.cache.insert(
            k,
            Arc::new(crate::policy::host::CachedResponse {
                status: value.status,
                headers: value
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: Bytes::from(value.body),
                expires: Instant::now() + ttl,
                ttl,
            }),
        );
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.grant("cache").is_ok() {
            self.services.cache.invalidate(&self.api_key(&key));
        }
    }
}

impl StepState {
    /// `key` in this API's namespace (counters, quotas, cache).
    fn api_key(&self, key: &str) -> String {
        format!("{}\0{key}", self.api)
    }

    fn kv_tree(&self) -> String {
        format!("kv/{}", self.plugin)
    }

    fn store(&self) -> Result<&crate::store::Store, ServiceError> {
        self.services
            .store
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("no store in this process".into()))
    }
}

impl bindings::kv::Host for StepState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let store = self.store()?;
        store
            .get(&self.kv_tree(), key.as_bytes())
            .map_err(|e| ServiceError::Unavailable(e.to_string()))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let limits = self.grants.kv_limits().unwrap_or_default();
        if value.len() as u64 > limits.max_value {
            return Err(ServiceError::Invalid(format!(
                "value of {} bytes is over the limit of {} bytes (max-value of the step's kv grant)",
                value.len(),
                limits.max_value
            )));
        }
        let store = self.store()?;
        store
            .kv_write_durable(
                &self.kv_tree(),
                key.as_bytes(),
                Some(&value),
                limits.max_bytes,
                limits.max_keys,
            )
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .map_err(|why| {
                ServiceError::Invalid(format!(
                    "kv namespace of plugin `{}` is full: {why}; delete keys or raise the limit in the step's kv grant",
                    self.plugin
                ))
            })
    }

    fn delete(&mut self, key: String) -> Result<(), ServiceError> {
        self.grant("kv")?;
        check_kv_key(&key)?;
        let store = self.store()?;
        store
            .kv_write_durable(&self.kv_tree(), key.as_bytes(), None, u64::MAX, u64::MAX)
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?
            .map_err(ServiceError::Invalid)
    }
}

/// Keys are 1 to 512 bytes (the empty key holds the namespace's usage).
fn check_kv_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > 512 {
        return Err(ServiceError::Invalid("key must be 1 to 512 bytes".into()));
    }
    Ok(())
}

fn to_consumer(c: crate::policy::host::consumers::ConsumerInfo) -> Consumer {
    Consumer {
        id: c.id,
        app: c.app,
        key_id: c.key_id,
        plan: c.plan,
        product: c.product,
    }
}

impl bindings::consumers::Host for StepState {
    fn lookup_key(&mut self, api: String, key: String) -> Option<Consumer> {
        self.grant("consumers").ok()?;
        // A step may only ask about its own API.
        if api != *self.api {
            return None;
        }
        // Manifest consumers first, then keys issued through the admin API.
        let now = now_ms();
        self.scope
            .consumers
            .lookup_key(&api, &key, now)
            .or_else(|| {
                self.services.registry.as_ref()?.lookup_key(
                    &api,
                    &key,
                    crate::domain::time::Ts(now),
                )
            })
            .map(to_consumer)
    }

    fn lookup_consumer(&mut self, api: String, id: String) -> Option<Consumer> {
        self.grant("consumers").ok()?;
        if api != *self.api {
            return None;
        }
        self.scope
            .consumers
            .lookup_consumer(&api, &id)
            .or_else(|| self.services.registry.as_ref()?.lookup_principal(&api, &id))
            .map(to_consumer)
    }
}

impl bindings::plans::Host for StepState {
    fn limits(&mut self, plan: String) -> Option<bindings::plans::PlanLimits> {
        use crate::domain::time::Period;
        use bindings::plans as wit;
        let p = self.services.registry.as_ref()?.plan(&plan)?;
        Some(wit::PlanLimits {
            plan: p.id,
            product: p.product,
            rate_limits: p
                .rate_limits
                .iter()
                .map(|l| wit::RateLimit {
                    requests: l.requests,
                    window_ms: l.per.window_ms(),
                })
                .collect(),
            quota: p.quota.map(|q| wit::Quota {
                calls: q.calls,
                period: match q.period {
                    Period::Day => wit::Period::Day,
                    Period::Week => wit::Period::Week,
                    Period::Month => wit::Period::Month,
                },
            }),
        })
    }
}

impl bindings::crypto::Host for StepState {
    fn import_jwk(&mut self, jwk: String) -> Result<u64, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .import_jwk(&jwk)
            .map_err(ServiceError::Invalid)
    }

    fn import_secret(&mut self, secret: Vec<u8>) -> Result<u64, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .import_secret(&secret)
            .map_err(ServiceError::Invalid)
    }

    fn verify(
        &mut self,
        alg: String,
        key: u64,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, ServiceError> {
        self.grant("crypto")?;
        self.services
            .keys
            .verify(&alg, key, &message, &signature)
            .map_err(ServiceError::Invalid)
    }
}

impl bindings::timing::Host for StepState {
    fn now(&mut self) -> bindings::timing::CallTiming {
        let t = self.scope.timing.lock().unwrap_or_else(|p| p.into_inner());
        bindings::timing::CallTiming {
            total_us: t.start.elapsed().as_micros() as u64,
            upstream_us: t.upstream_us,
            steps: if self.grants.has(&Capability::Timing) {
                t.steps.clone()
            } else {
                Vec::new()
            },
        }
    }
}

impl bindings::outcome::Host for StepState {
    fn origin(&mut self) -> Option<bindings::outcome::ResponseOrigin> {
        use crate::policy::host::ResponseOrigin as O;
        use bindings::outcome::ResponseOrigin as Origin;
        let t = self.scope.timing.lock().unwrap_or_else(|p| p.into_inner());
        Some(match t.origin.as_ref()? {
            O::Upstream(status) => Origin::Upstream(*status),
            O::Step(name) => Origin::Step(name.to_string()),
            O::Gateway(status) => Origin::Gateway(*status),
        })
    }
}

impl bindings::sink::Host for StepState {
    fn write_line(&mut self, line: String) {
        if self.grants.has(&Capability::Sink) {
            self.services.sink.write_line(&line);
        }
    }
}

/// Largest body an outbound call may return.
const MAX_OUTBOUND_BODY: usize = 1 << 20;

impl bindings::http_client::Host for StepState {
    async fn send(
        &mut self,
        req: bindings::http_client::OutgoingRequest,
    ) -> wasmtime::Result<Result<bindings::http_client::IncomingResponse, ServiceError>> {
        // The call waits at most until the step's deadline. If the deadline
        // is what stopped it, the step has run out of time: it ends as a
        // timeout (a trap), never as an error the guest could ignore and
        // carry on past its deadline with.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let cut_by_deadline = u64::from(req.timeout_ms) >= left.as_millis() as u64;
        let r = self.send_within(req, left).await;
        if cut_by_deadline && Instant::now() >= self.deadline {
            if let Err(e) = &r {
                tracing::debug!(step = %self.step, "outbound call cut by the deadline: {e:?}");
            }
            return Err(Trap::Interrupt.into());
        }
        Ok(r)
    }
}

impl StepState {
    async fn send_within(
        &mut self,
        req: bindings::http_client::OutgoingRequest,
        left: Duration,
    ) -> Result<bindings::http_client::IncomingResponse, ServiceError> {
        use http_body_util::BodyExt;
        self.grant("http")?;
        let uri: http::Uri = req.url.parse().map_err(|_| {
            ServiceError::Invalid(format!("`{}` is not a URL", escape_log(&req.url)))
        })?;
        // The port the call goes to, written or implied: a grant
        // `http:HOST:443` covers `https://HOST/`.
        let port = match uri.scheme_str() {
            Some("http") => uri.port_u16().unwrap_or(80),
            Some("https") => uri.port_u16().unwrap_or(443),
            _ => {
                return Err(ServiceError::Invalid(
                    "only http:// and https:// URLs are supported for outbound calls".into(),
                ))
            }
        };
        let host = uri.host().unwrap_or_default().to_string();
        if !self.grants.allows_host(&host, Some(port)) {
            return Err(ServiceError::NotGranted(format!(
                "step `{}` was not granted `http:{host}`",
                self.step
            )));
        }
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| ServiceError::Invalid("bad method".into()))?;
        let mut builder = http::Request::builder().method(method).uri(uri);
        for h in &req.headers {
            if is_framing_header(&h.name) {
                continue;
            }
            builder = builder.header(h.name.as_str(), h.value.as_slice());
        }
        let body = http_body_util::Full::new(Bytes::from(req.body.unwrap_or_default()));
        let request = builder
            .body(body)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let timeout = Duration::from_millis(u64::from(req.timeout_ms)).min(left);
        let fut = async {
            let resp = self.services.http.request(request).await.map_err(|e| {
                let why = match crate::net::tls_client::tls_failure(&e) {
                    Some(tls) => format!("TLS with {host}: {tls}"),
                    None => crate::net::error_chain(&e),
                };
                tracing::debug!(step = %self.step, "outbound call failed: {why}");
                ServiceError::Unavailable(why)
            })?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_OUTBOUND_BODY)
                .collect()
                .await
                .map_err(|e| ServiceError::Unavailable(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(bindings::http_client::IncomingResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.as_str().to_string(),
                        value: v.as_bytes().to_vec(),
                    })
                    .collect(),
                body: body.to_vec(),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ServiceError::Unavailable(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }
}

/// A loaded plugin: compiled, linked, ready to instantiate.
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// The grants its imports need (`counters`, `http`, ...).
    pub needs: Vec<&'static str>,
    pre: PolicyHostPre<StepState>,
    exports: Exports,
    /// The component's bytes, for configured snapshots.
    wasm: Arc<[u8]>,
}

/// Where a plugin's `policy` functions are, found once at load.
#[derive(Clone, Copy)]
struct Exports {
    configure: ComponentExportIndex,
    on_request: ComponentExportIndex,
    on_response: ComponentExportIndex,
}

/// The policy interface this host serves.
const POLICY_IFACE: &str = "tollgate:policy/policy@0.1.0";

impl Exports {
    /// Find the `policy` functions of `component` and type-check each
    /// against the signature this host calls it with, once per component.
    ///
    /// This check is what makes [`typed`] sound. It is needed: the
    /// generated `PolicyHostPre::new` only looks up the interface's export
    /// indices and checks no types, so a plugin built from a drifted WIT
    /// with the same version string (a field removed from `call-context`)
    /// used to load and then panic inside the host on every request.
    fn find(engine: &wasmtime::Engine, component: &Component) -> Result<Exports> {
        use wasmtime::component::types::{ComponentFunc, ComponentItem};
        let ty = component.component_type();
        let iface = match ty.get_export(engine, POLICY_IFACE).map(|e| e.ty) {
            Some(ComponentItem::ComponentInstance(i)) => i,
            Some(_) => anyhow::bail!("it exports `{POLICY_IFACE}`, but not as an interface"),
            None => anyhow::bail!("it does not export `{POLICY_IFACE}`"),
        };
        let cx = ty.instance_type();
        type Check = fn(
            &ComponentFunc,
            &wasmtime::component::__internal::InstanceType<'_>,
        ) -> wasmtime::Result<()>;
        let checks: [(&str, Check); 3] = [
            ("configure", |f, cx| {
                f.typecheck::<ConfigureSig<'_>, ConfigureRet>(cx)
            }),
            ("on-request", |f, cx| {
                f.typecheck::<OnRequestSig<'_>, OnRequestRet>(cx)
            }),
            ("on-response", |f, cx| {
                f.typecheck::<OnResponseSig<'_>, OnResponseRet>(cx)
            }),
        ];
        let drifted = || {
            format!(
                "it was built against a different `{POLICY_IFACE}` than this host (the same version, other types): rebuild it with this gateway's WIT or SDK"
            )
        };
        for (name, check) in checks {
            match iface.get_export(engine, name).map(|e| e.ty) {
                Some(ComponentItem::ComponentFunc(f)) => check(&f, &cx)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!("`{name}` does not have the signature this host calls")
                    })
                    .with_context(drifted)?,
                Some(_) => {
                    Err(anyhow::anyhow!("`{name}` is not a function")).with_context(drifted)?
                }
                None => Err(anyhow::anyhow!("`{POLICY_IFACE}` has no function `{name}`"))
                    .with_context(drifted)?,
            }
        }
        let index = component
            .get_export_index(None, POLICY_IFACE)
            .context("the policy interface's export index")?;
        let f = |name| {
            component
                .get_export_index(Some(&index), name)
                .with_context(|| format!("the export index of `{name}`"))
        };
        Ok(Exports {
            configure: f("configure")?,
            on_request: f("on-request")?,
            on_response: f("on-response")?,
        })
    }
}

type ConfigureSig<'a> = (&'a str,);
type ConfigureRet = (Result<PolicyInfo, WitConfigError>,);
type OnRequestSig<'a> = (&'a CallContext, &'a RequestHead, Option<&'a [u8]>);
type OnRequestRet = (RequestDecision,);
type OnResponseSig<'a> = (
    &'a CallContext,
    &'a RequestHead,
    &'a ResponseHead,
    Option<&'a [u8]>,
);
type OnResponseRet = (ResponseDecision,);

/// The signatures above are the generated bindings' own: this does not
/// compile if the WIT and they ever differ.
#[allow(dead_code)]
fn signatures_match(g: &PolicyExports) {
    let _: TypedFunc<ConfigureSig<'_>, ConfigureRet> = g.func_configure();
    let _: TypedFunc<OnRequestSig<'_>, OnRequestRet> = g.func_on_request();
    let _: TypedFunc<OnResponseSig<'_>, OnResponseRet> = g.func_on_response();
}

/// A typed handle to an export without checking its type again.
///
/// wasmtime's generated `instantiate` looks up and type-checks every
/// export of every new instance (~8% of a step's instantiation here);
/// every instance here comes from a component whose exports
/// [`Exports::find`] type-checked once at load.
fn typed<P, R>(func: Func) -> TypedFunc<P, R>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    // SAFETY: `func` is an export of an instance of a component whose
    // `policy` functions `Exports::find` type-checked at load against these
    // signatures (wasmtime's own check, the one `Func::typed` does per
    // instance), and `signatures_match` proves they are the generated
    // bindings' own. Every `Exports` comes from `Exports::find`.
    #[allow(unsafe_code)]
    unsafe {
        TypedFunc::new_unchecked(func)
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish()
    }
}

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
    pub memory: usize,
    pub fail_open: bool,
    pub grants: Arc<Grants>,
    /// The configured snapshot requests instantiate, once built.
    snapshot: snapshot::SnapshotCell,
    /// How much the step's plugin may log (shared by the step's clones).
    log: Arc<guard::StepLog>,
}

impl Step {
    /// This step with other log limits (the default ones until then).
    pub fn with_log_limits(mut self, limits: guard::LogLimits) -> Step {
        self.log = Arc::new(guard::StepLog::new(
            self.api.clone(),
            self.name.clone(),
            limits,
        ));
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
    engine: PolicyEngine,
    linker: Linker<StepState>,
    plugins: Mutex<HashMap<String, Arc<Plugin>>>,
    live: Arc<AtomicUsize>,
    max_instances: usize,
    services: Arc<Services>,
    snapshots: snapshot::Snapshots,
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
        PolicyHost::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        Ok(Runtime {
            engine,
            linker,
            plugins: Mutex::new(HashMap::new()),
            live: Arc::new(AtomicUsize::new(0)),
            max_instances,
            services,
            snapshots: Default::default(),
        })
    }

    /// Instances alive right now (for tests and metrics).
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Acquire)
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
        let exports = Exports::find(self.engine.engine(), &component)
            .with_context(|| format!("plugin `{name}` ({})", path.display()))?;
        let pre = PolicyHostPre::new(pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin `{name}` ({}) does not export {POLICY_IFACE}",
                    path.display()
                )
            })?;
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
                wants_response: true,
            },
            timeout,
            memory,
            fail_open,
            grants: Arc::new(grants),
            snapshot: Default::default(),
            log,
        };
        let outcome = block_on(async {
            let mut inst = self
                .instantiate_unconfigured(&step, &RequestScope::default())
                .await
                .map_err(|e| StepConfigError::Failed(e.to_string()))?;
            Ok::<_, StepConfigError>(inst.configure(&step).await)
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
        self.instantiate_from(step, scope, plugin.pre.instance_pre(), plugin.exports, true)
            .await
    }

    /// A new instance of `pre` (the plugin, its instrumented form, or a
    /// configured snapshot) in a store of its own for `step`.
    async fn instantiate_from(
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
        if slot
            .as_ref()
            .is_some_and(|(taken, _)| *taken >= self.max_instances)
        {
            return Err(PolicyError::Busy {
                step: step.name.to_string(),
            });
        }
        let stderr = guard::GuestStderr::default();
        let state = StepState {
            wasi: WasiCtxBuilder::new().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            limiter: MemLimiter {
                max: step.memory,
                exceeded: false,
            },
            api: step.api.clone(),
            step: step.name.clone(),
            request_id: scope.request_id.clone(),
            deadline: Instant::now() + step.timeout,
            services: self.services.clone(),
            grants: step.grants.clone(),
            plugin: step.plugin.name.as_str().into(),
            scope: scope.clone(),
            log: step.log.clone(),
            stderr,
        };
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // At every epoch tick: past the deadline, trap; otherwise yield to
        // the executor so a busy guest never holds a worker thread. The
        // yield is tokio's own: it lets the worker poll for I/O before the
        // guest runs again. (wasmtime's plain `Yield` wakes the task at
        // once, so with busy guests on every worker the network was only
        // polled every 61 scheduler ticks, i.e. every ~60 ms of guest time,
        // and other calls' p99 went from ~1 ms to 75-170 ms.)
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(1);
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
        })
    }

    /// A fresh instance for one request, configured and ready for its
    /// phases. The deadline covers `configure` and `on-request`.
    pub async fn instantiate(
        &self,
        step: &Step,
        scope: &RequestScope,
    ) -> Result<StepInstance, PolicyError> {
        if let Some(snap) = step.snapshot.get() {
            // Configured already: the snapshot is the state `configure`
            // left, and the deadline covers `on-request` alone.
            return self
                .instantiate_from(step, scope, &snap.pre, snap.exports, true)
                .await;
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
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        return PolicyError::Timeout {
            step: step_s,
            limit: step.timeout,
        };
    }
    // The trap itself, not wasmtime's backtrace of unnamed frames (which
    // filled the line and cut the message off); the backtrace at debug.
    tracing::debug!(api = %step.api, step = step_name, "step failed: {e:?}");
    let mut detail = match e.downcast_ref::<Trap>() {
        Some(t) => format!("wasm trap: {t}"),
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

/// One instance of one step for one request.
pub struct StepInstance {
    store: Store<StepState>,
    instance: Instance,
    exports: Exports,
    _slot: Option<Slot>,
}

impl StepInstance {
    fn func(&mut self, index: ComponentExportIndex) -> Func {
        self.instance
            .get_func(&mut self.store, index)
            .expect("found in this component at load")
    }

    async fn configure(
        &mut self,
        step: &Step,
    ) -> Result<Result<PolicyInfo, WitConfigError>, PolicyError> {
        let f = typed::<ConfigureSig<'_>, ConfigureRet>(self.func(self.exports.configure));
        let r = f.call_async(&mut self.store, (&step.config,)).await;
        r.map(|(r,)| r)
            .map_err(|e| classify(&step.name, step, &self.store, e))
    }

    /// Run `on-request`. The caller must not call this twice.
    pub async fn on_request(
        &mut self,
        step: &Step,
        ctx: &CallContext,
        req: &RequestHead,
        body: Option<&[u8]>,
    ) -> Result<RequestDecision, PolicyError> {
        let f = typed::<OnRequestSig<'_>, OnRequestRet>(self.func(self.exports.on_request));
        let r = f.call_async(&mut self.store, (ctx, req, body)).await;
        r.map(|(r,)| r)
            .map_err(|e| classify(&step.name, step, &self.store, e))
    }

    /// Run `on-response` with a fresh deadline.
    pub async fn on_response(
        &mut self,
        step: &Step,
        ctx: &CallContext,
        req: &RequestHead,
        resp: &ResponseHead,
        body: Option<&[u8]>,
    ) -> Result<ResponseDecision, PolicyError> {
        self.store.data_mut().deadline = Instant::now() + step.timeout;
        self.store.set_epoch_deadline(1);
        let f = typed::<OnResponseSig<'_>, OnResponseRet>(self.func(self.exports.on_response));
        let r = f.call_async(&mut self.store, (ctx, req, resp, body)).await;
        r.map(|(r,)| r)
            .map_err(|e| classify(&step.name, step, &self.store, e))
    }
}

// ---------------------------------------------------------------------------
// Applying a step's decisions, with validation of everything a plugin says.

/// Headers that frame the message or the connection: a plugin may not set
/// them (the host computes them), or the gateway could be made to smuggle.
pub fn is_framing_header(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

fn check_header(step: &str, name: &str, value: &[u8]) -> Result<(), PolicyError> {
    let bad = |detail: String| PolicyError::BadOutput {
        step: step.to_string(),
        detail,
    };
    let hn = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad(format!("`{}` is not a valid header name", escape_log(name))))?;
    if hn.as_str() != name {
        return Err(bad(format!("header name `{name}` must be lower-case")));
    }
    if is_framing_header(name) {
        return Err(bad(format!(
            "header `{name}` frames the message and is set by the gateway"
        )));
    }
    http::HeaderValue::from_bytes(value).map_err(|_| {
        bad(format!(
            "the value of header `{name}` contains CR, LF or NUL"
        ))
    })?;
    Ok(())
}

/// Apply header operations in order.
pub fn apply_header_ops(
    step: &str,
    headers: &mut Vec<Header>,
    ops: Vec<HeaderOp>,
) -> Result<(), PolicyError> {
    if ops.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!(
                "{} header operations (at most {MAX_HEADERS_OUT})",
                ops.len()
            ),
        });
    }
    for op in ops {
        match op {
            HeaderOp::Set(h) => {
                check_header(step, &h.name, &h.value)?;
                headers.retain(|x| x.name != h.name);
                headers.push(h);
            }
            HeaderOp::Append(h) => {
                check_header(step, &h.name, &h.value)?;
                headers.push(h);
            }
            HeaderOp::Remove(name) => {
                let lower = name.to_ascii_lowercase();
                if is_framing_header(&lower) {
                    return Err(PolicyError::BadOutput {
                        step: step.to_string(),
                        detail: format!(
                            "header `{}` frames the message and is set by the gateway",
                            escape_log(&lower)
                        ),
                    });
                }
                headers.retain(|x| x.name != lower);
            }
        }
    }
    if headers.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("{} headers (at most {MAX_HEADERS_OUT})", headers.len()),
        });
    }
    Ok(())
}

/// Check a complete response a step made.
pub fn check_response(step: &str, resp: &Response) -> Result<(), PolicyError> {
    if !(200..=599).contains(&resp.status) {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("status {} (must be 200 to 599)", resp.status),
        });
    }
    if resp.headers.len() > MAX_HEADERS_OUT {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!("{} headers (at most {MAX_HEADERS_OUT})", resp.headers.len()),
        });
    }
    for h in &resp.headers {
        check_header(step, &h.name, &h.value)?;
    }
    Ok(())
}

/// Check a path a step wants to send upstream.
pub fn check_path(step: &str, path: &str) -> Result<String, PolicyError> {
    crate::route::normalize_path(path).map_err(|e| PolicyError::BadOutput {
        step: step.to_string(),
        detail: format!("path `{}`: {e}", escape_log(path)),
    })
}

/// Check a query a step wants to send upstream: only the bytes a request
/// target's query may carry as they are (so `"`, `<` and `>` too must be
/// percent-encoded; found by the `wit_boundary` fuzz target, they made the
/// upstream URI fail to build, a 500 instead of the step's fault).
pub fn check_query(step: &str, query: &str) -> Result<(), PolicyError> {
    if query
        .bytes()
        .any(|b| b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'"' | b'<' | b'>'))
    {
        return Err(PolicyError::BadOutput {
            step: step.to_string(),
            detail: format!(
                "query `{}` has characters that must be percent-encoded",
                escape_log(query)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_escaping() {
        assert_eq!(escape_log("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(
            escape_log("a\r\u{85}\u{2028}\u{202e}b\u{2066}"),
            "a\\r\\u{85}\\u{2028}\\u{202e}b\\u{2066}"
        );
        let long = "x".repeat(10_000);
        assert!(escape_log(&long).len() < 4200);
    }

    #[test]
    fn header_ops() {
        let mut hs = vec![
            Header {
                name: "a".into(),
                value: b"1".to_vec(),
            },
            Header {
                name: "a".into(),
                value: b"2".to_vec(),
            },
        ];
        apply_header_ops(
            "s",
            &mut hs,
            vec![
                HeaderOp::Append(Header {
                    name: "b".into(),
                    value: b"x".to_vec(),
                }),
                HeaderOp::Set(Header {
                    name: "a".into(),
                    value: b"3".to_vec(),
                }),
                HeaderOp::Remove("B".into()),
            ],
        )
        .unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].value, b"3");
        for bad in [
            HeaderOp::Set(Header {
                name: "Content-Length".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "content-length".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "x".into(),
                value: b"a\r\nb".to_vec(),
            }),
            HeaderOp::Set(Header {
                name: "bad name".into(),
                value: b"1".to_vec(),
            }),
            HeaderOp::Remove("Transfer-Encoding".into()),
        ] {
            assert!(apply_header_ops("s", &mut hs, vec![bad]).is_err());
        }
    }
}
