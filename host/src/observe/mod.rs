//! What the gateway shows about itself: metrics for Prometheus
//! ([`metrics`]), OpenTelemetry traces ([`trace`]) and the analytics store
//! with its reports ([`analytics`]).
//!
//! The request pipeline hands every finished call to them as one
//! [`CallRecord`], built once the response body has been sent (or the
//! client went away): nothing here runs before the client has its
//! response, and nothing here blocks.

pub mod analytics;
pub mod cells;
pub mod metrics;
pub mod trace;

use std::net::IpAddr;
use std::sync::Arc;

/// One finished call, as the observers see it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Wall clock at arrival, Unix milliseconds.
    pub at_ms: u64,
    /// The API's manifest name; empty when no API matched (404, 405, or a
    /// request refused before routing). Interned with the route's metric
    /// cells ([`metrics::Metrics::route_cells`]): a call copies a pointer.
    pub api: &'static str,
    /// The route's name (its manifest name or pattern); empty when unrouted.
    pub route: &'static str,
    pub method: http::Method,
    /// The status the client got.
    pub status: u16,
    /// The listener's scheme: `http` or `https`.
    pub scheme: &'static str,
    /// Who called, once a step identified them.
    pub consumer: Option<String>,
    pub app: Option<String>,
    pub plan: Option<String>,
    pub product: Option<String>,
    pub key_id: Option<String>,
    pub client: IpAddr,
    /// Request body bytes the gateway read from the client (or, for a body
    /// streamed upstream, its declared `Content-Length`).
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Arrival to the last body byte sent, microseconds.
    pub total_us: u64,
    /// Time spent waiting on the upstream (headers), microseconds; `None`
    /// when the upstream was not called.
    pub upstream_us: Option<u64>,
    /// The response's `x-cache` (`HIT`, `MISS` ...) when a cache step set it.
    pub cache: Option<String>,
    /// The step that answered instead of the upstream (refusals, cache
    /// hits), if one did.
    pub answered_by: Option<Arc<str>>,
    /// Whether the client went away before the body was sent whole.
    pub aborted: bool,
    /// The route's metric cells (none when unrouted).
    pub cells: Option<&'static metrics::RouteCells>,
    /// The listener's metric cells.
    pub listener: Option<&'static metrics::ListenerCells>,
}

impl CallRecord {
    /// Gateway-added time: total minus the upstream's share.
    pub fn gateway_us(&self) -> u64 {
        self.total_us.saturating_sub(self.upstream_us.unwrap_or(0))
    }
}

/// The observers of a running gateway: metrics always (atomic counters,
/// read at scrape time), analytics and traces when configured.
pub struct Observers {
    pub metrics: &'static metrics::Metrics,
    /// Whether this gateway counts its calls (`[metrics] enabled`).
    pub metrics_on: bool,
    /// Whether `GET /metrics` needs no token (`[metrics] public`). Kept
    /// per gateway, not in the process's metrics, so that two gateways in
    /// one process (the tests) cannot change each other's answer.
    pub metrics_public: bool,
    pub analytics: Option<analytics::Analytics>,
    pub tracer: Option<trace::Tracer>,
}

impl Observers {
    /// Whether anyone looks at finished calls.
    pub fn wanted(&self) -> bool {
        self.metrics_on || self.analytics.is_some()
    }

    /// Observers with metrics only (tools, tests).
    pub fn metrics_only() -> Observers {
        Observers {
            metrics: metrics::global(),
            metrics_on: true,
            metrics_public: false,
            analytics: None,
            tracer: None,
        }
    }

    /// A call is over: count it, and queue it for the analytics store
    /// (never waiting: a full queue drops it and counts the drop).
    pub fn call_done(&self, rec: &CallRecord) {
        if self.metrics_on {
            self.metrics.call_done(rec);
        }
        if let Some(a) = &self.analytics {
            a.record(rec);
        }
    }
}
