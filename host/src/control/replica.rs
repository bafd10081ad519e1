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
//!
//! The configuration travels the same way: when the control node's
//! serving configuration changes (a reload, an edit through the admin
//! API), its manifests and OpenAPI documents — the files under the
//! gateway file's folder that the build read, the gateway file itself
//! excepted — go into the registry as one bundle (`config/bundle`), so
//! they are logged, ordered with the registry's changes and part of the
//! snapshot. A data node writes a new bundle's files over its own, removes
//! those the bundle no longer has, and reloads; a bundle that does not
//! build there is undone and reported, and the node keeps serving its
//! previous configuration. Plugins are not in the bundle: every node has
//! them (docs/cluster.md).

use super::admin::Registry;
use super::ControlPlane;
use crate::cluster::replog::Dedicated;
use crate::cluster::{Cluster, Failure, Role};
use crate::domain::time::Ts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each node records its heartbeat; a node silent for
/// [`STALE_AFTER`] is reported stale.
const HEARTBEAT: Duration = Duration::from_secs(1);
const STALE_AFTER: Duration = Duration::from_secs(5);
/// The control node replaces the snapshot after this many changes.
const SNAPSHOT_EVERY: u64 = 1000;
/// How often the control node looks for a new configuration generation.
const CONFIG_POLL: Duration = Duration::from_millis(200);
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
    /// The node's control plane (configuration to publish or apply).
    control: std::sync::OnceLock<std::sync::Weak<ControlPlane>>,
    /// The control node: the generation last bundled.
    bundled: AtomicU64,
    /// A data node: why the last bundle was not applied, if it was not.
    config_problem: Mutex<Option<String>>,
}

/// The files of a configuration bundle: path (relative to the gateway
/// file's folder, `/`-separated) → text.
type Files = BTreeMap<String, String>;

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
            control: std::sync::OnceLock::new(),
            bundled: AtomicU64::new(0),
            config_problem: Mutex::new(None),
        });
        match role {
            Role::Control => tokio::spawn(publish(Arc::downgrade(&r))),
            Role::Data => tokio::spawn(subscribe(Arc::downgrade(&r))),
        };
        tokio::spawn(heartbeat(Arc::downgrade(&r)));
        r
    }

    /// The node's control plane, once built (configuration bundles).
    pub fn attach(&self, control: &Arc<ControlPlane>) {
        let _ = self.control.set(Arc::downgrade(control));
    }

    fn control(&self) -> Option<Arc<ControlPlane>> {
        self.control.get().and_then(std::sync::Weak::upgrade)
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
            "configuration": {
                "generation": self.control().map(|c| c.data.generation.load(Ordering::Relaxed)),
                "problem": *self.config_problem.lock().unwrap_or_else(|e| e.into_inner()),
            },
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
        bundle_config(&r);
        let outcome = publish_pending(&r, d, &mut published, &mut since_snapshot).await;
        match outcome {
            Ok(()) => {
                r.reached();
                r.set_problem(None);
                drop(r);
                // A registry change wakes it at once; a new configuration
                // generation is looked for this often.
                let _ = tokio::time::timeout(CONFIG_POLL, wake.notified()).await;
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
        if step.is_ok() {
            apply_config(&r).await;
        }
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

/// The control node: when the serving generation changed, bundle the
/// configuration's files into the registry (if they changed).
fn bundle_config(r: &Replica) {
    let Some(control) = r.control() else { return };
    let generation = control.data.generation.load(Ordering::Relaxed);
    if r.bundled.swap(generation, Ordering::Relaxed) == generation {
        return;
    }
    let Some(base) = control.gw_path().parent().map(Path::to_path_buf) else {
        return;
    };
    let mut files = Files::new();
    for p in control.inputs().serving().paths() {
        if let Some(rel) = bundled_path(&base, control.gw_path(), p) {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    files.insert(rel, text);
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), "cluster: not bundled: {e}");
                }
            }
        }
    }
    let bundle = json!({ "generation": generation, "files": files });
    let same = r
        .registry
        .config_bundle()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|old| old["files"] == bundle["files"]);
    if same {
        return;
    }
    match r
        .registry
        .put_config_bundle(bundle.to_string().into_bytes())
    {
        Ok(()) => tracing::info!(
            generation,
            files = files.len(),
            "cluster: configuration published"
        ),
        Err(e) => {
            r.bundled.store(0, Ordering::Relaxed);
            tracing::error!("cluster: cannot publish the configuration: {e}");
        }
    }
}

/// The bundle's name for `p` (a file the build read), if it belongs in a
/// bundle: a manifest or OpenAPI document under the gateway file's folder,
/// not the gateway file.
fn bundled_path(base: &Path, gw: &Path, p: &Path) -> Option<String> {
    if p == gw || !p.is_file() {
        return None;
    }
    let ext = p.extension()?.to_str()?;
    if !matches!(ext, "toml" | "yaml" | "yml" | "json") {
        return None;
    }
    let rel = p.strip_prefix(base).ok()?;
    safe_relative(&rel.to_string_lossy()).then(|| rel.to_string_lossy().replace('\\', "/"))
}

/// A bundle path a data node may write: relative, without `..`, `.` or
/// empty parts, and not hidden.
fn safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel.len() <= 1024
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.starts_with('.'))
        && !rel.contains(['\\', '\0'])
}

/// A data node: if the registry holds a bundle this node has not applied,
/// write its files, remove the previous bundle's files it no longer has,
/// and reload; undo the files when the configuration does not build here.
async fn apply_config(r: &Replica) {
    let Some(bytes) = r.registry.config_bundle() else {
        return;
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let applied: Value = r
        .registry
        .config_applied()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    if applied["sha256"] == digest.as_str() {
        return;
    }
    let Some(control) = r.control() else { return };
    let set_problem = |p: Option<String>| {
        *r.config_problem.lock().unwrap_or_else(|e| e.into_inner()) = p;
    };
    let files: Files = match serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::from_value(v["files"].clone()).ok())
    {
        Some(f) => f,
        None => {
            set_problem(Some(
                "the control node's configuration bundle is unreadable".into(),
            ));
            return;
        }
    };
    if let Some(bad) = files.keys().find(|k| !safe_relative(k)) {
        set_problem(Some(format!(
            "the configuration bundle names an unsafe path {bad:?}"
        )));
        return;
    }
    let Some(base) = control.gw_path().parent().map(Path::to_path_buf) else {
        return;
    };
    let before: Vec<String> = applied["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Write (remembering what was there), then reload; undo on refusal.
    let mut undo: Vec<(PathBuf, Option<String>)> = Vec::new();
    let mut failed = None;
    for (rel, text) in &files {
        let p = base.join(rel);
        let old = std::fs::read_to_string(&p).ok();
        if old.as_deref() == Some(text.as_str()) {
            continue;
        }
        undo.push((p.clone(), old));
        if let Err(e) = write_atomically(&p, text) {
            failed = Some(format!("writing {rel}: {e}"));
            break;
        }
    }
    if failed.is_none() {
        for rel in before
            .iter()
            .filter(|rel| !files.contains_key(*rel) && safe_relative(rel))
        {
            let p = base.join(rel);
            if let Ok(old) = std::fs::read_to_string(&p) {
                undo.push((p.clone(), Some(old)));
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let outcome = match failed {
        Some(e) => Err(e),
        None => match control.reload().await {
            super::ReloadOutcome::Applied => Ok(()),
            super::ReloadOutcome::Rejected(e) => Err(format!("it does not build here: {e}")),
        },
    };
    match outcome {
        Ok(()) => {
            set_problem(None);
            let record = json!({"sha256": digest, "files": files.keys().collect::<Vec<_>>()});
            if let Err(e) = r.registry.set_config_applied(record.to_string().as_bytes()) {
                tracing::error!("cluster: cannot record the applied configuration: {e}");
            }
            tracing::info!(node = %r.node, "cluster: the control node's configuration applied");
        }
        Err(why) => {
            for (p, old) in undo.into_iter().rev() {
                let _ = match old {
                    Some(text) => write_atomically(&p, &text),
                    None => std::fs::remove_file(&p),
                };
            }
            tracing::error!(node = %r.node, "cluster: the control node's configuration is not applied, the previous one keeps serving: {why}");
            set_problem(Some(why));
            // Marked as seen, so it is not retried on every read: the next
            // bundle is.
            let record = json!({"sha256": digest, "files": before, "refused": true});
            let _ = r.registry.set_config_applied(record.to_string().as_bytes());
        }
    }
}

/// Write `text` to `p` by a synced temporary file renamed into place.
fn write_atomically(p: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = p.with_extension("cluster-tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, p)?;
    if let Some(dir) = p.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
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
    fn only_plain_relative_paths_are_written() {
        use super::safe_relative;
        for ok in ["api.toml", "policies/pets.toml", "specs/pets.v1.yaml"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x.toml",
            "a/../../x",
            "./a.toml",
            "a//b",
            ".hidden.toml",
            "a/.git/config",
            "a\\b.toml",
            "a\0b",
        ] {
            assert!(!safe_relative(bad), "{bad:?}");
        }
    }

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
