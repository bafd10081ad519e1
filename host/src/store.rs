//! The embedded store (sled) in the data directory. Every use of sled goes
//! through this module, so the engine can change without touching callers.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The gateway's own durable state.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open (or create) the store under `data_dir/store`. A data directory
    /// that another gateway holds, or that cannot be written, is a clear
    /// error here, never a panic later.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("data directory {}: cannot create", data_dir.display()))?;
        let path = data_dir.join("store");
        let db = sled::Config::new().path(&path).open().map_err(|e| {
            let hint = match &e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    " (another tollgate process is using this data directory)"
                }
                sled::Error::Io(io) if io.raw_os_error() == Some(11) => {
                    " (another tollgate process is using this data directory)"
                }
                _ => "",
            };
            anyhow::anyhow!(
                "data directory {}: cannot open the store: {e}{hint}",
                data_dir.display()
            )
        })?;
        Ok(Store { db, path })
    }

    /// Write a value and make it durable before returning.
    pub fn put_durable(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let t = self.db.open_tree(tree)?;
        t.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    /// Read a value.
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.db.open_tree(tree)?;
        Ok(t.get(key)?.map(|v| v.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_durable("meta", b"k", b"v").unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get("meta", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn locked_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot open the store"), "{err}");
    }
}
