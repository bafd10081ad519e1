//! Who is calling: the consumer a key or id resolves to, a plan's limits,
//! and the [`ConsumerSource`] trait the data plane asks. Two sources
//! implement it: the consumers a generation's manifests declare
//! (`policy::host::consumers::Directory`) and the control plane's registry
//! of issued keys and plans (`control::admin::source`). The composition root
//! (`app`) hands the control plane's source to the policy services; the
//! loader puts each generation's manifests first and that source second in
//! one [`Sources`], so a policy asks one source and never knows there are
//! two.

use crate::domain::time::{Period, Ts};
use std::sync::Arc;

/// The system group every consumer is a member of.
pub const DEVELOPERS: &str = "developers";
/// The system group of callers and visitors without credentials.
pub const GUESTS: &str = "guests";
/// The consumer id of a call without credentials admitted by a product open
/// to anonymous callers (no consumer may take this id).
pub const ANONYMOUS: &str = "anonymous";

/// Who a key or id resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub id: String,
    pub app: Option<String>,
    pub key_id: Option<String>,
    pub plan: Option<String>,
    pub product: Option<String>,
}

/// One rate limit of a plan: `requests` per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub window_ms: u64,
}

/// A plan's quota: `calls` per calendar `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub calls: u64,
    pub period: Period,
}

/// What a plan allows, as policies see it (`tollgate:policy/plans`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    pub plan: String,
    /// The product the plan belongs to.
    pub product: String,
    pub rate_limits: Vec<RateLimit>,
    pub quota: Option<Quota>,
}

/// Where consumers, their keys and their plans are found. Lookups never
/// fail loudly: an unknown key, an expired one and a store error all read
/// as "no such consumer", so a caller cannot tell them apart.
pub trait ConsumerSource: Send + Sync + std::fmt::Debug {
    /// The consumer whose key is `key`, if it may call `api` at `now`.
    fn lookup_key(&self, api: &str, key: &str, now: Ts) -> Option<ConsumerInfo>;
    /// The consumer (or application) `id`, if it may call `api`.
    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo>;
    /// The limits of plan `id`, where this source holds plans.
    fn plan_limits(&self, id: &str) -> Option<PlanLimits> {
        let _ = id;
        None
    }
    /// Who a call to `api` without any credential is admitted as, when a
    /// product open to anonymous callers covers `api` (consumer
    /// `anonymous`, with that product and no plan); `None` otherwise.
    fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
        let _ = api;
        None
    }
    /// The groups consumer `consumer` is a member of, as far as this source
    /// knows it: `developers` (every consumer) and its custom groups, or
    /// `guests` for the anonymous caller; empty for a consumer it does not
    /// know. Cheap enough to ask on every request.
    fn groups(&self, consumer: &str) -> Vec<String> {
        let _ = consumer;
        Vec::new()
    }
}

/// Several sources asked in order: the first that knows the key, the
/// consumer or the plan answers.
#[derive(Debug, Clone, Default)]
pub struct Sources(pub Vec<Arc<dyn ConsumerSource>>);

impl ConsumerSource for Sources {
    fn lookup_key(&self, api: &str, key: &str, now: Ts) -> Option<ConsumerInfo> {
        self.0.iter().find_map(|s| s.lookup_key(api, key, now))
    }
    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        self.0.iter().find_map(|s| s.lookup_consumer(api, id))
    }
    fn plan_limits(&self, id: &str) -> Option<PlanLimits> {
        self.0.iter().find_map(|s| s.plan_limits(id))
    }
    fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
        self.0.iter().find_map(|s| s.open_access(api))
    }
    /// Every source's answer, merged: each group once, in the order first
    /// named.
    fn groups(&self, consumer: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in self.0.iter().flat_map(|s| s.groups(consumer)) {
            if !out.contains(&g) {
                out.push(g);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that knows one consumer's groups and one open API.
    #[derive(Debug)]
    struct One(&'static str, Vec<&'static str>, Option<&'static str>);

    impl ConsumerSource for One {
        fn lookup_key(&self, _: &str, _: &str, _: Ts) -> Option<ConsumerInfo> {
            None
        }
        fn lookup_consumer(&self, _: &str, _: &str) -> Option<ConsumerInfo> {
            None
        }
        fn open_access(&self, api: &str) -> Option<ConsumerInfo> {
            (self.2 == Some(api)).then(|| ConsumerInfo {
                id: "anonymous".into(),
                app: None,
                key_id: None,
                plan: None,
                product: Some(self.0.into()),
            })
        }
        fn groups(&self, consumer: &str) -> Vec<String> {
            if consumer == self.0 {
                self.1.iter().map(|g| g.to_string()).collect()
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn sources_merge_groups_and_ask_each_for_open_access() {
        let a = One("alice", vec!["developers", "partners"], None);
        let b = One("alice", vec!["developers", "beta"], Some("pets"));
        let sources = Sources(vec![Arc::new(a), Arc::new(b)]);
        assert_eq!(sources.groups("alice"), ["developers", "partners", "beta"]);
        assert!(sources.groups("bob").is_empty());
        assert_eq!(
            sources.open_access("pets").unwrap().product.as_deref(),
            Some("alice")
        );
        assert!(sources.open_access("orders").is_none());
    }
}
