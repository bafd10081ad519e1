//! The admin API by resource: the one route table ([`TABLE`]: method, path
//! template, resource family, whether it writes, handler), the role check
//! ([`may`]) and the router ([`route`], [`allowed`]) derived from it, and a
//! module per resource family holding its handlers. [`ROUTES`] is the
//! table's methods and paths, which the tests compare with the OpenAPI
//! document (`docs/admin-openapi.json`, [`OPENAPI`]).
//!
//! A handler gets the request as a [`Call`] and answers a [`Reply`]; the
//! list, get, create, update and delete of stored resources are the generic
//! handlers of [`crud`].

pub mod crud;
pub mod openapi;
pub mod request;

mod accounts;
mod analytics;
mod apis;
mod apps;
mod audit;
mod consumers;
mod groups;
mod health;
mod keys;
mod metrics;
mod nodes;
mod oauth;
mod plans;
pub mod products;
mod scopes;
mod subscriptions;
mod users;
pub mod versions;

pub use apis::served_document;
pub use openapi::OPENAPI;
pub use request::Call;

use super::error::{truncate, AdminError};
use super::model::{
    App, Consumer, Group, Key, OAuthClient, Plan, Product, Role, Subscription, User,
};
use crud::{create, delete as remove, get as read, list, update};
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use serde_json::Value;

/// What a handler answers: a status and a JSON body (none for 204), or an
/// error.
pub type Reply = Result<(StatusCode, Value), AdminError>;

pub fn ok(v: Value) -> Reply {
    Ok((StatusCode::OK, v))
}

pub fn created(v: Value) -> Reply {
    Ok((StatusCode::CREATED, v))
}

pub fn no_content() -> Reply {
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

/// The key of a reply whose body is text, not JSON ([`text`]); it starts
/// with a NUL, which no resource's JSON has.
pub const RAW: &str = "\u{0}raw";

/// A 200 whose body is `body` as is, of `content_type` (CSV reports): the
/// listener writes it instead of JSON.
pub fn text(content_type: &str, body: String) -> Reply {
    ok(serde_json::json!({ RAW: { "content_type": content_type, "body": body } }))
}

/// How a route is served.
#[derive(Debug, Clone, Copy)]
pub enum Handler {
    /// On the blocking pool: registry reads and writes wait for the disk.
    Blocking(fn(&Call) -> Reply),
    /// On the async workers: a manifest edit goes live through a reload.
    Async(fn(Call) -> BoxFuture<'static, Reply>),
}

/// What a route is about, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Public,
    WhoAmI,
    Users,
    Audit,
    Apis,
    Products,
    Plans,
    Consumers,
    Apps,
    Subscriptions,
    Keys,
    /// The keys that sign OAuth access tokens: every role reads them, only
    /// administrators rotate them.
    SigningKeys,
    /// Reports over the analytics store: every role reads them.
    Analytics,
    /// `GET /metrics`: every role, and no token with `[metrics] public`.
    Metrics,
}

/// Whether `role` may call a route of `family` (`write`: anything but GET).
pub fn may(role: Role, family: Family, write: bool) -> bool {
    use Family::*;
    match (role, family) {
        (_, Public | WhoAmI) => true,
        (Role::Administrator, _) => true,
        (_, Users | Audit) => false,
        (_, _) if !write => true,
        (Role::ApiManager, Apis | Products | Plans) => true,
        (Role::CommunityManager, Consumers | Apps | Subscriptions | Keys) => true,
        _ => false,
    }
}

/// One route of the admin API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// The path template: `{id}` and `{name}` match one non-empty segment.
    pub path: &'static str,
    pub family: Family,
    /// Anything but GET: the role check asks for a role that may change
    /// the family.
    pub writes: bool,
    pub handler: Handler,
}

const fn route_of(
    method: &'static str,
    path: &'static str,
    family: Family,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        family,
        writes: !matches!(method.as_bytes(), b"GET"),
        handler,
    }
}

const fn get(path: &'static str, family: Family, h: fn(&Call) -> Reply) -> Route {
    route_of("GET", path, family, Handler::Blocking(h))
}

const fn post(path: &'static str, family: Family, h: fn(&Call) -> Reply) -> Route {
    route_of("POST", path, family, Handler::Blocking(h))
}

const fn patch(path: &'static str, family: Family, h: fn(&Call) -> Reply) -> Route {
    route_of("PATCH", path, family, Handler::Blocking(h))
}

const fn delete(path: &'static str, family: Family, h: fn(&Call) -> Reply) -> Route {
    route_of("DELETE", path, family, Handler::Blocking(h))
}

/// Every route the admin API serves.
#[rustfmt::skip]
pub const TABLE: &[Route] = {
    use Family::*;
    &[
    get("/admin/v1/openapi.json", Public, openapi::document),
    get("/healthz", Public, health::healthz),
    get("/readyz", Public, health::readyz),
    get("/metrics", Metrics, metrics::scrape),
    get("/admin/v1/whoami", WhoAmI, users::whoami),
    // The nodes of a cluster's shared control plane.
    route_of("GET", "/admin/v1/nodes", Apis, Handler::Async(nodes::list)),
    // Admin users.
    get("/admin/v1/users", Users, list::<User>),
    post("/admin/v1/users", Users, create::<User>),
    get("/admin/v1/users/{id}", Users, read::<User>),
    patch("/admin/v1/users/{id}", Users, update::<User>),
    delete("/admin/v1/users/{id}", Users, remove::<User>),
    post("/admin/v1/users/{id}/token", Users, users::new_token),
    // APIs (read from the configuration) and their chains.
    get("/admin/v1/apis", Apis, apis::list),
    route_of("POST", "/admin/v1/apis", Apis, Handler::Async(apis::create)),
    get("/admin/v1/apis/{name}", Apis, apis::get),
    route_of("PUT", "/admin/v1/apis/{name}", Apis, Handler::Async(apis::replace)),
    route_of("DELETE", "/admin/v1/apis/{name}", Apis, Handler::Async(apis::delete)),
    get("/admin/v1/apis/{name}/chain", Apis, apis::chain),
    get("/admin/v1/apis/{name}/canaries", Apis, apis::canaries),
    get("/admin/v1/apis/{name}/openapi", Apis, apis::openapi),
    route_of("PUT", "/admin/v1/apis/{name}/chain", Apis, Handler::Async(apis::assign_chain)),
    // Chains at the other scopes, and what each route runs.
    get("/admin/v1/chain", Apis, scopes::gateway_chain),
    route_of("PUT", "/admin/v1/chain", Apis, Handler::Async(scopes::assign_gateway_chain)),
    get("/admin/v1/products/{id}/chain", Products, scopes::product_chain),
    route_of("PUT", "/admin/v1/products/{id}/chain", Products, Handler::Async(scopes::assign_product_chain)),
    get("/admin/v1/apis/{name}/routes/{route}/chain", Apis, scopes::route_chain),
    route_of("PUT", "/admin/v1/apis/{name}/routes/{route}/chain", Apis, Handler::Async(scopes::assign_route_chain)),
    get("/admin/v1/apis/{name}/effective-chains", Apis, scopes::effective_chains),
    // Version sets, lifecycles and revisions.
    get("/admin/v1/version-sets", Apis, versions::list_sets),
    get("/admin/v1/version-sets/{name}", Apis, versions::get_set),
    route_of("PUT", "/admin/v1/apis/{name}/lifecycle", Apis, Handler::Async(versions::set_lifecycle)),
    get("/admin/v1/apis/{name}/revisions", Apis, versions::list_revisions),
    route_of("POST", "/admin/v1/apis/{name}/revisions", Apis, Handler::Async(versions::create_revision)),
    get("/admin/v1/apis/{name}/revisions/{n}", Apis, versions::get_revision),
    route_of("DELETE", "/admin/v1/apis/{name}/revisions/{n}", Apis, Handler::Async(versions::delete_revision)),
    route_of("PUT", "/admin/v1/apis/{name}/revisions/{n}/chain", Apis, Handler::Async(versions::set_revision_chain)),
    route_of("POST", "/admin/v1/apis/{name}/revisions/{n}/promote", Apis, Handler::Async(versions::promote)),
    route_of("POST", "/admin/v1/apis/{name}/rollback", Apis, Handler::Async(versions::rollback)),
    // Products and plans.
    get("/admin/v1/products", Products, products::list),
    post("/admin/v1/products", Products, create::<Product>),
    get("/admin/v1/products/{id}", Products, read::<Product>),
    patch("/admin/v1/products/{id}", Products, update::<Product>),
    delete("/admin/v1/products/{id}", Products, remove::<Product>),
    get("/admin/v1/plans", Plans, list::<Plan>),
    post("/admin/v1/plans", Plans, create::<Plan>),
    get("/admin/v1/plans/{id}", Plans, read::<Plan>),
    patch("/admin/v1/plans/{id}", Plans, update::<Plan>),
    delete("/admin/v1/plans/{id}", Plans, remove::<Plan>),
    // Consumers and their apps.
    get("/admin/v1/consumers", Consumers, list::<Consumer>),
    post("/admin/v1/consumers", Consumers, create::<Consumer>),
    get("/admin/v1/consumers/{id}", Consumers, read::<Consumer>),
    patch("/admin/v1/consumers/{id}", Consumers, update::<Consumer>),
    delete("/admin/v1/consumers/{id}", Consumers, remove::<Consumer>),
    get("/admin/v1/apps", Apps, list::<App>),
    post("/admin/v1/apps", Apps, create::<App>),
    get("/admin/v1/apps/{id}", Apps, read::<App>),
    patch("/admin/v1/apps/{id}", Apps, update::<App>),
    delete("/admin/v1/apps/{id}", Apps, remove::<App>),
    // Groups of consumers (products are visible to groups).
    get("/admin/v1/groups", Consumers, groups::list),
    post("/admin/v1/groups", Consumers, create::<Group>),
    get("/admin/v1/groups/{id}", Consumers, groups::get),
    patch("/admin/v1/groups/{id}", Consumers, update::<Group>),
    delete("/admin/v1/groups/{id}", Consumers, remove::<Group>),
    get("/admin/v1/groups/{id}/members", Consumers, groups::members),
    route_of("PUT", "/admin/v1/groups/{id}/members/{consumer}", Consumers, Handler::Blocking(groups::add_member)),
    delete("/admin/v1/groups/{id}/members/{consumer}", Consumers, groups::remove_member),
    // Portal accounts (created by signing up on the portal).
    get("/admin/v1/accounts", Consumers, accounts::list),
    get("/admin/v1/accounts/{id}", Consumers, accounts::get),
    post("/admin/v1/accounts/{id}/approve", Consumers, accounts::approve),
    post("/admin/v1/accounts/{id}/disable", Consumers, accounts::disable),
    post("/admin/v1/accounts/{id}/enable", Consumers, accounts::enable),
    // Subscriptions and keys.
    get("/admin/v1/subscriptions", Subscriptions, list::<Subscription>),
    post("/admin/v1/subscriptions", Subscriptions, create::<Subscription>),
    get("/admin/v1/subscriptions/{id}", Subscriptions, read::<Subscription>),
    patch("/admin/v1/subscriptions/{id}", Subscriptions, update::<Subscription>),
    delete("/admin/v1/subscriptions/{id}", Subscriptions, remove::<Subscription>),
    post("/admin/v1/subscriptions/{id}/keys/{key}/regenerate", Subscriptions, subscriptions::regenerate),
    get("/admin/v1/keys", Keys, list::<Key>),
    post("/admin/v1/keys", Keys, create::<Key>),
    get("/admin/v1/keys/{id}", Keys, read::<Key>),
    patch("/admin/v1/keys/{id}", Keys, update::<Key>),
    delete("/admin/v1/keys/{id}", Keys, remove::<Key>),
    post("/admin/v1/keys/{id}/rotate", Keys, keys::rotate),
    post("/admin/v1/keys/{id}/revoke", Keys, keys::revoke),
    // OAuth clients (like keys) and the keys that sign access tokens.
    get("/admin/v1/oauth-clients", Keys, list::<OAuthClient>),
    post("/admin/v1/oauth-clients", Keys, create::<OAuthClient>),
    get("/admin/v1/oauth-clients/{id}", Keys, read::<OAuthClient>),
    patch("/admin/v1/oauth-clients/{id}", Keys, update::<OAuthClient>),
    delete("/admin/v1/oauth-clients/{id}", Keys, remove::<OAuthClient>),
    post("/admin/v1/oauth-clients/{id}/rotate", Keys, oauth::rotate),
    post("/admin/v1/oauth-clients/{id}/revoke", Keys, oauth::revoke),
    get("/admin/v1/oauth-keys", SigningKeys, oauth::keys),
    post("/admin/v1/oauth-keys/rotate", SigningKeys, oauth::rotate_key),
    // The audit log.
    get("/admin/v1/audit", Audit, audit::list),
    // Analytics reports.
    get("/admin/v1/analytics/report", Analytics, analytics::report),
    get("/admin/v1/analytics/top-consumers", Analytics, analytics::top_consumers),
    get("/admin/v1/analytics/consumers/{id}", Analytics, analytics::consumer),
    ]
};

/// Every route the admin API serves: method and path template, in
/// [`TABLE`]'s order.
pub const ROUTES: &[(&str, &str)] = &methods_and_paths::<{ TABLE.len() }>();

const fn methods_and_paths<const N: usize>() -> [(&'static str, &'static str); N] {
    let mut out = [("", ""); N];
    let mut i = 0;
    while i < N {
        out[i] = (TABLE[i].method, TABLE[i].path);
        i += 1;
    }
    out
}

/// Match `path` against [`TABLE`]: the route and its parameters, or 404 /
/// 405 (the 405's `Allow` is [`allowed`]).
pub fn route(method: &Method, path: &str) -> Result<(&'static Route, Vec<String>), AdminError> {
    match route_exact(method, path)? {
        Some(found) => Ok(found),
        None => Err(AdminError::method_not_allowed(format!(
            "{} is not allowed here; allowed: {}",
            truncate(method.as_str(), 20),
            allowed(path).join(", ")
        ))),
    }
}

/// The methods [`TABLE`] serves at `path` (for `Allow`).
pub fn allowed(path: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        if let Ok(method) = m.parse::<Method>() {
            if matches!(route_exact(&method, path), Ok(Some(_))) {
                out.push(m);
            }
        }
    }
    out
}

/// The route for `method` at `path`; `None` when `path` is served for
/// other methods only; 404 when it is not served at all.
#[allow(clippy::type_complexity)]
fn route_exact(
    method: &Method,
    path: &str,
) -> Result<Option<(&'static Route, Vec<String>)>, AdminError> {
    let mut any = false;
    for r in TABLE {
        let Some(params) = fit(r.path, path) else {
            continue;
        };
        if r.method == method.as_str() {
            return Ok(Some((r, params)));
        }
        any = true;
    }
    if any {
        Ok(None)
    } else {
        Err(AdminError::no_route(format!(
            "no admin API route `{}` (see GET /admin/v1/openapi.json)",
            truncate(path, 200)
        )))
    }
}

/// The parameters of `path` if it fits `template`.
fn fit(template: &str, path: &str) -> Option<Vec<String>> {
    let (t, s): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if t.len() != s.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, s) in t.iter().zip(&s) {
        if t.starts_with('{') {
            if s.is_empty() {
                return None;
            }
            params.push((*s).to_string());
        } else if t != s {
            return None;
        }
    }
    Some(params)
}

/// Run `f` off the async workers (registry writes wait for the disk).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::unavailable(format!("the call failed: {e}")))?
}

/// Serve `call` by `route`'s handler.
pub async fn serve(route: &Route, call: Call) -> Reply {
    match route.handler {
        Handler::Blocking(h) => blocking(move || h(&call)).await,
        Handler::Async(h) => h(call).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_and_refuse() {
        let (r, p) = route(&Method::GET, "/admin/v1/keys/key_1").unwrap();
        assert_eq!(r.path, "/admin/v1/keys/{id}");
        assert_eq!(p, ["key_1"]);
        assert_eq!(
            route(&Method::PUT, "/admin/v1/keys/key_1")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/nope").unwrap_err().status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/keys/").unwrap_err().status,
            404
        );
        // Every template is distinct and routes to its own entry.
        let mut seen = std::collections::HashSet::new();
        for (m, t) in ROUTES {
            assert!(seen.insert((m, t)));
            let (r, _) = route(
                &m.parse().unwrap(),
                &t.replace("{id}", "x")
                    .replace("{name}", "x")
                    .replace("{consumer}", "x")
                    .replace("{key}", "x"),
            )
            .unwrap();
            assert_eq!((r.method, r.path), (*m, *t));
        }
    }

    #[test]
    fn routes_are_the_table() {
        assert_eq!(ROUTES.len(), TABLE.len());
        for (pair, r) in ROUTES.iter().zip(TABLE) {
            assert_eq!(*pair, (r.method, r.path));
            assert_eq!(r.writes, r.method != "GET", "{} {}", r.method, r.path);
        }
    }

    #[test]
    fn a_path_segment_is_one_family() {
        // The routes under one collection share its family (the role
        // check cannot differ between `/keys` and `/keys/{id}/rotate`).
        let mut by_segment = std::collections::HashMap::new();
        for r in TABLE {
            // Outside `/admin/v1` (probes, metrics) a path is its own.
            let seg = match r.path.strip_prefix("/admin/v1/") {
                Some(rest) => rest.split('/').next().unwrap(),
                None => r.path,
            };
            let f = *by_segment.entry(seg).or_insert(r.family);
            assert_eq!(f, r.family, "{} {}", r.method, r.path);
        }
        // 18 collections (groups, analytics, version-sets, accounts, the
        // OAuth ones and the gateway's chain among them), and outside
        // `/admin/v1` the two probes and the metrics.
        assert_eq!(by_segment.len(), 22, "{by_segment:?}");
        assert_eq!(by_segment["groups"], Family::Consumers);
        assert_eq!(by_segment["chain"], Family::Apis);
        assert_eq!(by_segment["oauth-clients"], Family::Keys);
        assert_eq!(by_segment["oauth-keys"], Family::SigningKeys);
        assert_eq!(by_segment["version-sets"], Family::Apis);
        assert_eq!(by_segment["/healthz"], Family::Public);
        assert_eq!(by_segment["/readyz"], Family::Public);
        assert_eq!(by_segment["/metrics"], Family::Metrics);
    }

    #[test]
    fn allow_lists_the_methods_of_a_path() {
        assert_eq!(allowed("/admin/v1/keys/key_1"), ["GET", "PATCH", "DELETE"]);
        assert_eq!(allowed("/admin/v1/apis/x/chain"), ["GET", "PUT"]);
        assert!(allowed("/admin/v1/nope").is_empty());
        let e = route(&"TRACE".parse().unwrap(), "/admin/v1/users").unwrap_err();
        assert_eq!(e.status, 405);
        assert!(e.message.contains("allowed: GET, POST"), "{e}");
    }

    #[test]
    fn roles() {
        use Family::*;
        assert!(may(Role::Administrator, Users, true));
        assert!(!may(Role::ApiManager, Users, false));
        assert!(may(Role::ApiManager, Plans, true));
        assert!(!may(Role::ApiManager, Keys, true));
        assert!(may(Role::ApiManager, Keys, false));
        assert!(may(Role::CommunityManager, Keys, true));
        assert!(!may(Role::CommunityManager, Apis, true));
        assert!(!may(Role::ReportsUser, Consumers, true));
        assert!(may(Role::ReportsUser, Consumers, false));
        assert!(!may(Role::ReportsUser, Audit, false));
        assert!(may(Role::ReportsUser, Analytics, false));
        // Signing keys: every role reads them, only administrators rotate.
        assert!(may(Role::Administrator, SigningKeys, true));
        for role in [Role::ApiManager, Role::CommunityManager, Role::ReportsUser] {
            assert!(may(role, SigningKeys, false), "{role:?}");
            assert!(!may(role, SigningKeys, true), "{role:?}");
        }
        for role in [
            Role::Administrator,
            Role::ApiManager,
            Role::CommunityManager,
            Role::ReportsUser,
        ] {
            assert!(may(role, Metrics, false), "{role:?}");
        }
    }
}
