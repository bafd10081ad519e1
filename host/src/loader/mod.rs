//! Building a complete configuration generation from the gateway file and
//! its policy manifests: parse, resolve plugins, check every step's config
//! through the plugin, compile routes. Either everything is valid and a new
//! [`Generation`] comes out, or a list of errors a person can act on.

use crate::manifest::{
    self, line_col, ApiSpec, GatewayFile, ManifestError, PolicyManifest, RouteSpec, StepSpec,
    SCHEMA,
};
use crate::policy::guard::{check_log_limits, LogLimits};
use crate::policy::{engine::MAX_STEP_MEMORY, Runtime, Step, StepConfigError};
use crate::upstream::Upstream;
pub mod inputs;

use crate::domain::consumer::{ConsumerSource, Sources};
pub use crate::domain::time::datetime_ms;
use crate::policy::host::consumers::{ConsumerInfo, Directory};
use crate::policy::host::{Capability, Grants};
use crate::route::{HostPattern, PathPattern, Route, Router};
pub use inputs::Inputs;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    pub steps: Vec<Step>,
    /// The largest request body any step asked for.
    pub request_body_limit: Option<usize>,
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
}

impl Generation {
    /// Whether every step of every API serves from its configured snapshot.
    pub fn snapshotted(&self) -> bool {
        self.apis
            .iter()
            .flat_map(|a| &a.steps)
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

/// Read and check the gateway file on its own.
pub fn read_gateway_file(path: &Path) -> Result<GatewayFile, ConfigErrors> {
    read_gateway_file_recording(path, &mut Inputs::default())
}

/// [`read_gateway_file`], recording what it read in `inputs`.
pub fn read_gateway_file_recording(
    path: &Path,
    inputs: &mut Inputs,
) -> Result<GatewayFile, ConfigErrors> {
    let read = manifest::read_toml::<GatewayFile>(path);
    match &read {
        Ok((_, text)) => inputs.record_text(path, text),
        Err(_) => inputs.record_unread(path),
    }
    let (gw, text) = read?;
    let mut errs = Vec::new();
    if gw.schema != SCHEMA {
        errs.push(format!(
            "{}: schema {} is not supported (this build reads schema {SCHEMA})",
            path.display(),
            gw.schema
        ));
    }
    if gw.listeners.is_empty() {
        errs.push(format!(
            "{}: at least one [[listener]] is required",
            path.display()
        ));
    }
    let mut names = HashSet::new();
    for l in &gw.listeners {
        if !names.insert(l.name.as_str().to_string()) {
            errs.push(format!(
                "{}: listener name `{}` is used twice",
                path.display(),
                l.name
            ));
        }
        if l.address.parse::<std::net::SocketAddr>().is_err() {
            errs.push(format!(
                "{}: listener `{}`: address `{}` is not IP:port (e.g. 127.0.0.1:8080)",
                path.display(),
                l.name,
                l.address
            ));
        }
    }
    if let Some(admin) = &gw.admin {
        match admin.address.parse::<std::net::SocketAddr>() {
            Err(_) => errs.push(format!(
                "{}: admin.address `{}` is not IP:port (e.g. 127.0.0.1:8001)",
                path.display(),
                admin.address
            )),
            Ok(a) if !a.ip().is_loopback() && admin.tls.is_none() => errs.push(format!(
                "{}: admin.address `{}` is not a loopback address: the admin API carries bearer tokens, so it needs `tls` there (or use 127.0.0.1)",
                path.display(),
                admin.address
            )),
            Ok(_) => {}
        }
        if !(1024..=(64 << 20)).contains(&admin.max_body.0) {
            errs.push(format!(
                "{}: admin.max-body = {} bytes must be between 1KiB and 64MiB",
                path.display(),
                admin.max_body.0
            ));
        }
    }
    let mem = gw.limits.step_memory.0;
    if !((1 << 20)..=MAX_STEP_MEMORY).contains(&mem) {
        errs.push(format!(
            "{}: limits.step-memory = {mem} bytes must be between 1MiB and {}MiB",
            path.display(),
            MAX_STEP_MEMORY >> 20
        ));
    }
    let t = gw.limits.step_timeout.0;
    if t.is_zero() || t > MAX_STEP_TIMEOUT {
        errs.push(format!(
            "{}: limits.step-timeout = {t:?} must be between 1ms and 30s",
            path.display()
        ));
    }
    let l = &gw.limits;
    for (name, zero) in [
        ("max-headers", l.max_headers == 0),
        ("max-connections", l.max_connections == 0),
        // hyper's HTTP/1 read buffer, which bounds the head, is at least
        // 8KiB: a smaller limit would not be enforced.
        ("max-header-bytes", l.max_header_bytes.0 < 8192),
        (
            "request-header-timeout",
            l.request_header_timeout.0.is_zero(),
        ),
        ("request-body-timeout", l.request_body_timeout.0.is_zero()),
        ("send-timeout", l.send_timeout.0.is_zero()),
        ("max-concurrent-streams", l.max_concurrent_streams == 0),
    ] {
        if zero {
            errs.push(format!(
                "{}: limits.{name} is too small to serve anything (remove it for the default)",
                path.display()
            ));
        }
    }
    if l.max_header_bytes.0 > (16 << 20) {
        errs.push(format!(
            "{}: limits.max-header-bytes must be at most 16MiB",
            path.display()
        ));
    }
    // At most hyper's own limit on a request-target (64KiB less 2 bytes,
    // beyond which it answers 414 itself).
    if !(256..=(64 << 10)).contains(&l.max_request_target.0) {
        errs.push(format!(
            "{}: limits.max-request-target = {} bytes must be between 256 bytes and 64KiB",
            path.display(),
            l.max_request_target.0
        ));
    }
    let log = LogLimits {
        lines_per_sec: gw.limits.plugin_log_rate,
        line_bytes: gw.limits.plugin_log_line.0 as usize,
    };
    if let Err(e) = check_log_limits(&log) {
        errs.push(format!("{}: limits.plugin-{e}", path.display()));
    }
    if gw.limits.max_instances == 0 || gw.limits.max_instances > 100_000 {
        errs.push(format!(
            "{}: limits.max-instances must be between 1 and 100000",
            path.display()
        ));
    }
    if let Some(ca) = &gw.outbound.ca_file {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut roots = rustls::RootCertStore::empty();
        if let Err(e) = crate::net::tls_client::ca_roots(&resolve(base, ca), &mut roots) {
            errs.push(format!("{}: outbound.ca-file: {e}", path.display()));
        }
    }
    let _ = text;
    if errs.is_empty() {
        Ok(gw)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// The manifest files a gateway file names (folders expand to their
/// `*.toml` files, sorted).
pub fn manifest_files(base: &Path, gw: &GatewayFile) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut files = Vec::new();
    let mut errs = Vec::new();
    for p in &gw.policies {
        let p = resolve(base, p);
        if p.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errs.push(format!("{}: cannot read folder: {e}", p.display())),
            }
        } else {
            files.push(p);
        }
    }
    if errs.is_empty() {
        Ok(files)
    } else {
        Err(ConfigErrors(errs))
    }
}

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
    let files = manifest_files(base, gw)?;
    for p in &gw.policies {
        let p = resolve(base, p);
        if p.is_dir() {
            let listed = files
                .iter()
                .filter(|f| f.parent() == Some(p.as_path()))
                .cloned()
                .collect();
            inputs.record_folder(&p, listed);
        }
    }
    let mut errs = Vec::new();
    let mut apis = Vec::new();
    let mut routes = Vec::new();
    let mut watched = vec![gw_path.to_path_buf()];
    let mut api_names: BTreeMap<String, String> = BTreeMap::new();
    let mut directory = Directory::default();
    let mut sources = BTreeMap::new();
    for p in &gw.policies {
        watched.push(resolve(base, p));
    }
    for file in &files {
        let read = match overrides.get(file) {
            Some(text) => manifest::parse_toml(file, text).map(|m| (m, text.clone())),
            None => manifest::read_toml(file),
        };
        match &read {
            Ok((_, text)) => inputs.record_text(file, text),
            Err(_) => inputs.record_unread(file),
        }
        let (m, text): (PolicyManifest, String) = match read {
            Ok(x) => x,
            Err(e) => {
                errs.extend(ConfigErrors::from(e).0);
                continue;
            }
        };
        sources.insert(
            file.clone(),
            hex::encode(sha2::Sha256::digest(text.as_bytes())),
        );
        if m.schema != SCHEMA {
            errs.push(format!(
                "{}: schema {} is not supported (this build reads schema {SCHEMA})",
                file.display(),
                m.schema
            ));
            continue;
        }
        for c in &m.consumers {
            let (l, col) = line_col(&text, c.span().start);
            let at = format!("{}:{l}:{col}", file.display());
            let spec = c.get_ref();
            let info = ConsumerInfo {
                id: spec.id.to_string(),
                app: spec.app.as_ref().map(|n| n.to_string()),
                key_id: None,
                plan: spec.plan.as_ref().map(|n| n.to_string()),
                product: spec.product.as_ref().map(|n| n.to_string()),
            };
            let apis = spec.apis.iter().map(|a| a.to_string()).collect();
            match directory.add_consumer(info, apis) {
                Ok(idx) => {
                    for k in &spec.keys {
                        let expires = match &k.expires {
                            None => None,
                            Some(d) => match datetime_ms(d) {
                                Some(ms) => Some(ms),
                                None => {
                                    errs.push(format!(
                                        "{at}: consumer `{}`, key `{}`: expires `{d}` must be a full date-time with offset, e.g. 2027-01-01T00:00:00Z",
                                        spec.id, k.id
                                    ));
                                    continue;
                                }
                            },
                        };
                        if let Err(e) = directory.add_key(idx, k.id.as_str(), &k.sha256, expires) {
                            errs.push(format!("{at}: consumer `{}`: {e}", spec.id));
                        }
                    }
                }
                Err(e) => errs.push(format!("{at}: {e}")),
            }
        }
        // The file's syntax tree, for where a key of a step is.
        let doc = toml_edit::ImDocument::parse(text.as_str()).ok();
        for (api_index_in_file, api) in m.apis.iter().enumerate() {
            let span = api.span();
            let api = api.get_ref();
            let at = |offset: usize| {
                let (l, c) = line_col(&text, offset);
                format!("{}:{l}:{c}", file.display())
            };
            if let Some(prev) = api_names.get(api.name.as_str()) {
                errs.push(format!(
                    "{}: api `{}` is already defined at {prev}",
                    at(span.start),
                    api.name,
                ));
                continue;
            }
            api_names.insert(api.name.to_string(), at(span.start));
            let api_index = apis.len();
            let mut ok = true;
            // Upstream.
            let folder = file.parent().unwrap_or(Path::new("."));
            // Certificates are reread on reload: a change reloads.
            let u = &api.upstream;
            for p in [&u.ca_file, &u.client_cert, &u.client_key]
                .into_iter()
                .flatten()
            {
                watched.push(resolve(folder, p));
            }
            let upstream = match Upstream::new(api.name.as_str(), &api.upstream, folder) {
                Ok(u) => Some(u),
                Err(e) => {
                    errs.push(format!(
                        "{}: api `{}`: upstream: {e}",
                        at(span.start),
                        api.name
                    ));
                    ok = false;
                    None
                }
            };
            // Routes.
            if api.routes.is_empty() {
                errs.push(format!(
                    "{}: api `{}` has no route: add an [[api.route]] with `path` or `prefix`",
                    at(span.start),
                    api.name
                ));
                ok = false;
            }
            for r in &api.routes {
                match compile_route(api_index, routes.len(), r.get_ref()) {
                    Ok(route) => routes.push(route),
                    Err(e) => {
                        errs.push(format!(
                            "{}: api `{}`: route: {e}",
                            at(r.span().start),
                            api.name
                        ));
                        ok = false;
                    }
                }
            }
            // Chain.
            let mut steps = Vec::new();
            let mut step_names = HashSet::new();
            for (step_index, s) in api.chain.iter().enumerate() {
                let spec: &StepSpec = s.get_ref();
                let step_item = doc
                    .as_ref()
                    .map(|d| &d.as_item()["api"][api_index_in_file]["chain"][step_index]);
                // `api ..., step ...` at the key `path` of the step (e.g.
                // `memory`, `config.request.path`), or the step's header.
                let ctx_at = |path: &str| {
                    let offset = step_item
                        .and_then(|i| crate::manifest::errors::path_span(i, path))
                        .map_or(s.span().start, |r| r.start);
                    format!(
                        "{}: api `{}`, step `{}` (plugin `{}`)",
                        at(offset),
                        api.name,
                        spec.name
                            .as_ref()
                            .map_or(spec.plugin.as_str(), |n| n.as_str()),
                        spec.plugin
                    )
                };
                let step_name = spec
                    .name
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| spec.plugin.clone());
                let where_ = at(s.span().start);
                let ctx = format!(
                    "{where_}: api `{}`, step `{step_name}` (plugin `{}`)",
                    api.name, spec.plugin
                );
                if !step_names.insert(step_name.clone()) {
                    errs.push(format!(
                        "{}: api `{}`: step name `{step_name}` is used twice; give each step a distinct `name`",
                        at(s.span().start),
                        api.name
                    ));
                    ok = false;
                    continue;
                }
                // Where the plugin is, and the files that would take its
                // place (or supply it, when it is missing) if they appeared.
                if !gw.plugins.paths.contains_key(&spec.plugin) {
                    for p in plugin_candidates(base, gw, &spec.plugin) {
                        inputs.record_file(&p);
                    }
                }
                let plugin_path = match find_plugin(base, gw, &spec.plugin) {
                    Ok(p) => {
                        inputs.record_file(&p);
                        p
                    }
                    Err(e) => {
                        errs.push(format!("{}: {e}", ctx_at("plugin")));
                        ok = false;
                        continue;
                    }
                };
                watched.push(plugin_path.clone());
                let plugin = match runtime.load_plugin(&spec.plugin, &plugin_path) {
                    Ok(p) => p,
                    Err(e) => {
                        errs.push(format!("{ctx}: {e:#}"));
                        ok = false;
                        continue;
                    }
                };
                let memory = spec.memory.unwrap_or(gw.limits.step_memory).0;
                if !((1 << 20)..=MAX_STEP_MEMORY).contains(&memory) {
                    errs.push(format!(
                        "{}: memory = {memory} bytes must be between 1MiB and {}MiB",
                        ctx_at("memory"),
                        MAX_STEP_MEMORY >> 20
                    ));
                    ok = false;
                    continue;
                }
                let timeout = spec.timeout.unwrap_or(gw.limits.step_timeout).0;
                if timeout.is_zero() || timeout > MAX_STEP_TIMEOUT {
                    errs.push(format!(
                        "{}: timeout = {timeout:?} must be between 1ms and 30s",
                        ctx_at("timeout")
                    ));
                    ok = false;
                    continue;
                }
                let log = LogLimits {
                    lines_per_sec: spec.log_rate.unwrap_or(gw.limits.plugin_log_rate),
                    line_bytes: spec.log_line.unwrap_or(gw.limits.plugin_log_line).0 as usize,
                };
                if let Err(e) = check_log_limits(&log) {
                    errs.push(format!("{ctx}: {e}"));
                    ok = false;
                    continue;
                }
                let mut grants = Grants::default();
                let mut bad_grant = false;
                for (i, g) in spec.grants.iter().enumerate() {
                    match Capability::parse(g) {
                        Ok(c) => grants.list.push(c),
                        Err(e) => {
                            errs.push(format!("{}: {e}", ctx_at(&format!("grants.{i}"))));
                            bad_grant = true;
                        }
                    }
                }
                if bad_grant {
                    ok = false;
                    continue;
                }
                let config = spec.config.as_ref().map_or_else(
                    || "{}".to_string(),
                    |c| manifest::toml_to_json(&toml::Value::Table(c.clone())).to_string(),
                );
                match runtime.configure_step(
                    &api.name.to_string(),
                    &step_name,
                    plugin,
                    config,
                    timeout,
                    memory as usize,
                    spec.fail_open,
                    grants,
                ) {
                    Ok(step) => steps.push(step.with_log_limits(log)),
                    Err(e) => {
                        // At the key the plugin names, inside `config`.
                        let key = match &e {
                            StepConfigError::Rejected { field: Some(f), .. } => {
                                format!("config.{f}")
                            }
                            StepConfigError::Rejected { field: None, .. } => "config".into(),
                            StepConfigError::NotGranted { .. } if spec.grants.is_empty() => {
                                "plugin".into()
                            }
                            StepConfigError::NotGranted { .. } => "grants".into(),
                            StepConfigError::Failed(_) => String::new(),
                        };
                        errs.push(format!("{}: {e}", ctx_at(&key)));
                        ok = false;
                    }
                }
            }
            if ok {
                let request_body_limit = steps
                    .iter()
                    .filter_map(|s| s.info.body.request.map(|n| n as usize))
                    .max();
                apis.push(Api {
                    name: api.name.to_string().into(),
                    manifest: file.clone(),
                    spec: Arc::new(api.clone()),
                    upstream: upstream.expect("checked above"),
                    steps,
                    request_body_limit,
                });
            } else {
                // Keep indexes of later APIs aligned with their routes. The
                // name stays taken, so a duplicate is reported now too.
                routes.retain(|r| r.api != api_index);
            }
        }
    }
    if errs.is_empty() {
        watched.sort();
        watched.dedup();
        Ok(Generation {
            router: Router::new(routes),
            apis,
            watched,
            consumers: consumer_sources(directory, runtime),
            sources,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

fn describe_dirs(base: &Path, gw: &GatewayFile) -> String {
    if gw.plugins.dirs.is_empty() {
        return "[plugins] dirs (none configured)".into();
    }
    gw.plugins
        .dirs
        .iter()
        .map(|d| resolve(base, d).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the plugin called `name` lives, or why it cannot be found.
pub fn find_plugin(base: &Path, gw: &GatewayFile, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = gw.plugins.paths.get(name) {
        return Ok(resolve(base, p));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        let hint = name
            .strip_suffix(".wasm")
            .map(|n| format!("write `{}`, or ", n.replace('_', "-")))
            .unwrap_or_default();
        return Err(format!(
            "plugin name `{name}` may contain only letters, digits, `-` and `_`: {hint}map it in [plugins.paths]"
        ));
    }
    let file = format!("{}.wasm", name.replace('-', "_"));
    plugin_candidates(base, gw, name)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "plugin `{name}` not found: no [plugins.paths] entry `{name}` and no `{file}` in {}",
                describe_dirs(base, gw)
            )
        })
}

/// `<dir>/<name>.wasm` (with `-` read as `_`) in each of `[plugins] dirs`,
/// in order.
fn plugin_candidates(base: &Path, gw: &GatewayFile, name: &str) -> Vec<PathBuf> {
    let file = format!("{}.wasm", name.replace('-', "_"));
    gw.plugins
        .dirs
        .iter()
        .map(|d| resolve(base, d).join(&file))
        .collect()
}

fn compile_route(api: usize, order: usize, r: &RouteSpec) -> Result<Route, String> {
    let (path, label) = match (&r.path, &r.prefix) {
        (Some(p), None) => (PathPattern::template(p)?, p.clone()),
        (None, Some(p)) => (
            PathPattern::prefix(p)?,
            format!("{}/**", p.trim_end_matches('/')),
        ),
        (Some(_), Some(_)) => return Err("give either `path` or `prefix`, not both".into()),
        (None, None) => return Err("give `path` (e.g. \"/pets/{id}\") or `prefix`".into()),
    };
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
        name: r.name.as_ref().map_or(label, |n| n.to_string()),
        hosts,
        path,
        methods,
        order,
    })
}
