//! Apps (`/admin/v1/apps`, filtered by `consumer`).

use super::crud::{view, Crud, Keep};
use super::request::{id_filter, Call, Query};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{App, AppCreate, AppUpdate};
use serde_json::Value;

impl Crud for App {
    type Create = AppCreate;
    type Update = AppUpdate;
    const FILTERS: &'static [&'static str] = &["consumer"];

    fn keep(q: &Query) -> Result<Keep<App>, AdminError> {
        let consumer = id_filter(q, "consumer")?;
        Ok(Box::new(move |x| {
            consumer.as_ref().is_none_or(|c| &x.consumer == c)
        }))
    }

    fn create(c: &Call, body: AppCreate) -> Result<Value, AdminError> {
        Ok(view(&c.registry.create_app(c.actor(), body)?))
    }

    fn update(c: &Call, id: &str, body: AppUpdate) -> Result<App, AdminError> {
        c.registry.update_app(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_app(c.actor(), id)
    }
}
