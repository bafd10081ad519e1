//! Subscriptions (`/admin/v1/subscriptions`, filtered by `app`, `plan` and
//! `state`): an app's access to a plan, its approval state, and its
//! primary and secondary keys (their secrets shown once: on creation and
//! when one is regenerated).

use super::crud::{view, Crud, Keep};
use super::request::{id_filter, Call, Empty, Query};
use super::{ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{
    Slot, SubState, Subscription, SubscriptionCreate, SubscriptionUpdate,
};
use serde_json::{json, Value};

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

    /// The new subscription, with the secrets of its two keys.
    fn create(c: &Call, body: SubscriptionCreate) -> Result<Value, AdminError> {
        let (s, secrets) = c.registry.create_subscription(c.actor(), body)?;
        let mut v = view(&s);
        v["secrets"] = json!({"primary": secrets.primary, "secondary": secrets.secondary});
        Ok(v)
    }

    fn update(c: &Call, id: &str, body: SubscriptionUpdate) -> Result<Subscription, AdminError> {
        c.registry.update_subscription(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_subscription(c.actor(), id)
    }
}

/// `POST /admin/v1/subscriptions/{id}/keys/{key}/regenerate` (`key`:
/// `primary` or `secondary`): the subscription and the new secret; the old
/// one stops working at once, the other key keeps working.
pub fn regenerate(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    let slot = Slot::parse(c.params.get(1).map_or("", String::as_str))?;
    let (s, secret) = c.registry.regenerate_sub_key(c.actor(), c.id(), slot)?;
    ok(json!({"subscription": view(&s), "key": slot.as_str(), "secret": secret}))
}

/// The `state` filter of a list call.
fn state_filter(s: &str) -> Result<SubState, AdminError> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        AdminError::invalid("state", "expected pending, active, rejected or suspended")
    })
}
