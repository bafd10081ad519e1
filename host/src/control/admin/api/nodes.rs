//! `GET /admin/v1/nodes`: the nodes of a cluster's shared control plane
//! (`[cluster] role`), from their heartbeats in Redis: each node's role,
//! the change it has published (control) or applied (data), whether it
//! reaches Redis, when it was last heard from (`stale` past 5 s), and what
//! keeps it from being in step, if anything. Without Redis, this node
//! alone, and `redis: false`.

use super::{ok, Call, Reply};
use crate::control::admin::error::AdminError;
use futures_util::future::BoxFuture;
use serde_json::json;

/// `GET /admin/v1/nodes`.
pub fn list(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let Some(r) = c.gateway.replica.clone() else {
            return Err(AdminError::conflict(
                "this gateway is not part of a cluster's shared control plane: set `role` in [cluster] (docs/cluster.md)",
            ));
        };
        let (items, redis) = r.nodes().await;
        ok(json!({ "items": items, "redis": redis }))
    })
}
