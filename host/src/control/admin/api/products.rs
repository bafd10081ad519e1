//! Products (`/admin/v1/products`, filtered by `group`, `consumer` and
//! `access`): the APIs they cover must be defined in the serving
//! configuration, the groups they are visible to must exist.

use super::crud::{page_view, view, Crud};
use super::request::{id_filter, paging, Call, PAGING};
use super::{ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::{Access, Product, ProductCreate, ProductUpdate, GUESTS};
use serde_json::Value;

impl Crud for Product {
    type Create = ProductCreate;
    type Update = ProductUpdate;

    fn create(c: &Call, body: ProductCreate) -> Result<Value, AdminError> {
        let g = c.gateway.current();
        let p = c
            .registry
            .create_product(c.actor(), body, &|a| g.apis.iter().any(|x| &*x.name == a))?;
        Ok(view(&p))
    }

    fn update(c: &Call, id: &str, body: ProductUpdate) -> Result<Product, AdminError> {
        let g = c.gateway.current();
        c.registry.update_product(c.actor(), id, body, &|a| {
            g.apis.iter().any(|x| &*x.name == a)
        })
    }

    fn delete(c: &Call, id: &str) -> Result<(), AdminError> {
        c.registry.delete_product(c.actor(), id)
    }
}

/// `GET /admin/v1/products`: a page of products; `group=G` keeps those
/// visible to group G, `consumer=C` those visible to one of consumer C's
/// groups (what C sees in the portal's catalogue, unpublished products
/// aside), `access=A` those with that access.
pub fn list(c: &Call) -> Reply {
    let mut names = PAGING.to_vec();
    names.extend_from_slice(&["group", "consumer", "access"]);
    let q = c.query(&names)?;
    let (limit, after) = paging(&q)?;
    let mut groups: Option<Vec<String>> = id_filter(&q, "group")?.map(|g| vec![g]);
    if let Some(consumer) = id_filter(&q, "consumer")? {
        let theirs = c.registry.consumer_groups(&consumer);
        if theirs.is_empty() {
            return Err(AdminError::unprocessable(
                "consumer",
                format!("consumer `{consumer}` does not exist"),
            ));
        }
        groups = Some(match groups {
            Some(g) => g.into_iter().filter(|g| theirs.contains(g)).collect(),
            None => theirs,
        });
    }
    let access = q.get("access").map(|a| access_filter(a)).transpose()?;
    let page = c
        .registry
        .list::<Product>("product", after.as_deref(), limit, move |p| {
            groups.as_ref().is_none_or(|gs| visible(p, gs)) && access.is_none_or(|a| p.access == a)
        })?;
    ok(page_view(page))
}

/// Whether product `p` is visible to one of `groups`.
pub fn visible(p: &Product, groups: &[String]) -> bool {
    p.visible_to.iter().any(|g| groups.contains(g))
}

/// Whether a visitor who is not signed in sees product `p`.
pub fn visible_to_guests(p: &Product) -> bool {
    p.visible_to.iter().any(|g| g == GUESTS)
}

/// The `access` filter of a list call.
fn access_filter(s: &str) -> Result<Access, AdminError> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        AdminError::invalid("access", "expected protected, authenticated or anonymous")
    })
}
