//! Products in the registry: the APIs they cover, checked against the
//! serving configuration, the groups they are visible to, and who may call
//! them without a subscription. An open product's APIs are indexed
//! (`idx/open-api/API/PRODUCT`) so that the data path finds the open
//! products of an API with one prefix scan.

use super::{detail_of, idx, key, unchanged, Actor, Registry, Tx};
use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{
    check_id, check_text, Product, ProductCreate, ProductUpdate, Ts,
};

/// The index of open products by API.
pub(super) const OPEN_API: &str = "open-api";

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
        self.check_visible_to(&req.visible_to)?;
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
            access: req.access,
            visible_to: req.visible_to,
            created_at: now,
            updated_at: now,
        };
        let mut tx = Tx::default();
        tx.put("product", &p.id, &p);
        index_open(&mut tx, &p);
        self.commit(tx, actor, "create", "product", &p.id, detail_of(&p))?;
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
        if let Some(a) = req.access {
            p.access = a;
        }
        if let Some(v) = req.visible_to {
            self.check_visible_to(&v)?;
            p.visible_to = v;
        }
        if unchanged(&before, &p) {
            return Ok(p);
        }
        p.updated_at = Ts::now();
        let mut tx = Tx::default();
        unindex_open(&mut tx, &before);
        tx.put("product", id, &p);
        index_open(&mut tx, &p);
        self.commit(tx, actor, "update", "product", id, detail_of(&p))?;
        Ok(p)
    }

    /// The open products covering `api`, in id order (published or not:
    /// the caller decides).
    pub(super) fn open_products(&self, api: &str) -> Vec<Product> {
        if api.is_empty() || api.len() > 256 {
            return Vec::new();
        }
        let ids = self.children(OPEN_API, api).unwrap_or_default();
        ids.iter()
            .filter_map(|id| self.get::<Product>("product", id).ok().flatten())
            .filter(|p| p.access.is_open() && p.apis.iter().any(|a| a == api))
            .collect()
    }

    pub fn delete_product(&self, actor: Actor, id: &str) -> Result<(), AdminError> {
        let _w = self.lock();
        let p: Product = self.must("product", "product", id)?;
        self.refuse_children("plan-of-product", "product", id, "plans")?;
        let mut tx = Tx::default();
        unindex_open(&mut tx, &p);
        tx.del(key("product", id));
        self.commit(tx, actor, "delete", "product", id, serde_json::json!({}))
    }
}

/// Index an open product under each of its APIs.
fn index_open(tx: &mut Tx, p: &Product) {
    if p.access.is_open() {
        for api in &p.apis {
            tx.put_raw(idx(OPEN_API, api, &p.id), b"");
        }
    }
}

/// Remove what [`index_open`] wrote for `p` (as it was stored).
fn unindex_open(tx: &mut Tx, p: &Product) {
    if p.access.is_open() {
        for api in &p.apis {
            tx.del(idx(OPEN_API, api, &p.id));
        }
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
