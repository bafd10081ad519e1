//! `[cluster]` in the gateway file: which Redis, how long to wait for it,
//! and what shared limits do while it cannot answer.

use crate::domain::units::{Dur, Size};
use serde::Deserialize;

/// `[cluster]`: several gateways share their rate limits, quotas and
/// (with `cache = true`) response cache through one Redis deployment
/// (docs/cluster.md). Name exactly one of `url` (one server), `sentinel`
/// or `nodes` (Redis Cluster seeds). The password is never in this file:
/// `password-env` names the environment variable holding it.
///
/// ```toml
/// [cluster]
/// url = "rediss://redis.internal:6379/0"  # redis:// or rediss:// (TLS)
/// # sentinel = { master = "tollgate", addresses = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"] }
/// # nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]  # Redis Cluster
/// username = "tollgate"                   # ACL user; default: none (the default user)
/// password-env = "TOLLGATE_REDIS_PASSWORD"
/// ca-file = "certs/redis-ca.pem"          # rediss://: trust these CAs instead of the system's roots
/// connect-timeout = "1s"                  # each connection attempt
/// command-timeout = "50ms"                # the longest a call waits for Redis
/// rate-limits = "open"                    # Redis down: count locally ("open") or refuse ("closed")
/// local-share = 100                       # open: percent of each limit a node allows on its own
/// quotas = "closed"                       # Redis down: refuse ("closed") or count locally ("open")
/// cache = true                            # share the response cache; false keeps it per node;
///                                         # ["pets", "orders"]: only these APIs' caches
/// max-cache-entry = "1MiB"                # larger responses are not cached in Redis
/// breaker-failures = 5                    # consecutive failures that open the breaker
/// breaker-cool-down = "1s"                # then no call to Redis until one probe
/// key-prefix = "tollgate"                 # every key starts with it (several gateways per Redis)
/// role = "control"                        # "control" (the one writer) | "data" (replicas); none: each node its own
/// node = "gw-1"                           # this node's name in /admin/v1/nodes; default: the host name
/// ```
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSpec {
    pub url: Option<String>,
    pub sentinel: Option<SentinelSpec>,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// PEM CA certificates `rediss://` servers are verified against
    /// instead of the system's roots (`url` and `nodes`); relative to the
    /// gateway file.
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Dur,
    #[serde(default)]
    pub rate_limits: FailMode,
    #[serde(default = "default_local_share")]
    pub local_share: u32,
    #[serde(default = "closed")]
    pub quotas: FailMode,
    #[serde(default)]
    pub cache: CacheSharing,
    #[serde(default = "default_max_cache_entry")]
    pub max_cache_entry: Size,
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cool_down")]
    pub breaker_cool_down: Dur,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// The node's part in the shared control plane; `None`: every node
    /// keeps its own (only limits, quotas and cache are shared).
    pub role: Option<Role>,
    /// This node's name among the others; default: the host name.
    pub node: Option<String>,
}

/// A node's part in the shared control plane (docs/cluster.md, "The
/// control plane").
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The one writer: its admin API changes the registry, and each change
    /// is published through Redis.
    Control,
    /// A replica: applies the control node's changes to its own store and
    /// serves from it; its admin API reads only.
    Data,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Data => "data",
        }
    }
}

/// `[cluster] sentinel`: the master's name and the Sentinels to ask for it.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SentinelSpec {
    pub master: String,
    pub addresses: Vec<String>,
}

/// `[cluster] cache`: which APIs keep their response cache in Redis (the
/// others keep theirs in each node's memory).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(untagged, expecting = "true, false or a list of API names")]
pub enum CacheSharing {
    /// `true`: every API's; `false`: none.
    All(bool),
    /// These APIs' (by name) only.
    Apis(Vec<String>),
}

impl Default for CacheSharing {
    fn default() -> Self {
        CacheSharing::All(false)
    }
}

impl CacheSharing {
    /// Whether the API named `api` keeps its cache in Redis.
    pub fn shares(&self, api: &str) -> bool {
        match self {
            CacheSharing::All(all) => *all,
            CacheSharing::Apis(apis) => apis.iter().any(|a| a == api),
        }
    }
}

/// What a shared limit does while Redis cannot answer.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// Count on this node alone (rate limits: in memory, at `local-share`
    /// percent of the limit; quotas: in the node's own store).
    #[default]
    Open,
    /// Refuse: the step's service call fails as `unavailable`, and the
    /// policy's own fail-open setting decides (the standard ones refuse
    /// with 503).
    Closed,
}

fn closed() -> FailMode {
    FailMode::Closed
}
fn default_connect_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_command_timeout() -> Dur {
    Dur(std::time::Duration::from_millis(50))
}
fn default_local_share() -> u32 {
    100
}
fn default_max_cache_entry() -> Size {
    Size(1 << 20)
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cool_down() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_key_prefix() -> String {
    "tollgate".into()
}

impl ClusterSpec {
    /// What is wrong with it, each as one line.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let named = usize::from(self.url.is_some())
            + usize::from(self.sentinel.is_some())
            + usize::from(!self.nodes.is_empty());
        if named != 1 {
            errs.push(format!(
                "cluster: name exactly one of `url`, `sentinel` or `nodes` (found {named})"
            ));
        }
        let url_ok = |u: &str| {
            (u.starts_with("redis://") || u.starts_with("rediss://"))
                && u.len() <= 2048
                && !u.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        let check_url = |errs: &mut Vec<String>, field: &str, u: &str| {
            if !url_ok(u) {
                errs.push(format!(
                    "cluster.{field} = {u:?} must be a redis:// or rediss:// URL"
                ));
            } else if u
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('@'))
            {
                errs.push(format!(
                    "cluster.{field}: no credentials in the URL; use `username` and `password-env`"
                ));
            }
        };
        if let Some(u) = &self.url {
            check_url(&mut errs, "url", u);
        }
        for u in &self.nodes {
            check_url(&mut errs, "nodes", u);
        }
        if let Some(s) = &self.sentinel {
            if s.master.is_empty() || s.master.len() > 256 {
                errs.push("cluster.sentinel.master must be 1 to 256 characters".into());
            }
            if s.addresses.is_empty() {
                errs.push("cluster.sentinel.addresses: give at least one Sentinel".into());
            }
            for u in &s.addresses {
                check_url(&mut errs, "sentinel.addresses", u);
            }
        }
        if let Some(u) = &self.username {
            if u.is_empty()
                || u.len() > 256
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errs.push("cluster.username must be 1 to 256 characters without spaces".into());
            }
        }
        if let Some(v) = &self.password_env {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                errs.push(format!(
                    "cluster.password-env = {v:?} must be an environment variable's name (letters, digits, _)"
                ));
            }
        }
        let ms = |d: &Dur| d.0.as_millis();
        if !(1..=60_000).contains(&ms(&self.connect_timeout)) {
            errs.push(format!(
                "cluster.connect-timeout = {:?} must be from 1ms to 60s",
                self.connect_timeout.0
            ));
        }
        if !(1..=10_000).contains(&ms(&self.command_timeout)) {
            errs.push(format!(
                "cluster.command-timeout = {:?} must be from 1ms to 10s",
                self.command_timeout.0
            ));
        }
        if !(1..=100).contains(&self.local_share) {
            errs.push(format!(
                "cluster.local-share = {} must be a percentage from 1 to 100",
                self.local_share
            ));
        }
        if let CacheSharing::Apis(apis) = &self.cache {
            if apis.is_empty() {
                errs.push(
                    "cluster.cache = [] shares no API's cache: say `false` (or name the APIs)"
                        .into(),
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            for a in apis {
                if a.is_empty() || a.len() > 128 {
                    errs.push(format!("cluster.cache names {a:?}: not an API name"));
                } else if !seen.insert(a) {
                    errs.push(format!("cluster.cache names `{a}` twice"));
                }
            }
        }
        if !(1..=(64 << 20)).contains(&self.max_cache_entry.0) {
            errs.push(format!(
                "cluster.max-cache-entry = {} bytes must be from 1B to 64MiB",
                self.max_cache_entry.0
            ));
        }
        if !(1..=1000).contains(&self.breaker_failures) {
            errs.push(format!(
                "cluster.breaker-failures = {} must be from 1 to 1000",
                self.breaker_failures
            ));
        }
        if !(1..=600_000).contains(&ms(&self.breaker_cool_down)) {
            errs.push(format!(
                "cluster.breaker-cool-down = {:?} must be from 1ms to 10m",
                self.breaker_cool_down.0
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            errs.push(format!(
                "cluster.key-prefix = {:?} must be 1 to 64 of A-Z a-z 0-9 - _ . :",
                self.key_prefix
            ));
        }
        if let Some(n) = &self.node {
            if n.is_empty()
                || n.len() > 64
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errs.push(format!(
                    "cluster.node = {n:?} must be 1 to 64 of A-Z a-z 0-9 - _ ."
                ));
            }
        }
        errs
    }

    /// This node's name: `node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterSpec, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap().problems().join("\n")
    }

    #[test]
    fn the_cache_is_shared_by_every_api_by_none_or_by_the_ones_named() {
        assert!(parse("url = \"redis://a\"\ncache = true")
            .unwrap()
            .cache
            .shares("x"));
        assert!(!parse("url = \"redis://a\"\ncache = false")
            .unwrap()
            .cache
            .shares("x"));
        let s = parse("url = \"redis://a\"\ncache = [\"pets\", \"orders\"]").unwrap();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert!(s.cache.shares("pets") && s.cache.shares("orders"));
        assert!(!s.cache.shares("other") && !s.cache.shares("pet"));
        let p = problems("url = \"redis://a\"\ncache = []");
        assert!(p.contains("shares no API's cache"), "{p}");
        let p = problems("url = \"redis://a\"\ncache = [\"pets\", \"\", \"pets\"]");
        assert!(p.contains("\"\": not an API name"), "{p}");
        assert!(p.contains("`pets` twice"), "{p}");
        // Neither a boolean nor a list of names.
        let e = parse("url = \"redis://a\"\ncache = \"yes\"").unwrap_err();
        assert!(e.contains("true, false or a list of API names"), "{e}");
        assert!(parse("url = \"redis://a\"\ncache = [1]").is_err());
    }

    #[test]
    fn defaults_and_each_kind_of_deployment() {
        let s = parse("url = \"redis://127.0.0.1:6379/0\"").unwrap();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.command_timeout.0, std::time::Duration::from_millis(50));
        assert_eq!(s.rate_limits, FailMode::Open);
        assert_eq!(s.quotas, FailMode::Closed);
        assert_eq!((s.local_share, s.breaker_failures), (100, 5));
        assert_eq!(s.cache, CacheSharing::All(false));
        assert_eq!(s.key_prefix, "tollgate");
        let s = parse(
            "sentinel = { master = \"tg\", addresses = [\"redis://10.0.0.1:26379\"] }\nrate-limits = \"closed\"\nquotas = \"open\"",
        )
        .unwrap();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(
            (s.rate_limits, s.quotas),
            (FailMode::Closed, FailMode::Open)
        );
        let s = parse("nodes = [\"rediss://a:7000\", \"rediss://b:7000\"]\ncache = true").unwrap();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
    }

    #[test]
    fn nonsense_is_refused_with_the_field_named() {
        assert!(problems("").contains("exactly one of `url`, `sentinel` or `nodes` (found 0)"));
        assert!(problems("url = \"redis://a\"\nnodes = [\"redis://b\"]").contains("(found 2)"));
        assert!(problems("url = \"http://a:6379\"")
            .contains("cluster.url = \"http://a:6379\" must be a redis:// or rediss:// URL"));
        assert!(problems("url = \"redis://user:pw@a:6379\"").contains("no credentials in the URL"));
        assert!(problems("nodes = [\"redis://a\", \"tcp://b\"]")
            .contains("cluster.nodes = \"tcp://b\""));
        assert!(
            problems("sentinel = { master = \"\", addresses = [] }").contains("sentinel.master")
        );
        assert!(problems("sentinel = { master = \"m\", addresses = [] }")
            .contains("at least one Sentinel"));
        let p = problems(
            "url = \"redis://a\"\ncommand-timeout = \"0ms\"\nconnect-timeout = \"2m\"\nlocal-share = 0\nbreaker-failures = 0\nbreaker-cool-down = \"1h\"\nmax-cache-entry = \"1GiB\"\nkey-prefix = \"a b\"\npassword-env = \"MY-PW\"\nusername = \"\"",
        );
        for field in [
            "command-timeout",
            "connect-timeout",
            "local-share = 0",
            "breaker-failures = 0",
            "breaker-cool-down",
            "max-cache-entry",
            "key-prefix",
            "password-env = \"MY-PW\"",
            "cluster.username",
        ] {
            assert!(p.contains(field), "{field} not in:\n{p}");
        }
        // The types refuse the rest at parse time.
        assert!(parse("url = \"redis://a\"\npassword = \"x\"")
            .unwrap_err()
            .contains("unknown field `password`"));
        assert!(parse("url = \"redis://a\"\nrate-limits = \"maybe\"")
            .unwrap_err()
            .contains("unknown variant `maybe`"));
        assert!(parse("url = \"redis://a\"\ncommand-timeout = 50").is_err());
        assert!(
            parse("sentinel = { master = \"m\", addresses = [\"redis://a\"], pw = 1 }")
                .unwrap_err()
                .contains("unknown field `pw`")
        );
    }
}
