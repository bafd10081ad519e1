//! The APIs of the serving configuration (`/admin/v1/apis`, read-only) and
//! their policy chains: read, and assigned by rewriting the API's manifest
//! file (guarded by `If-Match`, the manifest's SHA-256) and reloading.

use super::request::{paging, Call, PAGING};
use super::{blocking, ok, Reply};
use crate::control::admin::chain::{self, ChainAssign};
use crate::control::admin::error::AdminError;
use crate::control::EditError;
use crate::loader::{Api, Generation};
use crate::manifest::PolicyManifest;
use futures_util::future::BoxFuture;
use http::StatusCode;
use serde_json::{json, Value};

/// `GET /admin/v1/apis`: the APIs by name, paged.
pub fn list(c: &Call) -> Reply {
    let (limit, after) = paging(&c.query(PAGING)?)?;
    let g = c.gateway.current();
    let mut apis: Vec<&Api> = g
        .apis
        .iter()
        .filter(|a| after.as_deref().is_none_or(|x| &*a.name > x))
        .collect();
    apis.sort_by(|a, b| a.name.cmp(&b.name));
    let more = apis.len() > limit;
    apis.truncate(limit);
    let next = more
        .then(|| apis.last().map(|a| a.name.to_string()))
        .flatten();
    let items: Vec<Value> = apis.iter().map(|a| api_view(&g, a)).collect();
    ok(json!({"items": items, "next": next}))
}

/// `GET /admin/v1/apis/{name}`.
pub fn get(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    ok(api_view(&g, find_api(&g, c.id())?))
}

/// `GET /admin/v1/apis/{name}/chain`: the chain and its manifest's ETag.
pub fn chain(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    ok(json!({
        "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
        "chain": chain::chain_view(&a.spec),
    }))
}

/// `GET /admin/v1/apis/{name}/canaries`: each step with a canary, its
/// versions, share, rollback and per-version figures (see
/// [`crate::policy::canary`]).
pub fn canaries(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    let canaries: Vec<Value> = a
        .steps
        .iter()
        .filter_map(|s| s.canary.as_ref().map(|c| json!(c.view(s))))
        .collect();
    ok(json!({ "canaries": canaries }))
}

/// `PUT /admin/v1/apis/{name}/chain`.
pub fn assign_chain(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let r: ChainAssign = c.body()?;
        chain::check_steps(&r.chain)?;
        assign(&c, r).await
    })
}

fn find_api<'a>(g: &'a Generation, name: &str) -> Result<&'a Api, AdminError> {
    g.apis
        .iter()
        .find(|a| &*a.name == name)
        .ok_or_else(|| AdminError::not_found("API", name))
}

fn api_view(g: &Generation, a: &Api) -> Value {
    let routes: Vec<Value> = a
        .spec
        .routes
        .iter()
        .map(|r| {
            let r = r.get_ref();
            json!({
                "name": r.name.as_ref().map(|n| n.to_string()),
                "path": r.path,
                "prefix": r.prefix,
                "hosts": r.hosts,
                "methods": r.methods,
            })
        })
        .collect();
    json!({
        "name": &*a.name,
        "manifest": a.manifest.display().to_string(),
        "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
        "routes": routes,
        "upstream": {"targets": a.spec.upstream.targets},
        "chain": chain::chain_view(&a.spec),
    })
}

/// Rewrite the API's manifest with chain `req` and reload; audit it.
async fn assign(c: &Call, req: ChainAssign) -> Reply {
    let name = c.id().to_string();
    let file = find_api(&c.gateway.current(), &name)?.manifest.clone();
    let detail = json!({"chain": req.chain.iter().map(chain::input_view).collect::<Vec<_>>()});
    let if_match = c.if_match.clone();
    let api_name = name.clone();
    let result = c
        .gateway
        .apply_manifest_edit(file, move |text, on_disk| {
            rewrite(text, on_disk, if_match.as_deref(), &api_name, &req)
        })
        .await;
    let (generation, etag) = result.map_err(edit_error)?;
    let (reg, actor, id) = (c.registry.clone(), c.actor().to_string(), name.clone());
    blocking(move || reg.audit(&actor, "assign-chain", "api", &id, detail))
        .await
        .map_err(|e| {
            AdminError::unavailable(format!(
                "the chain was applied, but its audit entry could not be written: {e}"
            ))
        })?;
    let g = c.gateway.current();
    let a = find_api(&g, &name)?;
    Ok((
        StatusCode::OK,
        json!({"etag": etag, "chain": chain::chain_view(&a.spec), "generation": generation}),
    ))
}

/// The manifest `text` (whose SHA-256 is `on_disk`) with API `api`'s chain
/// replaced by `req`, if `if_match` allows it; checked to say exactly what
/// was asked.
fn rewrite(
    text: &str,
    on_disk: &str,
    if_match: Option<&str>,
    api: &str,
    req: &ChainAssign,
) -> Result<String, AdminError> {
    if let Some(tag) = if_match {
        if tag != on_disk && tag != "*" {
            return Err(AdminError::precondition_failed(
                "If-Match does not match: the manifest changed since you read it; GET the chain again",
            ));
        }
    }
    let new_text = chain::rewrite_chain(text, api, &req.chain)?;
    // The file must say exactly what was asked.
    let m: PolicyManifest = toml::from_str(&new_text).map_err(|e| {
        AdminError::unavailable(format!(
            "the edited manifest does not parse (a bug; nothing was changed): {e}"
        ))
    })?;
    let written = m
        .apis
        .iter()
        .find(|a| a.get_ref().name.as_str() == api)
        .map(|a| chain::chain_view(a.get_ref()));
    let asked: Vec<Value> = req.chain.iter().map(chain::input_view).collect();
    if written.as_ref() != Some(&asked) {
        return Err(AdminError::unavailable(
            "the edited manifest does not say what was asked (a bug; nothing was changed)",
        ));
    }
    Ok(new_text)
}

/// A manifest edit that was not applied, as the admin API answers it.
fn edit_error(e: EditError) -> AdminError {
    match e {
        EditError::Diverged(m) => AdminError::conflict(m),
        EditError::Io(m) => AdminError::unavailable(m),
        EditError::Refused(e) => e,
        EditError::Invalid(errs) => AdminError::unprocessable(
            "chain",
            format!("the configuration with this chain does not check:\n{errs}"),
        ),
    }
}
