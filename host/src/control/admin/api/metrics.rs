//! `GET /metrics`: the gateway's metrics in the OpenMetrics text format,
//! for Prometheus (docs/metrics.md). Any admin role may scrape; without a
//! token only when `[metrics] public = true`.

use super::{text, Call, Reply};
use crate::observe::metrics::{self, InstancesNow};

/// `GET /metrics`.
pub fn scrape(c: &Call) -> Reply {
    c.no_query()?;
    let runtime = &c.gateway.data.runtime;
    let body = metrics::global().render(InstancesNow {
        live: runtime.live_instances(),
        idle: runtime.idle_instances(),
        in_use: runtime.instances_in_use(),
    });
    text(metrics::CONTENT_TYPE, body)
}
