//! Building a complete configuration generation from the gateway file and
//! its policy manifests: parse, resolve plugins, check every step's config
//! through the plugin, compile routes. Either everything is valid and a new
//! [`Generation`] comes out, or a list of errors a person can act on.
//!
//! The build goes level by level (as Spin's `loader/src/local.rs`), each
//! level in its own module and adding to one `Build`:
//!
//! | level | module | what |
//! |---|---|---|
//! | gateway file | `gateway_file` | read it; listeners, admin, limits, outbound CA |
//! | manifest files | `manifests` | list the policy folders; read and parse each file |
//! | APIs | `api` | consumers and keys; API names, upstream, routes |
//! | steps | `step` | step names, limits, grants, config checked by the plugin |
//! | plugins | `plugin` | find the plugin file, compile it through the runtime |
//!
//! Every error is reported, in the order of the files, then of what each
//! declares (consumers, then APIs; in an API: upstream, routes, steps).

mod api;
mod canary;
mod gateway_file;
pub mod inputs;
mod manifests;
mod plugin;
mod revision;
mod scope;
mod step;
mod versions;

use crate::manifest::{ApiSpec, GatewayFile, ManifestError};
use crate::policy::{Runtime, Step};
use crate::upstream::Upstream;

use crate::domain::consumer::{ConsumerSource, Sources};
pub use crate::domain::time::datetime_ms;
use crate::policy::host::consumers::Directory;
use crate::route::{Route, Router};
pub use gateway_file::{read_gateway_file, read_gateway_file_recording};
pub use inputs::Inputs;
pub use manifests::{in_policy_folder, manifest_files};
pub use plugin::find_plugin;
pub use revision::{Revision, REVISION_PREFIX};
pub use scope::{route_label, Chains, OuterChains, Scope};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
pub use versions::{ApiVersion, Lifecycle, Successor};

/// Longest deadline a policy phase may be given.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One API, ready to serve.
#[derive(Debug)]
pub struct Api {
    pub name: Arc<str>,
    /// The manifest file that defines it, and its definition there.
    pub manifest: PathBuf,
    pub spec: Arc<ApiSpec>,
    pub upstream: Upstream,
    /// Every step of the API's scopes (the gateway's, the products', its
    /// own and its routes'), each once; [`Api::chains`] orders them.
    pub steps: Vec<Step>,
    /// Which steps each of its routes runs, in order, and each product's.
    pub chains: Chains,
    /// The largest request body any step asked for.
    pub request_body_limit: Option<usize>,
    /// Where its calls are recorded (`[api.record]`), if they are.
    pub record: Option<Arc<crate::record::Recorder>>,
    /// Its version set and version, if it is a version.
    pub version: Option<ApiVersion>,
    /// Deprecated or retired; `None` when active.
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// The number of the revision this is (`current-revision`, or the
    /// revision's `number` for a staged revision).
    pub revision: u32,
    /// Its OpenAPI document (`openapi = FILE`), if it has one.
    pub openapi: Option<Arc<crate::openapi::OpenApi>>,
}

/// A complete, validated configuration.
#[derive(Debug)]
pub struct Generation {
    pub router: Router,
    pub apis: Vec<Api>,
    /// Files whose change should trigger a reload.
    pub watched: Vec<PathBuf>,
    /// Where the policies look consumers, keys and plans up: the consumers
    /// and keys declared in the manifests, then the control plane's source
    /// the composition root gave the policy services.
    pub consumers: Arc<dyn ConsumerSource>,
    /// SHA-256 (hex) of each policy manifest's text this generation was
    /// built from: the admin API refuses to rewrite a file that changed
    /// since.
    pub sources: BTreeMap<PathBuf, String>,
    /// The staged revisions by API name and number, each served at
    /// `/.rev/{api}/{number}/...`.
    pub revisions: BTreeMap<(String, u32), Revision>,
    /// The gateway's and the products' chains, and their files.
    pub outer: OuterChains,
}

impl Generation {
    /// Whether every step of every API (and of every staged revision)
    /// serves from its configured snapshot.
    pub fn snapshotted(&self) -> bool {
        self.apis
            .iter()
            .chain(self.revisions.values().map(|r| &r.api))
            .flat_map(|a| &a.steps)
            .flat_map(|s| s.versions())
            .all(|s| s.snapshotted())
    }
}

/// Everything wrong with a configuration, one line each.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ManifestError> for ConfigErrors {
    fn from(e: ManifestError) -> Self {
        ConfigErrors(e.into_list().iter().map(|e| e.to_string()).collect())
    }
}

pub use crate::manifest::resolve;

/// Build a generation. `gw_path` is the gateway file (for relative paths).
pub fn build(
    gw_path: &Path,
    gw: &GatewayFile,
    runtime: &Runtime,
) -> Result<Generation, ConfigErrors> {
    build_with(gw_path, gw, runtime, &BTreeMap::new())
}

/// Build a generation, reading the manifests named in `overrides` from
/// there instead of from disk (the admin API checks an edit this way before
/// writing it).
pub fn build_with(
    gw_path: &Path,
    gw: &GatewayFile,
    runtime: &Runtime,
    overrides: &BTreeMap<PathBuf, String>,
) -> Result<Generation, ConfigErrors> {
    build_recording(gw_path, gw, runtime, overrides, &mut Inputs::default())
}

/// The generation's one consumer source: its manifests' `directory`, then
/// the control plane's source, if the runtime's services were given one.
fn consumer_sources(directory: Directory, runtime: &Runtime) -> Arc<dyn ConsumerSource> {
    let mut sources: Vec<Arc<dyn ConsumerSource>> = vec![Arc::new(directory)];
    sources.extend(runtime.services().consumers.clone());
    Arc::new(Sources(sources))
}

/// [`build_with`], recording in `inputs` every manifest and plugin file it
/// read or looked for, and the manifests each policy folder held (even when
/// the build fails: the watcher then watches what the failed build read).
pub fn build_recording(
    gw_path: &Path,
    gw: &GatewayFile,
    runtime: &Runtime,
    overrides: &BTreeMap<PathBuf, String>,
    inputs: &mut Inputs,
) -> Result<Generation, ConfigErrors> {
    let base = gw_path.parent().unwrap_or(Path::new("."));
    let mut files = manifest_files(base, gw)?;
    // A manifest the admin API is creating in a policy folder: built as
    // if it were there, in its place among the folder's files.
    for f in overrides.keys() {
        if !files.contains(f) && manifests::in_policy_folder(base, gw, f) {
            let at = files
                .iter()
                .position(|x| x.parent() == f.parent() && x > f)
                .or_else(|| {
                    files
                        .iter()
                        .rposition(|x| x.parent() == f.parent())
                        .map(|i| i + 1)
                })
                .unwrap_or(files.len());
            files.insert(at, f.clone());
        }
    }
    manifests::record_folders(base, gw, &files, inputs);
    let mut build = Build::new(gw_path, gw, runtime, inputs);
    // The gateway's and the products' chains first, from every file: each
    // API is built with them.
    let read: Vec<_> = files
        .iter()
        .map(|file| build.manifest(file, overrides.get(file)))
        .collect();
    for (file, m, text) in read.iter().flat_map(|r| r.as_ref().ok()) {
        build.outer_chains(file, text, m);
    }
    // Then each file's errors or declarations, in the files' order.
    for r in read {
        match r {
            Ok((file, m, text)) => build.declarations(&file, &m, &text),
            Err(errs) => build.errs.extend(errs),
        }
    }
    let sets = build.versions();
    let Build {
        mut errs,
        mut watched,
        routes,
        apis,
        directory,
        sources,
        revisions,
        scopes,
        ..
    } = build;
    // An error in the gateway's or a product's chain is found once per
    // API: reported once.
    let mut seen = std::collections::HashSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    if errs.is_empty() {
        watched.sort();
        watched.dedup();
        Ok(Generation {
            router: Router::with_versions(routes, sets),
            apis,
            watched,
            consumers: consumer_sources(directory, runtime),
            sources,
            revisions,
            outer: scopes.outer(),
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

/// One build in progress: what it builds from, and what the levels add to
/// as they go.
struct Build<'a> {
    /// The folder of the gateway file, where its relative paths start.
    base: &'a Path,
    gw: &'a GatewayFile,
    runtime: &'a Runtime,
    /// Every file the build read or looked for.
    inputs: &'a mut Inputs,
    /// Every error so far, in the order found.
    errs: Vec<String>,
    /// The APIs built so far (an API with an error is left out).
    apis: Vec<Api>,
    /// Their routes; each names its API by its index in `apis`.
    routes: Vec<Route>,
    /// Files whose change should trigger a reload.
    watched: Vec<PathBuf>,
    /// Each API name, and where it was first defined.
    api_names: BTreeMap<String, String>,
    /// The consumers and keys declared so far.
    directory: Directory,
    /// SHA-256 (hex) of each manifest's text.
    sources: BTreeMap<PathBuf, String>,
    /// The `[[version-set]]`s declared so far.
    declared_sets: Vec<versions::DeclaredSet>,
    /// What the built APIs declared about versions and lifecycles.
    declared: Vec<versions::Declared>,
    /// The staged revisions built so far.
    revisions: BTreeMap<(String, u32), Revision>,
    /// The OpenAPI document of the API whose chain is being built.
    openapi: Option<Arc<crate::openapi::OpenApi>>,
    /// The gateway's and the products' chains, from every manifest.
    scopes: scope::Scopes,
}

impl<'a> Build<'a> {
    fn new(
        gw_path: &'a Path,
        gw: &'a GatewayFile,
        runtime: &'a Runtime,
        inputs: &'a mut Inputs,
    ) -> Build<'a> {
        let base = gw_path.parent().unwrap_or(Path::new("."));
        let mut watched = vec![gw_path.to_path_buf()];
        watched.extend(gw.policies.iter().map(|p| resolve(base, p)));
        Build {
            base,
            gw,
            runtime,
            inputs,
            errs: Vec::new(),
            apis: Vec::new(),
            routes: Vec::new(),
            watched,
            api_names: BTreeMap::new(),
            directory: Directory::default(),
            sources: BTreeMap::new(),
            declared_sets: Vec::new(),
            declared: Vec::new(),
            revisions: BTreeMap::new(),
            openapi: None,
            scopes: scope::Scopes::default(),
        }
    }
}

#[cfg(test)]
mod tests;
