//! The audit log (`/admin/v1/audit`), oldest first, paged by sequence
//! number.

use super::crud::page_view;
use super::request::{paging, Call, PAGING};
use super::{ok, Reply};
use crate::control::admin::error::AdminError;

/// `GET /admin/v1/audit`.
pub fn list(c: &Call) -> Reply {
    let (limit, after) = paging(&c.query(PAGING)?)?;
    let after = after.map(|s| sequence(&s)).transpose()?;
    ok(page_view(c.registry.audit_page(after, limit)?))
}

/// The `after` of an audit page: a sequence number.
fn sequence(s: &str) -> Result<u64, AdminError> {
    Some(s)
        .filter(|s| s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| AdminError::invalid("after", "must be a sequence number (1-19 digits)"))
}
