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

/// Whether sled failed to open because another process holds its lock
/// (sled wraps the `EWOULDBLOCK` of `flock` in an error of its own).
fn is_lock_error(e: &sled::Error) -> bool {
    let sled::Error::Io(io) = e else {
        return false;
    };
    let wouldblock = |io: &std::io::Error| {
        io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(11)
    };
    wouldblock(io)
        || io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(wouldblock)
        || io.to_string().contains("could not acquire lock")
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
            if is_lock_error(&e) {
                return anyhow::anyhow!(
                    "data directory {}: cannot open the store: another tollgate process is using this data directory (its lock on {} is held); stop that process or give this gateway another `data-dir`",
                    data_dir.display(),
                    path.join("db").display()
                );
            }
            anyhow::anyhow!(
                "data directory {}: cannot open the store: {e}",
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

    /// Remove a value and make that durable before returning.
    pub fn remove_durable(&self, tree: &str, key: &[u8]) -> Result<()> {
        let t = self.db.open_tree(tree)?;
        t.remove(key)?;
        self.db.flush()?;
        Ok(())
    }

    /// Apply writes and removals to one tree atomically (all or none), and
    /// make them durable before returning.
    pub fn apply_durable(&self, tree: &str, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let t = self.db.open_tree(tree)?;
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        t.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Up to `limit` entries of `tree` whose keys start with `prefix` and
    /// sort after `after` (when given), in key order.
    pub fn scan(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let t = self.db.open_tree(tree)?;
        let mut out = Vec::new();
        let mut start = prefix.to_vec();
        if let Some(a) = after {
            let mut next = a.to_vec();
            next.push(0);
            start = start.max(next);
        }
        for item in t.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The last key of `tree` starting with `prefix`.
    pub fn last_key(&self, tree: &str, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.db.open_tree(tree)?;
        Ok(t.scan_prefix(prefix)
            .keys()
            .next_back()
            .transpose()?
            .map(|k| k.to_vec()))
    }

    /// A quota counter (0 if absent).
    pub fn quota_get(&self, key: &[u8]) -> Result<u64> {
        let t = self.db.open_tree("quota")?;
        Ok(t.get(key)?
            .and_then(|v| {
                v.get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .unwrap_or(0))
    }

    /// Set a quota counter for a period ending at `end_ms`, durably.
    pub fn quota_set_durable(&self, key: &[u8], count: u64, end_ms: u64) -> Result<()> {
        let t = self.db.open_tree("quota")?;
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(&end_ms.to_be_bytes());
        t.insert(key, v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Drop quota counters of periods that ended before `now_ms`.
    pub fn quota_sweep(&self, now_ms: u64) -> Result<usize> {
        let t = self.db.open_tree("quota")?;
        let mut n = 0;
        for item in t.iter() {
            let (k, v) = item?;
            let end = v
                .get(8..16)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            if end < now_ms {
                t.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
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
        // sled's background flusher lets go of the lock shortly after drop.
        let s = (0..100)
            .find_map(|_| {
                Store::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                })
            })
            .expect("the store reopens");
        assert_eq!(s.get("meta", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn locked_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot open the store"), "{err}");
        assert!(
            err.contains("another tollgate process is using this data directory"),
            "{err}"
        );
    }
}
