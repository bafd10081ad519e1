//! Admin users (`/admin/v1/users`), their tokens, and `whoami`.

use super::crud::{view, Crud};
use super::request::{Call, Empty};
use super::{ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{User, UserCreate, UserUpdate};
use serde_json::{json, Value};

impl Crud for User {
    type Create = UserCreate;
    type Update = UserUpdate;

    /// The new user and its token (shown once).
    fn create(c: &Call, body: UserCreate) -> Result<Value, AdminError> {
        let (u, token) = c.registry.create_user(c.actor(), body)?;
        Ok(json!({"user": view(&u), "token": token}))
    }

    fn update(c: &Call, id: &str, body: UserUpdate) -> Result<User, AdminError> {
        c.registry.update_user(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_user(c.actor(), id)
    }
}

/// `GET /admin/v1/whoami`: the caller's id and role.
pub fn whoami(c: &Call) -> Reply {
    c.no_query()?;
    let u = c.user.as_ref().expect("authenticated");
    ok(json!({"user": u.id, "role": u.role.as_str()}))
}

/// `POST /admin/v1/users/{id}/token`: a new token; the old one stops
/// working.
pub fn new_token(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    let (u, token) = c.registry.rotate_user_token(c.actor(), c.id())?;
    ok(json!({"user": view(&u), "token": token}))
}
