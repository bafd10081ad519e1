//! Subscriptions in the registry: an app's access to a plan, indexed under
//! both (`idx/sub-of-app`, `idx/sub-of-plan`), moving between states by the
//! rules of [`SubState::can_move`]; deleting one deletes its keys.
//!
//! Each subscription has a primary and a secondary key of its own, issued
//! with it and regenerated one at a time (the other keeps working), found
//! by the SHA-256 of their secret (`subkey/DIGEST` names the subscription
//! and the slot). Only the digests are stored.

use super::{detail_of, idx, key, new_id, new_secret, sha256_hex, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    App, Approval, Key, Plan, Slot, SubKey, SubKeys, SubState, Subscription, SubscriptionCreate,
    SubscriptionUpdate, Ts,
};

/// The secrets of a new subscription's keys, shown once.
#[derive(Debug)]
pub struct SubSecrets {
    pub primary: String,
    pub secondary: String,
}

/// Give `sub` a new key in `slot` (replacing the one there, whose index
/// entry goes): its secret.
fn issue_sub_key(tx: &mut Tx, sub: &mut Subscription, slot: Slot) -> String {
    let secret = new_secret("tg_");
    let shown = SubKey {
        prefix: secret.chars().take(7).collect(),
        created_at: Ts::now(),
    };
    let digest = sha256_hex(&secret);
    let (stored, view) = match slot {
        Slot::Primary => (&mut sub.primary_sha256, &mut sub.keys.primary),
        Slot::Secondary => (&mut sub.secondary_sha256, &mut sub.keys.secondary),
    };
    if !stored.is_empty() {
        tx.del(key("subkey", stored));
    }
    *stored = digest;
    *view = Some(shown);
    tx.put_raw(
        key("subkey", stored),
        format!("{}:{}", sub.id, slot.as_str()).as_bytes(),
    );
    secret
}

impl Registry {
    pub(super) fn subscriptions_of_app(&self, app: &str) -> Result<Vec<Subscription>, AdminError> {
        let mut out = Vec::new();
        for sub in self.children("sub-of-app", app)? {
            if let Some(s) = self.get::<Subscription>("sub", &sub)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The subscription of `app` to `plan` that keys and OAuth clients are
    /// issued under: one that is not rejected, or 409.
    pub(super) fn subscription_for(
        &self,
        app: &str,
        plan: &str,
    ) -> Result<Subscription, AdminError> {
        self.subscriptions_of_app(app)?
            .into_iter()
            .find(|s| s.plan == plan && s.state != SubState::Rejected)
            .ok_or_else(|| {
                AdminError::conflict(format!(
                    "app `{app}` has no subscription to plan `{plan}`: create one first"
                ))
            })
    }

    pub fn create_subscription(
        &self,
        actor: Actor,
        req: SubscriptionCreate,
    ) -> Result<(Subscription, SubSecrets), AdminError> {
        let _w = self.lock();
        let _: App = self.require("app", &req.app)?;
        let plan: Plan = self.require("plan", &req.plan)?;
        if let Some(s) = self
            .subscriptions_of_app(&req.app)?
            .into_iter()
            .find(|s| s.plan == req.plan && s.state != SubState::Rejected)
        {
            return Err(AdminError::conflict(format!(
                "app `{}` is already subscribed to plan `{}` ({}, {})",
                req.app,
                req.plan,
                s.id,
                s.state.as_str()
            )));
        }
        let now = Ts::now();
        let mut s = Subscription {
            id: new_id("sub_"),
            app: req.app,
            plan: req.plan,
            product: plan.product,
            state: match plan.approval {
                Approval::SelfService => SubState::Active,
                Approval::Moderated => SubState::Pending,
            },
            keys: SubKeys::default(),
            primary_sha256: String::new(),
            secondary_sha256: String::new(),
            created_at: now,
            updated_at: now,
        };
        let mut tx = Tx::default();
        let secrets = SubSecrets {
            primary: issue_sub_key(&mut tx, &mut s, Slot::Primary),
            secondary: issue_sub_key(&mut tx, &mut s, Slot::Secondary),
        };
        tx.put("sub", &s.id, &s);
        tx.put_raw(idx("sub-of-app", &s.app, &s.id), b"");
        tx.put_raw(idx("sub-of-plan", &s.plan, &s.id), b"");
        self.commit(tx, actor, "create", "subscription", &s.id, detail_of(&s))?;
        Ok((s, secrets))
    }

    /// Replace the subscription's key in `slot` with a new one: the old
    /// secret stops working at once, the other key keeps working. A
    /// subscription made before there were subscription keys gets its
    /// first one this way. Returns the subscription and the new secret.
    pub fn regenerate_sub_key(
        &self,
        actor: Actor,
        id: &str,
        slot: Slot,
    ) -> Result<(Subscription, String), AdminError> {
        let _w = self.lock();
        let mut s: Subscription = self.must("sub", "subscription", id)?;
        if s.state == SubState::Rejected {
            return Err(AdminError::conflict(format!(
                "subscription `{id}` was rejected: its keys cannot be regenerated"
            )));
        }
        let mut tx = Tx::default();
        let secret = issue_sub_key(&mut tx, &mut s, slot);
        s.updated_at = Ts::now();
        tx.put("sub", id, &s);
        let detail = serde_json::json!({ "key": slot.as_str() });
        self.commit(tx, actor, "regenerate", "subscription", id, detail)?;
        Ok((s, secret))
    }

    /// The subscription and slot a subscription key's digest names, if
    /// the subscription still holds that digest there.
    pub(super) fn sub_by_key_digest(&self, digest: &str) -> Option<(Subscription, Slot)> {
        let named = self.store.get(super::TREE, &key("subkey", digest)).ok()??;
        let named = std::str::from_utf8(&named).ok()?;
        let (id, slot) = named.rsplit_once(':')?;
        let slot = Slot::parse(slot).ok()?;
        let s: Subscription = self.get("sub", id).ok()??;
        let held = match slot {
            Slot::Primary => &s.primary_sha256,
            Slot::Secondary => &s.secondary_sha256,
        };
        (held == digest).then_some((s, slot))
    }

    pub fn update_subscription(
        &self,
        actor: Actor,
        id: &str,
        req: SubscriptionUpdate,
    ) -> Result<Subscription, AdminError> {
        let _w = self.lock();
        let mut s: Subscription = self.must("sub", "subscription", id)?;
        if s.state == req.state {
            return Ok(s);
        }
        if !s.state.can_move(req.state) {
            return Err(AdminError::conflict(format!(
                "subscription `{id}` is {}: it cannot become {} (pending -> active|rejected, active -> suspended, suspended -> active)",
                s.state.as_str(),
                req.state.as_str()
            )));
        }
        let action = match req.state {
            SubState::Active if s.state == SubState::Pending => "approve",
            SubState::Active => "resume",
            SubState::Rejected => "reject",
            SubState::Suspended => "suspend",
            SubState::Pending => "update",
        };
        s.state = req.state;
        s.updated_at = Ts::now();
        self.save(actor, action, "sub", "subscription", id, &s, detail_of(&s))?;
        Ok(s)
    }

    pub fn delete_subscription(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let s: Subscription = self.must("sub", "subscription", id)?;
        let mut tx = Tx::default();
        for k in self.children("key-of-sub", id)? {
            if let Some(key_rec) = self.get::<Key>("key", &k)? {
                tx.del(key("keyhash", &key_rec.sha256));
            }
            tx.del(key("key", &k));
            tx.del(idx("key-of-sub", id, &k));
        }
        self.delete_clients_of(&mut tx, id)?;
        for digest in [&s.primary_sha256, &s.secondary_sha256] {
            if !digest.is_empty() {
                tx.del(key("subkey", digest));
            }
        }
        tx.del(key("sub", id));
        tx.del(idx("sub-of-app", &s.app, id));
        tx.del(idx("sub-of-plan", &s.plan, id));
        self.commit(
            tx,
            actor,
            "delete",
            "subscription",
            id,
            serde_json::json!({}),
        )
    }
}
