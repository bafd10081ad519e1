//! The control plane's state in the embedded store: admin users, products,
//! plans, consumers, apps, subscriptions, keys, portal accounts (with
//! their sessions and reset links) and the audit log.
//!
//! Everything lives in one tree, `control`, as JSON under typed prefixes
//! (`product/ID`, `key/ID`, ...) with index entries beside them
//! (`idx/sub-of-app/APP/SUB`, `keyhash/SHA256` ...). Every change is one
//! atomic batch — the resource, its index entries and its audit entry — made
//! durable before the call returns. Writers are serialised by one lock
//! (admin writes are rare); readers, including the data path's key lookups,
//! never take it: sled reads see every committed batch, so a revocation is
//! effective on the next request.
//!
//! This file holds the store's mechanics (transactions, reads, listings,
//! the audit log) and the data path's lookups; each resource family's
//! create, update and delete are in the submodule named after it.

use super::error::{truncate, AdminError};
use super::model::*;
use crate::policy::host::consumers::ConsumerInfo;
use crate::store::Store;
use base64::Engine as _;
use ring::rand::SecureRandom;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

pub use accounts::{
    check_password, decoy_hash, hash_password, new_token, verify_password, Session, SignUp,
    MIN_PASSWORD,
};

mod accounts;
mod apps;
mod consumers;
mod groups;
mod keys;
mod oauth;
mod plans;
mod products;
mod subscriptions;
mod users;

pub use groups::MAX_GROUPS_PER_CONSUMER;
pub use oauth::{ClientRefusal, TOKEN_ID_PREFIX};

const TREE: &str = "control";

/// A page of a listing.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Who is making a change (an admin user's id, or `init`).
pub type Actor<'a> = &'a str;

/// One atomic change under construction.
#[derive(Default)]
struct Tx {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Tx {
    fn put<T: Serialize>(&mut self, kind: &str, id: &str, v: &T) {
        let bytes = serde_json::to_vec(v).expect("resources serialise");
        self.ops.push((key(kind, id), Some(bytes)));
    }
    fn put_raw(&mut self, k: Vec<u8>, v: &[u8]) {
        self.ops.push((k, Some(v.to_vec())));
    }
    fn del(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
}

fn key(kind: &str, id: &str) -> Vec<u8> {
    format!("{kind}/{id}").into_bytes()
}

fn idx(name: &str, parent: &str, child: &str) -> Vec<u8> {
    format!("idx/{name}/{parent}/{child}").into_bytes()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source works");
    b
}

/// A new secret: `prefix` and 32 random bytes, base64url.
fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random_bytes::<8>()))
}

/// The control plane's store.
pub struct Registry {
    store: Store,
    write: Mutex<()>,
    /// Its part in a shared control plane (`[cluster] role`); none alone.
    role: std::sync::OnceLock<crate::cluster::Role>,
    /// The last change-log sequence written (the control node), under
    /// which every batch is applied so that sequence order is commit order.
    replog: Mutex<u64>,
    /// Wakes the publisher after a change (the control node).
    changed: std::sync::Arc<tokio::sync::Notify>,
}

/// Store keys that are the node's own, never replicated: the audit log,
/// the change log, the replica's progress.
fn node_local(k: &[u8]) -> bool {
    k.starts_with(b"audit/") || k.starts_with(b"replog/") || k.starts_with(b"meta/")
}

const APPLIED: &[u8] = b"meta/replica-seq";
const CONFIG_BUNDLE: &[u8] = b"config/bundle";
const CONFIG_APPLIED: &[u8] = b"meta/config-applied";

fn replog_key(seq: u64) -> Vec<u8> {
    let mut k = b"replog/".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A batch as bytes: for each operation the key's length and key, then 0
/// (a removal) or 1, the value's length and value; lengths u32 big-endian.
pub fn encode_ops(ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in ops {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// [`encode_ops`] read back; `None` for anything malformed or naming a
/// node-local key.
pub fn decode_ops(mut b: &[u8]) -> Option<Ops> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        (b.len() >= n).then(|| {
            let (h, t) = b.split_at(n);
            *b = t;
            h
        })
    }
    fn len(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let mut ops = Vec::new();
    while !b.is_empty() {
        let n = len(&mut b)?;
        let k = take(&mut b, n)?.to_vec();
        if k.is_empty() || node_local(&k) {
            return None;
        }
        let v = match take(&mut b, 1)? {
            [0] => None,
            [1] => {
                let n = len(&mut b)?;
                Some(take(&mut b, n)?.to_vec())
            }
            _ => return None,
        };
        ops.push((k, v));
    }
    Some(ops)
}

impl Registry {
    /// Whether the store under the registry answers (for readiness).
    pub fn store_ok(&self) -> Result<(), String> {
        self.store.ping().map_err(|e| format!("{e:#}"))
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(store: Store) -> Registry {
        let last = store
            .last_key(TREE, b"replog/")
            .ok()
            .flatten()
            .and_then(|k| {
                k.get(7..15)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .unwrap_or(0);
        Registry {
            store,
            write: Mutex::new(()),
            role: std::sync::OnceLock::new(),
            replog: Mutex::new(last),
            changed: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    // -----------------------------------------------------------------------
    // The shared control plane (docs/cluster.md): the control node writes
    // each batch's replicated part to its change log (`replog/SEQ`, in the
    // same batch), which `control::replica` publishes; a data node applies
    // the published batches and refuses admin changes.

    /// Take part in a shared control plane as `role` (once, at start).
    pub fn set_role(&self, role: crate::cluster::Role) {
        let _ = self.role.set(role);
    }

    pub fn role(&self) -> Option<crate::cluster::Role> {
        self.role.get().copied()
    }

    /// Notified after each change the control node logs.
    pub fn changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    fn replog_lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.replog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply one batch, durably; on the control node with its change-log
    /// entry (the batch's replicated part) in the same batch.
    fn apply(&self, mut ops: Ops) -> Result<(), AdminError> {
        if self.role() != Some(crate::cluster::Role::Control) {
            return self
                .store
                .apply_durable(TREE, ops)
                .map_err(AdminError::store);
        }
        let mut last = self.replog_lock();
        let shared: Ops = ops
            .iter()
            .filter(|(k, _)| !node_local(k))
            .cloned()
            .collect();
        let seq = *last + 1;
        if !shared.is_empty() {
            ops.push((replog_key(seq), Some(encode_ops(&shared))));
        }
        self.store
            .apply_durable(TREE, ops)
            .map_err(AdminError::store)?;
        if !shared.is_empty() {
            *last = seq;
            drop(last);
            self.changed.notify_one();
        }
        Ok(())
    }

    /// The change log's entries after `seq` (at most `limit`), oldest first.
    pub fn replog_after(&self, seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AdminError> {
        let after = replog_key(seq);
        let rows = self
            .store
            .scan(TREE, b"replog/", Some(&after), limit)
            .map_err(AdminError::store)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| Some((u64::from_be_bytes(k.get(7..15)?.try_into().ok()?), v)))
            .collect())
    }

    /// Forget the change log up to `seq` (published).
    pub fn replog_forget_through(&self, seq: u64) -> Result<(), AdminError> {
        self.store
            .remove_range_durable(TREE, b"replog/", &replog_key(seq.saturating_add(1)))
            .map(|_| ())
            .map_err(AdminError::store)
    }

    /// Continue the change log after `seq` (a control node whose store is
    /// behind what Redis has seen: its next changes must not reuse numbers).
    pub fn replog_jump(&self, seq: u64) {
        let mut last = self.replog_lock();
        *last = (*last).max(seq);
    }

    /// The last change-log sequence written.
    pub fn replog_last(&self) -> u64 {
        *self.replog_lock()
    }

    /// Every replicated entry as one batch, and the change-log sequence it
    /// is the state of (no change is applied meanwhile).
    pub fn replica_snapshot(&self) -> Result<(u64, Vec<u8>), AdminError> {
        let last = self.replog_lock();
        let mut ops = Vec::new();
        self.store
            .range_each(TREE, b"", &[0xff; 8], |k, v| {
                if !node_local(k) {
                    ops.push((k.to_vec(), Some(v.to_vec())));
                }
                true
            })
            .map_err(AdminError::store)?;
        Ok((*last, encode_ops(&ops)))
    }

    /// The configuration bundle the control node published last (the key
    /// `config/bundle`, replicated like any other).
    pub fn config_bundle(&self) -> Option<Vec<u8>> {
        self.store.get(TREE, CONFIG_BUNDLE).ok().flatten()
    }

    /// Publish a configuration bundle (the control node).
    pub fn put_config_bundle(&self, bundle: Vec<u8>) -> Result<(), AdminError> {
        let _w = self.lock();
        self.apply(vec![(CONFIG_BUNDLE.to_vec(), Some(bundle))])
    }

    /// What this data node last did with a configuration bundle (its own
    /// record, never replicated).
    pub fn config_applied(&self) -> Option<Vec<u8>> {
        self.store.get(TREE, CONFIG_APPLIED).ok().flatten()
    }

    pub fn set_config_applied(&self, record: &[u8]) -> Result<(), AdminError> {
        self.store
            .put_durable(TREE, CONFIG_APPLIED, record)
            .map_err(AdminError::store)
    }

    /// The last change-log sequence this data node applied.
    pub fn applied_seq(&self) -> u64 {
        self.store
            .get(TREE, APPLIED)
            .ok()
            .flatten()
            .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }

    /// Apply the control node's change `seq` (a data node), durably and
    /// with the sequence in the same batch.
    pub fn apply_replicated(&self, seq: u64, payload: &[u8]) -> Result<(), AdminError> {
        let mut ops = decode_ops(payload)
            .ok_or_else(|| AdminError::invalid("replica", format!("change {seq} is malformed")))?;
        ops.push((APPLIED.to_vec(), Some(seq.to_be_bytes().to_vec())));
        let _w = self.lock();
        self.store
            .apply_durable(TREE, ops)
            .map_err(AdminError::store)
    }

    /// Replace every replicated entry with the control node's snapshot as
    /// of `seq` (a data node that joined late or fell behind), atomically.
    pub fn load_snapshot(&self, seq: u64, payload: &[u8]) -> Result<(), AdminError> {
        let ops = decode_ops(payload).ok_or_else(|| {
            AdminError::invalid("replica", format!("snapshot {seq} is malformed"))
        })?;
        let keep: std::collections::HashSet<&[u8]> =
            ops.iter().map(|(k, _)| k.as_slice()).collect();
        let _w = self.lock();
        let mut batch: Ops = Vec::new();
        self.store
            .range_each(TREE, b"", &[0xff; 8], |k, _| {
                if !node_local(k) && !keep.contains(k) {
                    batch.push((k.to_vec(), None));
                }
                true
            })
            .map_err(AdminError::store)?;
        batch.extend(ops.iter().cloned());
        batch.push((APPLIED.to_vec(), Some(seq.to_be_bytes().to_vec())));
        self.store
            .apply_durable(TREE, batch)
            .map_err(AdminError::store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, AdminError> {
        let Some(bytes) = self
            .store
            .get(TREE, &key(kind, id))
            .map_err(AdminError::store)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AdminError::store(format!("{kind}/{id} is unreadable: {e}")))
    }

    fn must<T: DeserializeOwned>(&self, kind: &str, what: &str, id: &str) -> Result<T, AdminError> {
        self.get(kind, id)?
            .ok_or_else(|| AdminError::not_found(what, id))
    }

    /// The children of `parent` in index `name` (`idx/name/parent/CHILD`).
    fn children(&self, name: &str, parent: &str) -> Result<Vec<String>, AdminError> {
        let prefix = format!("idx/{name}/{parent}/");
        Ok(self
            .store
            .scan(TREE, prefix.as_bytes(), None, 1000)
            .map_err(AdminError::store)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// A resource another one refers to through `field` (which is also the
    /// resource's name): a missing one is the caller's error, naming it.
    fn require<T: DeserializeOwned>(&self, field: &str, id: &str) -> Result<T, AdminError> {
        self.get(field, id)?.ok_or_else(|| {
            AdminError::unprocessable(
                field,
                format!("{field} `{}` does not exist", truncate(id, 80)),
            )
        })
    }

    /// Refuse to delete `what` `id` while index `index` lists children.
    fn refuse_children(
        &self,
        index: &str,
        what: &str,
        id: &str,
        children: &str,
    ) -> Result<(), AdminError> {
        let list = self.children(index, id)?;
        if list.is_empty() {
            return Ok(());
        }
        Err(AdminError::conflict(format!(
            "{what} `{id}` has {children} ({}): delete them first",
            list.join(", ")
        )))
    }

    /// Store an update of `after` (read as `before`) and audit it, unless
    /// nothing changed: then nothing is written. `touch` stamps the change
    /// (e.g. `updated_at`) only when there is one.
    fn save_update<T: crate::control::admin::model::Resource>(
        &self,
        actor: Actor,
        id: &str,
        before: &T,
        mut after: T,
        touch: impl FnOnce(&mut T),
    ) -> Result<T, AdminError> {
        if unchanged(before, &after) {
            return Ok(after);
        }
        touch(&mut after);
        self.save(
            actor,
            "update",
            T::KIND,
            T::NAME,
            id,
            &after,
            detail_of(&after),
        )?;
        Ok(after)
    }

    /// Write one resource (its indexes unchanged) with its audit entry.
    #[allow(clippy::too_many_arguments)]
    fn save<T: Serialize>(
        &self,
        actor: Actor,
        action: &str,
        kind: &str,
        resource: &str,
        id: &str,
        value: &T,
        detail: serde_json::Value,
    ) -> Result<(), AdminError> {
        let mut tx = Tx::default();
        tx.put(kind, id, value);
        self.commit(tx, actor, action, resource, id, detail)
    }

    /// List `kind` in id order after `after`, keeping those `keep` accepts.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, AdminError> {
        let prefix = format!("{kind}/");
        let mut cursor = after.map(|a| key(kind, a));
        let mut items: Vec<(String, T)> = Vec::new();
        loop {
            let batch = self
                .store
                .scan(TREE, prefix.as_bytes(), cursor.as_deref(), 256)
                .map_err(AdminError::store)?;
            let done = batch.len() < 256;
            for (k, v) in batch {
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                cursor = Some(k);
                let item: T = serde_json::from_slice(&v)
                    .map_err(|e| AdminError::store(format!("{kind}/{id} is unreadable: {e}")))?;
                if keep(&item) {
                    items.push((id, item));
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if done || items.len() > limit {
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(id, _)| id.clone())
        } else {
            None
        };
        Ok(Page {
            items: items.into_iter().map(|(_, t)| t).collect(),
            next,
        })
    }

    pub fn get_resource<T: DeserializeOwned>(
        &self,
        kind: &str,
        what: &str,
        id: &str,
    ) -> Result<T, AdminError> {
        self.must(kind, what, id)
    }

    /// Commit `tx` with its audit entry, durably.
    fn commit(
        &self,
        mut tx: Tx,
        actor: Actor,
        action: &str,
        resource: &str,
        id: &str,
        detail: serde_json::Value,
    ) -> Result<(), AdminError> {
        if self.role() == Some(crate::cluster::Role::Data) {
            return Err(AdminError::conflict(
                "this gateway is a data node of a cluster: its registry is a replica of the control node's; make changes there",
            ));
        }
        let last = self
            .store
            .last_key(TREE, b"audit/")
            .map_err(AdminError::store)?;
        let seq = last
            .and_then(|k| {
                k.get(6..14)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .unwrap_or(0)
            + 1;
        let entry = AuditEntry {
            seq,
            at: Ts::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            id: id.to_string(),
            detail,
        };
        let mut k = b"audit/".to_vec();
        k.extend_from_slice(&seq.to_be_bytes());
        tx.put_raw(k, &serde_json::to_vec(&entry).expect("audit serialises"));
        self.apply(tx.ops)
    }

    /// Record a change made elsewhere (a chain assignment, written to its
    /// manifest file).
    pub fn audit(
        &self,
        actor: Actor,
        action: &str,
        resource: &str,
        id: &str,
        detail: serde_json::Value,
    ) -> Result<(), AdminError> {
        let _w = self.lock();
        self.commit(Tx::default(), actor, action, resource, id, detail)
    }

    /// The audit log, oldest first.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<AuditEntry>, AdminError> {
        let after_key = after.map(|s| {
            let mut k = b"audit/".to_vec();
            k.extend_from_slice(&s.to_be_bytes());
            k
        });
        let rows = self
            .store
            .scan(TREE, b"audit/", after_key.as_deref(), limit + 1)
            .map_err(AdminError::store)?;
        let mut items: Vec<AuditEntry> = rows
            .iter()
            .map(|(_, v)| serde_json::from_slice(v).map_err(AdminError::store))
            .collect::<Result<_, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    // -----------------------------------------------------------------------
    // The data path

    /// The caller behind a key issued through the admin API — an app's key
    /// (live) or a subscription's primary or secondary key — if its
    /// subscription is active and its product covers `api`, or else a
    /// published open product (`authenticated` or `anonymous`) does: then
    /// the caller has that product and no plan.
    pub fn lookup_key(&self, api: &str, secret: &str, now: Ts) -> Option<ConsumerInfo> {
        if secret.is_empty() || secret.len() > 4096 {
            return None;
        }
        let digest = sha256_hex(secret);
        let (sub, key_id) = self.key_subscription(&digest, now)?;
        self.caller(api, &sub, Some(key_id.clone()))
            .or_else(|| self.open_caller(api, &sub, key_id))
    }

    /// The subscription a key's digest belongs to, and the key's id (an
    /// app key's id, or `SUB.primary` / `SUB.secondary`).
    fn key_subscription(&self, digest: &str, now: Ts) -> Option<(Subscription, String)> {
        if let Some(id) = self.store.get(TREE, &key("keyhash", digest)).ok()? {
            let k: Key = self.get("key", std::str::from_utf8(&id).ok()?).ok()??;
            // The index names the key; the key's own digest must agree.
            if k.sha256 != digest || !k.live(now) {
                return None;
            }
            let sub: Subscription = self.get("sub", &k.subscription).ok()??;
            return Some((sub, k.id));
        }
        let (sub, slot) = self.sub_by_key_digest(digest)?;
        let id = format!("{}.{}", sub.id, slot.as_str());
        Some((sub, id))
    }

    /// The holder of a valid key of active subscription `sub` calling
    /// `api`, which its own product does not cover, as a caller of the
    /// first published open product covering `api`.
    fn open_caller(&self, api: &str, sub: &Subscription, key_id: String) -> Option<ConsumerInfo> {
        if sub.state != SubState::Active {
            return None;
        }
        let product = self.open_products(api).into_iter().find(|p| p.published)?;
        let app: App = self.get("app", &sub.app).ok()??;
        Some(ConsumerInfo {
            id: app.consumer,
            app: Some(app.id),
            key_id: Some(key_id),
            plan: None,
            product: Some(product.id),
        })
    }

    /// Who a call to `api` without credentials is: consumer `anonymous`
    /// of the first published product open to anonymous callers that
    /// covers `api`, if there is one.
    pub fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
        let product = self
            .open_products(api)
            .into_iter()
            .find(|p| p.published && p.access == Access::Anonymous)?;
        Some(ConsumerInfo {
            id: ANONYMOUS.to_string(),
            app: None,
            key_id: None,
            plan: None,
            product: Some(product.id),
        })
    }

    /// A caller by app id or consumer id (for example from a JWT claim):
    /// the first active subscription of the app (or of the consumer's apps)
    /// whose product covers `api`.
    pub fn lookup_principal(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        // An access token the gateway issued, by its `jti` (random, so it
        // names no app or consumer; an app may still be called `at_...`).
        if let Some(t) = self.issued_token(id) {
            return self.token_caller(api, t);
        }
        if self.get::<App>("app", id).ok()?.is_some() {
            return self.app_caller(api, id);
        }
        self.get::<Consumer>("consumer", id).ok()??;
        self.children("app-of-consumer", id)
            .ok()?
            .iter()
            .find_map(|app| self.app_caller(api, app))
    }

    fn app_caller(&self, api: &str, app: &str) -> Option<ConsumerInfo> {
        self.subscriptions_of_app(app)
            .ok()?
            .iter()
            .find_map(|s| self.caller(api, s, None))
    }

    fn caller(
        &self,
        api: &str,
        sub: &Subscription,
        key_id: Option<String>,
    ) -> Option<ConsumerInfo> {
        if sub.state != SubState::Active {
            return None;
        }
        let product: Product = self.get("product", &sub.product).ok()??;
        if !product.apis.iter().any(|a| a == api) {
            return None;
        }
        // The plan must still exist (a deleted plan has no subscriptions,
        // but be strict).
        self.get::<Plan>("plan", &sub.plan).ok()??;
        let app: App = self.get("app", &sub.app).ok()??;
        Some(ConsumerInfo {
            id: app.consumer,
            app: Some(app.id),
            key_id,
            plan: Some(sub.plan.clone()),
            product: Some(sub.product.clone()),
        })
    }

    /// A plan's limits.
    pub fn plan(&self, id: &str) -> Option<Plan> {
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        self.get("plan", id).ok()?
    }
}

/// Whether an update changed nothing (then it is not written, its
/// `updated_at` stays and no audit entry is made).
fn unchanged<T: Serialize>(before: &T, after: &T) -> bool {
    serde_json::to_value(before).ok() == serde_json::to_value(after).ok()
}

fn detail_of<T: Serialize>(v: &T) -> serde_json::Value {
    let mut j = serde_json::to_value(v).unwrap_or_default();
    if let Some(o) = j.as_object_mut() {
        o.remove("sha256");
        o.remove("previous_sha256");
        o.remove("primary_sha256");
        o.remove("secondary_sha256");
        o.remove("token_sha256");
        o.remove("password_hash");
        o.remove("created_at");
        o.remove("updated_at");
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Registry::new(store))
    }

    fn setup(r: &Registry) -> (Subscription, Key, String) {
        let apis = |a: &str| a == "pets";
        r.create_product(
            "t",
            ProductCreate {
                id: "shop".into(),
                name: None,
                description: String::new(),
                apis: vec!["pets".into()],
                published: true,
                access: Access::Protected,
                visible_to: vec![DEVELOPERS.into()],
            },
            &apis,
        )
        .unwrap();
        r.create_plan(
            "t",
            PlanCreate {
                id: "gold".into(),
                product: "shop".into(),
                name: None,
                description: String::new(),
                rate_limits: vec![RateLimit {
                    requests: 5,
                    per: Per::Second,
                }],
                quota: None,
                approval: Approval::SelfService,
                max_keys_per_app: 2,
                scopes: vec![],
            },
        )
        .unwrap();
        r.create_consumer(
            "t",
            ConsumerCreate {
                id: "alice".into(),
                name: None,
                email: Some("alice@example.com".into()),
            },
        )
        .unwrap();
        r.create_app(
            "t",
            AppCreate {
                id: "shop-app".into(),
                consumer: "alice".into(),
                name: None,
                description: String::new(),
            },
        )
        .unwrap();
        let (sub, _) = r
            .create_subscription(
                "t",
                SubscriptionCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                },
            )
            .unwrap();
        let (k, secret) = r
            .create_key(
                "t",
                KeyCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                    name: String::new(),
                    expires_at: None,
                },
            )
            .unwrap();
        (sub, k, secret)
    }

    fn group(r: &Registry, id: &str) -> Result<Group, AdminError> {
        r.create_group(
            "t",
            GroupCreate {
                id: id.into(),
                name: None,
                description: String::new(),
            },
        )
    }

    fn product_update() -> ProductUpdate {
        ProductUpdate {
            name: None,
            description: None,
            apis: None,
            published: None,
            access: None,
            visible_to: None,
        }
    }

    #[test]
    fn groups_system_and_custom_with_members() {
        let (_d, r) = reg();
        setup(&r);
        // The system groups always exist and do not change.
        assert!(r.group("developers").unwrap().system);
        assert!(r.group("guests").unwrap().system);
        assert_eq!(group(&r, "developers").unwrap_err().status, 409);
        assert_eq!(r.delete_group("t", "guests").unwrap_err().status, 409);
        let rename = GroupUpdate {
            name: Some("x".into()),
            description: None,
        };
        assert_eq!(
            r.update_group("t", "developers", rename)
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(
            r.add_member("t", "developers", "alice").unwrap_err().status,
            409
        );
        // Custom groups, listed among the system ones in id order, a page
        // at a time.
        for id in ["partners", "beta", "zeta"] {
            group(&r, id).unwrap();
        }
        assert_eq!(group(&r, "beta").unwrap_err().status, 409);
        assert_eq!(group(&r, "Bad Id").unwrap_err().status, 400);
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = r.list_groups(after.as_deref(), 2).unwrap();
            assert!(page.items.len() <= 2);
            ids.extend(page.items.iter().map(|g| g.id.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(ids, ["beta", "developers", "guests", "partners", "zeta"]);
        // Members: a consumer is always a developer, and a member of the
        // groups it was added to; twice is once.
        assert_eq!(r.consumer_groups("alice"), ["developers"]);
        r.add_member("t", "partners", "alice").unwrap();
        r.add_member("t", "partners", "alice").unwrap();
        r.add_member("t", "beta", "alice").unwrap();
        assert_eq!(
            r.consumer_groups("alice"),
            ["developers", "beta", "partners"]
        );
        assert_eq!(r.members("partners").unwrap(), ["alice"]);
        assert_eq!(
            r.add_member("t", "partners", "nobody").unwrap_err().status,
            422
        );
        assert_eq!(r.add_member("t", "nope", "alice").unwrap_err().status, 404);
        assert!(r.consumer_groups("nobody").is_empty());
        assert_eq!(r.consumer_groups(ANONYMOUS), [GUESTS]);
        r.remove_member("t", "beta", "alice").unwrap();
        assert_eq!(
            r.remove_member("t", "beta", "alice").unwrap_err().status,
            404
        );
        // A group a product is visible to is not deleted; others are, with
        // their memberships.
        let apis = |a: &str| a == "pets";
        let visible = ProductUpdate {
            visible_to: Some(vec!["partners".into()]),
            ..product_update()
        };
        r.update_product("t", "shop", visible, &apis).unwrap();
        let e = r.delete_group("t", "partners").unwrap_err();
        assert!(e.message.contains("shop"), "{}", e.message);
        r.update_product(
            "t",
            "shop",
            ProductUpdate {
                visible_to: Some(vec![DEVELOPERS.into()]),
                ..product_update()
            },
            &apis,
        )
        .unwrap();
        r.delete_group("t", "partners").unwrap();
        assert_eq!(r.consumer_groups("alice"), ["developers"]);
        // Deleting a consumer forgets its memberships.
        r.add_member("t", "beta", "alice").unwrap();
        let (sub, _) = r
            .subscriptions_of_app("shop-app")
            .unwrap()
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .next()
            .unwrap();
        r.delete_subscription("t", &sub).unwrap();
        r.delete_app("t", "shop-app").unwrap();
        r.delete_consumer("t", "alice").unwrap();
        assert!(r.members("beta").unwrap().is_empty());
        // `anonymous` is nobody's id.
        let e = r
            .create_consumer(
                "t",
                ConsumerCreate {
                    id: ANONYMOUS.into(),
                    name: None,
                    email: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.status, 422);
    }

    #[test]
    fn products_are_visible_to_existing_groups_only() {
        let (_d, r) = reg();
        setup(&r);
        let apis = |a: &str| a == "pets";
        let to = |groups: &[&str]| ProductUpdate {
            visible_to: Some(groups.iter().map(|g| g.to_string()).collect()),
            ..product_update()
        };
        let e = r
            .update_product("t", "shop", to(&["ghosts"]), &apis)
            .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (422, Some("visible_to[0]"))
        );
        assert!(
            e.message.contains("group `ghosts` does not exist"),
            "{}",
            e.message
        );
        let e = r
            .update_product("t", "shop", to(&["guests", "guests"]), &apis)
            .unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        let p = r
            .update_product("t", "shop", to(&["guests"]), &apis)
            .unwrap();
        assert_eq!(p.visible_to, [GUESTS]);
        // A record written before there were groups reads as protected and
        // visible to developers.
        let old = r#"{"id":"old","name":"Old","description":"","apis":[],"published":true,
            "created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;
        let p: Product = serde_json::from_str(old).unwrap();
        assert_eq!(
            (p.access, p.visible_to),
            (Access::Protected, vec![DEVELOPERS.to_string()])
        );
        let s: Subscription = serde_json::from_str(
            r#"{"id":"sub_1","app":"a","plan":"p","product":"x","state":"active",
            "created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(s.keys, SubKeys::default());
    }

    #[test]
    fn open_products_admit_keys_without_a_subscription_and_anonymous_calls() {
        let (_d, r) = reg();
        let (sub, _k, secret) = setup(&r);
        let apis = |a: &str| a == "pets" || a == "weather";
        let mk = |id: &str, access: Access, published: bool| {
            r.create_product(
                "t",
                ProductCreate {
                    id: id.into(),
                    name: None,
                    description: String::new(),
                    apis: vec!["weather".into()],
                    published,
                    access,
                    visible_to: vec![DEVELOPERS.into()],
                },
                &apis,
            )
            .unwrap()
        };
        let now = Ts::now();
        // Protected: the key's subscription does not cover `weather`.
        mk("forecast", Access::Protected, true);
        assert!(r.lookup_key("weather", &secret, now).is_none());
        assert!(r.open_access("weather").is_none());
        // Open to authenticated callers: any valid key, no plan.
        let open = ProductUpdate {
            access: Some(Access::Authenticated),
            ..product_update()
        };
        r.update_product("t", "forecast", open, &apis).unwrap();
        let who = r.lookup_key("weather", &secret, now).unwrap();
        assert_eq!(
            (who.id.as_str(), who.plan.as_deref(), who.product.as_deref()),
            ("alice", None, Some("forecast"))
        );
        assert!(r.lookup_key("weather", "tg_wrong", now).is_none());
        assert!(r.open_access("weather").is_none());
        // Its own product still answers with the plan.
        assert_eq!(
            r.lookup_key("pets", &secret, now).unwrap().plan.as_deref(),
            Some("gold")
        );
        // A suspended subscription's key opens nothing.
        r.update_subscription(
            "t",
            &sub.id,
            SubscriptionUpdate {
                state: SubState::Suspended,
            },
        )
        .unwrap();
        assert!(r.lookup_key("weather", &secret, now).is_none());
        // Anonymous: calls without a key too; an unpublished one opens
        // nothing.
        mk("drafts", Access::Anonymous, false);
        assert!(r.open_access("weather").is_none());
        let anon = ProductUpdate {
            access: Some(Access::Anonymous),
            ..product_update()
        };
        r.update_product("t", "forecast", anon, &apis).unwrap();
        let who = r.open_access("weather").unwrap();
        assert_eq!(
            (who.id.as_str(), who.product.as_deref()),
            (ANONYMOUS, Some("forecast"))
        );
        assert!(r.open_access("pets").is_none());
        // Protected again: closed at once; deleted: its index goes.
        let closed = ProductUpdate {
            access: Some(Access::Protected),
            ..product_update()
        };
        r.update_product("t", "forecast", closed, &apis).unwrap();
        assert!(r.open_access("weather").is_none());
        r.delete_product("t", "drafts").unwrap();
        assert!(r
            .children(products::OPEN_API, "weather")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn subscription_keys_work_and_regenerate_one_at_a_time() {
        let (_d, r) = reg();
        let (old_sub, _, app_key) = setup(&r);
        r.delete_subscription("t", &old_sub.id).unwrap();
        let (sub, secrets) = r
            .create_subscription(
                "t",
                SubscriptionCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                },
            )
            .unwrap();
        assert!(r.lookup_key("pets", &app_key, Ts::now()).is_none());
        let now = Ts::now();
        let primary = r.lookup_key("pets", &secrets.primary, now).unwrap();
        let primary_id = format!("{}.primary", sub.id);
        assert_eq!(primary.key_id.as_deref(), Some(primary_id.as_str()));
        assert_eq!(primary.plan.as_deref(), Some("gold"));
        assert!(r.lookup_key("pets", &secrets.secondary, now).is_some());
        assert!(r.lookup_key("orders", &secrets.primary, now).is_none());
        // Shown: prefixes; never the digests, not in the audit either.
        let shown = sub.keys.primary.as_ref().unwrap();
        assert!(secrets.primary.starts_with(&shown.prefix));
        // Regenerate the primary: the old one stops, the secondary works.
        let (_, new_primary) = r.regenerate_sub_key("t", &sub.id, Slot::Primary).unwrap();
        assert!(r.lookup_key("pets", &secrets.primary, now).is_none());
        assert!(r.lookup_key("pets", &new_primary, now).is_some());
        assert!(r.lookup_key("pets", &secrets.secondary, now).is_some());
        // And the other way round.
        let (_, new_secondary) = r.regenerate_sub_key("t", &sub.id, Slot::Secondary).unwrap();
        assert!(r.lookup_key("pets", &secrets.secondary, now).is_none());
        assert!(r.lookup_key("pets", &new_secondary, now).is_some());
        assert!(r.lookup_key("pets", &new_primary, now).is_some());
        // Suspension stops both.
        let suspend = SubscriptionUpdate {
            state: SubState::Suspended,
        };
        r.update_subscription("t", &sub.id, suspend).unwrap();
        assert!(r.lookup_key("pets", &new_primary, now).is_none());
        assert!(r.lookup_key("pets", &new_secondary, now).is_none());
        let log = serde_json::to_string(&r.audit_page(None, 100).unwrap().items).unwrap();
        assert!(!log.contains("sha256"), "{log}");
        assert!(log.contains("regenerate"));
        // Deleting the subscription removes its keys' index entries.
        r.delete_subscription("t", &sub.id).unwrap();
        assert!(r.store.scan(TREE, b"subkey/", None, 10).unwrap().is_empty());
    }

    #[test]
    fn key_lifecycle_on_the_data_path() {
        let (_d, r) = reg();
        let (sub, k, secret) = setup(&r);
        let now = Ts::now();
        let who = r.lookup_key("pets", &secret, now).unwrap();
        assert_eq!(who.id, "alice");
        assert_eq!(who.app.as_deref(), Some("shop-app"));
        assert_eq!(who.plan.as_deref(), Some("gold"));
        assert_eq!(who.key_id.as_deref(), Some(k.id.as_str()));
        // Another API, a wrong key, a key differing in its last byte.
        assert!(r.lookup_key("orders", &secret, now).is_none());
        let mut wrong = secret.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert!(r.lookup_key("pets", &wrong, now).is_none());
        // Suspended, then resumed.
        r.update_subscription(
            "t",
            &sub.id,
            SubscriptionUpdate {
                state: SubState::Suspended,
            },
        )
        .unwrap();
        assert!(r.lookup_key("pets", &secret, now).is_none());
        r.update_subscription(
            "t",
            &sub.id,
            SubscriptionUpdate {
                state: SubState::Active,
            },
        )
        .unwrap();
        assert!(r.lookup_key("pets", &secret, now).is_some());
        // Rotation with an overlap: both work until the overlap ends.
        let (new, new_secret) = r
            .rotate_key(
                "t",
                &k.id,
                KeyRotate {
                    overlap_seconds: 60,
                },
            )
            .unwrap();
        assert!(r.lookup_key("pets", &secret, Ts::now()).is_some());
        assert!(r.lookup_key("pets", &new_secret, Ts::now()).is_some());
        assert!(r
            .lookup_key("pets", &secret, Ts(Ts::now().0 + 61_000))
            .is_none());
        // Revocation.
        r.revoke_key("t", &new.id).unwrap();
        assert!(r.lookup_key("pets", &new_secret, Ts::now()).is_none());
        // The principal lookup (JWT): by app and by consumer.
        assert_eq!(r.lookup_principal("pets", "shop-app").unwrap().id, "alice");
        assert_eq!(
            r.lookup_principal("pets", "alice").unwrap().app.as_deref(),
            Some("shop-app")
        );
        assert!(r.lookup_principal("orders", "alice").is_none());
        // The audit log holds every change, in order.
        let log = r.audit_page(None, 100).unwrap();
        let actions: Vec<_> = log.items.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "create", "create", "create", "create", "create", "create", "suspend", "resume",
                "rotate", "revoke"
            ]
        );
        assert!(log.items.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert!(!serde_json::to_string(&log.items).unwrap().contains(&secret));
    }

    #[test]
    fn limits_dependencies_and_pages() {
        let (_d, r) = reg();
        let (sub, _k, _) = setup(&r);
        // Two keys at most.
        let mk = || {
            r.create_key(
                "t",
                KeyCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                    name: String::new(),
                    expires_at: None,
                },
            )
        };
        mk().unwrap();
        assert_eq!(mk().unwrap_err().status, 409);
        // Dependents.
        assert_eq!(r.delete_product("t", "shop").unwrap_err().status, 409);
        assert_eq!(r.delete_plan("t", "gold").unwrap_err().status, 409);
        assert_eq!(r.delete_app("t", "shop-app").unwrap_err().status, 409);
        r.delete_subscription("t", &sub.id).unwrap();
        assert!(r
            .list::<Key>("key", None, 10, |_| true)
            .unwrap()
            .items
            .is_empty());
        r.delete_plan("t", "gold").unwrap();
        r.delete_product("t", "shop").unwrap();
        // Pages.
        for i in 0..7 {
            r.create_consumer(
                "t",
                ConsumerCreate {
                    id: format!("c{i}"),
                    name: None,
                    email: None,
                },
            )
            .unwrap();
        }
        let p1 = r.list::<Consumer>("consumer", None, 3, |_| true).unwrap();
        assert_eq!(p1.items.len(), 3);
        let p2 = r
            .list::<Consumer>("consumer", p1.next.as_deref(), 3, |_| true)
            .unwrap();
        let p3 = r
            .list::<Consumer>("consumer", p2.next.as_deref(), 3, |_| true)
            .unwrap();
        let ids: Vec<_> = [p1, p2, p3]
            .into_iter()
            .flat_map(|p| p.items)
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["alice", "c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    }

    #[test]
    fn users_and_tokens() {
        let (_d, r) = reg();
        let token = r.init_admin("admin").unwrap();
        assert!(r.init_admin("other").is_err());
        assert_eq!(r.authenticate(&token).unwrap().unwrap().id, "admin");
        assert!(r.authenticate("tga_nope").unwrap().is_none());
        let (_, t2) = r.rotate_user_token("admin", "admin").unwrap();
        assert!(r.authenticate(&token).unwrap().is_none());
        assert!(r.authenticate(&t2).unwrap().is_some());
        assert_eq!(r.delete_user("admin", "admin").unwrap_err().status, 409);
        assert_eq!(
            r.update_user(
                "admin",
                "admin",
                UserUpdate {
                    role: Some(Role::ReportsUser)
                }
            )
            .unwrap_err()
            .status,
            409
        );
    }

    fn live_keys_of(r: &Registry, sub: &str) -> usize {
        r.live_keys(sub, Ts::now()).unwrap()
    }

    #[test]
    fn rotation_never_passes_the_key_cap() {
        let (_d, r) = reg();
        let (sub, a, _) = setup(&r);
        r.update_plan(
            "t",
            "gold",
            PlanUpdate {
                name: None,
                description: None,
                rate_limits: None,
                quota: None,
                approval: None,
                max_keys_per_app: Some(1),
                scopes: None,
            },
        )
        .unwrap();
        let rotate = |id: &str| {
            r.rotate_key(
                "t",
                id,
                KeyRotate {
                    overlap_seconds: 600,
                },
            )
        };
        let (b, _) = rotate(&a.id).unwrap();
        assert_eq!(live_keys_of(&r, &sub.id), 2);
        // The same key again and again during its overlap: refused, each time.
        for _ in 0..10 {
            let e = rotate(&a.id).unwrap_err();
            assert_eq!(e.status, 409);
            assert!(e.message.contains("rotated already"), "{}", e.message);
        }
        // Its successor while the old key's overlap runs: the old key counts.
        let e = rotate(&b.id).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("overlap"), "{}", e.message);
        // A new key: the key in its overlap counts too.
        let e = r
            .create_key(
                "t",
                KeyCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                    name: String::new(),
                    expires_at: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(live_keys_of(&r, &sub.id), 2);
        // Once the old key is gone, the successor rotates.
        r.revoke_key("t", &a.id).unwrap();
        rotate(&b.id).unwrap();
        assert_eq!(live_keys_of(&r, &sub.id), 2);
    }

    #[test]
    fn a_rotated_or_dead_key_is_not_revived() {
        let (_d, r) = reg();
        let (_sub, a, _) = setup(&r);
        let patch = |id: &str, e: Option<Ts>| {
            r.update_key(
                "t",
                id,
                KeyUpdate {
                    name: None,
                    expires_at: Some(e),
                },
            )
        };
        // A past expiry is refused, as on creation.
        let e = patch(&a.id, Some(Ts(Ts::now().0 - 1000))).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (422, Some("expires_at"))
        );
        let (_b, _) = r
            .rotate_key(
                "t",
                &a.id,
                KeyRotate {
                    overlap_seconds: 600,
                },
            )
            .unwrap();
        let end = r
            .get::<Key>("key", &a.id)
            .unwrap()
            .unwrap()
            .expires_at
            .unwrap();
        // The overlap may not be lifted or extended ...
        assert_eq!(patch(&a.id, None).unwrap_err().status, 409);
        assert_eq!(
            patch(&a.id, Some(Ts(end.0 + 60_000))).unwrap_err().status,
            409
        );
        assert_eq!(
            r.get::<Key>("key", &a.id).unwrap().unwrap().expires_at,
            Some(end)
        );
        // ... only shortened.
        let sooner = Ts(end.0 - 60_000);
        assert_eq!(patch(&a.id, Some(sooner)).unwrap().expires_at, Some(sooner));
        // A revoked key stays dead.
        r.revoke_key("t", &a.id).unwrap();
        assert_eq!(patch(&a.id, None).unwrap_err().status, 409);
        assert!(!r.get::<Key>("key", &a.id).unwrap().unwrap().live(Ts::now()));
        // An expired key stays dead.
        let (c, secret) = r
            .create_key(
                "t",
                KeyCreate {
                    app: "shop-app".into(),
                    plan: "gold".into(),
                    name: String::new(),
                    expires_at: Some(Ts(Ts::now().0 + 300)),
                },
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(patch(&c.id, None).unwrap_err().status, 409);
        assert_eq!(
            patch(&c.id, Some(Ts(Ts::now().0 + 86_400_000)))
                .unwrap_err()
                .status,
            409
        );
        assert!(r.lookup_key("pets", &secret, Ts::now()).is_none());
        // A name still changes.
        let k = r
            .update_key(
                "t",
                &c.id,
                KeyUpdate {
                    name: Some("old".into()),
                    expires_at: None,
                },
            )
            .unwrap();
        assert_eq!(k.name, "old");
    }

    #[test]
    fn administrators_do_not_delete_or_demote_themselves() {
        let (_d, r) = reg();
        r.init_admin("admin").unwrap();
        r.create_user(
            "admin",
            UserCreate {
                id: "bob".into(),
                role: Role::Administrator,
            },
        )
        .unwrap();
        let demote = UserUpdate {
            role: Some(Role::ReportsUser),
        };
        let e = r.update_user("admin", "admin", demote).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("own account"), "{}", e.message);
        let e = r.delete_user("admin", "admin").unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("own account"), "{}", e.message);
        // Another administrator may.
        r.update_user(
            "bob",
            "admin",
            UserUpdate {
                role: Some(Role::ReportsUser),
            },
        )
        .unwrap();
        r.delete_user("bob", "admin").unwrap();
    }

    #[test]
    fn recovery_issues_a_new_token_audited() {
        let (_d, r) = reg();
        let lost = r.init_admin("admin").unwrap();
        r.create_user(
            "admin",
            UserCreate {
                id: "viewer".into(),
                role: Role::ReportsUser,
            },
        )
        .unwrap();
        let (token, created) = r.recover_admin("admin").unwrap();
        assert!(!created);
        assert!(r.authenticate(&lost).unwrap().is_none());
        assert_eq!(r.authenticate(&token).unwrap().unwrap().id, "admin");
        // A new administrator by a new name.
        let (t2, created) = r.recover_admin("rescue").unwrap();
        assert!(created);
        let u = r.authenticate(&t2).unwrap().unwrap();
        assert_eq!((u.id.as_str(), u.role), ("rescue", Role::Administrator));
        // Another role is not promoted behind the administrators' backs.
        let e = r.recover_admin("viewer").unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("admin, rescue"), "{}", e.message);
        assert!(r.recover_admin("Bad Id").is_err());
        let log = r.audit_page(None, 100).unwrap().items;
        let rec: Vec<_> = log.iter().filter(|e| e.action == "recover").collect();
        assert_eq!(rec.len(), 2);
        assert!(rec
            .iter()
            .all(|e| e.actor == "recover" && e.detail["offline"] == true));
        assert_eq!(
            (rec[0].id.as_str(), rec[1].id.as_str()),
            ("admin", "rescue")
        );
    }

    #[test]
    fn oauth_clients_tokens_and_their_sweep() {
        let (_d, r) = reg();
        let (sub, _key, _) = setup(&r);
        let (c, secret) = r
            .create_oauth_client(
                "t",
                OAuthClientCreate {
                    app: sub.app.clone(),
                    plan: sub.plan.clone(),
                    name: String::new(),
                },
            )
            .unwrap();
        let now = Ts::now();
        assert!(r.authenticate_oauth_client(&c.id, &secret, now).is_ok());
        for (id, s) in [
            (c.id.as_str(), "tgs_x"),
            ("oc_none", secret.as_str()),
            ("", ""),
        ] {
            assert_eq!(
                r.authenticate_oauth_client(id, s, now).unwrap_err(),
                ClientRefusal::Credentials
            );
        }
        // A rotation with an overlap keeps the old secret for its length.
        let (_, fresh) = r
            .rotate_oauth_client(
                "t",
                &c.id,
                KeyRotate {
                    overlap_seconds: 60,
                },
            )
            .unwrap();
        assert!(r.authenticate_oauth_client(&c.id, &secret, now).is_ok());
        assert!(r.authenticate_oauth_client(&c.id, &fresh, now).is_ok());
        let later = Ts(now.0 + 61_000);
        assert!(r.authenticate_oauth_client(&c.id, &secret, later).is_err());
        // Tokens: a live one resolves to the caller; expired ones are swept
        // by later issues, a few at a time.
        let token = |jti: &str, exp: Ts| IssuedToken {
            jti: jti.into(),
            client: c.id.clone(),
            subscription: sub.id.clone(),
            scope: String::new(),
            issued_at: now,
            expires_at: exp,
            revoked: false,
        };
        for i in 0..20 {
            r.record_token(&token(&format!("at_old{i:02}"), Ts(now.0 - 1000)))
                .unwrap();
        }
        r.record_token(&token("at_live", Ts(now.0 + 60_000)))
            .unwrap();
        let info = r.lookup_principal("pets", "at_live").unwrap();
        assert_eq!(info.key_id.as_deref(), Some(c.id.as_str()));
        assert!(r.lookup_principal("other-api", "at_live").is_none());
        let left = |r: &Registry| {
            (0..20)
                .filter(|i| r.issued_token(&format!("at_old{i:02}")).is_some())
                .count()
        };
        // Each issue swept up to 16 expired records before it.
        assert!(left(&r) <= 4, "{}", left(&r));
        r.record_token(&token("at_live2", Ts(now.0 + 60_000)))
            .unwrap();
        assert_eq!(left(&r), 0);
        assert!(r.revoke_token("t", "at_live").unwrap());
        assert!(r.lookup_principal("pets", "at_live").is_none());
        assert!(!r.revoke_token("t", "at_nothing").unwrap());
        // A revoked client's tokens stop.
        assert!(r.lookup_principal("pets", "at_live2").is_some());
        r.revoke_oauth_client("t", &c.id).unwrap();
        assert!(r.lookup_principal("pets", "at_live2").is_none());
        // Deleting the subscription deletes its clients.
        r.delete_subscription("t", &sub.id).unwrap();
        assert!(r
            .get::<OAuthClient>("oauth-client", &c.id)
            .unwrap()
            .is_none());
    }
}
