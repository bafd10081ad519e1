//! `GET /healthz` and `GET /readyz`: probes for load balancers and
//! Kubernetes, on the admin listener, without a token.
//!
//! - `/healthz`: the process is alive and its admin listener answers.
//! - `/readyz`: it should get traffic: a configuration generation is
//!   serving, every configured snapshot queued so far is settled (built, or
//!   given up on: such a step serves without one), and the store answers a
//!   read. 503 with the failing checks otherwise.

use super::{ok, Call, Reply};
use http::StatusCode;
use serde_json::json;

/// `GET /healthz`.
pub fn healthz(c: &Call) -> Reply {
    c.no_query()?;
    ok(json!({ "status": "alive" }))
}

/// `GET /readyz`.
pub fn readyz(c: &Call) -> Reply {
    c.no_query()?;
    let data = &c.gateway.data;
    let generation = data.generation.load(std::sync::atomic::Ordering::Relaxed);
    let apis = data.current().apis.len();
    let pending = data.runtime.snapshots_pending();
    let store = c.registry.store_ok();
    let checks = json!({
        "configuration": { "ok": true, "generation": generation, "apis": apis },
        "snapshots": { "ok": pending == 0, "building": pending },
        "store": match &store {
            Ok(()) => json!({ "ok": true }),
            Err(e) => json!({ "ok": false, "error": e }),
        },
    });
    if pending == 0 && store.is_ok() {
        return ok(json!({ "status": "ready", "checks": checks }));
    }
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "not ready", "checks": checks }),
    ))
}
