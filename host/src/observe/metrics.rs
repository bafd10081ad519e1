//! Prometheus metrics: what `GET /metrics` on the admin listener shows
//! (docs/metrics.md lists every name, type and label).
//!
//! Built on `prometheus-client` rather than the `metrics` facade with its
//! Prometheus exporter:
//!
//! - its metrics are plain values (a counter is one `AtomicU64`), so the
//!   request path resolves the cells of a route or a step once (kept in
//!   the API's and the step's `OnceLock`s) and from then on only does
//!   atomic adds: no registry lookup, no key hashing, no lock per call;
//! - label sets are typed structs, so a label cannot be misspelt or
//!   forgotten at one call site;
//! - it encodes the OpenMetrics text format Prometheus scrapes, with no
//!   global recorder to install and no upkeep task.
//!
//! Its own histogram takes a mutex per observation, so latencies go into
//! [`Hist`], fixed buckets of atomic counts; and counters the serving
//! threads all add to are [`Tally`](super::cells::Tally)s, sharded per CPU
//! ([`super::cells`]).
//!
//! One [`Metrics`] per process ([`global`]): the upstream client, the
//! policy runtime, the access-log sink and the control plane count into it
//! without being handed it. Counts live as long as the process: a reload
//! keeps them (the cells are looked up again by their labels).
//!
//! Label cardinality is bounded by the configuration (APIs, routes,
//! steps, listeners) and by fixed classes (method, status class, decision,
//! failure kind); consumer labels only with `[metrics] consumer-labels`,
//! capped by `max-consumers` (the rest count as `_other`).

use super::cells::{Hist, Tally as Counter};
use super::CallRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

/// `[metrics]` in the gateway file.
///
/// ```toml
/// [metrics]
/// enabled = true           # default; false stops counting calls
/// public = false           # default; true serves GET /metrics without a token
/// consumer-labels = true   # tollgate_consumer_requests_total; default false
/// max-consumers = 200      # distinct consumers labelled; the rest `_other`
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub consumer_labels: bool,
    #[serde(default = "default_max_consumers")]
    pub max_consumers: usize,
    /// Serve `GET /metrics` without an admin token (default: a token of
    /// any role is needed).
    #[serde(default)]
    pub public: bool,
}

fn yes() -> bool {
    true
}

fn default_max_consumers() -> usize {
    100
}

/// The most consumers `max-consumers` may label.
pub const MAX_CONSUMER_LABELS: usize = 10_000;

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            enabled: true,
            consumer_labels: false,
            max_consumers: default_max_consumers(),
            public: false,
        }
    }
}

/// What is wrong with a `[metrics]` section, if anything.
pub fn check_spec(spec: &MetricsSpec) -> Option<String> {
    if spec.max_consumers == 0 || spec.max_consumers > MAX_CONSUMER_LABELS {
        return Some(format!(
            "metrics.max-consumers must be 1 to {MAX_CONSUMER_LABELS} (got {})",
            spec.max_consumers
        ));
    }
    None
}

/// Buckets of whole-call latencies, seconds.
const CALL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of one step phase's latency, seconds: most take microseconds.
const STEP_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

fn calls_hist() -> Hist {
    Hist::new(CALL_BUCKETS)
}

fn steps_hist() -> Hist {
    Hist::new(STEP_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    api: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: String,
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    api: String,
    consumer: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    api: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    api: String,
    step: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    api: String,
    step: String,
    phase: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    api: String,
    step: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    api: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedisOpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RedisFailureLabels {
    op: &'static str,
    kind: &'static str,
}

/// Method classes (`method` label).
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

fn method_class(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::PATCH => 4,
        http::Method::DELETE => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Status classes (`status` label).
const STATUSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The index in [`STATUSES`] of `status`.
pub fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// The `status` label of `status`.
pub fn status_label(status: u16) -> &'static str {
    STATUSES[status_class(status)]
}

/// The process's metrics.
pub struct Metrics {
    enabled: AtomicBool,
    consumer_labels: AtomicBool,
    max_consumers: AtomicUsize,
    consumers_seen: Mutex<HashSet<(String, String)>>,
    /// The cells handed out, by API and route name.
    route_cells: Mutex<HashMap<(String, String), &'static RouteCells>>,
    /// The cells handed out, by listener name.
    listener_cells: Mutex<HashMap<String, &'static ListenerCells>>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    listener_requests: Family<ListenerLabels, Counter>,
    consumer_requests: Family<ConsumerLabels, Counter>,
    request_seconds: Family<RouteLabels, Hist, fn() -> Hist>,
    upstream_seconds: Family<RouteLabels, Hist, fn() -> Hist>,
    gateway_seconds: Family<RouteLabels, Hist, fn() -> Hist>,
    request_bytes: Family<RouteLabels, Counter>,
    response_bytes: Family<RouteLabels, Counter>,
    aborted: Family<RouteLabels, Counter>,
    step_calls: Family<PhaseLabels, Counter>,
    step_outcomes: Family<OutcomeLabels, Counter>,
    step_seconds: Family<PhaseLabels, Hist, fn() -> Hist>,
    step_fail_open: Family<PhaseLabels, Counter>,
    step_instances: Family<SourceLabels, Counter>,
    step_memory: Family<StepLabels, Gauge>,
    step_not_applicable: Family<StepLabels, Counter>,
    upstream_retries: Family<ApiLabels, Counter>,
    upstream_failures: Family<TargetLabels, Counter>,
    breaker_open: Family<TargetLabels, Gauge>,
    conns_opened: Family<ApiLabels, Counter>,
    conns_open: Family<ApiLabels, Gauge>,
    breaker_trips: Family<TargetLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
    admin_requests: Family<AdminLabels, Counter>,
    dropped: Family<KindLabels, Counter>,
    instances: Family<KindLabels, Gauge>,
    analytics_records: Counter,
    redis_seconds: Family<RedisOpLabels, Hist, fn() -> Hist>,
    redis_failures: Family<RedisFailureLabels, Counter>,
    redis_breaker_open: Gauge,
    redis_breaker_trips: Counter,
    redis_fallbacks: Family<KindLabels, Counter>,
    ws_open: Family<ApiLabels, Gauge>,
    ws_closed: Family<WsClosedLabels, Counter>,
    ws_bytes: Family<WsDirectionLabels, Counter>,
    ws_messages: Family<WsDirectionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WsClosedLabels {
    api: String,
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WsDirectionLabels {
    api: String,
    direction: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

macro_rules! reg {
    ($r:ident, $name:literal, $help:literal, $m:expr) => {
        $r.register($name, $help, $m.clone())
    };
}

impl Metrics {
    fn new() -> Metrics {
        let calls = || Family::new_with_constructor(calls_hist as fn() -> Hist);
        let steps = || Family::new_with_constructor(steps_hist as fn() -> Hist);
        let m = Metrics {
            enabled: AtomicBool::new(true),
            consumer_labels: AtomicBool::new(false),
            max_consumers: AtomicUsize::new(default_max_consumers()),
            consumers_seen: Mutex::new(HashSet::new()),
            route_cells: Mutex::default(),
            listener_cells: Mutex::default(),
            registry: Registry::default(),
            requests: Family::default(),
            listener_requests: Family::default(),
            consumer_requests: Family::default(),
            request_seconds: calls(),
            upstream_seconds: calls(),
            gateway_seconds: calls(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            aborted: Family::default(),
            step_calls: Family::default(),
            step_outcomes: Family::default(),
            step_seconds: steps(),
            step_fail_open: Family::default(),
            step_instances: Family::default(),
            step_memory: Family::default(),
            step_not_applicable: Family::default(),
            upstream_retries: Family::default(),
            upstream_failures: Family::default(),
            breaker_open: Family::default(),
            conns_opened: Family::default(),
            conns_open: Family::default(),
            breaker_trips: Family::default(),
            reloads: Family::default(),
            generation: Gauge::default(),
            admin_requests: Family::default(),
            dropped: Family::default(),
            instances: Family::default(),
            analytics_records: Counter::default(),
            redis_seconds: Family::new_with_constructor(steps_hist as fn() -> Hist),
            redis_failures: Family::default(),
            redis_breaker_open: Gauge::default(),
            redis_breaker_trips: Counter::default(),
            redis_fallbacks: Family::default(),
            ws_open: Family::default(),
            ws_closed: Family::default(),
            ws_bytes: Family::default(),
            ws_messages: Family::default(),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        reg!(r, "tollgate_requests", "Calls answered, by API, route, method class and status class (unrouted calls have api=\"\")", self.requests);
        reg!(
            r,
            "tollgate_listener_requests",
            "Calls answered, by listener and status class",
            self.listener_requests
        );
        reg!(r, "tollgate_consumer_requests", "Calls answered, by API, consumer and status class ([metrics] consumer-labels; beyond max-consumers: consumer=\"_other\")", self.consumer_requests);
        reg!(
            r,
            "tollgate_request_duration_seconds",
            "Arrival to the last response byte sent",
            self.request_seconds
        );
        reg!(
            r,
            "tollgate_upstream_duration_seconds",
            "Waiting on the upstream (its response head), for calls that reached it",
            self.upstream_seconds
        );
        reg!(
            r,
            "tollgate_gateway_duration_seconds",
            "Time the gateway added: the whole call minus the upstream's share",
            self.gateway_seconds
        );
        reg!(
            r,
            "tollgate_request_body_bytes",
            "Request body bytes read from clients",
            self.request_bytes
        );
        reg!(
            r,
            "tollgate_response_body_bytes",
            "Response body bytes sent to clients",
            self.response_bytes
        );
        reg!(
            r,
            "tollgate_requests_aborted",
            "Calls whose client went away before the response body was sent whole",
            self.aborted
        );
        reg!(
            r,
            "tollgate_step_calls",
            "Policy step phases run",
            self.step_calls
        );
        reg!(r, "tollgate_step_outcomes", "How step phases ended: continue, respond_2xx..respond_5xx, or a failure (trap, timeout, wall_timeout, memory, busy, bad_output, quarantined, saturated)", self.step_outcomes);
        reg!(
            r,
            "tollgate_step_duration_seconds",
            "One step phase, from entering its gate to its return",
            self.step_seconds
        );
        reg!(
            r,
            "tollgate_step_fail_open_skips",
            "Step phases that failed and were skipped (fail-open)",
            self.step_fail_open
        );
        reg!(r, "tollgate_step_instances", "Instances a step's calls got: fresh (new, from its snapshot when it has one), reset (request isolation: reset in place to the snapshot) or warm (worker isolation: kept by the worker)", self.step_instances);
        reg!(
            r,
            "tollgate_step_condition_skips",
            "Calls a step skipped because its condition (`when`) was false: no instance was taken",
            self.step_not_applicable
        );
        reg!(
            r,
            "tollgate_step_memory_high_water_bytes",
            "Largest linear memory an instance of the step had grown to when it was returned",
            self.step_memory
        );
        reg!(
            r,
            "tollgate_upstream_retries",
            "Upstream attempts after the first",
            self.upstream_retries
        );
        reg!(
            r,
            "tollgate_upstream_failures",
            "Upstream attempts that failed (connect, timeout, bad response), by target",
            self.upstream_failures
        );
        reg!(
            r,
            "tollgate_upstream_breaker_open",
            "1 while a target's circuit breaker is open",
            self.breaker_open
        );
        reg!(
            r,
            "tollgate_upstream_connections_opened",
            "Connections the API's upstream pools opened",
            self.conns_opened
        );
        reg!(
            r,
            "tollgate_upstream_connections",
            "Upstream connections open right now (in use or idle in a pool)",
            self.conns_open
        );
        reg!(
            r,
            "tollgate_upstream_breaker_trips",
            "Times a target's circuit breaker opened",
            self.breaker_trips
        );
        reg!(
            r,
            "tollgate_reloads",
            "Configuration reloads: ok or rejected",
            self.reloads
        );
        reg!(
            r,
            "tollgate_config_generation",
            "The configuration generation serving (1 at start, +1 per swap)",
            self.generation
        );
        reg!(
            r,
            "tollgate_admin_requests",
            "Admin API calls (probes and /metrics included)",
            self.admin_requests
        );
        reg!(r, "tollgate_dropped", "Lines and records dropped because a bounded queue was full (access_log, analytics, record)", self.dropped);
        reg!(
            r,
            "tollgate_policy_instances",
            "Policy instances right now: live, idle (kept warm), in_use",
            self.instances
        );
        reg!(
            r,
            "tollgate_analytics_records",
            "Calls queued for the analytics store",
            self.analytics_records
        );
        reg!(r, "tollgate_redis_duration_seconds", "Cluster mode: one call to Redis (a script or a cache command), by op (rate_limit, quota, quota_refund, cache_get, cache_put, cache_delete), answered or not", self.redis_seconds);
        reg!(r, "tollgate_redis_failures", "Cluster mode: calls to Redis that did not answer, by op and kind (error, timeout, breaker_open, not_connected)", self.redis_failures);
        reg!(
            r,
            "tollgate_redis_breaker_open",
            "Cluster mode: 1 while the Redis circuit breaker is open (no call is sent)",
            self.redis_breaker_open
        );
        reg!(
            r,
            "tollgate_redis_breaker_trips",
            "Cluster mode: times the Redis circuit breaker opened",
            self.redis_breaker_trips
        );
        reg!(r, "tollgate_redis_fallbacks", "Cluster mode: checks answered without Redis, by kind (rate_limit_local, rate_limit_refused, quota_local, quota_refused, cache_bypass)", self.redis_fallbacks);
        reg!(
            r,
            "tollgate_websocket_connections",
            "WebSocket connections being relayed, by API",
            self.ws_open
        );
        reg!(r, "tollgate_websocket_closed", "WebSocket connections ended, by API and by what ended them (client, upstream, idle_timeout, max_lifetime, message_too_big, protocol_error, shutdown, upgrade_failed)", self.ws_closed);
        reg!(r, "tollgate_websocket_bytes", "WebSocket message payload bytes relayed, by API and direction (to_upstream, to_client)", self.ws_bytes);
        reg!(
            r,
            "tollgate_websocket_messages",
            "WebSocket data messages relayed, by API and direction (to_upstream, to_client)",
            self.ws_messages
        );
        self
    }

    /// A WebSocket connection of `api` opened (`true`) or ended.
    pub fn websocket_open(&self, api: &str, open: bool) {
        let g = self.ws_open.get_or_create(&ApiLabels {
            api: api.to_string(),
        });
        if open {
            g.inc();
        } else {
            g.dec();
        }
    }

    /// A WebSocket connection of `api` ended, `by` what.
    pub fn websocket_closed(&self, api: &str, by: &'static str) {
        self.ws_closed
            .get_or_create(&WsClosedLabels {
                api: api.to_string(),
                by,
            })
            .inc();
    }

    /// `messages` data messages of `bytes` payload bytes relayed
    /// `direction` (`to_upstream`, `to_client`) for `api`.
    pub fn websocket_relayed(&self, api: &str, direction: &'static str, messages: u64, bytes: u64) {
        let l = WsDirectionLabels {
            api: api.to_string(),
            direction,
        };
        self.ws_messages.get_or_create(&l).inc_by(messages);
        self.ws_bytes.get_or_create(&l).inc_by(bytes);
    }

    /// A call to Redis for `op` took `us` microseconds.
    pub fn redis_call(&self, op: &'static str, us: u64) {
        hist(&self.redis_seconds, &RedisOpLabels { op }).observe_us(us);
    }

    /// A call to Redis for `op` failed as `kind`.
    pub fn redis_failure(&self, op: &'static str, kind: &'static str) {
        self.redis_failures
            .get_or_create(&RedisFailureLabels { op, kind })
            .inc();
    }

    /// The Redis breaker opened (`true`) or closed again.
    pub fn redis_breaker(&self, open: bool) {
        self.redis_breaker_open.set(i64::from(open));
        if open {
            self.redis_breaker_trips.inc();
        }
    }

    /// A check was answered without Redis, as `kind`.
    pub fn redis_fallback(&self, kind: &'static str) {
        self.redis_fallbacks
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Apply `[metrics]` (at start).
    pub fn configure(&self, spec: &MetricsSpec) {
        self.enabled.store(spec.enabled, Ordering::Relaxed);
        self.consumer_labels
            .store(spec.consumer_labels, Ordering::Relaxed);
        self.max_consumers
            .store(spec.max_consumers, Ordering::Relaxed);
    }

    /// Whether calls are counted (`[metrics] enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The cells of one route of one API, for the pipeline to keep: one
    /// set per name pair for the life of the process (a reload that keeps
    /// the names gets the same), so calls carry a plain reference and
    /// touch no reference count.
    pub fn route_cells(&self, api: &str, route: &str) -> &'static RouteCells {
        let mut known = self.route_cells.lock().unwrap_or_else(|p| p.into_inner());
        let key = (api.to_string(), route.to_string());
        if let Some(c) = known.get(&key) {
            return c;
        }
        let labels = RouteLabels {
            api: api.to_string(),
            route: route.to_string(),
        };
        let cells: &'static RouteCells = Box::leak(Box::new(RouteCells {
            api: api.into(),
            route: route.into(),
            requests: Default::default(),
            seconds: hist(&self.request_seconds, &labels),
            upstream: hist(&self.upstream_seconds, &labels),
            gateway: hist(&self.gateway_seconds, &labels),
            bytes_in: self.request_bytes.get_or_create(&labels).clone(),
            bytes_out: self.response_bytes.get_or_create(&labels).clone(),
            aborted: self.aborted.get_or_create(&labels).clone(),
        }));
        known.insert(key, cells);
        cells
    }

    /// The cells of one listener: one set per name for the life of the
    /// process, as [`Metrics::route_cells`].
    pub fn listener_cells(&self, listener: &str) -> &'static ListenerCells {
        let mut known = self
            .listener_cells
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = known.get(listener) {
            return c;
        }
        let cells: &'static ListenerCells = Box::leak(Box::new(ListenerCells {
            requests: std::array::from_fn(|i| {
                self.listener_requests
                    .get_or_create(&ListenerLabels {
                        listener: listener.to_string(),
                        status: STATUSES[i],
                    })
                    .clone()
            }),
        }));
        known.insert(listener.to_string(), cells);
        cells
    }

    /// The cells of one step of one API.
    pub fn step_cells(&self, api: &str, step: &str, phases: StepPhases) -> Arc<StepCells> {
        // A phase the step does not have gets cells of its own that no
        // family shows: its series would only ever read 0.
        let phase = |p: &'static str, has: bool| {
            let labels = phase_labels(api, step, p);
            PhaseCells {
                api: api.to_string(),
                step: step.to_string(),
                phase: p,
                calls: if has {
                    self.step_calls.get_or_create(&labels).clone()
                } else {
                    Counter::default()
                },
                seconds: if has {
                    hist(&self.step_seconds, &labels)
                } else {
                    steps_hist()
                },
                fail_open: if has {
                    self.step_fail_open.get_or_create(&labels).clone()
                } else {
                    Counter::default()
                },
                outcomes: Default::default(),
            }
        };
        let source = |s: &'static str| {
            self.step_instances
                .get_or_create(&SourceLabels {
                    api: api.to_string(),
                    step: step.to_string(),
                    source: s,
                })
                .clone()
        };
        Arc::new(StepCells {
            request: phase("request", phases.request),
            response: phase("response", phases.response),
            fresh: source("fresh"),
            reset: source("reset"),
            warm: source("warm"),
            memory: self
                .step_memory
                .get_or_create(&StepLabels {
                    api: api.to_string(),
                    step: step.to_string(),
                })
                .clone(),
            not_applicable: self
                .step_not_applicable
                .get_or_create(&StepLabels {
                    api: api.to_string(),
                    step: step.to_string(),
                })
                .clone(),
        })
    }

    /// A call is over.
    pub fn call_done(&self, rec: &CallRecord) {
        if let Some(l) = &rec.listener {
            l.requests[status_class(rec.status)].inc();
        }
        let Some(cells) = &rec.cells else {
            // Unrouted: no API, no route.
            self.requests
                .get_or_create(&RequestLabels {
                    api: String::new(),
                    route: String::new(),
                    method: METHODS[method_class(&rec.method)],
                    status: status_label(rec.status),
                })
                .inc();
            return;
        };
        cells.count(self, rec);
        if self.consumer_labels.load(Ordering::Relaxed) {
            if let Some(c) = &rec.consumer {
                self.count_consumer(&cells.api, c, rec.status);
            }
        }
    }

    fn count_consumer(&self, api: &str, consumer: &str, status: u16) {
        let key = (api.to_string(), consumer.to_string());
        let labelled = {
            let mut seen = self
                .consumers_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            seen.contains(&key)
                || (seen.len() < self.max_consumers.load(Ordering::Relaxed) && seen.insert(key))
        };
        let consumer = if labelled { consumer } else { "_other" };
        self.consumer_requests
            .get_or_create(&ConsumerLabels {
                api: api.to_string(),
                consumer: consumer.to_string(),
                status: status_label(status),
            })
            .inc();
    }

    /// An upstream attempt of `api` after the first.
    pub fn upstream_retry(&self, api: &str) {
        self.upstream_retries
            .get_or_create(&ApiLabels {
                api: api.to_string(),
            })
            .inc();
    }

    /// An upstream attempt of `api` at `target` failed.
    pub fn upstream_failure(&self, api: &str, target: &str) {
        self.upstream_failures
            .get_or_create(&target_labels(api, target))
            .inc();
    }

    /// A target's breaker opened (`true`) or closed again.
    pub fn breaker(&self, api: &str, target: &str, open: bool) {
        let labels = target_labels(api, target);
        self.breaker_open
            .get_or_create(&labels)
            .set(i64::from(open));
        if open {
            self.breaker_trips.get_or_create(&labels).inc();
        }
    }

    /// The cells of an API's upstream connections.
    pub fn conn_cells(&self, api: &str) -> Arc<ConnCells> {
        let labels = ApiLabels {
            api: api.to_string(),
        };
        Arc::new(ConnCells {
            opened: self.conns_opened.get_or_create(&labels).clone(),
            open: self.conns_open.get_or_create(&labels).clone(),
        })
    }

    /// A reload ended: swapped in (`ok`) or refused.
    pub fn reload(&self, ok: bool, generation: u64) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        if ok {
            self.set_generation(generation);
        }
    }

    /// The generation serving.
    pub fn set_generation(&self, generation: u64) {
        self.generation.set(generation as i64);
    }

    /// An admin API call was answered.
    pub fn admin_call(&self, method: &http::Method, status: u16) {
        self.admin_requests
            .get_or_create(&AdminLabels {
                method: METHODS[method_class(method)],
                status: status_label(status),
            })
            .inc();
    }

    /// `n` items of `kind` (`access_log`, `analytics`, `record`) were dropped.
    pub fn dropped(&self, kind: &'static str, n: u64) {
        self.dropped.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    /// A call was queued for the analytics store.
    pub fn analytics_record(&self) {
        self.analytics_records.inc();
    }

    /// The metrics in the OpenMetrics text format, with the policy
    /// instance counts of right now.
    pub fn render(&self, instances: InstancesNow) -> String {
        for (kind, n) in [
            ("live", instances.live),
            ("idle", instances.idle),
            ("in_use", instances.in_use),
        ] {
            self.instances
                .get_or_create(&KindLabels { kind })
                .set(n as i64);
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The runtime's instance counts at a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstancesNow {
    pub live: usize,
    pub idle: usize,
    pub in_use: usize,
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The histogram of `labels` in `f`, shared with the family (a `Hist` is
/// an `Arc`).
fn hist<L>(f: &Family<L, Hist, fn() -> Hist>, labels: &L) -> Hist
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    f.get_or_create(labels).clone()
}

/// The cells one route counts into: resolved once per route (kept by the
/// API), then only atomic adds.
#[derive(Debug)]
pub struct RouteCells {
    api: Box<str>,
    route: Box<str>,
    /// `tollgate_requests_total` by method class and status class,
    /// resolved on first use.
    requests: [[OnceLock<Counter>; 6]; 8],
    seconds: Hist,
    upstream: Hist,
    gateway: Hist,
    bytes_in: Counter,
    bytes_out: Counter,
    aborted: Counter,
}

impl RouteCells {
    /// The API's name.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.route
    }

    fn count(&self, m: &Metrics, rec: &CallRecord) {
        let (mi, si) = (method_class(&rec.method), status_class(rec.status));
        self.requests[mi][si]
            .get_or_init(|| {
                m.requests
                    .get_or_create(&RequestLabels {
                        api: self.api.to_string(),
                        route: self.route.to_string(),
                        method: METHODS[mi],
                        status: STATUSES[si],
                    })
                    .clone()
            })
            .inc();
        self.seconds.observe_us(rec.total_us);
        if let Some(up) = rec.upstream_us {
            self.upstream.observe_us(up);
        }
        self.gateway.observe_us(rec.gateway_us());
        self.bytes_in.inc_by(rec.bytes_in);
        self.bytes_out.inc_by(rec.bytes_out);
        if rec.aborted {
            self.aborted.inc();
        }
    }
}

/// The cells of one API's upstream connections.
#[derive(Debug)]
pub struct ConnCells {
    opened: Counter,
    open: Gauge,
}

impl ConnCells {
    /// A connection was made.
    pub fn opened(&self) {
        self.opened.inc();
        self.open.inc();
    }

    /// A connection was closed (dropped by its pool).
    pub fn closed(&self) {
        self.open.dec();
    }
}

/// The cells of one listener.
#[derive(Debug)]
pub struct ListenerCells {
    requests: [Counter; 6],
}

/// How a step phase ended, for `tollgate_step_outcomes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Continue,
    /// Answered (or replaced the response) with this status.
    Respond(u16),
    /// Failed: the kind (`trap`, `timeout`, ...).
    Failed(&'static str),
}

/// Failure kinds, in the order of their cells.
const FAILURES: [&str; 9] = [
    "trap",
    "timeout",
    "wall_timeout",
    "memory",
    "busy",
    "bad_output",
    "quarantined",
    "saturated",
    "other",
];

const RESPONDS: [&str; 6] = [
    "respond_1xx",
    "respond_2xx",
    "respond_3xx",
    "respond_4xx",
    "respond_5xx",
    "respond_other",
];

impl StepOutcome {
    /// Its cell index and label.
    fn slot(self) -> (usize, &'static str) {
        match self {
            StepOutcome::Continue => (0, "continue"),
            StepOutcome::Respond(s) => {
                let i = status_class(s);
                (1 + i, RESPONDS[i])
            }
            StepOutcome::Failed(kind) => {
                let i = FAILURES.iter().position(|k| *k == kind).unwrap_or(8);
                (7 + i, FAILURES[i])
            }
        }
    }
}

/// The cells of one phase of one step.
#[derive(Debug)]
pub struct PhaseCells {
    api: String,
    step: String,
    phase: &'static str,
    calls: Counter,
    seconds: Hist,
    fail_open: Counter,
    outcomes: [OnceLock<Counter>; 16],
}

impl PhaseCells {
    /// One run of the phase ended after `us` microseconds.
    pub fn ran(&self, us: u64, outcome: StepOutcome) {
        let m = global();
        if !m.enabled() {
            return;
        }
        self.calls.inc();
        self.seconds.observe_us(us);
        let (i, label) = outcome.slot();
        self.outcomes[i]
            .get_or_init(|| {
                m.step_outcomes
                    .get_or_create(&OutcomeLabels {
                        api: self.api.clone(),
                        step: self.step.clone(),
                        phase: self.phase,
                        outcome: label,
                    })
                    .clone()
            })
            .inc();
    }

    /// The phase failed and was skipped (fail-open).
    pub fn skipped(&self) {
        self.fail_open.inc();
    }
}

/// Which phases a step has (only those get series).
#[derive(Debug, Clone, Copy)]
pub struct StepPhases {
    pub request: bool,
    pub response: bool,
}

/// The cells of one step (both phases, its instances).
#[derive(Debug)]
pub struct StepCells {
    pub request: PhaseCells,
    pub response: PhaseCells,
    fresh: Counter,
    reset: Counter,
    warm: Counter,
    memory: Gauge,
    not_applicable: Counter,
}

/// Where a call's instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Instantiated for the call (from the configured snapshot when there
    /// is one).
    Fresh,
    /// `request` isolation: a used instance reset in place to its snapshot.
    Reset,
    /// `worker` isolation: the worker's warm instance, as the last call
    /// left it.
    Warm,
}

impl StepCells {
    /// A call skipped the step: its condition was false.
    pub fn not_applicable(&self) {
        self.not_applicable.inc();
    }

    /// A call got an instance.
    pub fn instance(&self, source: Source) {
        match source {
            Source::Fresh => self.fresh.inc(),
            Source::Reset => self.reset.inc(),
            Source::Warm => self.warm.inc(),
        };
    }

    /// An instance was returned having grown to `bytes` of linear memory.
    pub fn memory(&self, bytes: usize) {
        let bytes = bytes as i64;
        if bytes > self.memory.get() {
            // A race may keep the smaller of two at worst until the next.
            self.memory.set(bytes.max(self.memory.get()));
        }
    }
}

fn phase_labels(api: &str, step: &str, phase: &'static str) -> PhaseLabels {
    PhaseLabels {
        api: api.to_string(),
        step: step.to_string(),
        phase,
    }
}

fn target_labels(api: &str, target: &str) -> TargetLabels {
    TargetLabels {
        api: api.to_string(),
        target: target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(h: &Hist) -> String {
        let mut r = Registry::default();
        r.register("h", "a histogram", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_once() {
        let h = calls_hist();
        // On a bound, just past it, and past the last bound.
        for us in [500, 501, 1_000, 60_000_000, 0] {
            h.observe_us(us);
        }
        let text = text_of(&h);
        let line = |le: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("h_bucket{{le=\"{le}\"}}")))
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(line("0.0005"), "2", "{text}");
        assert_eq!(line("0.001"), "4", "{text}");
        assert_eq!(line("30.0"), "4", "{text}");
        assert_eq!(line("+Inf"), "5", "{text}");
        assert!(text.contains("h_count 5"), "{text}");
        assert!(text.contains("h_sum 60.002001"), "{text}");
    }

    #[test]
    fn outcomes_have_a_cell_each() {
        let mut seen = HashSet::new();
        let all = [StepOutcome::Continue]
            .into_iter()
            .chain((1..=6).map(|c| StepOutcome::Respond(c * 100)))
            .chain(FAILURES.iter().map(|k| StepOutcome::Failed(k)));
        for o in all {
            let (i, label) = o.slot();
            assert!(i < 16, "{o:?}");
            assert!(seen.insert(i), "{o:?} shares a cell");
            assert!(!label.is_empty());
        }
        assert_eq!(StepOutcome::Failed("new-kind").slot().1, "other");
        assert_eq!(StepOutcome::Respond(99).slot().1, "respond_other");
    }

    #[test]
    fn consumer_labels_stop_at_the_cap() {
        let m = Metrics::new();
        m.max_consumers.store(2, Ordering::Relaxed);
        for c in ["a", "b", "c", "d", "a"] {
            m.count_consumer("api", c, 200);
        }
        let text = m.render(InstancesNow::default());
        let count = |c: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "tollgate_consumer_requests_total{{api=\"api\",consumer=\"{c}\""
                    ))
                })
                .map(|l| l.rsplit_once(' ').unwrap().1.to_string())
        };
        assert_eq!(count("a").as_deref(), Some("2"), "{text}");
        assert_eq!(count("b").as_deref(), Some("1"), "{text}");
        assert_eq!(count("c"), None, "{text}");
        assert_eq!(count("_other").as_deref(), Some("2"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        let cells = m.route_cells("api\"x", "r\\\n");
        cells.bytes_in.inc();
        let text = m.render(InstancesNow::default());
        assert!(
            text.contains(r#"tollgate_request_body_bytes_total{api="api\"x",route="r\\\n"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let spec = |n| MetricsSpec {
            max_consumers: n,
            ..MetricsSpec::default()
        };
        assert!(check_spec(&spec(0)).is_some());
        assert!(check_spec(&spec(MAX_CONSUMER_LABELS + 1)).is_some());
        assert!(check_spec(&spec(1)).is_none());
    }
}
