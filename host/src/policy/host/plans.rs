//! `tollgate:policy/plans`: a plan's rate limits and quota, from the
//! request's [`ConsumerSource`](crate::domain::consumer::ConsumerSource)
//! (the control plane's plans).

use crate::domain::consumer::PlanLimits;
use crate::domain::time::Period;
use crate::policy::bindings::plans as wit;
use crate::policy::StepState;

/// A plan's limits as the WIT carries them.
fn to_wit(p: PlanLimits) -> wit::PlanLimits {
    wit::PlanLimits {
        plan: p.plan,
        product: p.product,
        rate_limits: p
            .rate_limits
            .iter()
            .map(|l| wit::RateLimit {
                requests: l.requests,
                window_ms: l.window_ms,
            })
            .collect(),
        quota: p.quota.map(|q| wit::Quota {
            calls: q.calls,
            period: match q.period {
                Period::Day => wit::Period::Day,
                Period::Week => wit::Period::Week,
                Period::Month => wit::Period::Month,
            },
        }),
    }
}

impl wit::Host for StepState {
    fn limits(&mut self, plan: String) -> Option<wit::PlanLimits> {
        self.scope.consumers.plan_limits(&plan).map(to_wit)
    }
}
