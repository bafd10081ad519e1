//! Subscriptions (`/admin/v1/subscriptions`, filtered by `app`, `plan` and
//! `state`): an app's access to a plan, and its approval state.

use super::crud::{view, Crud, Keep};
use super::request::{id_filter, Call, Query};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    SubState, Subscription, SubscriptionCreate, SubscriptionUpdate,
};
use serde_json::Value;

impl Crud for Subscription {
    type Create = SubscriptionCreate;
    type Update = SubscriptionUpdate;
    const FILTERS: &'static [&'static str] = &["app", "plan", "state"];

    fn keep(q: &Query) -> Result<Keep<Subscription>, AdminError> {
        let (app, plan) = (id_filter(q, "app")?, id_filter(q, "plan")?);
        let state = q.get("state").map(|s| state_filter(s)).transpose()?;
        Ok(Box::new(move |x| {
            app.as_ref().is_none_or(|a| &x.app == a)
                && plan.as_ref().is_none_or(|p| &x.plan == p)
                && state.is_none_or(|s| x.state == s)
        }))
    }

    fn create(c: &Call, body: SubscriptionCreate) -> Result<Value, AdminError> {
        Ok(view(&c.registry.create_subscription(c.actor(), body)?))
    }

    fn update(c: &Call, id: &str, body: SubscriptionUpdate) -> Result<Subscription, AdminError> {
        c.registry.update_subscription(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_subscription(c.actor(), id)
    }
}

/// The `state` filter of a list call.
fn state_filter(s: &str) -> Result<SubState, AdminError> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        AdminError::invalid("state", "expected pending, active, rejected or suspended")
    })
}
