//! Version sets (read from the configuration), and the edits of an API's
//! lifecycle and revisions: each rewrites the API's manifest (guarded by
//! `If-Match`, the manifest's SHA-256), is checked by a full build before
//! it is written, goes live by a reload, and is audited.

use super::apis::find_api;
use super::request::Call;
use super::{blocking, created, ok, Reply};
use crate::control::admin::chain::{self, ChainAssign};
use crate::control::admin::error::AdminError;
use crate::control::admin::revisions::{self, LifecycleInput, RevisionInput};
use crate::control::EditError;
use crate::loader::{Generation, REVISION_PREFIX};
use crate::manifest::{ApiSpec, LifecycleSpec};
use crate::route::{VersionFrom, VersionSetInfo};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

/// `GET /admin/v1/version-sets`.
pub fn list_sets(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let items: Vec<Value> = g.router.sets().iter().map(|s| set_view(&g, s)).collect();
    ok(json!({ "items": items }))
}

/// `GET /admin/v1/version-sets/{name}`.
pub fn get_set(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let s = g
        .router
        .sets()
        .iter()
        .find(|s| s.name == c.id())
        .ok_or_else(|| AdminError::not_found("version set", c.id()))?;
    ok(set_view(&g, s))
}

fn set_view(g: &Generation, s: &VersionSetInfo) -> Value {
    let (scheme, key) = match &s.from {
        VersionFrom::Path => ("path", None),
        VersionFrom::Header(h) => ("header", Some(("header", h))),
        VersionFrom::Query(q) => ("query", Some(("query", q))),
    };
    let versions: Vec<Value> = s
        .versions
        .iter()
        .filter_map(|v| {
            let api = g.apis.iter().find(|a| {
                a.version
                    .as_ref()
                    .is_some_and(|x| *x.set == *s.name && x.version == *v)
            })?;
            Some(json!({
                "version": &**v,
                "api": &*api.name,
                "default": s.default.as_deref() == Some(&**v),
                "lifecycle": lifecycle_view(api.spec.lifecycle.as_ref()),
            }))
        })
        .collect();
    let mut o = json!({
        "name": s.name,
        "scheme": scheme,
        "default": s.default.as_deref(),
        "versions": versions,
    });
    if let Some((k, v)) = key {
        o[k] = v.as_str().into();
    }
    o
}

/// An API's lifecycle as JSON (`{"state": "active"}` without one).
pub fn lifecycle_view(l: Option<&LifecycleSpec>) -> Value {
    let Some(l) = l else {
        return json!({ "state": "active" });
    };
    let mut o = json!({ "state": l.state.as_str() });
    if let Some(d) = &l.deprecated_at {
        o["deprecated_at"] = d.to_string().into();
    }
    if let Some(d) = &l.sunset {
        o["sunset"] = d.to_string().into();
    }
    if let Some(s) = &l.successor {
        o["successor"] = s.as_str().into();
    }
    o
}

/// The `{n}` of a revision's path.
fn revision_number(c: &Call) -> Result<u32, AdminError> {
    let raw = c.params.get(1).map_or("", String::as_str);
    raw.parse::<u32>()
        .ok()
        .filter(|n| *n > 0 && raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| AdminError::not_found("revision", &format!("{}/{raw}", c.id())))
}

/// `PUT /admin/v1/apis/{name}/lifecycle`.
pub fn set_lifecycle(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let input: LifecycleInput = c.body()?;
        let life = input.to_toml(revisions::now())?;
        let name = c.id().to_string();
        let detail = json!({"lifecycle": life.as_ref().map(|l| l.to_string())});
        let api = name.clone();
        let (generation, etag) = edit(&c, "set-lifecycle", detail, "lifecycle", move |text| {
            revisions::set_lifecycle(text, &api, life)
        })
        .await?;
        let g = c.gateway.current();
        let a = find_api(&g, &name)?;
        ok(json!({
            "etag": etag,
            "lifecycle": lifecycle_view(a.spec.lifecycle.as_ref()),
            "generation": generation,
        }))
    })
}

/// `GET /admin/v1/apis/{name}/revisions`: the current revision, then the
/// staged ones by number, and the manifest's ETag.
pub fn list_revisions(c: &Call) -> Reply {
    c.no_query()?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    let mut items = vec![revision_view(&a.spec, None)];
    let mut staged: Vec<_> = a.spec.revisions.iter().map(|r| r.get_ref()).collect();
    staged.sort_by_key(|r| r.number);
    items.extend(staged.into_iter().map(|r| revision_view(&a.spec, Some(r))));
    ok(json!({
        "etag": g.sources.get(&a.manifest).cloned().unwrap_or_default(),
        "current": a.revision,
        "previous": a.spec.previous_revision,
        "items": items,
    }))
}

/// `GET /admin/v1/apis/{name}/revisions/{n}` (the current one too).
pub fn get_revision(c: &Call) -> Reply {
    c.no_query()?;
    let n = revision_number(c)?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    let mut view = if a.revision == n {
        revision_view(&a.spec, None)
    } else {
        let r = a
            .spec
            .revisions
            .iter()
            .map(|r| r.get_ref())
            .find(|r| r.number == n)
            .ok_or_else(|| AdminError::not_found("revision", &format!("{}/{n}", c.id())))?;
        revision_view(&a.spec, Some(r))
    };
    view["etag"] = g
        .sources
        .get(&a.manifest)
        .cloned()
        .unwrap_or_default()
        .into();
    ok(view)
}

/// A revision as JSON: the API's current definition for `None`.
fn revision_view(api: &ApiSpec, r: Option<&crate::manifest::RevisionSpec>) -> Value {
    let (number, description, created, upstream, routes, steps, openapi) = match r {
        None => (
            api.current_revision.unwrap_or(1),
            api.current_description.clone(),
            None,
            &api.upstream,
            &api.routes,
            &api.chain,
            &api.openapi,
        ),
        Some(r) => (
            r.number,
            r.description.clone(),
            r.created.map(|d| d.to_string()),
            &r.upstream,
            &r.routes,
            &r.chain,
            &r.openapi,
        ),
    };
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| super::apis::route_view(r.get_ref()))
        .collect();
    let chain: Vec<Value> = steps
        .iter()
        .map(|s| chain::step_view(s.get_ref()))
        .collect();
    json!({
        "number": number,
        "current": r.is_none(),
        "description": description,
        "created": created,
        "address": r.map(|r| format!("/{REVISION_PREFIX}/{}/{}", api.name, r.number)),
        "upstream": {"targets": upstream.targets},
        "openapi": openapi.as_ref().map(|p| p.display().to_string()),
        "routes": routes,
        "chain": chain,
    })
}

/// `POST /admin/v1/apis/{name}/revisions`: a new revision, a copy of the
/// current definition (with the body's `chain`, if given).
pub fn create_revision(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let input: RevisionInput = c.optional_body()?;
        if let Some(chain) = &input.chain {
            chain::check_steps(chain)?;
        }
        if input
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 500)
        {
            return Err(AdminError::invalid("description", "at most 500 characters"));
        }
        let name = c.id().to_string();
        let detail = json!({
            "description": input.description,
            "chain": input.chain.as_ref().map(|ch| ch.iter().map(chain::input_view).collect::<Vec<_>>()),
        });
        let api = name.clone();
        let number = std::sync::Arc::new(std::sync::Mutex::new(0u32));
        let made = number.clone();
        let (generation, etag) = edit(&c, "create-revision", detail, "revision", move |text| {
            let (text, n) = revisions::add_revision(text, &api, &input, revisions::now())?;
            *made.lock().unwrap_or_else(|e| e.into_inner()) = n;
            Ok(text)
        })
        .await?;
        let n = *number.lock().unwrap_or_else(|e| e.into_inner());
        let g = c.gateway.current();
        let a = find_api(&g, &name)?;
        let r = a
            .spec
            .revisions
            .iter()
            .map(|r| r.get_ref())
            .find(|r| r.number == n);
        let mut view = revision_view(&a.spec, r);
        view["etag"] = etag.into();
        view["generation"] = generation.into();
        created(view)
    })
}

/// `DELETE /admin/v1/apis/{name}/revisions/{n}`.
pub fn delete_revision(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let n = revision_number(&c)?;
        let api = c.id().to_string();
        let (generation, etag) = edit(
            &c,
            "delete-revision",
            json!({"revision": n}),
            "revision",
            move |text| revisions::delete_revision(text, &api, n),
        )
        .await?;
        ok(json!({"etag": etag, "generation": generation}))
    })
}

/// `PUT /admin/v1/apis/{name}/revisions/{n}/chain`.
pub fn set_revision_chain(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let n = revision_number(&c)?;
        let r: ChainAssign = c.body()?;
        chain::check_steps(&r.chain)?;
        let api = c.id().to_string();
        let detail = json!({"revision": n, "chain": r.chain.iter().map(chain::input_view).collect::<Vec<_>>()});
        let (generation, etag) = edit(&c, "assign-revision-chain", detail, "chain", move |text| {
            revisions::set_revision_chain(text, &api, n, &r.chain)
        })
        .await?;
        let g = c.gateway.current();
        let a = find_api(&g, c.id())?;
        let chain: Vec<Value> = a
            .spec
            .revisions
            .iter()
            .map(|r| r.get_ref())
            .find(|r| r.number == n)
            .map(|r| {
                r.chain
                    .iter()
                    .map(|s| chain::step_view(s.get_ref()))
                    .collect()
            })
            .unwrap_or_default();
        ok(json!({"etag": etag, "chain": chain, "generation": generation}))
    })
}

/// `POST /admin/v1/apis/{name}/revisions/{n}/promote`.
pub fn promote(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        let n = revision_number(&c)?;
        make_current(c, "promote-revision", Some(n)).await
    })
}

/// `POST /admin/v1/apis/{name}/rollback`: promote `previous-revision`.
pub fn rollback(c: Call) -> BoxFuture<'static, Reply> {
    Box::pin(async move {
        c.no_query()?;
        make_current(c, "rollback-revision", None).await
    })
}

/// Make revision `n` (or the previous one) current.
async fn make_current(c: Call, action: &'static str, n: Option<u32>) -> Reply {
    let api = c.id().to_string();
    let chosen = std::sync::Arc::new(std::sync::Mutex::new(0u32));
    let set = chosen.clone();
    let (generation, etag) = edit(
        &c,
        action,
        json!({"revision": n}),
        "revision",
        move |text| {
            let n = match n {
                Some(n) => n,
                None => revisions::previous(text, &api)?,
            };
            *set.lock().unwrap_or_else(|e| e.into_inner()) = n;
            revisions::promote(text, &api, n)
        },
    )
    .await?;
    let g = c.gateway.current();
    let a = find_api(&g, c.id())?;
    ok(json!({
        "etag": etag,
        "current": a.revision,
        "previous": a.spec.previous_revision,
        "generation": generation,
    }))
}

/// Rewrite API `c.id()`'s manifest with `f` (after the `If-Match` check)
/// through the build-check-swap, then audit it as `action`. `what` names
/// the field a configuration that does not build is reported on.
async fn edit(
    c: &Call,
    action: &'static str,
    detail: Value,
    what: &'static str,
    f: impl FnOnce(&str) -> Result<String, AdminError> + Send + 'static,
) -> Result<(u64, String), AdminError> {
    let name = c.id().to_string();
    let file = find_api(&c.gateway.current(), &name)?.manifest.clone();
    let if_match = c.if_match.clone();
    let result = c
        .gateway
        .apply_manifest_edit(file, move |text, on_disk| {
            if let Some(tag) = if_match.as_deref() {
                if tag != on_disk && tag != "*" {
                    return Err(AdminError::precondition_failed(
                        "If-Match does not match: the manifest changed since you read it; GET it again",
                    ));
                }
            }
            f(text)
        })
        .await;
    let (generation, etag) = result.map_err(|e| match e {
        EditError::Diverged(m) => AdminError::conflict(m),
        EditError::Io(m) => AdminError::unavailable(m),
        EditError::Refused(e) => e,
        EditError::Invalid(errs) => AdminError::unprocessable(
            what,
            format!("the configuration with this change does not check:\n{errs}"),
        ),
    })?;
    let (reg, actor) = (c.registry.clone(), c.actor().to_string());
    blocking(move || reg.audit(&actor, action, "api", &name, detail))
        .await
        .map_err(|e| {
            AdminError::unavailable(format!(
                "the change was applied, but its audit entry could not be written: {e}"
            ))
        })?;
    Ok((generation, etag))
}
