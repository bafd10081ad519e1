//! The APIs of the serving configuration (`/admin/v1/apis`, read-only) and
//! their policy chains: read, and assigned by rewriting the API's manifest
//! file (guarded by `If-Match`, the manifest's SHA-256) and reloading.

use super::request::{paging, Call, PAGING};
use super::{blocking, ok, Reply};
use crate::control::admin::api_def::{self, ApiInput};
use crate::control::admin::chain::{self, ChainAssign};
use crate::control::admin::error::AdminError;
use crate::control::EditError;
use crate::loader::{Api, Generation};
use crate::manifest::{PolicyManifest, RouteSpec};
use futures_util::future::BoxFuture;
use http::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

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

/// `GET /admin/v1/apis/{name}/openapi`: the API as the gateway serves it
/// (see [`crate::openapi::export`]).
pub fn openapi(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    ok(served_document(
        &g,
        a,
        &c.gateway.server_urls(c.host.as_deref()),
    ))
}

/// The exported document of `a` (of generation `g`), reached at `servers`.
pub fn served_document(g: &Generation, a: &Api, servers: &[String]) -> Value {
    use crate::openapi::export::{document, Credentials, RouteView, Served, VersionView};
    use crate::route::VersionFrom;
    let version = a.version.as_ref().map(|v| {
        let set = g.router.sets().iter().find(|s| *s.name == *v.set);
        let (scheme, name) = match &v.from {
            VersionFrom::Path => ("path", None),
            VersionFrom::Header(h) => ("header", Some(h.clone())),
            VersionFrom::Query(q) => ("query", Some(q.clone())),
        };
        VersionView {
            set: v.set.to_string(),
            version: v.version.to_string(),
            scheme,
            name,
            default: set.is_some_and(|s| s.default.as_deref() == Some(&*v.version)),
        }
    });
    let lifecycle = a
        .lifecycle
        .is_some()
        .then(|| super::versions::lifecycle_view(a.spec.lifecycle.as_ref()));
    let routes: Vec<RouteView> = a
        .spec
        .routes
        .iter()
        .map(|r| {
            let r = r.get_ref();
            RouteView {
                name: r.name.as_ref().map(|n| n.to_string()),
                path: r.path.clone(),
                prefix: r.prefix.clone(),
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            }
        })
        .collect();
    let mut credentials = Credentials::default();
    // The credentials any scope's steps read: the API's, its routes', the
    // gateway's.
    let own = a.spec.chain.iter().map(|s| s.get_ref());
    let routes_steps = a
        .spec
        .routes
        .iter()
        .flat_map(|r| r.get_ref().chain.iter().map(|s| s.get_ref()));
    let gateway = g.outer.gateway.iter().flat_map(|(_, steps)| steps.iter());
    for s in own.chain(routes_steps).chain(gateway) {
        match s.plugin.as_str() {
            "key-auth" => {
                let (header, query) = crate::record::key_auth_names(s.config.as_ref());
                credentials.api_key_header = Some(header);
                credentials.api_key_query = query;
            }
            "jwt" => credentials.bearer_jwt = true,
            _ => {}
        }
    }
    document(&Served {
        api: &a.name,
        spec: a.openapi.as_deref(),
        routes: &routes,
        servers,
        credentials,
        version,
        lifecycle,
    })
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

/// API `name` of the serving configuration, or `404`.
pub(super) fn find_api<'a>(g: &'a Generation, name: &str) -> Result<&'a Api, AdminError> {
    g.apis
        .iter()
        .find(|a| &*a.name == name)
        .ok_or_else(|| AdminError::not_found("API", name))
}

/// A route as the admin API shows it.
pub fn route_view(r: &RouteSpec) -> Value {
    json!({
        "name": r.name.as_ref().map(|n| n.to_string()),
        "path": r.path,
        "prefix": r.prefix,
        "hosts": r.hosts,
        "methods": r.methods,
    })
}

fn api_view(g: &Generation, a: &Api) -> Value {
    let routes: Vec<Value> = a
        .spec
        .routes
        .iter()
        .map(|r| route_view(r.get_ref()))
        .collect();
    json!({
        "name": &*a.name,
        "manifest": a.manifest.display().to_string(),
        "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
        "routes": routes,
        "upstream": {"targets": a.spec.upstream.targets},
        "openapi": a.spec.openapi.as_ref().map(|p| p.display().to_string()),
        "chain": chain::chain_view(&a.spec),
    })
}

/// `POST /admin/v1/apis`: write a new API into a manifest (see
/// [`ApiInput::manifest`]) and reload; 201 with the API.
pub fn create(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let input: ApiInput = c.body()?;
        input.check()?;
        let name = input
            .name
            .clone()
            .ok_or_else(|| AdminError::invalid("name", "required"))?;
        if find_api(&c.gateway.current(), &name).is_ok() {
            return Err(AdminError::conflict(format!(
                "API `{name}` exists: replace it with PUT /admin/v1/apis/{name}"
            )));
        }
        let (file, loaded) = manifest_for(&c, input.manifest.as_deref(), &name)?;
        let result = if loaded {
            c.gateway
                .apply_manifest_edit(file.clone(), move |text, _| {
                    api_def::insert_api(text, &input)
                })
                .await
        } else {
            let text = api_def::insert_api("", &input)?;
            c.gateway.apply_manifest_create(file.clone(), text).await
        };
        let (generation, etag) = result.map_err(|e| edit_error(e, "api"))?;
        audit(
            &c,
            "create-api",
            &name,
            json!({"manifest": file.display().to_string()}),
        )
        .await?;
        let g = c.gateway.current();
        let mut v = api_view(&g, find_api(&g, &name)?);
        v["generation"] = json!(generation);
        v["etag"] = json!(etag);
        Ok((StatusCode::CREATED, v))
    })
}

/// `PUT /admin/v1/apis/{name}`: replace the API's upstream, routes,
/// document and (if given) chain; guarded by `If-Match`.
pub fn replace(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let input: ApiInput = c.body()?;
        input.check()?;
        if input.manifest.is_some() {
            return Err(AdminError::invalid(
                "manifest",
                "an API stays in its manifest: leave `manifest` out",
            ));
        }
        let name = c.id().to_string();
        let file = find_api(&c.gateway.current(), &name)?.manifest.clone();
        let (if_match, api) = (c.if_match.clone(), name.clone());
        let (generation, etag) = c
            .gateway
            .apply_manifest_edit(file, move |text, on_disk| {
                check_if_match(if_match.as_deref(), on_disk)?;
                api_def::replace_api(text, &api, &input)
            })
            .await
            .map_err(|e| edit_error(e, "api"))?;
        audit(&c, "replace-api", &name, json!({})).await?;
        let g = c.gateway.current();
        let mut v = api_view(&g, find_api(&g, &name)?);
        v["generation"] = json!(generation);
        v["etag"] = json!(etag);
        Ok((StatusCode::OK, v))
    })
}

/// `DELETE /admin/v1/apis/{name}`: remove the API from its manifest;
/// guarded by `If-Match`.
pub fn delete(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let name = c.id().to_string();
        let file = find_api(&c.gateway.current(), &name)?.manifest.clone();
        let (if_match, api) = (c.if_match.clone(), name.clone());
        c.gateway
            .apply_manifest_edit(file, move |text, on_disk| {
                check_if_match(if_match.as_deref(), on_disk)?;
                api_def::remove_api(text, &api)
            })
            .await
            .map_err(|e| edit_error(e, "api"))?;
        audit(&c, "delete-api", &name, json!({})).await?;
        super::no_content()
    })
}

/// Refuse a stale `If-Match` (the manifest's SHA-256, or `*`).
fn check_if_match(if_match: Option<&str>, on_disk: &str) -> Result<(), AdminError> {
    match if_match {
        Some(tag) if tag != on_disk && tag != "*" => Err(AdminError::precondition_failed(
            "If-Match does not match: the manifest changed since you read it; GET the API again",
        )),
        _ => Ok(()),
    }
}

/// Write an audit entry for a change that was applied.
async fn audit(c: &Call, action: &'static str, id: &str, detail: Value) -> Result<(), AdminError> {
    let (reg, actor, id) = (c.registry.clone(), c.actor().to_string(), id.to_string());
    blocking(move || reg.audit(&actor, action, "api", &id, detail))
        .await
        .map_err(|e| {
            AdminError::unavailable(format!(
                "the change was applied, but its audit entry could not be written: {e}"
            ))
        })
}

/// The manifest a new API `name` goes into, and whether it is loaded
/// already (else it is a new file in a policy folder).
fn manifest_for(c: &Call, asked: Option<&str>, name: &str) -> Result<(PathBuf, bool), AdminError> {
    let gw_path = c.gateway.gw_path();
    let base = gw_path.parent().unwrap_or(Path::new("."));
    let gw = crate::loader::read_gateway_file(gw_path)
        .map_err(|e| AdminError::unavailable(format!("the gateway file: {e}")))?;
    let g = c.gateway.current();
    let folders: Vec<PathBuf> = gw
        .policies
        .iter()
        .map(|p| crate::loader::resolve(base, p))
        .filter(|p| p.is_dir())
        .collect();
    let file =
        match asked {
            Some(m) => {
                let p = Path::new(m);
                if p.is_absolute()
                    || p.components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(AdminError::unprocessable(
                        "manifest",
                        "a path relative to the gateway file's folder, without `..`",
                    ));
                }
                base.join(p)
            }
            None => match folders.first() {
                Some(f) => f.join(format!("{name}.toml")),
                None => match g.sources.keys().next() {
                    Some(f) => f.clone(),
                    None => return Err(AdminError::unprocessable(
                        "manifest",
                        "the gateway file names no policy folder or manifest to write the API into",
                    )),
                },
            },
        };
    if g.sources.contains_key(&file) {
        return Ok((file, true));
    }
    if crate::loader::in_policy_folder(base, &gw, &file) && !file.exists() {
        return Ok((file, false));
    }
    Err(AdminError::unprocessable(
        "manifest",
        format!(
            "`{}` is neither a loaded manifest nor a new .toml file in a policy folder ({})",
            file.display(),
            folders
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
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
    let (generation, etag) = result.map_err(|e| edit_error(e, "chain"))?;
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

/// A manifest edit that was not applied, as the admin API answers it
/// (`what` was edited: `chain`, `api`).
pub(super) fn edit_error(e: EditError, what: &str) -> AdminError {
    match e {
        EditError::Diverged(m) => AdminError::conflict(m),
        EditError::Io(m) => AdminError::unavailable(m),
        EditError::Refused(e) => e,
        EditError::Invalid(errs) => AdminError::unprocessable(
            what,
            format!("the configuration with this {what} does not check:\n{errs}"),
        ),
    }
}
