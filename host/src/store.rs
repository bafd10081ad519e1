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

    /// Write (`Some`) or remove (`None`) `key` in the kv namespace `tree`,
    /// keeping the namespace's usage record (bytes of keys and values, and
    /// keys) in the same transaction, so concurrent writers can never take
    /// it past `max_bytes` or `max_keys`. A write that would is refused:
    /// `Ok(Err(why))`, nothing written. (A write that shrinks usage passes
    /// even above a limit, so lowered limits can be reached again.) Durable
    /// when it returns. Keys must not be empty: the empty key holds the
    /// usage record.
    pub fn kv_write_durable(
        &self,
        tree: &str,
        key: &[u8],
        value: Option<&[u8]>,
        max_bytes: u64,
        max_keys: u64,
    ) -> Result<std::result::Result<(), String>> {
        use sled::transaction::{abort, TransactionError};
        anyhow::ensure!(!key.is_empty(), "kv keys must not be empty");
        enum Stop {
            NoUsage,
            Refused(String),
        }
        let t = self.db.open_tree(tree)?;
        for _ in 0..3 {
            let r = t.transaction(|tx| {
                let Some(usage) = tx.get(KV_USAGE_KEY)? else {
                    return abort(Stop::NoUsage);
                };
                let (bytes, keys) = kv_usage_decode(&usage);
                let old = tx.get(key)?;
                let old_size = old.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
                let (new_bytes, new_keys) = match value {
                    Some(v) => (
                        bytes.saturating_sub(old_size) + (key.len() + v.len()) as u64,
                        keys + u64::from(old.is_none()),
                    ),
                    None if old.is_none() => return Ok(()),
                    None => (bytes.saturating_sub(old_size), keys.saturating_sub(1)),
                };
                if new_keys > max_keys && new_keys > keys {
                    return abort(Stop::Refused(format!(
                        "the namespace holds {keys} keys, its limit (max-keys) is {max_keys}"
                    )));
                }
                if new_bytes > max_bytes && new_bytes > bytes {
                    return abort(Stop::Refused(format!(
                        "the namespace would hold {new_bytes} bytes of keys and values, over its limit (max-bytes) of {max_bytes}"
                    )));
                }
                match value {
                    Some(v) => tx.insert(key, v)?,
                    None => tx.remove(key)?,
                };
                tx.insert(KV_USAGE_KEY, &kv_usage_encode(new_bytes, new_keys)[..])?;
                Ok(())
            });
            match r {
                Ok(()) => {
                    self.db.flush()?;
                    return Ok(Ok(()));
                }
                Err(TransactionError::Abort(Stop::Refused(why))) => return Ok(Err(why)),
                Err(TransactionError::Abort(Stop::NoUsage)) => kv_usage_init(&t)?,
                Err(TransactionError::Storage(e)) => return Err(e.into()),
            }
        }
        anyhow::bail!("the kv namespace's usage record is missing")
    }

    /// Bytes (of keys and values) and keys in the kv namespace `tree`.
    pub fn kv_usage(&self, tree: &str) -> Result<(u64, u64)> {
        let t = self.db.open_tree(tree)?;
        Ok(t.get(KV_USAGE_KEY)?.map_or((0, 0), |v| kv_usage_decode(&v)))
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

/// The key of a kv namespace's usage record (guest keys are never empty).
const KV_USAGE_KEY: &[u8] = b"";

fn kv_usage_encode(bytes: u64, keys: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&bytes.to_be_bytes());
    v[8..].copy_from_slice(&keys.to_be_bytes());
    v
}

fn kv_usage_decode(v: &[u8]) -> (u64, u64) {
    let n = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    (n(0..8), n(8..16))
}

/// Count a kv namespace written before it had a usage record. Writers
/// refuse to write while the record is missing, so nothing changes the
/// namespace during the count; the lock keeps two counts from racing.
fn kv_usage_init(t: &sled::Tree) -> Result<()> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if t.get(KV_USAGE_KEY)?.is_some() {
        return Ok(());
    }
    let (mut bytes, mut keys) = (0u64, 0u64);
    for item in t.iter() {
        let (k, v) = item?;
        if k.is_empty() {
            continue;
        }
        bytes += (k.len() + v.len()) as u64;
        keys += 1;
    }
    t.insert(KV_USAGE_KEY, &kv_usage_encode(bytes, keys)[..])?;
    Ok(())
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
    fn kv_writes_keep_the_usage_record_and_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // A namespace written before usage records: counted on first use.
        s.put_durable("kv/old", b"a", b"12345").unwrap();
        s.kv_write_durable("kv/old", b"b", Some(b"1"), 100, 10)
            .unwrap()
            .unwrap();
        assert_eq!(s.kv_usage("kv/old").unwrap(), (8, 2));
        // Overwrite, delete, and a delete of nothing.
        s.kv_write_durable("kv/old", b"a", Some(b"1"), 100, 10)
            .unwrap()
            .unwrap();
        assert_eq!(s.kv_usage("kv/old").unwrap(), (4, 2));
        s.kv_write_durable("kv/old", b"a", None, 100, 10)
            .unwrap()
            .unwrap();
        s.kv_write_durable("kv/old", b"zz", None, 100, 10)
            .unwrap()
            .unwrap();
        assert_eq!(s.kv_usage("kv/old").unwrap(), (2, 1));
        // Limits: keys, then bytes; refused writes change nothing.
        let why = s
            .kv_write_durable("kv/old", b"c", Some(b"1"), 100, 1)
            .unwrap()
            .unwrap_err();
        assert!(why.contains("max-keys"), "{why}");
        let why = s
            .kv_write_durable("kv/old", b"c", Some(&[0; 98]), 100, 10)
            .unwrap()
            .unwrap_err();
        assert!(why.contains("max-bytes"), "{why}");
        assert_eq!(s.kv_usage("kv/old").unwrap(), (2, 1));
        assert_eq!(s.get("kv/old", b"c").unwrap(), None);
        // Concurrent writers never overshoot.
        std::thread::scope(|sc| {
            for w in 0..8u8 {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..10u8 {
                        let _ = s.kv_write_durable("kv/race", &[w, i], Some(b"v"), 1000, 25);
                    }
                });
            }
        });
        assert_eq!(s.kv_usage("kv/race").unwrap(), (25 * 3, 25));
        assert_eq!(s.scan("kv/race", b"", None, 1000).unwrap().len(), 26);
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
