//! Plans (`/admin/v1/plans`, filtered by `product`).

use super::crud::{view, Crud, Keep};
use super::request::{id_filter, Call, Query};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Plan, PlanCreate, PlanUpdate};
use serde_json::Value;

impl Crud for Plan {
    type Create = PlanCreate;
    type Update = PlanUpdate;
    const FILTERS: &'static [&'static str] = &["product"];

    fn keep(q: &Query) -> Result<Keep<Plan>, AdminError> {
        let product = id_filter(q, "product")?;
        Ok(Box::new(move |x| {
            product.as_ref().is_none_or(|p| &x.product == p)
        }))
    }

    fn create(c: &Call, body: PlanCreate) -> Result<Value, AdminError> {
        Ok(view(&c.registry.create_plan(c.actor(), body)?))
    }

    fn update(c: &Call, id: &str, body: PlanUpdate) -> Result<Plan, AdminError> {
        c.registry.update_plan(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_plan(c.actor(), id)
    }
}
