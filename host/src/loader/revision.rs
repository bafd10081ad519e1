//! Staged revisions (`[[api.revision]]`): each a copy of an API's upstream,
//! routes and chain, built like the API itself and served only at its own
//! address, `/.rev/{api}/{number}` followed by one of its routes' paths.

use super::api::{compile_route, operation_route, ready};
use super::manifests::Source;
use super::{Api, Build};
use crate::manifest::ApiSpec;
use crate::route::Router;
use std::collections::BTreeSet;

/// The first path segment of a revision's address.
pub const REVISION_PREFIX: &str = ".rev";

/// A staged revision, ready to serve at its address.
#[derive(Debug)]
pub struct Revision {
    pub number: u32,
    pub description: Option<String>,
    /// The API as the revision defines it (its name is the API's).
    pub api: Api,
    /// Its routes, over the path after `/.rev/{api}/{number}`.
    pub router: Router,
}

impl Build<'_> {
    /// The revisions of API `spec` (the `index_in_file`-th of the file),
    /// if every one built; each error names the revision.
    pub(super) fn revisions(
        &mut self,
        src: &Source,
        index_in_file: usize,
        spec: &ApiSpec,
    ) -> Option<Vec<Revision>> {
        let current = spec.current_revision.unwrap_or(1);
        let mut ok = true;
        if current == 0 {
            self.errs.push(format!(
                "{}: api `{}`: current-revision must be 1 or more",
                self.at_api(src, spec),
                spec.name
            ));
            ok = false;
        }
        let mut numbers = BTreeSet::from([current]);
        let mut built = Vec::new();
        for (j, rev) in spec.revisions.iter().enumerate() {
            let at = src.at(rev.span().start);
            let r = rev.get_ref();
            let name = &spec.name;
            if r.number == 0 {
                self.errs.push(format!(
                    "{at}: api `{name}`: revision number must be 1 or more"
                ));
                ok = false;
                continue;
            }
            if !numbers.insert(r.number) {
                let what = if r.number == current {
                    "is the API's current revision (current-revision)"
                } else {
                    "is used twice"
                };
                self.errs.push(format!(
                    "{at}: api `{name}`: revision {} {what}: give each revision its own number",
                    r.number
                ));
                ok = false;
                continue;
            }
            let rspec = ApiSpec {
                upstream: r.upstream.clone(),
                routes: r.routes.clone(),
                chain: r.chain.clone(),
                record: None,
                openapi: r.openapi.clone(),
                version_set: None,
                version: None,
                lifecycle: None,
                current_revision: Some(r.number),
                current_description: r.description.clone(),
                previous_revision: None,
                revisions: Vec::new(),
                websocket: spec.websocket.clone(),
                name: spec.name.clone(),
            };
            let context = format!("{at}: revision {}", r.number);
            let upstream = self.upstream(src.path, &context, &rspec);
            let openapi = self.openapi(src.path, &context, &rspec);
            let document = openapi.clone().flatten();
            let mut routes = Vec::new();
            let operations: Vec<_> = document
                .as_deref()
                .map(|d| d.served().map(operation_route).collect())
                .unwrap_or_default();
            if rspec.routes.is_empty() && operations.is_empty() {
                self.errs.push(format!(
                    "{context}: api `{name}` has no route: add an [[api.revision.route]] with `path` or `prefix`, or `openapi = FILE`"
                ));
                ok = false;
            }
            for (order, op) in operations.iter().enumerate() {
                match compile_route(0, order, op) {
                    Ok(c) => routes.push(c),
                    Err(e) => {
                        self.errs.push(format!(
                            "{context}: api `{name}`: its OpenAPI document's route: {e}"
                        ));
                        ok = false;
                    }
                }
            }
            for (order, route) in rspec.routes.iter().enumerate() {
                match compile_route(0, operations.len() + order, route.get_ref()) {
                    Ok(c) => routes.push(c),
                    Err(e) => {
                        self.errs.push(format!(
                            "{}: api `{name}`, revision {}: route: {e}",
                            src.at(route.span().start),
                            r.number
                        ));
                        ok = false;
                    }
                }
            }
            // Steps granted `openapi` get the revision's document.
            self.openapi = document;
            let steps = self.scoped(src, (index_in_file, Some(j)), &rspec);
            self.openapi = None;
            if let (Some(upstream), Some(openapi), Some(steps)) = (upstream, openapi, steps) {
                for (route, chain) in routes[operations.len()..]
                    .iter_mut()
                    .zip(&steps.route_chains)
                {
                    route.chain = *chain;
                }
                let mut api = ready(src.path, &rspec, upstream, steps);
                api.revision = r.number;
                api.openapi = openapi;
                built.push(Revision {
                    number: r.number,
                    description: r.description.clone(),
                    api,
                    router: Router::new(routes),
                });
            } else {
                ok = false;
            }
        }
        if let Some(p) = spec.previous_revision {
            if !numbers.contains(&p) || p == current {
                self.errs.push(format!(
                    "{}: api `{}`: previous-revision {p} is not one of its revisions",
                    self.at_api(src, spec),
                    spec.name
                ));
                ok = false;
            }
        }
        ok.then_some(built)
    }

    /// Where API `spec` was declared (its name is taken by now).
    fn at_api(&self, src: &Source, spec: &ApiSpec) -> String {
        self.api_names
            .get(spec.name.as_str())
            .cloned()
            .unwrap_or_else(|| src.path.display().to_string())
    }
}
