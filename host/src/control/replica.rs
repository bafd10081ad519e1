//! The shared control plane of a cluster (`[cluster] role`, docs/cluster.md,
//! "The control plane"). One node is the control node: the only writer of
//! the registry (products, plans, consumers, apps, subscriptions, keys,
//! OAuth clients and signing keys, portal accounts). Every change it makes
//! is logged in its own store in the same batch as the change, and a
//! publisher sends the log to Redis (a stream), removing what Redis has
//! acknowledged. Data nodes read the stream with a blocking read and apply
//! each change to their own store atomically with its sequence: they serve
//! from their own copy, so they keep serving the last state they applied
//! when Redis or the control node is gone, and start from it when Redis is
//! down at their start. A node that joins late, or falls behind the
//! stream's retention, loads the snapshot the control node keeps in Redis.
//! Every node records a heartbeat in Redis (`/admin/v1/nodes`).

use super::admin::Registry;
use crate::cluster::replog::Dedicated;
use crate::cluster::{Cluster, Failure, Role};
use crate::domain::time::Ts;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each node records its heartbeat; a node silent for
/// [`STALE_AFTER`] is reported stale.
const HEARTBEAT: Duration = Duration::from_secs(1);
const STALE_AFTER: Duration = Duration::from_secs(5);
/// The control node replaces the snapshot after this many changes.
const SNAPSHOT_EVERY: u64 = 1000;
/// A data node's blocking read waits this long for a change.
const BLOCK: Duration = Duration::from_secs(1);

/// This node's part, as it goes.
pub struct Replica {
    cluster: Arc<Cluster>,
    registry: Arc<Registry>,
    pub role: Role,
    pub node: String,
    started: Ts,
    /// Redis answered the last call of the publisher or subscriber.
    connected: AtomicBool,
    /// The control node: the last change Redis has; a data node: the last
    /// change applied.
    seq: AtomicU64,
    /// When the publisher or subscriber last heard from Redis (ms).
    contact: AtomicU64,
    /// What stops the replication now, if anything.
    problem: Mutex<Option<String>>,
}

impl Replica {
    /// Take part as `[cluster]` says: set the registry's role and start the
    /// publisher (control) or the subscriber (data), and the heartbeat.
    pub fn start(cluster: Arc<Cluster>, registry: Arc<Registry>, role: Role) -> Arc<Replica> {
        registry.set_role(role);
        let r = Arc::new(Replica {
            node: cluster.spec().node_name(),
            seq: AtomicU64::new(match role {
                Role::Control => 0,
                Role::Data => registry.applied_seq(),
            }),
            cluster,
            registry,
            role,
            started: Ts::now(),
            connected: AtomicBool::new(false),
            contact: AtomicU64::new(0),
            problem: Mutex::new(None),
        });
        match role {
            Role::Control => tokio::spawn(publish(Arc::downgrade(&r))),
            Role::Data => tokio::spawn(subscribe(Arc::downgrade(&r))),
        };
        tokio::spawn(heartbeat(Arc::downgrade(&r)));
        r
    }

    fn set_problem(&self, p: Option<String>) {
        let mut cur = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != p {
            match &p {
                Some(why) => tracing::warn!(node = %self.node, "cluster replication: {why}"),
                None => tracing::info!(node = %self.node, "cluster replication: in step again"),
            }
        }
        *cur = p;
    }

    fn reached(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.contact.store(Ts::now().0, Ordering::Relaxed);
    }

    fn lost(&self, f: &Failure) {
        self.connected.store(false, Ordering::Relaxed);
        self.set_problem(Some(format!(
            "{f}; serving the last state applied (change {})",
            self.seq.load(Ordering::Relaxed)
        )));
    }

    /// This node as `/admin/v1/nodes` shows it.
    pub fn status(&self) -> Value {
        let contact = self.contact.load(Ordering::Relaxed);
        json!({
            "node": self.node,
            "role": self.role.as_str(),
            "seq": self.seq.load(Ordering::Relaxed),
            "connected": self.connected.load(Ordering::Relaxed),
            "last_contact": (contact > 0).then(|| Ts(contact).rfc3339()),
            "started_at": self.started.rfc3339(),
            "problem": *self.problem.lock().unwrap_or_else(|e| e.into_inner()),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Every node's last heartbeat (this one's status as of now), each
    /// marked `stale` when silent for [`STALE_AFTER`]; and whether Redis
    /// answered (without it, only this node is known).
    pub async fn nodes(&self) -> (Vec<Value>, bool) {
        let now = Ts::now().0;
        let mut out = Vec::new();
        let answered = match self.cluster.nodes().await {
            Ok(rows) => {
                for (name, json) in rows {
                    if name == self.node {
                        continue;
                    }
                    let mut v: Value = serde_json::from_str(&json).unwrap_or_else(
                        |_| json!({"node": name, "problem": "unreadable heartbeat"}),
                    );
                    let seen = v["seen_ms"].as_u64().unwrap_or(0);
                    v["stale"] = (now.saturating_sub(seen) > STALE_AFTER.as_millis() as u64).into();
                    if seen > 0 {
                        v["last_seen"] = Ts(seen).rfc3339().into();
                    }
                    if let Some(o) = v.as_object_mut() {
                        o.remove("seen_ms");
                    }
                    out.push(v);
                }
                true
            }
            Err(_) => false,
        };
        let mut me = self.status();
        me["stale"] = false.into();
        me["last_seen"] = Ts(now).rfc3339().into();
        me["this_node"] = true.into();
        out.push(me);
        out.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
        (out, answered)
    }
}

/// The control node: publish the change log to Redis, oldest first, and
/// keep the snapshot current.
async fn publish(me: std::sync::Weak<Replica>) {
    let mut dedicated: Option<Dedicated> = None;
    // What Redis has: unknown until asked (after each failure too).
    let mut published: Option<u64> = None;
    let mut since_snapshot = 0u64;
    loop {
        let Some(r) = me.upgrade() else { return };
        let d = dedicated.get_or_insert_with(|| r.cluster.dedicated());
        let wake = r.registry.changed();
        let outcome = publish_pending(&r, d, &mut published, &mut since_snapshot).await;
        match outcome {
            Ok(()) => {
                r.reached();
                r.set_problem(None);
                drop(r);
                let _ = tokio::time::timeout(HEARTBEAT, wake.notified()).await;
            }
            Err(f) => {
                r.lost(&f);
                published = None;
                drop(r);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

async fn publish_pending(
    r: &Replica,
    d: &mut Dedicated,
    published: &mut Option<u64>,
    since_snapshot: &mut u64,
) -> Result<(), Failure> {
    let reg = &r.registry;
    let at = match *published {
        Some(p) => p,
        None => {
            // (Re)connected: compare the log in Redis with this store's.
            let redis_last = r.cluster.log_last().await?;
            let local_last = reg.replog_last();
            let first_pending = reg
                .replog_after(0, 1)
                .ok()
                .and_then(|v| v.first().map(|(s, _)| *s));
            if redis_last > local_last {
                // Redis has seen later changes than this store holds (the
                // store was restored from an older copy): go on after them.
                tracing::error!(
                    redis_last,
                    local_last,
                    "cluster: Redis has later changes than this control node's store; continuing after them, with a new snapshot"
                );
                reg.replog_jump(redis_last);
            }
            let gap = first_pending.is_some_and(|f| f > redis_last + 1)
                || (first_pending.is_none() && redis_last < local_last);
            if gap || redis_last > local_last || d.snapshot_seq().await? == 0 {
                // Redis lost changes (restarted without its data, or
                // flushed), or has no snapshot yet: the whole state, so that
                // every data node can get in step.
                let (seq, snap) = reg
                    .replica_snapshot()
                    .map_err(|e| Failure::Error(e.to_string()))?;
                d.snapshot_put(seq, &snap).await?;
                *since_snapshot = 0;
                let _ = reg.replog_forget_through(seq);
                *published = Some(seq.max(redis_last));
            } else {
                *published = Some(redis_last);
            }
            published.unwrap_or(0)
        }
    };
    let mut at = at;
    loop {
        let batch = reg
            .replog_after(at, 256)
            .map_err(|e| Failure::Error(e.to_string()))?;
        if batch.is_empty() {
            break;
        }
        for (seq, payload) in batch {
            r.cluster.log_append(seq, &payload).await?;
            at = seq;
            *published = Some(seq);
            r.seq.store(seq, Ordering::Relaxed);
            *since_snapshot += 1;
        }
        let _ = reg.replog_forget_through(at);
    }
    r.seq.store(at, Ordering::Relaxed);
    if *since_snapshot >= SNAPSHOT_EVERY {
        let (seq, snap) = reg
            .replica_snapshot()
            .map_err(|e| Failure::Error(e.to_string()))?;
        d.snapshot_put(seq, &snap).await?;
        *since_snapshot = 0;
    }
    Ok(())
}

/// A data node: apply the control node's changes as they are published.
async fn subscribe(me: std::sync::Weak<Replica>) {
    let mut dedicated: Option<Dedicated> = None;
    let mut backoff = Duration::from_millis(100);
    let mut idle_reads = 0u32;
    loop {
        let Some(r) = me.upgrade() else { return };
        let d = dedicated.get_or_insert_with(|| r.cluster.dedicated());
        let applied = r.registry.applied_seq();
        r.seq.store(applied, Ordering::Relaxed);
        let step = match d.read_after(applied, BLOCK, 256).await {
            Ok(entries) if entries.is_empty() => {
                r.reached();
                idle_reads += 1;
                // Now and then: is the stream still reaching back to here?
                if idle_reads % 5 == 1 {
                    catch_up(&r, d, applied, None).await
                } else {
                    Ok(())
                }
            }
            Ok(entries) => {
                r.reached();
                idle_reads = 0;
                if entries[0].seq > applied + 1 {
                    catch_up(&r, d, applied, Some(entries[0].seq)).await
                } else {
                    let mut res = Ok(());
                    for e in entries.iter().filter(|e| e.seq > applied) {
                        if let Err(err) = r.registry.apply_replicated(e.seq, &e.payload) {
                            res = Err(Failure::Error(format!("change {}: {err}", e.seq)));
                            break;
                        }
                        r.seq.store(e.seq, Ordering::Relaxed);
                    }
                    res
                }
            }
            Err(f) => Err(f),
        };
        match step {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                if r.problem.lock().map(|p| p.is_some()).unwrap_or(false)
                    && r.connected.load(Ordering::Relaxed)
                {
                    r.set_problem(None);
                }
            }
            Err(f) => {
                r.lost(&f);
                drop(r);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A data node at `applied` whose next change in the stream is `next` (or
/// unknown): when the stream does not reach back to `applied + 1`, load the
/// snapshot (if it is at least as new).
async fn catch_up(
    r: &Replica,
    d: &mut Dedicated,
    applied: u64,
    next: Option<u64>,
) -> Result<(), Failure> {
    let first = match next {
        Some(n) => n,
        None => {
            let snap = d.snapshot_seq().await?;
            if snap <= applied {
                return Ok(());
            }
            let first = r.cluster.log_first().await?;
            if first != 0 && first <= applied + 1 {
                return Ok(());
            }
            first
        }
    };
    match d.snapshot().await? {
        Some((seq, payload)) if seq > applied && (first == 0 || seq + 1 >= first) => {
            r.registry
                .load_snapshot(seq, &payload)
                .map_err(|e| Failure::Error(format!("snapshot {seq}: {e}")))?;
            r.seq.store(seq, Ordering::Relaxed);
            tracing::info!(node = %r.node, seq, "cluster: loaded the control node's snapshot");
            Ok(())
        }
        _ => Err(Failure::Error(format!(
            "behind: applied change {applied}, the stream starts at {first}, and no snapshot covers the gap"
        ))),
    }
}

/// Record this node's heartbeat every [`HEARTBEAT`].
async fn heartbeat(me: std::sync::Weak<Replica>) {
    loop {
        let Some(r) = me.upgrade() else { return };
        let mut v = r.status();
        v["seen_ms"] = Ts::now().0.into();
        let _ = r.cluster.heartbeat(&r.node, &v.to_string()).await;
        drop(r);
        tokio::time::sleep(HEARTBEAT).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        use crate::control::admin::registry::{decode_ops, encode_ops};
        let ops = vec![
            (b"key/k1".to_vec(), Some(b"{\"a\":1}".to_vec())),
            (b"idx/x/y/z".to_vec(), None),
            (b"plan/p".to_vec(), Some(Vec::new())),
        ];
        assert_eq!(decode_ops(&encode_ops(&ops)), Some(ops.clone()));
        assert_eq!(decode_ops(&[]), Some(Vec::new()));
        let bytes = encode_ops(&ops);
        for cut in 1..bytes.len() {
            // Every truncation is refused or reads as a shorter, whole batch.
            if let Some(v) = decode_ops(&bytes[..cut]) {
                assert!(v.len() < ops.len());
            }
        }
        assert_eq!(decode_ops(&[0, 0, 0, 1, b'k', 7]), None);
        assert_eq!(decode_ops(&[0xff, 0xff, 0xff, 0xff]), None);
        // A node-local key never comes from another node.
        assert_eq!(
            decode_ops(&encode_ops(&[(b"audit/1".to_vec(), None)])),
            None
        );
        assert_eq!(
            decode_ops(&encode_ops(&[(b"meta/replica-seq".to_vec(), None)])),
            None
        );
    }
}
