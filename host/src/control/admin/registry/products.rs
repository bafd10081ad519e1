//! Products in the registry: the APIs they cover, checked against the
//! serving configuration.

use super::{detail_of, key, Actor, Registry, Tx};
use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{
    check_id, check_text, Product, ProductCreate, ProductUpdate, Ts,
};

impl Registry {
    pub fn create_product(
        &self,
        actor: Actor,
        req: ProductCreate,
        api_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Product, AdminError> {
        check_id("id", &req.id)?;
        let name = req.name.unwrap_or_else(|| req.id.clone());
        check_text("name", &name, 200)?;
        check_text("description", &req.description, 4000)?;
        check_apis(&req.apis, api_exists)?;
        let _w = self.lock();
        if self.get::<Product>("product", &req.id)?.is_some() {
            return Err(AdminError::conflict(format!(
                "product `{}` exists already",
                req.id
            )));
        }
        let now = Ts::now();
        let p = Product {
            id: req.id,
            name,
            description: req.description,
            apis: req.apis,
            published: req.published,
            created_at: now,
            updated_at: now,
        };
        self.save(
            actor,
            "create",
            "product",
            "product",
            &p.id,
            &p,
            detail_of(&p),
        )?;
        Ok(p)
    }

    pub fn update_product(
        &self,
        actor: Actor,
        id: &str,
        req: ProductUpdate,
        api_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Product, AdminError> {
        let _w = self.lock();
        let mut p: Product = self.must("product", "product", id)?;
        let before = p.clone();
        if let Some(n) = req.name {
            check_text("name", &n, 200)?;
            p.name = n;
        }
        if let Some(d) = req.description {
            check_text("description", &d, 4000)?;
            p.description = d;
        }
        if let Some(a) = req.apis {
            check_apis(&a, api_exists)?;
            p.apis = a;
        }
        if let Some(b) = req.published {
            p.published = b;
        }
        self.save_update(actor, id, &before, p, |p| p.updated_at = Ts::now())
    }

    pub fn delete_product(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let _: Product = self.must("product", "product", id)?;
        self.refuse_children("plan-of-product", "product", id, "plans")?;
        let mut tx = Tx::default();
        tx.del(key("product", id));
        self.commit(tx, actor, "delete", "product", id, serde_json::json!({}))
    }
}

fn check_apis(apis: &[String], api_exists: &dyn Fn(&str) -> bool) -> Result<(), AdminError> {
    if apis.len() > 1000 {
        return Err(AdminError::invalid("apis", "at most 1000 APIs"));
    }
    for (i, a) in apis.iter().enumerate() {
        if !api_exists(a) {
            return Err(AdminError::unprocessable(
                format!("apis[{i}]"),
                format!(
                    "API `{}` is not defined in the policy manifests",
                    truncate(a, 80)
                ),
            ));
        }
        if apis[..i].contains(a) {
            return Err(AdminError::invalid(
                format!("apis[{i}]"),
                format!("API `{a}` is listed twice"),
            ));
        }
    }
    Ok(())
}
