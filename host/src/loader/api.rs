//! The third level: what one manifest declares — its consumers (with their
//! keys), and its APIs (a name not taken yet, the upstream, the routes,
//! then the chain, which the step level builds).

use super::manifests::Source;
use super::scope::Scoped;
use super::{datetime_ms, resolve, Api, Build};
use crate::domain::consumer::ConsumerInfo;
use crate::manifest::{ApiSpec, ConsumerSpec, RouteSpec};
use crate::openapi::{OpenApi, Operation};
use crate::policy::Step;
use crate::record::{self, Recorder};
use crate::route::{HostPattern, PathPattern, Route};
use crate::upstream::Upstream;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

impl Build<'_> {
    /// Add the file's consumers and their keys to the directory.
    pub(super) fn consumers(&mut self, src: &Source, consumers: &[Spanned<ConsumerSpec>]) {
        for c in consumers {
            self.consumer(&src.at(c.span().start), c.get_ref());
        }
    }

    /// One consumer, declared at `at`.
    fn consumer(&mut self, at: &str, spec: &ConsumerSpec) {
        let info = ConsumerInfo {
            id: spec.id.to_string(),
            app: spec.app.as_ref().map(|n| n.to_string()),
            key_id: None,
            plan: spec.plan.as_ref().map(|n| n.to_string()),
            product: spec.product.as_ref().map(|n| n.to_string()),
        };
        let apis = spec.apis.iter().map(|a| a.to_string()).collect();
        let idx = match self.directory.add_consumer(info, apis) {
            Ok(idx) => idx,
            Err(e) => {
                self.errs.push(format!("{at}: {e}"));
                return;
            }
        };
        let groups: Vec<String> = spec.groups.iter().map(|g| g.to_string()).collect();
        self.directory.add_groups(idx, &groups);
        for k in &spec.keys {
            let expires = match &k.expires {
                None => None,
                Some(d) => match datetime_ms(d) {
                    Some(ms) => Some(ms),
                    None => {
                        self.errs.push(format!(
                            "{at}: consumer `{}`, key `{}`: expires `{d}` must be a full date-time with offset, e.g. 2027-01-01T00:00:00Z",
                            spec.id, k.id
                        ));
                        continue;
                    }
                },
            };
            if let Err(e) = self
                .directory
                .add_key(idx, k.id.as_str(), &k.sha256, expires)
            {
                self.errs.push(format!("{at}: consumer `{}`: {e}", spec.id));
            }
        }
    }

    /// One API, the `index_in_file`-th of the file. An API with any error
    /// is left out, its routes too; its name stays taken, so a duplicate of
    /// it is reported as well.
    pub(super) fn api(&mut self, src: &Source, index_in_file: usize, api: &Spanned<ApiSpec>) {
        let at = src.at(api.span().start);
        let spec = api.get_ref();
        if let Some(prev) = self.api_names.get(spec.name.as_str()) {
            self.errs.push(format!(
                "{at}: api `{}` is already defined at {prev}",
                spec.name,
            ));
            return;
        }
        self.api_names.insert(spec.name.to_string(), at.clone());
        let api_index = self.apis.len();
        let upstream = self.upstream(src.path, &at, spec);
        let openapi = self.openapi(src.path, &at, spec);
        let document = openapi.clone().flatten();
        let first_route = self.routes.len();
        let routed = self.routes(src, &at, api_index, spec, document.as_deref());
        // Steps granted `openapi` get this API's document.
        self.openapi = document;
        let steps = self.scoped(src, (index_in_file, None), spec);
        self.openapi = None;
        if let Some(scoped) = &steps {
            // The API's own routes follow its document's operations.
            let own = self.routes.len() - spec.routes.len().min(self.routes.len() - first_route);
            for (route, chain) in self.routes[own..].iter_mut().zip(&scoped.route_chains) {
                route.chain = *chain;
            }
        }
        let record = self.recorder(src.path, &at, spec);
        let revisions = self.revisions(src, index_in_file, spec);
        match (upstream, openapi, routed, steps, record, revisions) {
            (Some(upstream), Some(openapi), true, Some(steps), Some(record), Some(revisions)) => {
                let mut api = ready(src.path, spec, upstream, steps);
                api.record = record;
                api.openapi = openapi;
                api.revision = spec.current_revision.unwrap_or(1);
                if spec.version_set.is_some() || spec.version.is_some() || spec.lifecycle.is_some()
                {
                    self.declared.push(super::versions::Declared {
                        api: api_index,
                        at: at.clone(),
                        set: spec.version_set.clone(),
                        version: spec.version.clone(),
                        lifecycle: spec.lifecycle.clone(),
                    });
                }
                self.apis.push(api);
                for r in revisions {
                    self.revisions.insert((spec.name.to_string(), r.number), r);
                }
            }
            // Keep indexes of later APIs aligned with their routes.
            _ => self.routes.retain(|r| r.api != api_index),
        }
    }

    /// The API's upstream client; its certificate files are watched (they
    /// are reread on reload: a change reloads).
    pub(super) fn upstream(&mut self, file: &Path, at: &str, spec: &ApiSpec) -> Option<Upstream> {
        let folder = file.parent().unwrap_or(Path::new("."));
        let u = &spec.upstream;
        for p in [&u.ca_file, &u.client_cert, &u.client_key]
            .into_iter()
            .flatten()
        {
            self.watched.push(resolve(folder, p));
        }
        Upstream::with_websocket(
            spec.name.as_str(),
            &spec.upstream,
            folder,
            spec.websocket.is_some(),
        )
        .map_err(|e| {
            self.errs
                .push(format!("{at}: api `{}`: upstream: {e}", spec.name))
        })
        .ok()
    }

    /// The API's OpenAPI document (`openapi = FILE`): `Some(None)`
    /// without one, `None` after an error (each of its errors reported
    /// with the document's file, line and JSON pointer). The file is
    /// watched: a change reloads.
    pub(super) fn openapi(
        &mut self,
        file: &Path,
        at: &str,
        spec: &ApiSpec,
    ) -> Option<Option<Arc<OpenApi>>> {
        let Some(p) = &spec.openapi else {
            return Some(None);
        };
        let path = resolve(file.parent().unwrap_or(Path::new(".")), p);
        self.inputs.record_file(&path);
        self.watched.push(path.clone());
        match crate::openapi::load(&path) {
            Ok(doc) => Some(Some(Arc::new(doc))),
            Err(errs) => {
                for e in errs {
                    self.errs.push(format!(
                        "{e}\n  (the OpenAPI document of api `{}`, {at})",
                        spec.name
                    ));
                }
                None
            }
        }
    }

    /// The API's recorder (`[api.record]`): `Some(None)` without one,
    /// `None` after an error. The header and query parameter its
    /// `key-auth` steps read the key from are redacted too.
    fn recorder(&mut self, file: &Path, at: &str, spec: &ApiSpec) -> Option<Option<Arc<Recorder>>> {
        let Some(rec) = &spec.record else {
            return Some(None);
        };
        let folder = file.parent().unwrap_or(Path::new("."));
        // Every key-auth step the API's calls may run: its own, its
        // routes', the gateway's.
        let gateway = self.scopes.gateway.iter().flat_map(|g| g.steps.iter());
        let routes = spec.routes.iter().flat_map(|r| r.get_ref().chain.iter());
        let names: Vec<(String, Option<String>)> = spec
            .chain
            .iter()
            .chain(routes)
            .chain(gateway)
            .map(|s| s.get_ref())
            .filter(|s| s.plugin == "key-auth")
            .map(|s| record::key_auth_names(s.config.as_ref()))
            .collect();
        let headers = names.iter().map(|(h, _)| h.as_str());
        let query = names.iter().filter_map(|(_, q)| q.as_deref());
        match Recorder::new(spec.name.as_str(), rec, folder, headers, query) {
            Ok(r) => Some(Some(Arc::new(r))),
            Err(e) => {
                self.errs
                    .push(format!("{at}: api `{}`: record: {e}", spec.name));
                None
            }
        }
    }

    /// Compile the API's routes (at least one: its document's operations,
    /// then its `[[api.route]]`s) into the router's list; whether all
    /// compiled.
    fn routes(
        &mut self,
        src: &Source,
        at: &str,
        api_index: usize,
        spec: &ApiSpec,
        openapi: Option<&OpenApi>,
    ) -> bool {
        let mut ok = true;
        let operations: Vec<&Operation> = openapi.map_or(Vec::new(), |d| d.served().collect());
        for op in openapi.map_or(&[][..], |d| &d.operations[..]) {
            if let Some(by) = &op.shadowed_by {
                tracing::warn!(
                    api = %spec.name,
                    "{}: at {}: {} {} is served by route `{by}`: the router cannot tell the two apart",
                    openapi.map_or_else(String::new, |d| d.file.display().to_string()),
                    op.pointer,
                    op.method,
                    op.path
                );
            }
        }
        if spec.routes.is_empty() && operations.is_empty() {
            let what = if spec.openapi.is_some() {
                "its OpenAPI document has no operation and it has no [[api.route]]"
            } else {
                "add an [[api.route]] with `path` or `prefix`, or `openapi = FILE`"
            };
            if !(spec.openapi.is_some() && openapi.is_none()) {
                self.errs
                    .push(format!("{at}: api `{}` has no route: {what}", spec.name));
            }
            ok = false;
        }
        for op in operations {
            let r = operation_route(op);
            match compile_route(api_index, self.routes.len(), &r) {
                Ok(route) => self.routes.push(route),
                Err(e) => {
                    let file = openapi.map_or_else(String::new, |d| d.file.display().to_string());
                    self.errs.push(format!(
                        "{file}: at {}: {e}\n  (the OpenAPI document of api `{}`, {at})",
                        op.pointer, spec.name
                    ));
                    ok = false;
                }
            }
        }
        for r in &spec.routes {
            match compile_route(api_index, self.routes.len(), r.get_ref()) {
                Ok(route) => self.routes.push(route),
                Err(e) => {
                    self.errs.push(format!(
                        "{}: api `{}`: route: {e}",
                        src.at(r.span().start),
                        spec.name
                    ));
                    ok = false;
                }
            }
        }
        if let Some(ws) = &spec.websocket {
            let names: Vec<&str> = self
                .routes
                .iter()
                .filter(|r| r.api == api_index)
                .map(|r| r.name.as_str())
                .collect();
            if spec.upstream.protocol == crate::manifest::UpstreamProtocol::H2c {
                self.errs.push(format!(
                    "{at}: api `{}`: websocket: the upstream's protocol is h2c, and a WebSocket handshake needs HTTP/1.1: use protocol = \"http1\" (the default), or another API for the WebSocket routes",
                    spec.name
                ));
                ok = false;
            }
            for e in websocket_errors(ws, &names) {
                self.errs
                    .push(format!("{at}: api `{}`: websocket: {e}", spec.name));
                ok = false;
            }
        }
        ok
    }
}

/// What is wrong with `[api.websocket]` for an API whose routes are
/// `routes` (by name).
pub(super) fn websocket_errors(
    ws: &crate::manifest::WebSocketSpec,
    routes: &[&str],
) -> Vec<String> {
    let mut errs = Vec::new();
    for r in &ws.routes {
        if !routes.contains(&r.as_str()) {
            errs.push(format!(
                "routes: no route `{r}` in this API (its routes: {})",
                routes
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (name, d) in [
        ("idle-timeout", ws.idle_timeout.0),
        ("max-lifetime", ws.max_lifetime.0),
    ] {
        if d.is_zero() {
            errs.push(format!("{name}: must be more than 0"));
        }
    }
    let max = ws.max_message.0;
    if !(125..=crate::manifest::MAX_WS_MESSAGE).contains(&max) {
        errs.push(format!(
            "max-message: {max} bytes; must be from 125 bytes (a control frame) to 64MiB"
        ));
    }
    errs
}

/// The route an OpenAPI operation is served by.
pub(super) fn operation_route(op: &Operation) -> RouteSpec {
    RouteSpec {
        name: crate::manifest::Name::try_from(op.route.clone()).ok(),
        hosts: Vec::new(),
        path: Some(op.path.clone()),
        prefix: None,
        methods: vec![op.method.clone()],
        chain: Vec::new(),
    }
}

/// The API built from `spec` in `file`, ready to serve.
pub(super) fn ready(file: &Path, spec: &ApiSpec, upstream: Upstream, scoped: Scoped) -> Api {
    let Scoped { steps, chains, .. } = scoped;
    let request_body_limit = steps
        .iter()
        .flat_map(Step::versions)
        .filter_map(|s| s.info.body.request.map(|n| n as usize))
        .max();
    Api {
        name: spec.name.to_string().into(),
        manifest: file.to_path_buf(),
        spec: Arc::new(spec.clone()),
        upstream,
        steps,
        chains,
        request_body_limit,
        record: None,
        version: None,
        lifecycle: None,
        revision: 1,
        openapi: None,
    }
}

/// A route of API `api` (its index among the built APIs), `order`-th in
/// the manifests.
pub(super) fn compile_route(api: usize, order: usize, r: &RouteSpec) -> Result<Route, String> {
    let path = match (&r.path, &r.prefix) {
        (Some(p), None) => PathPattern::template(p)?,
        (None, Some(p)) => PathPattern::prefix(p)?,
        (Some(_), Some(_)) => return Err("give either `path` or `prefix`, not both".into()),
        (None, None) => return Err("give `path` (e.g. \"/pets/{id}\") or `prefix`".into()),
    };
    if path.first_literal() == Some(super::REVISION_PREFIX) {
        return Err(format!(
            "paths under `/{}/` are the addresses of revisions: give the route another path",
            super::REVISION_PREFIX
        ));
    }
    let hosts = r
        .hosts
        .iter()
        .map(|h| HostPattern::parse(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut methods = Vec::new();
    for m in &r.methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("method `{m}` is not an HTTP method"));
        }
        methods.push(m.to_ascii_uppercase());
    }
    Ok(Route {
        api,
        name: super::scope::route_label(r),
        hosts,
        path,
        methods,
        order,
        version: None,
        chain: 0,
        cells: Default::default(),
    })
}
