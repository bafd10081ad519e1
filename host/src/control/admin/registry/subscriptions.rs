//! Subscriptions in the registry: an app's access to a plan, indexed under
//! both (`idx/sub-of-app`, `idx/sub-of-plan`), moving between states by the
//! rules of [`SubState::can_move`]; deleting one deletes its keys.

use super::{detail_of, idx, key, new_id, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    App, Approval, Key, Plan, SubState, Subscription, SubscriptionCreate, SubscriptionUpdate, Ts,
};

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
    ) -> Result<Subscription, AdminError> {
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
        let s = Subscription {
            id: new_id("sub_"),
            app: req.app,
            plan: req.plan,
            product: plan.product,
            state: match plan.approval {
                Approval::SelfService => SubState::Active,
                Approval::Moderated => SubState::Pending,
            },
            created_at: now,
            updated_at: now,
        };
        let mut tx = Tx::default();
        tx.put("sub", &s.id, &s);
        tx.put_raw(idx("sub-of-app", &s.app, &s.id), b"");
        tx.put_raw(idx("sub-of-plan", &s.plan, &s.id), b"");
        self.commit(tx, actor, "create", "subscription", &s.id, detail_of(&s))?;
        Ok(s)
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
