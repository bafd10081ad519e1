//! Cluster mode: several gateways share their rate limits, quotas and
//! response cache through one Redis deployment (`[cluster]`,
//! docs/cluster.md). Each node keeps its own store and configuration.
//!
//! The client is the `redis` crate (redis-rs): its tokio
//! `ConnectionManager` for one server (or the master a Sentinel names),
//! and its `cluster-async` connection for Redis Cluster, TLS through
//! rustls. Every call is bounded by `command-timeout` and goes through a
//! [`breaker::Breaker`]; a call that cannot be answered comes back as a
//! [`Failure`] at once, and the caller falls back as `[cluster]` says.
//!
//! Keys: `PREFIX:{TAG}:KIND`, where TAG is the API-namespaced key (braces
//! escaped), so that each script's one key has a hash tag of its own.

pub mod breaker;
pub mod replog;
pub mod scripts;
mod spec;

pub use spec::{ClusterSpec, FailMode, Role, SentinelSpec};

use breaker::{Admit, Breaker};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, RedisResult, Script, ScriptInvocation};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Why a call to Redis was not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The breaker is open: no call was sent.
    BreakerOpen,
    /// No connection yet (Redis was down at start, or is being reconnected).
    NotConnected,
    /// No answer within `command-timeout`.
    Timeout,
    /// Redis answered with an error, or the connection failed.
    Error(String),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::BreakerOpen => "breaker_open",
            Failure::NotConnected => "not_connected",
            Failure::Timeout => "timeout",
            Failure::Error(_) => "error",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::BreakerOpen => write!(f, "redis: circuit breaker open"),
            Failure::NotConnected => write!(f, "redis: not connected"),
            Failure::Timeout => write!(f, "redis: no answer within the command timeout"),
            Failure::Error(e) => write!(f, "redis: {e}"),
        }
    }
}

/// A rate check's outcome, as the in-memory counters give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_ms: u64,
    pub retry_after_ms: u64,
}

/// Which rate algorithm a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAlgorithm {
    SlidingWindow,
    TokenBucket,
    /// A fixed period from `start` to `end` (Unix ms), counted as a quota
    /// is (its key is the quota's: a day-long window is one).
    Period {
        start: u64,
        end: u64,
    },
}

impl RateAlgorithm {
    /// Its name in the rate script.
    fn tag(self) -> &'static str {
        match self {
            RateAlgorithm::SlidingWindow => "sw",
            RateAlgorithm::TokenBucket => "tb",
            RateAlgorithm::Period { .. } => "q",
        }
    }
}

/// One limit of [`Cluster::rate_check_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCheck {
    pub key: String,
    pub algorithm: RateAlgorithm,
    pub limit: u64,
    pub window_ms: u64,
}

/// The Redis Cluster slot of `key`: CRC16 of its hash tag (every key made
/// here has one), modulo 16384.
fn slot(key: &str) -> u16 {
    let tagged = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged.as_bytes()) % 16384
}

/// A cached response as stored in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke<T: FromRedisValue>(self, inv: ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Conn::One(mut c) => inv.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
        }
    }

    async fn query<T: FromRedisValue>(self, cmd: redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::One(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }
}

/// Where to connect, resolved from `[cluster]` (the password read).
enum Target {
    One(redis::Client),
    Sentinel {
        master: String,
        addresses: Vec<redis::ConnectionInfo>,
        node: redis::RedisConnectionInfo,
        tls: bool,
    },
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// The process's link to Redis.
pub struct Cluster {
    spec: ClusterSpec,
    target: Target,
    conn: arc_swap::ArcSwapOption<Conn>,
    breaker: Breaker,
    /// Wakes the connector when the connection seems dead.
    reconnect: Arc<Notify>,
    timeout: Duration,
    epoch: Instant,
    rate: Script,
    quota: Script,
    refund: Script,
    cache_get: Script,
}

impl Cluster {
    /// The link `spec` describes, connecting in the background: a node
    /// whose Redis is down starts anyway, and its shared limits fall back
    /// until Redis answers. Errors only for what no retry fixes (a missing
    /// password variable, a URL the client refuses). Needs a tokio runtime.
    pub fn start(spec: &ClusterSpec) -> anyhow::Result<Arc<Cluster>> {
        let tls = spec
            .url
            .iter()
            .chain(&spec.nodes)
            .any(|u| u.starts_with("rediss://"))
            || spec
                .sentinel
                .as_ref()
                .is_some_and(|s| s.addresses.iter().any(|u| u.starts_with("rediss://")));
        if tls {
            // redis-rs builds its rustls config with the process default
            // provider: make it ring, the one the rest of the host uses.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let password = match &spec.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("[cluster] password-env: the environment variable {var} is not set")
            })?),
            None => None,
        };
        let creds = |info: redis::ConnectionInfo| {
            let mut r = info.redis_settings().clone();
            if let Some(u) = &spec.username {
                r = r.set_username(u);
            }
            if let Some(p) = &password {
                r = r.set_password(p);
            }
            info.set_redis_settings(r)
        };
        let parse = |u: &str| {
            u.into_connection_info()
                .map_err(|e| anyhow::anyhow!("[cluster] {u:?}: {e}"))
        };
        let ca = match &spec.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("[cluster] ca-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        let target = if let Some(u) = &spec.url {
            let info = creds(parse(u)?);
            let client = if ca.is_some() {
                redis::Client::build_with_tls(info, certs())
            } else {
                redis::Client::open(info)
            };
            Target::One(client.map_err(|e| anyhow::anyhow!("[cluster] url: {e}"))?)
        } else if let Some(s) = &spec.sentinel {
            let addresses = s
                .addresses
                .iter()
                .map(|u| parse(u))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut node = redis::RedisConnectionInfo::default();
            if let Some(u) = &spec.username {
                node = node.set_username(u);
            }
            if let Some(p) = &password {
                node = node.set_password(p);
            }
            Target::Sentinel {
                master: s.master.clone(),
                addresses,
                node,
                tls,
            }
        } else {
            let nodes = spec
                .nodes
                .iter()
                .map(|u| parse(u))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut b = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(spec.connect_timeout.0)
                .response_timeout(spec.command_timeout.0)
                .retries(1);
            if let Some(u) = &spec.username {
                b = b.username(u);
            }
            if let Some(p) = &password {
                b = b.password(p);
            }
            if ca.is_some() {
                b = b.certs(certs());
            }
            Target::Cluster(Box::new(
                b.build()
                    .map_err(|e| anyhow::anyhow!("[cluster] nodes: {e}"))?,
            ))
        };
        let cluster = Arc::new(Cluster {
            spec: spec.clone(),
            target,
            conn: arc_swap::ArcSwapOption::empty(),
            breaker: Breaker::new(
                spec.breaker_failures,
                spec.breaker_cool_down.0.as_millis() as u64,
            ),
            reconnect: Arc::new(Notify::new()),
            timeout: spec.command_timeout.0,
            epoch: Instant::now(),
            rate: Script::new(scripts::RATE_LIMITS),
            quota: Script::new(scripts::QUOTA),
            refund: Script::new(scripts::QUOTA_REFUND),
            cache_get: Script::new(scripts::CACHE_GET),
        });
        tokio::spawn(connector(Arc::downgrade(&cluster)));
        Ok(cluster)
    }

    /// Wait (blocking this thread) until connected, at most `limit`:
    /// a node starting beside a live Redis serves its first call from it.
    /// Whether it is connected.
    pub fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.connected() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// `[cluster]` as loaded.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Whether a connection is up (it may still fail its next call).
    pub fn connected(&self) -> bool {
        self.conn.load().is_some()
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let manager = |client: redis::Client| {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.spec.connect_timeout.0))
                .set_response_timeout(None)
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client, config)
        };
        match &self.target {
            Target::One(client) => Ok(Conn::One(manager(client.clone()).await?)),
            Target::Sentinel {
                master,
                addresses,
                node,
                tls,
            } => {
                let mut info = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(node.clone());
                if *tls {
                    info = info.set_tls_mode(redis::TlsMode::Secure);
                }
                let mut client = redis::sentinel::SentinelClient::build(
                    addresses.clone(),
                    master.clone(),
                    Some(info),
                    redis::sentinel::SentinelServerType::Master,
                )?;
                let master = client.async_get_client().await?;
                Ok(Conn::One(manager(master).await?))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run one call to Redis for `op`, bounded and behind the breaker.
    async fn run<T, F, Fut>(&self, op: &'static str, call: F) -> Result<T, Failure>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let metrics = crate::observe::metrics::global();
        let failed = |f: Failure| {
            metrics.redis_failure(op, f.kind());
            Err(f)
        };
        let admit = self.breaker.admit(self.now_ms());
        if admit == Admit::Refuse {
            return failed(Failure::BreakerOpen);
        }
        let Some(conn) = self.conn.load_full() else {
            if admit == Admit::Probe {
                // Nothing to probe with: let the next call after the
                // connector's work try again.
                self.breaker.failure(self.now_ms(), true);
            }
            return failed(Failure::NotConnected);
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call((*conn).clone())).await;
        metrics.redis_call(op, started.elapsed().as_micros() as u64);
        let failure = match result {
            Ok(Ok(v)) => {
                if self.breaker.success() {
                    metrics.redis_breaker(false);
                    tracing::info!("redis answers again: circuit breaker closed");
                }
                return Ok(v);
            }
            Ok(Err(e)) if is_answer(&e) => {
                // Redis is up and refused this one call (a script error, a
                // key of the wrong type): not a reason to stop calling it.
                return failed(Failure::Error(e.to_string()));
            }
            Ok(Err(e)) => Failure::Error(e.to_string()),
            Err(_) => Failure::Timeout,
        };
        if self.breaker.failure(self.now_ms(), admit == Admit::Probe) {
            metrics.redis_breaker(true);
            tracing::warn!(
                "redis: {failure}; circuit breaker open for {:?}",
                self.spec.breaker_cool_down.0
            );
            self.reconnect.notify_one();
        }
        failed(failure)
    }

    /// Check and add `cost` to the limit `key` of `limit` per `window_ms`,
    /// atomically in Redis. `now_ms`: `None` for Redis's clock.
    pub async fn rate_check(
        &self,
        key: &str,
        algorithm: RateAlgorithm,
        limit: u64,
        window_ms: u64,
        cost: u64,
        now_ms: Option<u64>,
    ) -> Result<RateDecision, Failure> {
        let check = RateCheck {
            key: key.to_string(),
            algorithm,
            limit,
            window_ms,
        };
        let mut v = self.rate_check_all(&[check], cost, now_ms, true).await?;
        Ok(v.remove(0))
    }

    /// Check every limit for `cost` and, with `commit`, add it to all of
    /// them if each has room, to none otherwise: one script, one round trip, atomic where
    /// the keys share a slot (one server, a Sentinel's master, or a Redis
    /// Cluster whose slots they share). On a Redis Cluster with the keys in
    /// several slots: a check of every slot's keys (concurrent, one round
    /// trip), then, if all have room, the count (another): two calls
    /// racing between them may both be refused where one would have
    /// passed, never both admitted where one would not.
    pub async fn rate_check_all(
        &self,
        checks: &[RateCheck],
        cost: u64,
        now_ms: Option<u64>,
        commit: bool,
    ) -> Result<Vec<RateDecision>, Failure> {
        let keys: Vec<String> = checks
            .iter()
            .map(|c| match c.algorithm {
                RateAlgorithm::Period { start, .. } => self.key(&c.key, &format!("q:{start}")),
                a => self.key(&c.key, a.tag()),
            })
            .collect();
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let slot = match self.target {
                Target::Cluster(_) => slot(k),
                _ => 0,
            };
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let now = now_ms.map(|n| n.to_string()).unwrap_or_default();
        let run = |commit: bool| {
            futures_util::future::try_join_all(groups.iter().map(|(_, members)| {
                let (keys, now) = (&keys, &now);
                self.run("rate_limit", move |c| async move {
                    let mut inv = self.rate.prepare_invoke();
                    inv.arg(cost).arg(now).arg(u8::from(commit));
                    for &i in members {
                        let check = &checks[i];
                        // A period's third argument: when its key may go,
                        // a day past its end (for a clock that lags).
                        let third = match check.algorithm {
                            RateAlgorithm::Period { end, .. } => end.saturating_add(86_400_000),
                            _ => check.window_ms,
                        };
                        inv.key(&keys[i])
                            .arg(check.algorithm.tag())
                            .arg(check.limit)
                            .arg(third);
                    }
                    c.invoke::<Vec<Vec<u64>>>(inv).await
                })
            }))
        };
        let mut answers = if !commit {
            run(false).await?
        } else if groups.len() > 1 {
            let checked = run(false).await?;
            if checked.iter().flatten().all(|d| d.first() == Some(&1)) {
                run(true).await?
            } else {
                checked
            }
        } else {
            run(true).await?
        };
        let mut out = vec![None; checks.len()];
        for ((_, members), answer) in groups.iter().zip(answers.iter_mut()) {
            if answer.len() != members.len() {
                return Err(Failure::Error(format!("rate script answered {answer:?}")));
            }
            for (&i, d) in members.iter().zip(answer.iter()) {
                out[i] = Some(match d[..] {
                    [allowed, remaining, reset_ms, retry_after_ms] => RateDecision {
                        allowed: allowed == 1,
                        remaining,
                        reset_ms,
                        retry_after_ms,
                    },
                    _ => return Err(Failure::Error(format!("rate script answered {d:?}"))),
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|d| d.expect("every key answered"))
            .collect())
    }

    /// Check and add `cost` to the quota `key` for the period starting at
    /// `start` and ending at `end` (Unix ms), atomically and durably as
    /// far as Redis's AOF setting makes it. Returns (allowed, the count).
    pub async fn quota_check(
        &self,
        key: &str,
        limit: u64,
        start: u64,
        end: u64,
        cost: u64,
    ) -> Result<(bool, u64), Failure> {
        let k = self.key(key, &format!("q:{start}"));
        // Kept a day past the period's end, for a clock that lags.
        let expire_at = end.saturating_add(86_400_000);
        let v: Vec<u64> = self
            .run("quota", |c| async move {
                let mut inv = self.quota.prepare_invoke();
                inv.key(&k).arg(limit).arg(cost).arg(expire_at);
                c.invoke(inv).await
            })
            .await?;
        match v[..] {
            [allowed, count] => Ok((allowed == 1, count)),
            _ => Err(Failure::Error(format!("quota script answered {v:?}"))),
        }
    }

    /// Give `cost` back to the quota `key`'s period starting at `start`.
    /// Returns the count after.
    pub async fn quota_refund(&self, key: &str, start: u64, cost: u64) -> Result<u64, Failure> {
        let k = self.key(key, &format!("q:{start}"));
        self.run("quota_refund", |c| async move {
            let mut inv = self.refund.prepare_invoke();
            inv.key(&k).arg(cost);
            c.invoke(inv).await
        })
        .await
    }

    /// The cached response `key` and the milliseconds it has left, if any.
    pub async fn cache_get(&self, key: &str) -> Result<Option<(CacheEntry, u64)>, Failure> {
        let k = self.cache_key(key);
        let got: Option<(Vec<u8>, i64)> = self
            .run("cache_get", |c| async move {
                let mut inv = self.cache_get.prepare_invoke();
                inv.key(&k);
                c.invoke(inv).await
            })
            .await?;
        Ok(match got {
            Some((bytes, ttl)) if ttl > 0 => decode_entry(&bytes).map(|e| (e, ttl as u64)),
            _ => None,
        })
    }

    /// Keep `entry` as `key` for `ttl_ms`. An entry larger than
    /// `max-cache-entry` is not kept (`Ok(false)`).
    pub async fn cache_put(
        &self,
        key: &str,
        entry: &CacheEntry,
        ttl_ms: u64,
    ) -> Result<bool, Failure> {
        let bytes = encode_entry(entry);
        if bytes.len() as u64 > self.spec.max_cache_entry.0 {
            return Ok(false);
        }
        let k = self.cache_key(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&k).arg(bytes).arg("PX").arg(ttl_ms);
        let _: () = self.run("cache_put", |c| c.query(cmd)).await?;
        Ok(true)
    }

    /// Forget the cached response `key`.
    pub async fn cache_delete(&self, key: &str) -> Result<(), Failure> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.cache_key(key));
        let _: i64 = self.run("cache_delete", |c| c.query(cmd)).await?;
        Ok(())
    }

    fn key(&self, key: &str, kind: &str) -> String {
        format!("{}:{{{}}}:{kind}", self.spec.key_prefix, tag(key))
    }

    fn cache_key(&self, key: &str) -> String {
        format!("{}:{{{}}}:cache", self.spec.key_prefix, tag(key))
    }
}

/// An error Redis itself answered (the server is up), as opposed to a
/// connection that failed.
fn is_answer(e: &redis::RedisError) -> bool {
    !(e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error())
}

/// The key with the characters a hash tag gives meaning to escaped.
fn tag(key: &str) -> String {
    key.replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
        .replace('\0', "%00")
}

/// Keep (re)connecting while there is no connection, or when a call found
/// it dead (the breaker opened): a Sentinel is asked for the master again.
async fn connector(cluster: std::sync::Weak<Cluster>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let attempt = tokio::time::timeout(c.spec.connect_timeout.0, c.connect()).await;
        match attempt {
            Ok(Ok(conn)) => {
                let first = c.conn.load().is_none();
                c.conn.store(Some(Arc::new(conn)));
                if first {
                    tracing::info!("redis: connected");
                }
                backoff = Duration::from_millis(50);
                let wake = c.reconnect.clone();
                drop(c);
                wake.notified().await;
                // The breaker opened: give the connection its own retries
                // a moment, then connect afresh.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Err(e)) => {
                static ONCE: OnceLock<()> = OnceLock::new();
                if ONCE.set(()).is_ok() || c.conn.load().is_none() {
                    tracing::warn!("redis: cannot connect: {e}");
                }
            }
            Err(_) => tracing::warn!("redis: no connection within {:?}", c.spec.connect_timeout.0),
        }
        drop(c);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

const ENTRY_VERSION: u8 = 1;

/// A response as bytes: version, status, header count, each header's name
/// and value with their lengths, then the body.
fn encode_entry(e: &CacheEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + e.body.len());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&e.status.to_be_bytes());
    out.extend_from_slice(&(e.headers.len() as u32).to_be_bytes());
    for (n, v) in &e.headers {
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&e.body);
    out
}

/// [`encode_entry`] read back; `None` for anything else (a value another
/// program wrote, a truncated one): a cache miss.
fn decode_entry(b: &[u8]) -> Option<CacheEntry> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn u32_of(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let mut b = b;
    if take(&mut b, 1)? != [ENTRY_VERSION] {
        return None;
    }
    let status = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
    let count = u32_of(&mut b)?;
    if count > 1024 {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32_of(&mut b)?;
        let name = String::from_utf8(take(&mut b, n)?.to_vec()).ok()?;
        let n = u32_of(&mut b)?;
        headers.push((name, take(&mut b, n)?.to_vec()));
    }
    Some(CacheEntry {
        status,
        headers,
        body: b.to_vec(),
    })
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
