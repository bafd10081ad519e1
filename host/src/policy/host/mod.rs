//! Host services offered to policies through WIT imports: counters and
//! quotas, a response cache, a key-value store, consumer lookup, outbound
//! HTTP, signature checks, call timing and an output sink. Each is granted
//! per step in the manifest (`grants = [...]`); a step gets only what it was
//! granted.

pub mod consumers;
pub mod counters;
pub mod crypto;

pub use crate::domain::grants::{
    Capability, Grants, KvLimits, KV_MAX_BYTES, KV_MAX_KEYS, KV_MAX_VALUE,
};

use crate::store::Store;
use bytes::Bytes;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One cached response.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub expires: Instant,
    pub ttl: Duration,
}

struct TtlExpiry;

impl moka::Expiry<String, Arc<CachedResponse>> for TtlExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Longest time to live of a cache entry.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

/// The sink for structured lines (access logs): a bounded queue drained
/// by a writer thread, off the request path. When the queue is full, lines
/// are dropped and counted rather than slowing requests down.
pub struct Sink {
    tx: std::sync::mpsc::SyncSender<String>,
    pub dropped: AtomicU64,
}

impl Sink {
    /// Write to `path`, or to standard output when none.
    pub fn new(path: Option<PathBuf>) -> anyhow::Result<Sink> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(10_000);
        let mut out: Box<dyn Write + Send> = match &path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|e| anyhow::anyhow!("access log {}: {e}", p.display()))?,
                )
            }
            None => Box::new(std::io::stdout()),
        };
        std::thread::Builder::new()
            .name("tollgate-sink".into())
            .spawn(move || {
                let mut w = std::io::BufWriter::new(&mut out);
                while let Ok(line) = rx.recv() {
                    let _ = w.write_all(line.as_bytes());
                    let _ = w.write_all(b"\n");
                    while let Ok(more) = rx.try_recv() {
                        let _ = w.write_all(more.as_bytes());
                        let _ = w.write_all(b"\n");
                    }
                    let _ = w.flush();
                }
            })?;
        Ok(Sink {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue one line; newlines and other control characters are escaped.
    pub fn write_line(&self, line: &str) {
        let mut clean = String::with_capacity(line.len());
        for c in line.chars().take(64 << 10) {
            if c.is_control() {
                clean.extend(c.escape_default());
            } else {
                clean.push(c);
            }
        }
        if self.tx.try_send(clean).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Per-call timing, filled in by the server as the call proceeds.
#[derive(Debug, Clone)]
pub struct CallTiming {
    pub start: Instant,
    pub upstream_us: u64,
    pub steps: Vec<(String, u64)>,
    /// Who made the response as it stands (`None` until there is one), for
    /// the `outcome` interface.
    pub origin: Option<ResponseOrigin>,
}

/// Who made a call's response (WIT `outcome.origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOrigin {
    /// The upstream, with the status it sent.
    Upstream(u16),
    /// A step answered instead (its name).
    Step(std::sync::Arc<str>),
    /// The gateway made an error response with this status.
    Gateway(u16),
}

impl CallTiming {
    pub fn new() -> Self {
        CallTiming {
            start: Instant::now(),
            upstream_us: 0,
            steps: Vec::new(),
            origin: None,
        }
    }
}

impl Default for CallTiming {
    fn default() -> Self {
        Self::new()
    }
}

/// Every host service, shared by all configuration generations.
pub struct Services {
    pub counters: counters::Counters,
    pub quotas: counters::Quotas,
    pub cache: moka::sync::Cache<String, Arc<CachedResponse>>,
    pub store: Option<Store>,
    /// The control plane's consumers, keys and plans (with a store).
    pub registry: Option<Arc<crate::control::admin::Registry>>,
    pub keys: crypto::KeyCache,
    pub sink: Sink,
    /// The `http-client` service's client: `http://` and `https://` (ALPN
    /// h2/http1.1, verified against the system's roots and the
    /// `[outbound] ca-file`).
    pub http: hyper_util::client::legacy::Client<
        crate::net::tls_client::Connector,
        http_body_util::Full<Bytes>,
    >,
}

/// Settings for [`Services::new`].
pub struct ServiceSettings {
    pub store: Option<Store>,
    pub cache_bytes: u64,
    pub sink_path: Option<PathBuf>,
    /// `[outbound] ca-file`, resolved: trusted by the `http-client` service
    /// besides the system's roots.
    pub outbound_ca: Option<PathBuf>,
}

impl Services {
    pub fn new(s: ServiceSettings) -> anyhow::Result<Services> {
        let cache = moka::sync::Cache::builder()
            .max_capacity(s.cache_bytes)
            .weigher(|k: &String, v: &Arc<CachedResponse>| {
                let h: usize = v.headers.iter().map(|(n, v)| n.len() + v.len() + 16).sum();
                (k.len() + h + v.body.len() + 64).min(u32::MAX as usize) as u32
            })
            .expire_after(TtlExpiry)
            .build();
        let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(5)));
        let tls = crate::net::tls_client::ClientTls {
            trust: crate::net::tls_client::Trust::SystemAnd(s.outbound_ca.clone()),
            identity: None,
            server_name: None,
        };
        let conn = crate::net::tls_client::connector(&tls, conn, false)
            .map_err(|e| anyhow::anyhow!("outbound: {e}"))?;
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(conn);
        if let Some(store) = &s.store {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = store.quota_sweep(now) {
                tracing::warn!("sweeping old quota periods: {e}");
            }
        }
        Ok(Services {
            counters: counters::Counters::default(),
            quotas: counters::Quotas::new(s.store.clone()),
            cache,
            registry: s
                .store
                .clone()
                .map(|st| Arc::new(crate::control::admin::Registry::new(st))),
            store: s.store,
            keys: crypto::KeyCache::default(),
            sink: Sink::new(s.sink_path)?,
            http,
        })
    }

    /// Services for `tollgate check`: no store, output discarded.
    pub fn for_check() -> Services {
        Services::new(ServiceSettings {
            store: None,
            cache_bytes: 1 << 20,
            sink_path: Some(PathBuf::from("/dev/null")),
            outbound_ca: None,
        })
        .expect("services for check")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        assert_eq!(
            Capability::parse("kv").unwrap(),
            Capability::Kv(KvLimits::default())
        );
        assert_eq!(
            Capability::parse("kv:max-bytes=1MiB, max-keys=5,max-value=1KiB").unwrap(),
            Capability::Kv(KvLimits {
                max_bytes: 1 << 20,
                max_keys: 5,
                max_value: 1024
            })
        );
        for (bad, says) in [
            ("kv:max-keys=0", "max-keys = 0 must be between 1"),
            (
                "kv:max-value=2MiB",
                "max-value = 2097152 bytes must be between",
            ),
            (
                "kv:max-bytes=1KiB,max-value=2KiB",
                "must be at least max-value",
            ),
            ("kv:max-bytes=2GiB", "at most 1GiB"),
            ("kv:max-keys=-1", "not a whole number"),
            ("kv:max-files=1", "unknown limit `max-files`"),
            ("kv:", "expected NAME=VALUE"),
            ("kv:max-bytes=lots", "max-bytes"),
        ] {
            let err = Capability::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let g = Grants {
            list: vec![Capability::parse("kv:max-keys=3").unwrap()],
        };
        assert!(g.has_named("kv"));
        assert_eq!(g.kv_limits().unwrap().max_keys, 3);
        assert_eq!(
            Capability::parse("http:IdP.example.com:8443").unwrap(),
            Capability::Http("idp.example.com:8443".into())
        );
        assert!(Capability::parse("http:").is_err());
        assert!(Capability::parse("http:a/b").is_err());
        assert!(Capability::parse("root")
            .unwrap_err()
            .contains("unknown grant `root`"));
        let g = Grants {
            list: vec![Capability::Http("idp.example.com".into())],
        };
        assert!(g.allows_host("IDP.example.com", Some(443)));
        assert!(!g.allows_host("evil.com", None));
        assert!(g.has_named("http"));
        assert!(!g.has_named("kv"));
        assert_eq!(
            Capability::for_import("tollgate:policy/kv@0.1.0"),
            Some("kv")
        );
        assert_eq!(Capability::for_import("tollgate:policy/log@0.1.0"), None);
        assert_eq!(Capability::for_import("wasi:io/streams@0.2.6"), None);
    }
}
