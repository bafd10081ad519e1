//! Groups of consumers (`/admin/v1/groups`) and their members
//! (`/admin/v1/groups/{id}/members/{consumer}`). The system groups
//! `developers` and `guests` are listed and read like the others, but
//! cannot be created, changed or deleted, and their membership is implicit.

use super::crud::{page_view, view, Crud};
use super::request::{Call, Empty, PAGING};
use super::{no_content, ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Group, GroupCreate, GroupUpdate};
use serde_json::{json, Value};

impl Crud for Group {
    type Create = GroupCreate;
    type Update = GroupUpdate;

    fn create(c: &Call, body: GroupCreate) -> Result<Value, AdminError> {
        Ok(view(&c.registry.create_group(c.actor(), body)?))
    }

    fn update(c: &Call, id: &str, body: GroupUpdate) -> Result<Group, AdminError> {
        c.registry.update_group(c.actor(), id, body)
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_group(c.actor(), id)
    }
}

/// `GET /admin/v1/groups`: a page of groups, the system groups among them.
pub fn list(c: &Call) -> Reply {
    let q = c.query(PAGING)?;
    let (limit, after) = super::request::paging(&q)?;
    ok(page_view(c.registry.list_groups(after.as_deref(), limit)?))
}

/// `GET /admin/v1/groups/{id}`.
pub fn get(c: &Call) -> Reply {
    c.no_query()?;
    ok(view(&c.registry.group(c.id())?))
}

/// `GET /admin/v1/groups/{id}/members`: the consumer ids of a custom
/// group's members.
pub fn members(c: &Call) -> Reply {
    c.no_query()?;
    let members = c.registry.members(c.id())?;
    ok(json!({ "group": c.id(), "members": members }))
}

/// `PUT /admin/v1/groups/{id}/members/{consumer}`: 204; nothing changes
/// when the consumer is a member already.
pub fn add_member(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    c.registry.add_member(c.actor(), c.id(), member(c))?;
    no_content()
}

/// `DELETE /admin/v1/groups/{id}/members/{consumer}`: 204, or 404 when the
/// consumer is not a member.
pub fn remove_member(c: &Call) -> Reply {
    c.no_query()?;
    c.registry.remove_member(c.actor(), c.id(), member(c))?;
    no_content()
}

/// The route's second parameter: the consumer.
fn member(c: &Call) -> &str {
    c.params.get(1).map(String::as_str).unwrap_or_default()
}
