//! How a step can fail: at run time ([`PolicyError`], mapped to a status by
//! `gateway::error`) and at load ([`StepConfigError`]).

use super::deadline::TimeoutKind;
use std::time::Duration;

/// Why a step failed. Each maps to a status in [`crate::gateway::error`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("step `{step}` trapped: {detail}")]
    Trap { step: String, detail: String },
    /// `kind` says which limit: the step's running time (`timeout`) or
    /// the wall-clock bound of the whole phase (`wall-timeout`).
    #[error("step `{step}` exceeded its {kind} deadline of {limit:?}")]
    Timeout {
        step: String,
        limit: Duration,
        kind: TimeoutKind,
    },
    #[error("step `{step}` exceeded its memory cap of {limit} bytes")]
    Memory { step: String, limit: usize },
    #[error("step `{step}`: no policy instance free (limit reached)")]
    Busy { step: String },
    #[error("step `{step}` returned an invalid result: {detail}")]
    BadOutput { step: String, detail: String },
    /// Not run: the step failed repeatedly and is quarantined (see
    /// [`super::gate`]) for `left` more.
    #[error("step `{step}` is quarantined after repeated failures ({left:?} left)")]
    Quarantined { step: String, left: Duration },
    /// Not run: `limit` calls of the step were running and no place came
    /// free within `waited`.
    #[error("step `{step}`: {limit} calls of it already running; none finished within {waited:?}")]
    Saturated {
        step: String,
        limit: usize,
        waited: Duration,
    },
}

impl PolicyError {
    /// The step that failed.
    pub fn step(&self) -> &str {
        match self {
            PolicyError::Trap { step, .. }
            | PolicyError::Timeout { step, .. }
            | PolicyError::Memory { step, .. }
            | PolicyError::Busy { step }
            | PolicyError::BadOutput { step, .. }
            | PolicyError::Quarantined { step, .. }
            | PolicyError::Saturated { step, .. } => step,
        }
    }

    /// What went wrong, as a metric label (`tollgate_step_outcomes_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Trap { .. } => "trap",
            PolicyError::Timeout {
                kind: TimeoutKind::Wall,
                ..
            } => "wall_timeout",
            PolicyError::Timeout { .. } => "timeout",
            PolicyError::Memory { .. } => "memory",
            PolicyError::Busy { .. } => "busy",
            PolicyError::BadOutput { .. } => "bad_output",
            PolicyError::Quarantined { .. } => "quarantined",
            PolicyError::Saturated { .. } => "saturated",
        }
    }
}

/// A rejected step configuration, before the caller adds file and API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepConfigError {
    /// The plugin's own validation said no.
    #[error("{}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Rejected {
        field: Option<String>,
        message: String,
    },
    /// The plugin imports host services the step was not granted.
    #[error("plugin `{plugin}` uses {missing}, which this step was not granted: add them to the step's `grants`")]
    NotGranted { plugin: String, missing: String },
    /// The plugin failed while validating.
    #[error("the plugin failed while checking its configuration: {0}")]
    Failed(String),
}
