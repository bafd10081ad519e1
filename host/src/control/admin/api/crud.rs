//! The handlers every stored resource family shares: list (paging and the
//! family's filters), get, create (201), update and delete (204), over the
//! registry. A family says what differs in its [`Crud`] impl: its create
//! and update bodies, its list filters and the registry calls that check
//! and write them. Views never show a digest of a secret.

use super::request::{Call, Query, PAGING};
use super::{created, no_content, ok, Reply};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::Resource;
use crate::control::admin::registry::Page;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Which items of a listing to keep.
pub type Keep<T> = Box<dyn Fn(&T) -> bool + Send>;

/// What a stored resource family does differently in the generic handlers.
pub trait Crud: Resource {
    /// The body of a create call.
    type Create: DeserializeOwned;
    /// The body of an update call (`PATCH`).
    type Update: DeserializeOwned;
    /// The query parameters a list call takes besides `limit` and `after`.
    const FILTERS: &'static [&'static str] = &[];

    /// The items a list call keeps, from its query (whose names are
    /// [`Self::FILTERS`] and paging's).
    fn keep(_q: &Query) -> Result<Keep<Self>, AdminError> {
        Ok(Box::new(|_| true))
    }

    /// Create one; the body of the 201 (the view, with a new secret when
    /// the family has one).
    fn create(c: &Call, body: Self::Create) -> Result<Value, AdminError>;

    fn update(c: &Call, id: &str, body: Self::Update) -> Result<Self, AdminError>;

    fn delete(c: &Call, id: &str) -> Result<(), AdminError>;
}

/// `GET /admin/v1/{family}`: a page of the family, filtered.
pub fn list<T: Crud>(c: &Call) -> Reply {
    let mut names = PAGING.to_vec();
    names.extend_from_slice(T::FILTERS);
    let q = c.query(&names)?;
    let (limit, after) = super::request::paging(&q)?;
    let keep = T::keep(&q)?;
    let page = c
        .registry
        .list::<T>(T::KIND, after.as_deref(), limit, keep)?;
    ok(page_view(page))
}

/// `GET /admin/v1/{family}/{id}`.
pub fn get<T: Crud>(c: &Call) -> Reply {
    c.no_query()?;
    let v: T = c.registry.get_resource(T::KIND, T::NAME, c.id())?;
    ok(view(&v))
}

/// `POST /admin/v1/{family}`: 201 with the new resource.
pub fn create<T: Crud>(c: &Call) -> Reply {
    c.no_query()?;
    let body: T::Create = c.body()?;
    created(T::create(c, body)?)
}

/// `PATCH /admin/v1/{family}/{id}`: the resource as it is now.
pub fn update<T: Crud>(c: &Call) -> Reply {
    c.no_query()?;
    let body: T::Update = c.body()?;
    ok(view(&T::update(c, c.id(), body)?))
}

/// `DELETE /admin/v1/{family}/{id}`: 204.
pub fn delete<T: Crud>(c: &Call) -> Reply {
    c.no_query()?;
    T::delete(c, c.id())?;
    no_content()
}

/// A resource as shown: never a digest of a secret.
pub fn view<T: Serialize>(v: &T) -> Value {
    let mut j = serde_json::to_value(v).unwrap_or_default();
    if let Some(o) = j.as_object_mut() {
        o.remove("sha256");
        o.remove("previous_sha256");
        o.remove("primary_sha256");
        o.remove("secondary_sha256");
        o.remove("token_sha256");
        o.remove("password_hash");
    }
    j
}

/// A page as shown: `{"items": [views], "next"}`.
pub fn page_view<T: Serialize>(p: Page<T>) -> Value {
    json!({ "items": p.items.iter().map(view).collect::<Vec<_>>(), "next": p.next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::admin::api::request::query;
    use crate::control::admin::model::{Key, SubState, Subscription, Ts, User};

    fn keep<T: Crud>(q: &str) -> Result<Keep<T>, AdminError> {
        let mut names = PAGING.to_vec();
        names.extend_from_slice(T::FILTERS);
        T::keep(&query(Some(q), &names)?)
    }

    #[test]
    fn list_filters_keep_what_they_name() {
        let sub = |app: &str, state| Subscription {
            id: "sub_0123456789abcdef".into(),
            app: app.into(),
            plan: "gold".into(),
            product: "shop".into(),
            state,
            keys: Default::default(),
            primary_sha256: String::new(),
            secondary_sha256: String::new(),
            created_at: Ts(0),
            updated_at: Ts(0),
        };
        let k = keep::<Subscription>("app=a&state=active&limit=5").unwrap();
        assert!(k(&sub("a", SubState::Active)));
        assert!(!k(&sub("b", SubState::Active)));
        assert!(!k(&sub("a", SubState::Pending)));
        assert!(keep::<Subscription>("").unwrap()(&sub(
            "z",
            SubState::Rejected
        )));
        let e = keep::<Subscription>("state=gone").err().unwrap();
        assert_eq!(e.field.as_deref(), Some("state"));
        // A filter a family does not take is refused by name.
        let e = keep::<Subscription>("consumer=a").err().unwrap();
        assert!(
            e.message
                .contains("this route takes: limit, after, app, plan, state"),
            "{e}"
        );
        // Keys take a subscription by its generated id only.
        assert!(keep::<Key>("subscription=gold").is_err());
        assert!(keep::<Key>("subscription=sub_0123456789abcdef").is_ok());
        assert!(keep::<User>("limit=1").is_ok());
    }

    #[test]
    fn views_leave_out_digests() {
        let u = User {
            id: "a".into(),
            role: crate::control::admin::model::Role::Administrator,
            created_at: Ts(0),
            token_sha256: "ff".into(),
        };
        assert_eq!(view(&u).get("token_sha256"), None);
        assert_eq!(view(&u)["id"], "a");
        let k = Key {
            id: "key_1".into(),
            subscription: "sub_1".into(),
            app: "a".into(),
            plan: "p".into(),
            name: String::new(),
            prefix: "tg_abcd".into(),
            created_at: Ts(0),
            expires_at: None,
            revoked_at: None,
            rotated_to: None,
            sha256: "ee".into(),
        };
        let page = page_view(Page {
            items: vec![k],
            next: Some("key_1".into()),
        });
        assert_eq!(page["items"][0].get("sha256"), None);
        assert_eq!(page["items"][0]["prefix"], "tg_abcd");
        assert_eq!(page["next"], "key_1");
    }
}
