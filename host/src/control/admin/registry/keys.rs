//! API keys in the registry: issued under a subscription within its plan's
//! key cap, found by the SHA-256 of their secret (`keyhash/DIGEST`),
//! rotated once with an overlap, revoked; a dead key stays dead.

use super::{detail_of, idx, key, new_id, new_secret, sha256_hex, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    check_text, App, Key, KeyCreate, KeyRotate, KeyUpdate, Plan, Subscription, Ts,
    MAX_OVERLAP_SECONDS,
};

impl Registry {
    pub(super) fn live_keys(&self, sub: &str, now: Ts) -> Result<usize, AdminError> {
        let mut n = 0;
        for k in self.children("key-of-sub", sub)? {
            if self.get::<Key>("key", &k)?.is_some_and(|k| k.live(now)) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn issue_key(
        &self,
        tx: &mut Tx,
        sub: &Subscription,
        name: String,
        expires_at: Option<Ts>,
    ) -> (Key, String) {
        let secret = new_secret("tg_");
        let k = Key {
            id: new_id("key_"),
            subscription: sub.id.clone(),
            app: sub.app.clone(),
            plan: sub.plan.clone(),
            name,
            prefix: secret.chars().take(7).collect(),
            created_at: Ts::now(),
            expires_at,
            revoked_at: None,
            rotated_to: None,
            sha256: sha256_hex(&secret),
        };
        tx.put("key", &k.id, &k);
        tx.put_raw(key("keyhash", &k.sha256), k.id.as_bytes());
        tx.put_raw(idx("key-of-sub", &sub.id, &k.id), b"");
        (k, secret)
    }

    pub fn create_key(&self, actor: Actor, req: KeyCreate) -> Result<(Key, String), AdminError> {
        check_text("name", &req.name, 200)?;
        let now = Ts::now();
        if req.expires_at.is_some_and(|e| e <= now) {
            return Err(AdminError::unprocessable(
                "expires_at",
                "must be in the future",
            ));
        }
        let _w = self.lock();
        let _: App = self.require("app", &req.app)?;
        let plan: Plan = self.require("plan", &req.plan)?;
        let sub = self.subscription_for(&req.app, &req.plan)?;
        let live = self.live_keys(&sub.id, now)?;
        if live >= plan.max_keys_per_app as usize {
            return Err(AdminError::conflict(format!(
                "app `{}` already has {live} live key(s) for plan `{}`, which allows {}: revoke one first",
                req.app, req.plan, plan.max_keys_per_app
            )));
        }
        let mut tx = Tx::default();
        let (k, secret) = self.issue_key(&mut tx, &sub, req.name, req.expires_at);
        self.commit(tx, actor, "create", "key", &k.id, detail_of(&k))?;
        Ok((k, secret))
    }

    pub fn update_key(&self, actor: Actor, id: &str, req: KeyUpdate) -> Result<Key, AdminError> {
        let _w = self.lock();
        let mut k: Key = self.must("key", "key", id)?;
        let before = k.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            k.name = n;
        }
        if let Some(e) = req.expires_at {
            let now = Ts::now();
            if let Some(at) = k.revoked_at {
                return Err(AdminError::conflict(format!(
                    "key `{id}` was revoked at {}: a dead key stays dead; create a new key",
                    at.rfc3339()
                )));
            }
            if !k.live(now) {
                return Err(AdminError::conflict(format!(
                    "key `{id}` expired at {}: a dead key stays dead; create a new key",
                    k.expires_at.map_or_else(String::new, |t| t.rfc3339())
                )));
            }
            if e.is_some_and(|t| t <= now) {
                return Err(AdminError::unprocessable(
                    "expires_at",
                    "must be in the future (to end a key now, revoke it)",
                ));
            }
            if let Some(next) = &k.rotated_to {
                // The overlap of a rotation may end sooner, never later.
                let earlier = matches!((k.expires_at, e), (Some(cur), Some(t)) if t <= cur);
                if !earlier {
                    return Err(AdminError::conflict(format!(
                        "key `{id}` was rotated (to `{next}`) and its overlap ends at {}: its expires_at may only move earlier",
                        k.expires_at.map_or_else(String::new, |t| t.rfc3339())
                    )));
                }
            }
            k.expires_at = e;
        }
        self.save_update(actor, id, &before, k, |_| {})
    }

    pub fn rotate_key(
        &self,
        actor: Actor,
        id: &str,
        req: KeyRotate,
    ) -> Result<(Key, String), AdminError> {
        if req.overlap_seconds > MAX_OVERLAP_SECONDS {
            return Err(AdminError::invalid(
                "overlap_seconds",
                format!("at most {MAX_OVERLAP_SECONDS} (30 days)"),
            ));
        }
        let _w = self.lock();
        let mut old: Key = self.must("key", "key", id)?;
        let now = Ts::now();
        if old.revoked_at.is_some() {
            return Err(AdminError::conflict(format!(
                "key `{id}` is revoked: create a new key instead"
            )));
        }
        if let Some(next) = &old.rotated_to {
            return Err(AdminError::conflict(format!(
                "key `{id}` was rotated already (to `{next}`): a key is rotated once; rotate `{next}` instead"
            )));
        }
        let sub: Subscription = self.must("sub", "subscription", &old.subscription)?;
        // The new key replaces this one, which stays live through its
        // overlap; every other live key, in an overlap or not, counts.
        let plan: Plan = self.must("plan", "plan", &sub.plan)?;
        let others = self.live_keys(&sub.id, now)? - usize::from(old.live(now));
        if others + 1 > plan.max_keys_per_app as usize {
            return Err(AdminError::conflict(format!(
                "app `{}` has {others} other live key(s) for plan `{}`, which allows {} (keys in a rotation overlap count): wait until the overlap ends or revoke one first",
                sub.app, sub.plan, plan.max_keys_per_app
            )));
        }
        let mut tx = Tx::default();
        let (new, secret) = self.issue_key(
            &mut tx,
            &sub,
            old.name.clone(),
            old.expires_at.filter(|e| *e > now),
        );
        let end = Ts(now.0 + req.overlap_seconds * 1000);
        old.expires_at = Some(old.expires_at.map_or(end, |e| e.min(end)));
        old.rotated_to = Some(new.id.clone());
        tx.put("key", id, &old);
        let detail = serde_json::json!({"overlap_seconds": req.overlap_seconds, "new_key": new.id});
        self.commit(tx, actor, "rotate", "key", id, detail)?;
        Ok((new, secret))
    }

    pub fn revoke_key(&self, actor: Actor, id: &str) -> Result<Key, AdminError> {
        let _w = self.lock();
        let mut k: Key = self.must("key", "key", id)?;
        if k.revoked_at.is_some() {
            return Ok(k);
        }
        k.revoked_at = Some(Ts::now());
        self.save(actor, "revoke", "key", "key", id, &k, serde_json::json!({}))?;
        Ok(k)
    }

    pub fn delete_key(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let k: Key = self.must("key", "key", id)?;
        let mut tx = Tx::default();
        tx.del(key("keyhash", &k.sha256));
        tx.del(key("key", id));
        tx.del(idx("key-of-sub", &k.subscription, id));
        self.commit(tx, actor, "delete", "key", id, serde_json::json!({}))
    }
}
