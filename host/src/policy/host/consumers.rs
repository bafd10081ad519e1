//! `tollgate:policy/consumers`: who is calling, by API key or by id, and
//! 0.2.0's `tollgate:policy/access`: who a call without credentials is, on
//! a product open to anonymous callers. The step asks its request's one
//! [`ConsumerSource`] (the loader puts the generation's manifests first,
//! then the control plane's source), for its own API only.
//!
//! [`Directory`] is the manifests' source: consumers and their API keys as
//! declared in policy manifests. Keys are held only as SHA-256 digests; a
//! lookup hashes the presented key, so an unknown key and a wrong key take
//! the same path and look the same.

use super::clock::now_ms;
pub use crate::domain::consumer::ConsumerInfo;
use crate::domain::consumer::{ConsumerSource, DEVELOPERS};
use crate::domain::time::Ts;
use crate::policy::bindings;
use crate::policy::{Consumer, StepState};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct ConsumerEntry {
    info: ConsumerInfo,
    /// APIs this consumer may call; empty means all.
    apis: Vec<String>,
    /// Its groups: `developers`, then those its manifest entry names.
    groups: Vec<String>,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    consumer: usize,
    key_id: String,
    /// Unix milliseconds; none means no expiry.
    expires_ms: Option<u64>,
}

/// All consumers of one configuration generation.
#[derive(Debug, Default)]
pub struct Directory {
    consumers: Vec<ConsumerEntry>,
    by_id: HashMap<String, usize>,
    by_digest: HashMap<[u8; 32], KeyEntry>,
}

/// SHA-256 of a key, hex: what manifests store.
pub fn key_digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Directory {
    /// Add a consumer; fails on a duplicate id.
    pub fn add_consumer(&mut self, info: ConsumerInfo, apis: Vec<String>) -> Result<usize, String> {
        if self.by_id.contains_key(&info.id) {
            return Err(format!("consumer `{}` is defined twice", info.id));
        }
        let i = self.consumers.len();
        self.by_id.insert(info.id.clone(), i);
        let groups = vec![DEVELOPERS.to_string()];
        self.consumers.push(ConsumerEntry { info, apis, groups });
        Ok(i)
    }

    /// Make consumer `consumer` (as [`Directory::add_consumer`] numbered
    /// it) a member of `groups` too (its manifest entry's `groups`).
    pub fn add_groups(&mut self, consumer: usize, groups: &[String]) {
        if let Some(c) = self.consumers.get_mut(consumer) {
            for g in groups {
                if !c.groups.contains(g) {
                    c.groups.push(g.clone());
                }
            }
        }
    }

    /// The groups of consumer `id`, if the manifests declare it.
    pub fn groups(&self, id: &str) -> Vec<String> {
        self.by_id
            .get(id)
            .map(|&i| self.consumers[i].groups.clone())
            .unwrap_or_default()
    }

    /// Add a key by its SHA-256 (hex) to consumer `consumer`.
    pub fn add_key(
        &mut self,
        consumer: usize,
        key_id: &str,
        sha256_hex: &str,
        expires_ms: Option<u64>,
    ) -> Result<(), String> {
        let raw = hex::decode(sha256_hex.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                format!("key `{key_id}`: `sha256` must be 64 hex digits (see `tollgate hash-key`)")
            })?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&raw);
        if self.by_digest.contains_key(&digest) {
            return Err(format!("key `{key_id}`: the same key is declared twice"));
        }
        self.by_digest.insert(
            digest,
            KeyEntry {
                consumer,
                key_id: key_id.to_string(),
                expires_ms,
            },
        );
        Ok(())
    }

    fn allowed(&self, c: &ConsumerEntry, api: &str) -> bool {
        c.apis.is_empty() || c.apis.iter().any(|a| a == api)
    }

    /// The consumer behind `key` for `api`, if the key is valid now.
    pub fn lookup_key(&self, api: &str, key: &str, now_ms: u64) -> Option<ConsumerInfo> {
        if key.is_empty() || key.len() > 4096 {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let entry = self.by_digest.get(&digest)?;
        if entry.expires_ms.is_some_and(|e| e <= now_ms) {
            return None;
        }
        let c = &self.consumers[entry.consumer];
        if !self.allowed(c, api) {
            return None;
        }
        let mut info = c.info.clone();
        info.key_id = Some(entry.key_id.clone());
        Some(info)
    }

    /// A consumer by id, if it may call `api`.
    pub fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        let c = &self.consumers[*self.by_id.get(id)?];
        self.allowed(c, api).then(|| c.info.clone())
    }

    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }
}

impl ConsumerSource for Directory {
    fn lookup_key(&self, api: &str, key: &str, now: Ts) -> Option<ConsumerInfo> {
        Directory::lookup_key(self, api, key, now.0)
    }

    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        Directory::lookup_consumer(self, api, id)
    }

    fn groups(&self, consumer: &str) -> Vec<String> {
        Directory::groups(self, consumer)
    }
}

fn to_consumer(c: ConsumerInfo) -> Consumer {
    Consumer {
        id: c.id,
        app: c.app,
        key_id: c.key_id,
        plan: c.plan,
        product: c.product,
    }
}

impl bindings::consumers::Host for StepState {
    fn lookup_key(&mut self, api: String, key: String) -> Option<Consumer> {
        self.grant("consumers").ok()?;
        // A step may only ask about its own API.
        if api != *self.api {
            return None;
        }
        self.scope
            .consumers
            .lookup_key(&api, &key, Ts(now_ms()))
            .map(to_consumer)
    }

    fn lookup_consumer(&mut self, api: String, id: String) -> Option<Consumer> {
        self.grant("consumers").ok()?;
        if api != *self.api {
            return None;
        }
        self.scope
            .consumers
            .lookup_consumer(&api, &id)
            .map(to_consumer)
    }
}

impl bindings::access::Host for StepState {
    fn open_access(&mut self, api: String) -> Option<Consumer> {
        self.grant("consumers").ok()?;
        if api != *self.api {
            return None;
        }
        self.scope.consumers.open_access(&api).map(to_consumer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        let mut d = Directory::default();
        let alice = d
            .add_consumer(
                ConsumerInfo {
                    id: "alice".into(),
                    app: Some("shop".into()),
                    key_id: None,
                    plan: Some("gold".into()),
                    product: None,
                },
                vec!["pets".into()],
            )
            .unwrap();
        d.add_key(alice, "k1", &key_digest_hex("secret-key-1"), None)
            .unwrap();
        d.add_key(alice, "old", &key_digest_hex("expired-key"), Some(1000))
            .unwrap();
        d
    }

    #[test]
    fn keys_resolve_only_when_valid() {
        let d = dir();
        let c = d.lookup_key("pets", "secret-key-1", 5000).unwrap();
        assert_eq!(c.id, "alice");
        assert_eq!(c.key_id.as_deref(), Some("k1"));
        assert_eq!(c.plan.as_deref(), Some("gold"));
        // Differing in the last byte, another API, expired, empty, huge.
        assert!(d.lookup_key("pets", "secret-key-2", 5000).is_none());
        assert!(d.lookup_key("orders", "secret-key-1", 5000).is_none());
        assert!(d.lookup_key("pets", "expired-key", 5000).is_none());
        assert!(d.lookup_key("pets", "expired-key", 999).is_some());
        assert!(d.lookup_key("pets", "", 0).is_none());
        assert!(d.lookup_key("pets", &"x".repeat(10_000), 0).is_none());
        assert!(d.lookup_consumer("pets", "alice").is_some());
        assert!(d.lookup_consumer("orders", "alice").is_none());
    }

    #[test]
    fn as_a_consumer_source_the_directory_answers_the_same() {
        let d = dir();
        let source: &dyn ConsumerSource = &d;
        assert_eq!(
            source.lookup_key("pets", "secret-key-1", Ts(5000)),
            d.lookup_key("pets", "secret-key-1", 5000)
        );
        assert!(source.lookup_key("pets", "expired-key", Ts(5000)).is_none());
        assert!(source.lookup_key("pets", "expired-key", Ts(999)).is_some());
        assert_eq!(source.lookup_consumer("pets", "alice").unwrap().id, "alice");
        assert!(source.lookup_consumer("orders", "alice").is_none());
        // Manifests declare no plans: plan limits come from elsewhere.
        assert!(source.plan_limits("gold").is_none());
    }

    #[test]
    fn manifest_consumers_are_developers_and_members_of_their_groups() {
        let mut d = dir();
        assert_eq!(d.groups("alice"), ["developers"]);
        d.add_groups(0, &["partners".into(), "developers".into()]);
        let source: &dyn ConsumerSource = &d;
        assert_eq!(source.groups("alice"), ["developers", "partners"]);
        assert!(source.groups("bob").is_empty());
        // Manifests open no product.
        assert!(source.open_access("pets").is_none());
    }

    #[test]
    fn duplicates_and_bad_digests() {
        let mut d = dir();
        assert!(d
            .add_consumer(
                ConsumerInfo {
                    id: "alice".into(),
                    app: None,
                    key_id: None,
                    plan: None,
                    product: None
                },
                vec![]
            )
            .is_err());
        assert!(d
            .add_key(0, "k2", &key_digest_hex("secret-key-1"), None)
            .is_err());
        assert!(d.add_key(0, "k3", "abc", None).is_err());
    }
}
