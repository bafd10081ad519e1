//! Consumers (`/admin/v1/consumers`).

use super::crud::{view, Crud};
use super::request::Call;
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Consumer, ConsumerCreate, ConsumerUpdate};
use serde_json::Value;

impl Crud for Consumer {
    type Create = ConsumerCreate;
    type Update = ConsumerUpdate;

    fn create(c: &Call, body: ConsumerCreate) -> Result<Value, AdminError> {
        Ok(view(&c.registry.create_consumer(c.actor(), body)?))
    }

    fn update(c: &Call, id: &str, body: ConsumerUpdate) -> Result<Consumer, AdminError> {
        c.registry.update_consumer(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_consumer(c.actor(), id)
    }
}
