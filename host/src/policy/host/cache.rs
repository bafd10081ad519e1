//! `tollgate:policy/cache`: a response cache shared by every generation,
//! bounded in bytes (moka), each entry with its own time to live, keys in
//! the calling API's namespace; in cluster mode, for the APIs `[cluster]
//! cache` shares (`true`: all; a list: those named), kept in Redis instead
//! (its TTL by `PX`, entries above `max-cache-entry` not kept), and
//! bypassed (a miss) while Redis fails.

use crate::policy::bindings;
use crate::policy::bindings::service_types::ServiceError;
use crate::policy::{Header, StepState};
use bytes::Bytes;
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

/// The cache: keys in an API's namespace, entries shared.
pub type Cache = moka::sync::Cache<String, Arc<CachedResponse>>;

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

/// A cache of at most about `max_bytes` (keys, headers and bodies).
pub fn new_cache(max_bytes: u64) -> Cache {
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &String, v: &Arc<CachedResponse>| {
            let h: usize = v.headers.iter().map(|(n, v)| n.len() + v.len() + 16).sum();
            (k.len() + h + v.body.len() + 64).min(u32::MAX as usize) as u32
        })
        .expire_after(TtlExpiry)
        .build()
}

impl bindings::cache::Host for StepState {
    async fn get(&mut self, key: String) -> Option<(bindings::cache::CachedResponse, u64)> {
        self.grant("cache").ok()?;
        let k = self.api_key(&key);
        let services = self.services.clone();
        if let Some(cluster) = services
            .cluster
            .as_ref()
            .filter(|c| c.spec().cache.shares(&self.api))
        {
            return match cluster.cache_get(&k).await {
                Ok(Some((e, left_ms))) => Some((
                    bindings::cache::CachedResponse {
                        status: e.status,
                        headers: e
                            .headers
                            .into_iter()
                            .map(|(name, value)| Header { name, value })
                            .collect(),
                        body: e.body,
                    },
                    left_ms,
                )),
                Ok(None) => None,
                Err(_) => {
                    // Bypassed: a miss, and the call goes upstream.
                    crate::observe::metrics::global().redis_fallback("cache_bypass");
                    None
                }
            };
        }
        let v = services.cache.get(&k)?;
        let left = v.expires.checked_duration_since(Instant::now())?;
        Some((
            bindings::cache::CachedResponse {
                status: v.status,
                headers: v
                    .headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                body: v.body.to_vec(),
            },
            left.as_millis() as u64,
        ))
    }

    async fn put(
        &mut self,
        key: String,
        value: bindings::cache::CachedResponse,
        ttl_ms: u64,
    ) -> Result<(), ServiceError> {
        self.grant("cache")?;
        let ttl = Duration::from_millis(ttl_ms);
        if ttl.is_zero() || ttl > MAX_CACHE_TTL {
            return Err(ServiceError::Invalid("ttl must be 1 ms to 1 day".into()));
        }
        if key.len() > 4096 {
            return Err(ServiceError::Invalid("key longer than 4096 bytes".into()));
        }
        let k = self.api_key(&key);
        let services = self.services.clone();
        if let Some(cluster) = services
            .cluster
            .as_ref()
            .filter(|c| c.spec().cache.shares(&self.api))
        {
            let entry = crate::cluster::CacheEntry {
                status: value.status,
                headers: value
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: value.body,
            };
            // Not kept when Redis cannot take it: the next call is a miss.
            if cluster.cache_put(&k, &entry, ttl_ms).await.is_err() {
                crate::observe::metrics::global().redis_fallback("cache_bypass");
            }
            return Ok(());
        }
        services.cache.insert(
            k,
            Arc::new(CachedResponse {
                status: value.status,
                headers: value
                    .headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
                body: Bytes::from(value.body),
                expires: Instant::now() + ttl,
                ttl,
            }),
        );
        Ok(())
    }

    async fn delete(&mut self, key: String) {
        if self.grant("cache").is_err() {
            return;
        }
        let k = self.api_key(&key);
        let services = self.services.clone();
        if let Some(cluster) = services
            .cluster
            .as_ref()
            .filter(|c| c.spec().cache.shares(&self.api))
        {
            if cluster.cache_delete(&k).await.is_err() {
                crate::observe::metrics::global().redis_fallback("cache_bypass");
            }
            return;
        }
        services.cache.invalidate(&k);
    }
}
