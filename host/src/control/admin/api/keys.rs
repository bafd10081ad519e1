//! API keys (`/admin/v1/keys`, filtered by `app` and `subscription`):
//! issued, rotated with an overlap, revoked. A key's secret is shown once,
//! when it is issued.

use super::crud::{view, Crud, Keep};
use super::request::{generated_filter, id_filter, Call, Empty, Query};
use super::{created, ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Key, KeyCreate, KeyRotate, KeyUpdate};
use serde_json::{json, Value};

impl Crud for Key {
    type Create = KeyCreate;
    type Update = KeyUpdate;
    const FILTERS: &'static [&'static str] = &["app", "subscription"];

    fn keep(q: &Query) -> Result<Keep<Key>, AdminError> {
        let app = id_filter(q, "app")?;
        let sub = generated_filter(q, "subscription", "sub_")?;
        Ok(Box::new(move |x| {
            app.as_ref().is_none_or(|a| &x.app == a)
                && sub.as_ref().is_none_or(|s| &x.subscription == s)
        }))
    }

    /// The new key and its secret.
    fn create(c: &Call, body: KeyCreate) -> Result<Value, AdminError> {
        let (k, secret) = c.registry.create_key(c.actor(), body)?;
        Ok(json!({"key": view(&k), "secret": secret}))
    }

    fn update(c: &Call, id: &str, body: KeyUpdate) -> Result<Key, AdminError> {
        c.registry.update_key(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_key(c.actor(), id)
    }
}

/// `POST /admin/v1/keys/{id}/rotate`: 201 with the new key and its secret;
/// the old key stays live through the overlap.
pub fn rotate(c: &Call) -> Reply {
    c.no_query()?;
    let body: KeyRotate = c.optional_body()?;
    let (k, secret) = c.registry.rotate_key(c.actor(), c.id(), body)?;
    created(json!({"key": view(&k), "secret": secret}))
}

/// `POST /admin/v1/keys/{id}/revoke`: the key, dead from the next request.
pub fn revoke(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    ok(view(&c.registry.revoke_key(c.actor(), c.id())?))
}
