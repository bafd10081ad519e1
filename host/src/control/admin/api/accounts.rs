//! Portal accounts (`/admin/v1/accounts`, filtered by `state`): consumers'
//! sign-ins to the developer portal. They are created by signing up on the
//! portal; here they are listed, approved (a moderated portal's sign-ups
//! wait as `pending`), disabled and enabled again. A password is never
//! shown, nor its hash.

use super::crud::{page_view, view};
use super::request::{is_generated_id, Call, Empty, PAGING};
use super::{ok, Reply};
use crate::control::admin::error::{truncate, AdminError};
use crate::control::admin::model::{Account, AccountState};
use serde_json::Value;

/// `GET /admin/v1/accounts`: a page of accounts, with `state` only those
/// in that state.
pub fn list(c: &Call) -> Reply {
    let mut names = PAGING.to_vec();
    names.push("state");
    let q = c.query(&names)?;
    let (limit, after) = super::request::paging(&q)?;
    let state = q
        .get("state")
        .map(|s| {
            serde_json::from_value::<AccountState>(Value::String(s.clone()))
                .map_err(|_| AdminError::invalid("state", "expected pending, active or disabled"))
        })
        .transpose()?;
    let page =
        c.registry
            .list::<Account>("account", after.as_deref(), limit, move |a: &Account| {
                state.is_none_or(|s| a.state == s)
            })?;
    ok(page_view(page))
}

/// The path's account id, checked.
fn id(c: &Call) -> Result<&str, AdminError> {
    let id = c.id();
    if is_generated_id(id, "acct_") {
        Ok(id)
    } else {
        Err(AdminError::not_found("account", &truncate(id, 80)))
    }
}

/// `GET /admin/v1/accounts/{id}`.
pub fn get(c: &Call) -> Reply {
    c.no_query()?;
    ok(view(&c.registry.account(id(c)?)?))
}

/// `POST /admin/v1/accounts/{id}/approve`: a pending account becomes
/// active (an active one stays so).
pub fn approve(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    ok(view(&c.registry.approve_account(c.actor(), id(c)?)?))
}

/// `POST /admin/v1/accounts/{id}/disable`: the account may no longer sign
/// in; its sessions end at once.
pub fn disable(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    ok(view(&c.registry.set_account_enabled(
        c.actor(),
        id(c)?,
        false,
    )?))
}

/// `POST /admin/v1/accounts/{id}/enable`: a disabled account is active
/// again.
pub fn enable(c: &Call) -> Reply {
    c.no_query()?;
    let _: Empty = c.optional_body()?;
    ok(view(&c.registry.set_account_enabled(
        c.actor(),
        id(c)?,
        true,
    )?))
}
