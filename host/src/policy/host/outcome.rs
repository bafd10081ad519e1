//! `tollgate:policy/outcome`: who made the call's response (the upstream, a
//! step, or the gateway), for `on-response` steps such as access logs.

use crate::policy::bindings;
use crate::policy::StepState;

impl bindings::outcome::Host for StepState {
    fn origin(&mut self) -> Option<bindings::outcome::ResponseOrigin> {
        use super::timing::ResponseOrigin as O;
        use bindings::outcome::ResponseOrigin as Origin;
        let t = self.scope.timing.lock().unwrap_or_else(|p| p.into_inner());
        Some(match t.origin.as_ref()? {
            O::Upstream(status) => Origin::Upstream(*status),
            O::Step(name) => Origin::Step(name.to_string()),
            O::Gateway(status) => Origin::Gateway(*status),
        })
    }
}
