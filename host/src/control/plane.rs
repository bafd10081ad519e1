//! The control plane's handle on a running gateway: reloads (SIGHUP, the
//! file watcher, the admin API's manifest edits), each a full build that
//! is swapped into the data plane only when it succeeds.

use crate::control::admin::{AdminError, Registry};
use crate::gateway::DataPlane;
use crate::loader::{self, ConfigErrors, Generation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a manifest edit from the admin API was not applied.
#[derive(Debug)]
pub enum EditError {
    /// The file changed on disk since the serving configuration was built.
    Diverged(String),
    /// The edited configuration does not build: `tollgate check`'s errors.
    Invalid(ConfigErrors),
    /// Reading or writing the file failed.
    Io(String),
    /// The edit itself refused (e.g. a stale `If-Match`).
    Refused(AdminError),
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Applied,
    Rejected(String),
}

/// Reloads and manifest edits of one gateway, and the registry behind the
/// admin API.
pub struct ControlPlane {
    /// The data plane whose generation reloads replace.
    pub data: Arc<DataPlane>,
    /// The control plane's state (admin users, plans, keys ...).
    pub registry: Arc<Registry>,
    gw_path: PathBuf,
    reload_lock: tokio::sync::Mutex<()>,
    /// What the last build (at start, reload or admin edit; applied or
    /// not) read: the file watcher's filter and its skip of reloads whose
    /// inputs did not change.
    inputs: std::sync::Mutex<super::reload::BuildInputs>,
    /// The public listeners once bound, as `(scheme, address)`: the
    /// `servers` of an API's exported OpenAPI document.
    listeners: std::sync::Mutex<Vec<(&'static str, std::net::SocketAddr)>>,
    /// The OAuth authorization server (`[oauth]`), for the admin API's
    /// clients and signing keys.
    pub oauth: Option<Arc<super::oauth::OAuthServer>>,
    /// This node's part in a cluster's shared control plane.
    pub replica: Option<Arc<super::replica::Replica>>,
}

impl ControlPlane {
    /// The control plane of `data`, built from the gateway file `gw_path`
    /// whose first build read `inputs`.
    pub fn new(
        data: Arc<DataPlane>,
        registry: Arc<Registry>,
        gw_path: PathBuf,
        inputs: loader::Inputs,
    ) -> ControlPlane {
        ControlPlane {
            data,
            registry,
            gw_path,
            reload_lock: tokio::sync::Mutex::new(()),
            inputs: std::sync::Mutex::new(super::reload::BuildInputs::new(inputs)),
            listeners: Default::default(),
            oauth: None,
            replica: None,
        }
    }

    /// The control plane taking part in a cluster's shared one.
    pub fn with_replica(mut self, replica: Option<Arc<super::replica::Replica>>) -> ControlPlane {
        self.replica = replica;
        self
    }

    /// The control plane with the OAuth authorization server.
    pub fn with_oauth(mut self, oauth: Option<Arc<super::oauth::OAuthServer>>) -> ControlPlane {
        self.oauth = oauth;
        self
    }

    /// The configuration serving right now.
    pub fn current(&self) -> Arc<loader::Generation> {
        self.data.current()
    }

    /// What the serving configuration and the last build read (see
    /// [`loader::Inputs`]).
    pub fn inputs(&self) -> crate::control::reload::BuildInputs {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_inputs(&self, inputs: loader::Inputs, applied: bool) {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .built(inputs, applied);
    }

    /// Build the whole configuration anew and swap it in; on any error keep
    /// the old one and say why. Requests in flight finish on the old one.
    pub async fn reload(self: &Arc<Self>) -> ReloadOutcome {
        self.rebuild(false)
            .await
            .expect("a forced reload always builds")
    }

    /// [`ControlPlane::reload`], unless every file the last build read (gateway
    /// file, manifests, plugins, the manifests of policy folders) is still
    /// byte-identical: then `None` and nothing is built. The file watcher
    /// reloads this way; SIGHUP always rebuilds.
    pub async fn reload_if_changed(self: &Arc<Self>) -> Option<ReloadOutcome> {
        self.rebuild(true).await
    }

    async fn rebuild(self: &Arc<Self>, skip_unchanged: bool) -> Option<ReloadOutcome> {
        let _g = self.reload_lock.lock().await;
        let this = self.clone();
        let built = tokio::task::spawn_blocking(move || {
            if skip_unchanged && this.inputs().unchanged() {
                return None;
            }
            let (built, inputs) = this.build(&BTreeMap::new());
            this.set_inputs(inputs, built.is_ok());
            Some(built)
        })
        .await;
        // `None`: the inputs were unchanged and nothing was built.
        let built = built.transpose()?;
        Some(self.install_or_keep(built))
    }

    /// Build the whole configuration from the files, reading the manifests
    /// of `overrides` from there; and what the build read.
    fn build(
        &self,
        overrides: &BTreeMap<PathBuf, String>,
    ) -> (Result<Generation, ConfigErrors>, loader::Inputs) {
        let mut inputs = loader::Inputs::default();
        let built =
            loader::read_gateway_file_recording(&self.gw_path, &mut inputs).and_then(|gw| {
                loader::build_recording(
                    &self.gw_path,
                    &gw,
                    &self.data.runtime,
                    overrides,
                    &mut inputs,
                )
            });
        (built, inputs)
    }

    /// Swap in a reload's generation, or keep the serving one and say why.
    fn install_or_keep(
        &self,
        built: Result<Result<Generation, ConfigErrors>, tokio::task::JoinError>,
    ) -> ReloadOutcome {
        match built {
            Ok(Ok(g)) => {
                let n = self.data.install(g);
                crate::observe::metrics::global().reload(true, n);
                tracing::info!(generation = n, "configuration reloaded");
                ReloadOutcome::Applied
            }
            Ok(Err(e)) => {
                crate::observe::metrics::global().reload(false, 0);
                tracing::error!("reload rejected, the previous configuration keeps serving:\n{e}");
                ReloadOutcome::Rejected(e.to_string())
            }
            Err(e) => {
                crate::observe::metrics::global().reload(false, 0);
                tracing::error!("reload failed: {e}");
                ReloadOutcome::Rejected(e.to_string())
            }
        }
    }

    /// Remember where the public listeners were bound.
    pub fn set_listeners(&self, bound: Vec<(&'static str, std::net::SocketAddr)>) {
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = bound;
    }

    /// The base URLs of the public listeners; a listener on every
    /// interface is named by `host` (the admin call's `Host`, its port
    /// dropped) when given, else by its address.
    pub fn server_urls(&self, host: Option<&str>) -> Vec<String> {
        let host = host
            .map(|h| match h.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => h,
            })
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
            });
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(scheme, addr)| match host {
                Some(h) if addr.ip().is_unspecified() => format!("{scheme}://{h}:{}", addr.port()),
                _ => format!("{scheme}://{addr}"),
            })
            .collect()
    }

    /// The gateway file.
    pub fn gw_path(&self) -> &Path {
        &self.gw_path
    }

    /// Replace manifest `file` with `edit(current text)`: build the whole
    /// configuration with the new text first (exactly as `tollgate check`
    /// and a reload would), and only if it builds, write the file (temporary
    /// file, flush, rename, flush the directory) and swap the configuration
    /// in. Refused if the file on disk is not the text the serving
    /// configuration was built from: an edit never overwrites changes that
    /// were not loaded. Returns the new generation number and the new
    /// text's SHA-256.
    pub async fn apply_manifest_edit(
        self: &Arc<Self>,
        file: PathBuf,
        edit: impl FnOnce(&str, &str) -> Result<String, AdminError> + Send + 'static,
    ) -> Result<(u64, String), EditError> {
        let _g = self.reload_lock.lock().await;
        let this = self.clone();
        let serving = self.data.current();
        let (g, hash) =
            tokio::task::spawn_blocking(move || this.build_and_write(&serving, &file, edit))
                .await
                .map_err(|e| EditError::Io(format!("the edit failed: {e}")))??;
        let n = self.data.install(g);
        tracing::info!(
            generation = n,
            "configuration changed through the admin API"
        );
        Ok((n, hash))
    }

    /// Create manifest `file` (a new `*.toml` file in a policy folder)
    /// with `text`: build the configuration with it first, and only if it
    /// builds, write it (refused if the file exists by then) and swap the
    /// configuration in. Returns the new generation number and the text's
    /// SHA-256.
    pub async fn apply_manifest_create(
        self: &Arc<Self>,
        file: PathBuf,
        text: String,
    ) -> Result<(u64, String), EditError> {
        let _g = self.reload_lock.lock().await;
        let this = self.clone();
        let (g, hash) = tokio::task::spawn_blocking(move || {
            let overrides = BTreeMap::from([(file.clone(), text.clone())]);
            let (built, inputs) = this.build(&overrides);
            let g = built.map_err(EditError::Invalid)?;
            create_atomically(&file, text.as_bytes()).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    EditError::Diverged(format!("{} exists now: retry", file.display()))
                } else {
                    EditError::Io(format!("{}: cannot write: {e}", file.display()))
                }
            })?;
            this.set_inputs(inputs, true);
            let hash = g.sources.get(&file).cloned().unwrap_or_default();
            Ok::<_, EditError>((g, hash))
        })
        .await
        .map_err(|e| EditError::Io(format!("the edit failed: {e}")))??;
        let n = self.data.install(g);
        tracing::info!(generation = n, "manifest created through the admin API");
        Ok((n, hash))
    }

    /// An edit's blocking part: check that `file` is what `serving` was
    /// built from, build with the edited text, and only then write it.
    /// Returns the new generation and the new text's SHA-256.
    fn build_and_write(
        &self,
        serving: &Generation,
        file: &Path,
        edit: impl FnOnce(&str, &str) -> Result<String, AdminError>,
    ) -> Result<(Generation, String), EditError> {
        let (text, on_disk) = read_as_served(serving, file)?;
        let new_text = edit(&text, &on_disk).map_err(EditError::Refused)?;
        let overrides = BTreeMap::from([(file.to_path_buf(), new_text.clone())]);
        let (built, inputs) = self.build(&overrides);
        let g = built.map_err(EditError::Invalid)?;
        write_atomically(file, new_text.as_bytes())
            .map_err(|e| EditError::Io(format!("{}: cannot write: {e}", file.display())))?;
        // The file now holds what this build read: the watcher's event
        // for the write finds nothing changed.
        self.set_inputs(inputs, true);
        let hash = g.sources.get(file).cloned().unwrap_or_default();
        Ok((g, hash))
    }

    /// Watch the configuration files and reload on change, and on SIGHUP.
    pub fn spawn_reloaders(self: &Arc<Self>, watch_files: bool, debounce: std::time::Duration) {
        #[cfg(unix)]
        {
            // A weak reference: the task must not keep a dropped control plane
            // (and its store lock) alive.
            let gw = Arc::downgrade(self);
            tokio::spawn(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::warn!("cannot listen for SIGHUP");
                    return;
                };
                while hup.recv().await.is_some() {
                    let Some(gw) = gw.upgrade() else { return };
                    tracing::info!("SIGHUP: reloading");
                    gw.reload().await;
                }
            });
        }
        if watch_files {
            super::reload::spawn_watcher(self.clone(), debounce);
        }
    }
}

/// The text of manifest `file` and its SHA-256, if it is the text `serving`
/// was built from: an edit never overwrites changes that were not loaded.
fn read_as_served(serving: &Generation, file: &Path) -> Result<(String, String), EditError> {
    use sha2::Digest as _;
    let expected = serving.sources.get(file).map_or("", String::as_str);
    let text = std::fs::read_to_string(file)
        .map_err(|e| EditError::Io(format!("{}: cannot read: {e}", file.display())))?;
    let on_disk = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    if on_disk != expected {
        return Err(EditError::Diverged(format!(
            "{} changed on disk since the serving configuration was loaded (edited and not reloaded, or its reload was rejected): reload it (SIGHUP) or fix it first, then retry",
            file.display()
        )));
    }
    Ok((text, on_disk))
}

/// Create `path` with `bytes`, so that a crash leaves no file or the whole
/// one: a temporary file beside it, flushed, hard-linked to `path` (which
/// fails if `path` exists), removed, and the directory flushed.
pub fn create_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tollgate-new-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new
/// content: a temporary file beside it, flushed, renamed over it, and the
/// directory flushed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tollgate-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
