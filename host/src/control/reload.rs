//! Reload on file change: watch the files a configuration was built from
//! (through their folders: editors replace files by rename), keep only the
//! events about those files, debounce, then rebuild through
//! [`Gateway::reload_if_changed`], which skips a reload whose inputs are
//! byte-identical to those of the last build.

use crate::control::ControlPlane as Gateway;
pub use crate::loader::inputs::Inputs;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The inputs of the serving configuration and of the last build (the
/// same after a build that was applied).
#[derive(Debug, Clone)]
pub struct BuildInputs {
    serving: Arc<Inputs>,
    last: Arc<Inputs>,
    watched: Arc<Inputs>,
}

impl BuildInputs {
    /// The inputs of the configuration loaded at start.
    pub fn new(inputs: Inputs) -> BuildInputs {
        let i = Arc::new(inputs);
        BuildInputs {
            serving: i.clone(),
            last: i.clone(),
            watched: i,
        }
    }

    /// The inputs of the configuration serving now.
    pub fn serving(&self) -> &Inputs {
        &self.serving
    }

    /// A build read `inputs`; `applied`: its configuration now serves.
    pub fn built(&mut self, inputs: Inputs, applied: bool) {
        let i = Arc::new(inputs);
        if applied {
            self.serving = i.clone();
            self.watched = i.clone();
        } else {
            self.watched = Arc::new(Inputs::union(&self.serving, &i));
        }
        self.last = i;
    }

    /// What the watcher watches: the files of the serving configuration and
    /// those of the last build.
    pub fn watched(&self) -> Arc<Inputs> {
        self.watched.clone()
    }

    /// Whether a build now would read what the serving configuration or the
    /// last build read, byte for byte (then it would build the same, or
    /// fail the same: an editor's half-written file that was rejected and
    /// then completed as it was is not a change).
    pub fn unchanged(&self) -> bool {
        self.serving.unchanged()
            || (!Arc::ptr_eq(&self.serving, &self.last) && self.last.unchanged())
    }
}

/// Start watching. The watcher re-reads the inputs of the last build every
/// second, so files a reload newly names are watched too; it stops when the
/// gateway is dropped.
pub fn spawn_watcher(gateway: Arc<Gateway>, debounce: Duration) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    let weak = Arc::downgrade(&gateway);
    let spawned = std::thread::Builder::new()
        .name("tollgate-watch".into())
        .spawn(move || watch_folders(weak, tx));
    if let Err(e) = spawned {
        tracing::warn!("cannot start the file watcher: {e}");
        return;
    }
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    tokio::spawn(reload_on_events(weak, rx, debounce));
}

/// The watcher's thread: send the paths of every event (but reads) in the
/// folders of the last build's inputs, whose list it re-reads every second
/// until the gateway is dropped.
fn watch_folders(weak: Weak<Gateway>, tx: UnboundedSender<Vec<PathBuf>>) {
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(ev.paths);
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch configuration files: {e}");
            return;
        }
    };
    let mut watching: Vec<PathBuf> = Vec::new();
    while let Some(gw) = weak.upgrade() {
        let want = gw.inputs().watched().folders_to_watch();
        drop(gw);
        for p in &want {
            if !watching.contains(p) {
                if let Err(e) = watcher.watch(p, RecursiveMode::NonRecursive) {
                    tracing::warn!(path = %p.display(), "cannot watch: {e}");
                }
            }
        }
        for p in &watching {
            if !want.contains(p) {
                let _ = watcher.unwatch(p);
            }
        }
        watching = want;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reload once the events about inputs stop for `debounce`, until the
/// gateway is dropped.
async fn reload_on_events(
    weak: Weak<Gateway>,
    mut rx: UnboundedReceiver<Vec<PathBuf>>,
    debounce: Duration,
) {
    // Whether an event is about an input of the last build (an access
    // log or a store beside the manifest is not).
    let relevant = |paths: &[PathBuf]| {
        weak.upgrade().is_some_and(|gw| {
            let inputs = gw.inputs().watched();
            paths.iter().any(|p| inputs.relevant(p))
        })
    };
    while let Some(paths) = rx.recv().await {
        if !relevant(&paths) {
            continue;
        }
        // Debounce: wait until the inputs stop changing for `debounce`.
        let mut quiet_at = tokio::time::Instant::now() + debounce;
        loop {
            match tokio::time::timeout_at(quiet_at, rx.recv()).await {
                Ok(Some(paths)) => {
                    if relevant(&paths) {
                        quiet_at = tokio::time::Instant::now() + debounce;
                    }
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let Some(gw) = weak.upgrade() else { return };
        tracing::info!("configuration files changed: reloading");
        if gw.reload_if_changed().await.is_none() {
            tracing::debug!(
                "configuration files are byte-identical to the last build's: not reloading"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_inputs_count_and_only_real_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let gw = d.join("tollgate.toml");
        let api = d.join("apis").join("a.toml");
        let plugin = d.join("p.wasm");
        std::fs::create_dir(d.join("apis")).unwrap();
        std::fs::write(&gw, "gw").unwrap();
        std::fs::write(&api, "api").unwrap();
        let mut inputs = Inputs::default();
        assert!(!inputs.unchanged(), "nothing recorded is a change");
        inputs.record_text(&gw, "gw");
        inputs.record_file(&api);
        inputs.record_file(&plugin);
        inputs.record_folder(&d.join("apis"), vec![api.clone()]);

        assert!(inputs.relevant(&gw));
        assert!(inputs.relevant(&plugin), "a plugin looked for");
        assert!(inputs.relevant(&d.join("apis").join("new.toml")));
        assert!(!inputs.relevant(&d.join("access.log")));
        assert!(!inputs.relevant(&d.join("apis").join("notes.txt")));
        assert_eq!(
            inputs.folders_to_watch(),
            vec![d.to_path_buf(), d.join("apis")]
        );

        assert!(inputs.unchanged());
        // Rewritten with the same bytes.
        std::fs::write(&gw, "gw").unwrap();
        assert!(inputs.unchanged());
        std::fs::write(d.join("access.log"), "x").unwrap();
        assert!(inputs.unchanged());
        // A real edit; a plugin that appears; a new manifest in the folder.
        std::fs::write(&api, "api2").unwrap();
        assert!(!inputs.unchanged());
        std::fs::write(&api, "api").unwrap();
        std::fs::write(&plugin, "\0asm").unwrap();
        assert!(!inputs.unchanged());
        std::fs::remove_file(&plugin).unwrap();
        assert!(inputs.unchanged());
        std::fs::write(d.join("apis").join("b.toml"), "").unwrap();
        assert!(!inputs.unchanged());
        std::fs::remove_file(d.join("apis").join("b.toml")).unwrap();
        // A file that failed to read never counts as unchanged.
        let mut unread = inputs.clone();
        unread.record_unread(&api);
        assert!(!unread.unchanged());

        // Serving `inputs`; a build of a half-written manifest is rejected;
        // the file is then completed as it was: nothing to rebuild.
        let mut state = BuildInputs::new(inputs.clone());
        std::fs::write(&api, "ap").unwrap();
        let mut half = Inputs::default();
        half.record_text(&gw, "gw");
        half.record_text(&api, "ap");
        half.record_file(&d.join("other.wasm"));
        state.built(half, false);
        assert!(state.unchanged(), "still the rejected build's files");
        assert!(
            state.watched().relevant(&plugin),
            "the serving build's files"
        );
        assert!(
            state.watched().relevant(&d.join("other.wasm")),
            "the last build's"
        );
        std::fs::write(&api, "api").unwrap();
        assert!(state.unchanged(), "back to the serving build's files");
        std::fs::write(&api, "api3").unwrap();
        assert!(!state.unchanged());
        // Applied: only its files count.
        let mut new = Inputs::default();
        new.record_text(&gw, "gw");
        new.record_file(&api);
        state.built(new, true);
        assert!(state.unchanged());
        assert!(!state.watched().relevant(&plugin));
        std::fs::write(&api, "api").unwrap();
        assert!(!state.unchanged());
    }
}
