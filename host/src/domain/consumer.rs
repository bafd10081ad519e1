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
    /// The groups consumer `id` belongs to, where this source knows it.
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
    fn groups(&self, consumer: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|s| s.groups(consumer))
            .find(|g| !g.is_empty())
            .unwrap_or_default()
    }
}
