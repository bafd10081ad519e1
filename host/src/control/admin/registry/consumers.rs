//! Consumers in the registry. The id `anonymous` is reserved: it is who a
//! call without credentials is, on a product open to anonymous callers.

use super::{detail_of, key, Actor, Registry, Tx};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    check_email, check_id, check_text, Consumer, ConsumerCreate, ConsumerUpdate, Ts, ANONYMOUS,
};

impl Registry {
    pub fn create_consumer(
        &self,
        actor: Actor,
        req: ConsumerCreate,
    ) -> Result<Consumer, AdminError> {
        check_id("id", &req.id)?;
        if req.id == ANONYMOUS {
            return Err(AdminError::unprocessable(
                "id",
                format!("`{ANONYMOUS}` is reserved for callers without credentials"),
            ));
        }
        let name = req.name.unwrap_or_else(|| req.id.clone());
        check_text("name", &name, 200)?;
        if let Some(e) = &req.email {
            check_email(e)?;
        }
        let _w = self.lock();
        if self.get::<Consumer>("consumer", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "consumer `{}` exists already",
                req.id
            )));
        }
        let now = Ts::now();
        let c = Consumer {
            id: req.id,
            name,
            email: req.email.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        self.save(
            actor,
            "create",
            "consumer",
            "consumer",
            &c.id,
            &c,
            detail_of(&c),
        )?;
        Ok(c)
    }

    pub fn update_consumer(
        &self,
        actor: Actor,
        id: &str,
        req: ConsumerUpdate,
    ) -> Result<Consumer, AdminError> {
        let _w = self.lock();
        let mut c: Consumer = self.must("consumer", "consumer", id)?;
        let before = c.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            c.name = n;
        }
        match req.email {
            Some(Some(e)) => {
                check_email(&e)?;
                c.email = e;
            }
            Some(None) => c.email.clear(),
            None => {}
        }
        self.save_update(actor, id, &before, c, |c| c.updated_at = Ts::now())
    }

    pub fn delete_consumer(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let _: Consumer = self.must("consumer", "consumer", id)?;
        self.refuse_children("app-of-consumer", "consumer", id, "apps")?;
        let mut tx = Tx::default();
        // Its portal account goes with it.
        self.delete_account_of(&mut tx, id)?;
        self.delete_memberships_of(&mut tx, id)?;
        tx.del(key("consumer", id));
        self.commit(tx, actor, "delete", "consumer", id, serde_json::json!({}))
    }
}
