//! `tollgate:policy/timing`: how long the call has taken so far, the
//! upstream's share and (with the `timing` grant) each step's. The server
//! fills [`CallTiming`] in as the call proceeds; `outcome` reads its
//! [`ResponseOrigin`].

use crate::policy::bindings;
use crate::policy::host::Capability;
use crate::policy::StepState;
use std::time::Instant;

/// Per-call timing, filled in by the server as the call proceeds.
#[derive(Debug, Clone)]
pub struct CallTiming {
    pub start: Instant,
    pub upstream_us: u64,
    pub steps: Vec<(String, u64)>,
    /// Who made the response as it stands (`None` until there is one), for
    /// the `outcome` interface.
    pub origin: Option<ResponseOrigin>,
    /// What `total-us` answers instead of the time since `start`: set only
    /// by the policy test host, whose harness fixes the timing a test sees.
    pub fixed_total_us: Option<u64>,
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
            fixed_total_us: None,
        }
    }
}

impl Default for CallTiming {
    fn default() -> Self {
        Self::new()
    }
}

impl bindings::timing::Host for StepState {
    fn now(&mut self) -> bindings::timing::CallTiming {
        let t = self.scope.timing.lock().unwrap_or_else(|p| p.into_inner());
        bindings::timing::CallTiming {
            total_us: t
                .fixed_total_us
                .unwrap_or_else(|| t.start.elapsed().as_micros() as u64),
            upstream_us: t.upstream_us,
            steps: if self.grants.has(&Capability::Timing) {
                t.steps.clone()
            } else {
                Vec::new()
            },
        }
    }
}
