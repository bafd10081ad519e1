//! The host side of the `tollgate:policy` WIT imports, one file per
//! interface, each with the `Host` impl for [`StepState`](super::StepState)
//! and the backend it serves from: [`counters`] (and quotas), [`cache`],
//! [`kv`], [`consumers`] (with the manifests' [`consumers::Directory`]),
//! [`plans`], [`crypto`], [`http_client`], [`timing`], [`outcome`],
//! [`sink`], [`log`], [`clock`] and [`types`]; [`calls`] is the call a
//! 0.2.0 phase handles. Each service is granted per
//! step in the manifest (`grants = [...]`); a step gets only what it was
//! granted. [`Services`] holds the backends every generation shares.

pub mod cache;
pub mod calls;
pub mod clock;
pub mod consumers;
pub mod counters;
pub mod crypto;
pub mod http_client;
pub mod kv;
pub mod log;
pub mod outcome;
pub mod plans;
pub mod sink;
pub mod timing;
pub mod types;

pub use crate::domain::grants::{
    Capability, Grants, KvLimits, KV_MAX_BYTES, KV_MAX_KEYS, KV_MAX_VALUE,
};
pub use cache::{CachedResponse, MAX_CACHE_TTL};
pub use sink::Sink;
pub use timing::{CallTiming, ResponseOrigin};

use crate::domain::consumer::ConsumerSource;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Every host service, shared by all configuration generations.
pub struct Services {
    pub counters: counters::Counters,
    pub quotas: counters::Quotas,
    pub cache: cache::Cache,
    pub store: Option<Store>,
    /// The control plane's consumers, keys and plans, when the composition
    /// root injected them ([`Services::with_consumers`]). The loader puts
    /// them after each generation's own consumers; policies never ask this
    /// field themselves.
    pub consumers: Option<Arc<dyn ConsumerSource>>,
    pub keys: crypto::KeyCache,
    pub sink: Sink,
    /// The `http-client` service's client: `http://` and `https://` (ALPN
    /// h2/http1.1, verified against the system's roots and the
    /// `[outbound] ca-file`).
    pub http: http_client::Client,
    /// Answers given instead of calling out, for the policy test host
    /// (`tollgate policy test-host`); `None` in a gateway.
    pub canned: Option<Arc<http_client::Canned>>,
    /// Cluster mode (`[cluster]`): rate limits, quotas and, with `cache =
    /// true`, the cache are shared through Redis; `None` on a lone node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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
    /// The services over `s`, with no consumer source of the control plane
    /// (see [`Services::with_consumers`]).
    pub fn new(s: ServiceSettings) -> anyhow::Result<Services> {
        let http = http_client::client(s.outbound_ca.clone())?;
        if let Some(store) = &s.store {
            if let Err(e) = store.quota_sweep(clock::now_ms()) {
                tracing::warn!("sweeping old quota periods: {e}");
            }
        }
        Ok(Services {
            counters: counters::Counters::default(),
            quotas: counters::Quotas::new(s.store.clone()),
            cache: cache::new_cache(s.cache_bytes),
            consumers: None,
            store: s.store,
            keys: crypto::KeyCache::default(),
            sink: Sink::new(s.sink_path)?,
            http,
            canned: None,
            cluster: None,
        })
    }

    /// These services with `source` as the control plane's consumers, keys
    /// and plans (asked after each generation's manifests).
    pub fn with_consumers(mut self, source: Arc<dyn ConsumerSource>) -> Services {
        self.consumers = Some(source);
        self
    }

    /// These services sharing limits, quotas and cache through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Services {
        self.cluster = Some(cluster);
        self
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
        // 0.2.0's `limits` is the counters service too.
        assert_eq!(
            Capability::for_import("tollgate:policy/limits@0.2.0"),
            Some("counters")
        );
        // 0.2.0's `access` is the consumers service too.
        assert_eq!(
            Capability::for_import("tollgate:policy/access@0.2.0"),
            Some("consumers")
        );
        assert_eq!(Capability::for_import("tollgate:policy/log@0.1.0"), None);
        assert_eq!(Capability::for_import("wasi:io/streams@0.2.6"), None);
    }
}
