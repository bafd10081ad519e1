//! A step's canary (`canary = { plugin, percent, config, rollback }`): the
//! second version built like the step itself — its plugin found and
//! compiled, its configuration checked by that plugin's `configure`, with
//! the step's limits and grants — and its rollback limits in range. Errors
//! point at the `canary` key at fault.

use super::step::{StepLimits, StepSite};
use super::Build;
use crate::domain::grants::Grants;
use crate::manifest::{CanarySpec, Percent, StepSpec};
use crate::policy::canary::{check_rollback_limits, RollbackLimits, CANARY_SUFFIX};
use crate::policy::Step;

impl Build<'_> {
    /// The canary version of the step at `site`, its share (in hundredths
    /// of a percent) and rollback limits; `None` when it has an error (then
    /// reported).
    pub(super) fn canary(
        &mut self,
        site: &StepSite,
        spec: &StepSpec,
        c: &CanarySpec,
        limits: StepLimits,
        grants: Grants,
    ) -> Option<(Step, u32, RollbackLimits)> {
        let rollback = rollback_limits(site, c).map_err(|e| self.errs.push(e)).ok();
        let plugin = self.plugin_named(site, &c.plugin, "canary.plugin")?;
        let config = c.config.as_ref().or(spec.config.as_ref());
        let name = format!("{}{CANARY_SUFFIX}", site.name);
        let step = self.configure_version(
            site,
            spec,
            (&name, "canary.", config),
            plugin,
            limits,
            grants,
        )?;
        Some((step, c.percent.0, rollback?))
    }
}

/// The canary's rollback limits: its own keys, else the defaults.
fn rollback_limits(site: &StepSite, c: &CanarySpec) -> Result<RollbackLimits, String> {
    let d = RollbackLimits::default();
    let r = c.rollback.unwrap_or_default();
    let limits = RollbackLimits {
        failures: r.failures.map_or(d.failures, |Percent(p)| p),
        min_calls: r.min_calls.unwrap_or(d.min_calls),
        window: r.window.map_or(d.window, |w| w.0),
    };
    check_rollback_limits(&limits).map_err(|e| {
        let key = e.split(" = ").next().unwrap_or_default();
        format!("{}: {e}", site.at(&format!("canary.{key}")))
    })?;
    Ok(limits)
}
