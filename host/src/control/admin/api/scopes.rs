//! Chains at the other scopes (docs/configuration.md, "Scopes"): the
//! gateway's (`/admin/v1/chain`), a product's
//! (`/admin/v1/products/{id}/chain`) and a route's
//! (`/admin/v1/apis/{name}/routes/{route}/chain`), read and assigned with
//! the same guarantees as an API's chain: the manifest is rewritten only
//! if the whole configuration builds with the change (the swap a hot
//! reload does), `If-Match` guards it, and it is audited. And what each
//! route of an API runs once the scopes are composed
//! (`/admin/v1/apis/{name}/effective-chains`).

use super::apis::{edit_error, find_api};
use super::request::Call;
use super::{blocking, ok, Reply};
use crate::control::admin::chain::{self, ChainAssign, ChainTarget};
use crate::control::admin::error::AdminError;
use crate::control::admin::model::Product;
use crate::loader::{Api, Generation, Scope};
use crate::manifest::PolicyManifest;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use std::path::PathBuf;

/// `GET /admin/v1/chain`.
pub fn gateway_chain(c: &Call) -> Reply {
    c.no_query()?;
    read(c, ChainTarget::Gateway)
}

/// `PUT /admin/v1/chain`.
pub fn assign_gateway_chain(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move { assign(c, ChainTarget::Gateway).await })
}

/// `GET /admin/v1/products/{id}/chain`.
pub fn product_chain(c: &Call) -> Reply {
    c.no_query()?;
    let target = product_target(c)?;
    read(c, target)
}

/// `PUT /admin/v1/products/{id}/chain`.
pub fn assign_product_chain(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let target = product_target(&c)?;
        assign(c, target).await
    })
}

/// `GET /admin/v1/apis/{name}/routes/{route}/chain`.
pub fn route_chain(c: &Call) -> Reply {
    c.no_query()?;
    let target = route_target(c)?;
    read(c, target)
}

/// `PUT /admin/v1/apis/{name}/routes/{route}/chain`.
pub fn assign_route_chain(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        let target = route_target(&c)?;
        assign(c, target).await
    })
}

/// `GET /admin/v1/apis/{name}/effective-chains`: each route's steps in the
/// order they run, with their scope and condition, and what each product's
/// callers run once identified.
pub fn effective_chains(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let api = find_api(&g, c.id())?;
    let mut routes: Vec<&crate::route::Route> = g
        .router
        .routes()
        .iter()
        .filter(|r| g.apis.get(r.api).is_some_and(|a| std::ptr::eq(a, api)))
        .collect();
    routes.sort_by_key(|r| r.order);
    let steps = |chain: &[usize]| -> Vec<Value> { chain.iter().map(|&i| step(api, i)).collect() };
    let items: Vec<Value> = routes
        .iter()
        .map(|r| {
            let chain = api
                .chains
                .chains
                .get(r.chain)
                .map_or(&[][..], Vec::as_slice);
            json!({"route": r.name, "chain": steps(chain)})
        })
        .collect();
    let products: serde_json::Map<String, Value> = api
        .chains
        .products
        .iter()
        .map(|(p, chain)| (p.clone(), Value::Array(steps(chain))))
        .collect();
    ok(json!({"routes": items, "products": products}))
}

/// Step `i` of `api` as the effective chains show it.
fn step(api: &Api, i: usize) -> Value {
    let s = &api.steps[i];
    let scope = match api.chains.scopes.get(i) {
        Some(Scope::Gateway) => json!({"kind": "gateway"}),
        Some(Scope::Product(p)) => json!({"kind": "product", "product": p}),
        Some(Scope::Route(r)) => json!({"kind": "route", "route": r}),
        Some(Scope::Api) | None => json!({"kind": "api"}),
    };
    let mut v = json!({"step": &*s.name, "plugin": s.plugin.name, "scope": scope});
    if let Some(w) = &s.when {
        v["when"] = w.source().into();
    }
    v
}

/// The product of the path: one of the registry's, or one whose chain a
/// manifest declares.
fn product_target(c: &Call) -> Result<ChainTarget, AdminError> {
    let id = c.id().to_string();
    let declared = c.gateway.current().outer.products.contains_key(&id);
    if !declared {
        c.registry
            .get_resource::<Product>("product", "product", &id)?;
    }
    Ok(ChainTarget::Product(id))
}

/// The route of the path, which must be one of the API's `[[api.route]]`s
/// (the routes of its OpenAPI document have no chain of their own).
fn route_target(c: &Call) -> Result<ChainTarget, AdminError> {
    let g = c.gateway.current();
    let api = find_api(&g, c.id())?;
    let route = c.params.get(1).cloned().unwrap_or_default();
    if !api
        .spec
        .routes
        .iter()
        .any(|r| chain::route_label(r.get_ref()) == route)
    {
        return Err(AdminError::not_found(
            "route",
            &format!("{}/{route}", api.name),
        ));
    }
    Ok(ChainTarget::Route {
        api: api.name.to_string(),
        route,
    })
}

/// The chain at `target` as the serving configuration has it, with the
/// ETag of the manifest a `PUT` rewrites.
fn read(c: &Call, target: ChainTarget) -> Reply {
    let g = c.gateway.current();
    let (_, steps) = current(&g, &target);
    let etag = file_for(&g, &target)
        .ok()
        .and_then(|f| g.sources.get(&f).cloned())
        .unwrap_or_default();
    ok(json!({"etag": etag, "chain": steps}))
}

/// Where the chain at `target` is declared, and its steps.
fn current(g: &Generation, target: &ChainTarget) -> (Option<PathBuf>, Vec<Value>) {
    let view =
        |steps: &Vec<crate::manifest::StepSpec>| steps.iter().map(chain::step_view).collect();
    match target {
        ChainTarget::Gateway => g
            .outer
            .gateway
            .as_ref()
            .map_or((None, Vec::new()), |(f, s)| (Some(f.clone()), view(s))),
        ChainTarget::Product(id) => g
            .outer
            .products
            .get(id)
            .map_or((None, Vec::new()), |(f, s)| (Some(f.clone()), view(s))),
        ChainTarget::Route { api, route } => {
            let Some(a) = g.apis.iter().find(|a| &*a.name == api) else {
                return (None, Vec::new());
            };
            let steps = a
                .spec
                .routes
                .iter()
                .find(|r| chain::route_label(r.get_ref()) == *route)
                .map(|r| {
                    r.get_ref()
                        .chain
                        .iter()
                        .map(|s| chain::step_view(s.get_ref()))
                        .collect()
                })
                .unwrap_or_default();
            (Some(a.manifest.clone()), steps)
        }
    }
}

/// The manifest an edit of `target` rewrites: the one declaring it, else
/// (a product's) the gateway chain's, else the first manifest loaded.
fn file_for(g: &Generation, target: &ChainTarget) -> Result<PathBuf, AdminError> {
    let (declared, _) = current(g, target);
    declared
        .or_else(|| g.outer.gateway.as_ref().map(|(f, _)| f.clone()))
        .or_else(|| g.sources.keys().next().cloned())
        .ok_or_else(|| {
            AdminError::unprocessable(
                "chain",
                "the configuration loads no policy manifest to write the chain into",
            )
        })
}

/// Rewrite the chain at `target` with the request's steps, through the
/// build-check-swap, and audit it.
async fn assign(c: Call, target: ChainTarget) -> Reply {
    c.no_query()?;
    let req: ChainAssign = c.body()?;
    chain::check_steps(&req.chain)?;
    let file = file_for(&c.gateway.current(), &target)?;
    let detail = json!({"chain": req.chain.iter().map(chain::input_view).collect::<Vec<_>>()});
    let if_match = c.if_match.clone();
    let edit_target = target.clone();
    let result = c
        .gateway
        .apply_manifest_edit(file, move |text, on_disk| {
            if let Some(tag) = if_match.as_deref() {
                if tag != on_disk && tag != "*" {
                    return Err(AdminError::precondition_failed(
                        "If-Match does not match: the manifest changed since you read it; GET the chain again",
                    ));
                }
            }
            rewrite(text, &edit_target, &req.chain)
        })
        .await;
    let (generation, etag) = result.map_err(|e| edit_error(e, "chain"))?;
    let (kind, id) = target.audited();
    let (reg, actor) = (c.registry.clone(), c.actor().to_string());
    blocking(move || reg.audit(&actor, "assign-chain", kind, &id, detail))
        .await
        .map_err(|e| {
            AdminError::unavailable(format!(
                "the chain was applied, but its audit entry could not be written: {e}"
            ))
        })?;
    let (_, chain) = current(&c.gateway.current(), &target);
    ok(json!({"etag": etag, "chain": chain, "generation": generation}))
}

/// `text` with the chain at `target` replaced by `steps`, checked to say
/// exactly what was asked.
fn rewrite(
    text: &str,
    target: &ChainTarget,
    steps: &[chain::StepInput],
) -> Result<String, AdminError> {
    let new_text = chain::rewrite_target(text, target, steps)?;
    let m: PolicyManifest = toml::from_str(&new_text).map_err(|e| {
        AdminError::unavailable(format!(
            "the edited manifest does not parse (a bug; nothing was changed): {e}"
        ))
    })?;
    let asked: Vec<Value> = steps.iter().map(chain::input_view).collect();
    if target.view(&m).unwrap_or_default() != asked {
        return Err(AdminError::unavailable(
            "the edited manifest does not say what was asked (a bug; nothing was changed)",
        ));
    }
    Ok(new_text)
}
