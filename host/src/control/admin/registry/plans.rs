//! Plans in the registry: a product's limits and approval, indexed under
//! their product (`idx/plan-of-product`).

use super::{detail_of, idx, key, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    check_id, check_plan_limits, check_scopes, check_text, Plan, PlanCreate, PlanUpdate, Product,
    Ts,
};

impl Registry {
    pub fn create_plan(&self, actor: Actor, req: PlanCreate) -> Result<Plan, AdminError> {
        check_id("id", &req.id)?;
        let name = req.name.unwrap_or_else(|| req.id.clone());
        check_text("name", &name, 200)?;
        check_text("description", &req.description, 4000)?;
        check_plan_limits(&req.rate_limits, req.quota.as_ref(), req.max_keys_per_app)?;
        check_scopes(&req.scopes)?;
        let _w = self.lock();
        let _: Product = self.require("product", &req.product)?;
        if self.get::<Plan>("plan", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "plan `{}` exists already",
                req.id
            )));
        }
        let now = Ts::now();
        let p = Plan {
            id: req.id,
            product: req.product,
            name,
            description: req.description,
            rate_limits: req.rate_limits,
            quota: req.quota,
            approval: req.approval,
            max_keys_per_app: req.max_keys_per_app,
            scopes: req.scopes,
            created_at: now,
            updated_at: now,
        };
        let mut tx = Tx::default();
        tx.put("plan", &p.id, &p);
        tx.put_raw(idx("plan-of-product", &p.product, &p.id), b"");
        self.commit(tx, actor, "create", "plan", &p.id, detail_of(&p))?;
        Ok(p)
    }

    pub fn update_plan(&self, actor: Actor, id: &str, req: PlanUpdate) -> Result<Plan, AdminError> {
        let _w = self.lock();
        let mut p: Plan = self.must("plan", "plan", id)?;
        let before = p.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            p.name = n;
        }
        if let Some(d) = req.description {
            check_text("description", &d, 4000)?;
            p.description = d;
        }
        if let Some(r) = req.rate_limits {
            p.rate_limits = r;
        }
        if let Some(q) = req.quota {
            p.quota = q;
        }
        if let Some(a) = req.approval {
            p.approval = a;
        }
        if let Some(m) = req.max_keys_per_app {
            p.max_keys_per_app = m;
        }
        if let Some(s) = req.scopes {
            check_scopes(&s)?;
            p.scopes = s;
        }
        check_plan_limits(&p.rate_limits, p.quota.as_ref(), p.max_keys_per_app)?;
        self.save_update(actor, id, &before, p, |p| p.updated_at = Ts::now())
    }

    pub fn delete_plan(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let p: Plan = self.must("plan", "plan", id)?;
        self.refuse_children("sub-of-plan", "plan", id, "subscriptions")?;
        let mut tx = Tx::default();
        tx.del(key("plan", id));
        tx.del(idx("plan-of-product", &p.product, id));
        self.commit(tx, actor, "delete", "plan", id, serde_json::json!({}))
    }
}
