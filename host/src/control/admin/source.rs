//! The registry as a [`ConsumerSource`]: keys issued through the admin API,
//! the callers their subscriptions admit, and the plans' limits as policies
//! see them. The composition root (`app`) injects it into the policy
//! services; the loader asks it after each generation's manifests.

use super::model::Plan;
use super::registry::Registry;
use crate::domain::consumer::{ConsumerInfo, ConsumerSource, PlanLimits, Quota, RateLimit};
use crate::domain::time::Ts;

impl ConsumerSource for Registry {
    fn lookup_key(&self, api: &str, key: &str, now: Ts) -> Option<ConsumerInfo> {
        Registry::lookup_key(self, api, key, now)
    }

    fn lookup_consumer(&self, api: &str, id: &str) -> Option<ConsumerInfo> {
        self.lookup_principal(api, id)
    }

    fn plan_limits(&self, id: &str) -> Option<PlanLimits> {
        self.plan(id).map(plan_limits)
    }
}

/// What a plan allows, without its admin-only fields.
fn plan_limits(p: Plan) -> PlanLimits {
    PlanLimits {
        plan: p.id,
        product: p.product,
        rate_limits: p
            .rate_limits
            .iter()
            .map(|l| RateLimit {
                requests: l.requests,
                window_ms: l.per.window_ms(),
            })
            .collect(),
        quota: p.quota.map(|q| Quota {
            calls: q.calls,
            period: q.period,
        }),
    }
}
