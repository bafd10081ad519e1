//! Apps in the registry, indexed under their consumer
//! (`idx/app-of-consumer`).

use super::{detail_of, idx, key, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{check_id, check_text, App, AppCreate, AppUpdate, Consumer, Ts};

impl Registry {
    pub fn create_app(&self, actor: Actor, req: AppCreate) -> Result<App, AdminError> {
        check_id("id", &req.id)?;
        let name = req.name.unwrap_or_else(|| req.id.clone());
        check_text("name", &name, 200)?;
        check_text("description", &req.description, 4000)?;
        let _w = self.lock();
        let _: Consumer = self.require("consumer", &req.consumer)?;
        if self.get::<App>("app", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "app `{}` exists already",
                req.id
            )));
        }
        let now = Ts::now();
        let a = App {
            id: req.id,
            consumer: req.consumer,
            name,
            description: req.description,
            created_at: now,
            updated_at: now,
        };
        let mut tx = Tx::default();
        tx.put("app", &a.id, &a);
        tx.put_raw(idx("app-of-consumer", &a.consumer, &a.id), b"");
        self.commit(tx, actor, "create", "app", &a.id, detail_of(&a))?;
        Ok(a)
    }

    pub fn update_app(&self, actor: Actor, id: &str, req: AppUpdate) -> Result<App, AdminError> {
        let _w = self.lock();
        let mut a: App = self.must("app", "app", id)?;
        let before = a.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            a.name = n;
        }
        if let Some(d) = req.description {
            check_text("description", &d, 4000)?;
            a.description = d;
        }
        self.save_update(actor, id, &before, a, |a| a.updated_at = Ts::now())
    }

    pub fn delete_app(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let a: App = self.must("app", "app", id)?;
        self.refuse_children("sub-of-app", "app", id, "subscriptions")?;
        let mut tx = Tx::default();
        tx.del(key("app", id));
        tx.del(idx("app-of-consumer", &a.consumer, id));
        self.commit(tx, actor, "delete", "app", id, serde_json::json!({}))
    }
}
