//! Reload on file change: watch the folders of every file a generation was
//! built from (editors replace files by rename), debounce, then rebuild
//! through [`Gateway::reload`].

use crate::server::Gateway;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Start watching. The watcher re-reads the list of watched files every
/// second, so files a reload newly names are watched too; it stops when the
/// gateway is dropped.
pub fn spawn_watcher(gateway: Arc<Gateway>, debounce: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let weak = Arc::downgrade(&gateway);
    let spawned = std::thread::Builder::new()
        .name("tollgate-watch".into())
        .spawn(move || {
            let handler = move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res {
                    if !matches!(ev.kind, notify::EventKind::Access(_)) {
                        let _ = tx.send(());
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
                let mut want: Vec<PathBuf> = gw
                    .current()
                    .watched
                    .iter()
                    .map(|p| {
                        if p.is_dir() {
                            p.clone()
                        } else {
                            p.parent().map(|d| d.to_path_buf()).unwrap_or_default()
                        }
                    })
                    .collect();
                drop(gw);
                want.sort();
                want.dedup();
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
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the file watcher: {e}");
        return;
    }
    let weak = Arc::downgrade(&gateway);
    drop(gateway);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until the changes stop for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let Some(gw) = weak.upgrade() else { return };
            tracing::info!("configuration files changed: reloading");
            gw.reload().await;
        }
    });
}
