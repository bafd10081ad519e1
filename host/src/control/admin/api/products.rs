//! Products (`/admin/v1/products`): the APIs they cover must be defined in
//! the serving configuration.

use super::crud::{view, Crud};
use super::request::Call;
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Product, ProductCreate, ProductUpdate};
use serde_json::Value;

impl Crud for Product {
    type Create = ProductCreate;
    type Update = ProductUpdate;

    fn create(c: &Call, body: ProductCreate) -> Result<Value, AdminError> {
        let g = c.gateway.current();
        let p = c
            .registry
            .create_product(c.actor(), body, &|a| g.apis.iter().any(|x| &*x.name == a))?;
        Ok(view(&p))
    }

    fn update(c: &Call, id: &str, body: ProductUpdate) -> Result<Product, AdminError> {
        let g = c.gateway.current();
        c.registry.update_product(c.actor(), id, body, &|a| {
            g.apis.iter().any(|x| &*x.name == a)
        })
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_product(c.actor(), id)
    }
}
