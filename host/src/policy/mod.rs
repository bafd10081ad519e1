//! The policy runtime: loads plugins, checks step configurations, and runs
//! one step of a chain on a fresh, sandboxed instance.
//!
//! Isolation model (the default, `request` isolation; a step may choose
//! `worker` isolation instead, see [`reuse`]): every request gets a fresh
//! instance per step (from a
//! pre-linked `InstancePre` and the pooling allocator), used for that
//! request's `on-request` and `on-response` and then dropped. The instance
//! comes from the step's configured snapshot once that is built (the plugin
//! with `configure` already run for the step's configuration, see
//! [`snapshot`]); until then it is configured first. Once the snapshot has
//! its in-guest reset (`reset`), an instance whose request went well is put
//! back into the snapshot's exact state and serves the next request instead
//! of being dropped. Nothing a plugin keeps in memory can reach another
//! request, and a trapped instance is never called again (see
//! `benches/instances.rs` for the cost compared with reusing instances).
//!
//! Where each part is:
//!
//! * `bindings` — the `bindgen!`s of the `tollgate:policy` WIT package,
//!   0.1.0 and 0.2.0;
//! * [`engine`] — the wasmtime engine, its limits and epoch ticks;
//! * `plugin` — a loaded plugin ([`Plugin`]) and its type-checked exports;
//! * `runtime` — [`Runtime`], [`Step`] and [`StepInstance`];
//! * `state` — [`StepState`], the store data a step's imports see, and
//!   [`RequestScope`];
//! * [`host`] — the host side of the WIT imports, one file per interface,
//!   each with its backend;
//! * `checks` — checks on what a step returns; [`output`] — the bounds on
//!   its headers checked before they are lifted;
//! * [`guard`] — log and stderr budgets; [`snapshot`] — configured snapshots;
//! * `reset` — the in-guest reset added to snapshots, with which `request`
//!   isolation reuses instances;
//! * [`reuse`] — the pools of instances kept per worker thread (warm ones
//!   under `worker` isolation, reset ones under `request`);
//! * [`gate`] — each step's quarantine and concurrency bound;
//! * [`canary`] — a step's second version, its share, figures and rollback.

mod bindings;
pub mod canary;
mod checks;
pub mod condition;
pub mod deadline;
pub mod engine;
mod error;
pub mod gate;
pub mod guard;
pub mod host;
pub mod output;
mod plugin;
mod reset;
pub mod reuse;
mod runtime;
pub mod snapshot;
mod state;

pub use bindings::log::Level as LogLevel;
pub use bindings::types::{
    BodyAccess, CallContext, ConfigError as WitConfigError, Consumer, Header, HeaderOp,
    RequestHead, Response, ResponseDecision, ResponseEdits, ResponseHead,
};
/// 0.2.0's: request-phase response headers, and `phases` (0.1.0 plugins'
/// decisions and info are converted to these).
pub use bindings::types2::{Phases, PolicyInfo, RequestDecision, RequestEdits};
pub use checks::{
    apply_header_ops, check_header_ops, check_path, check_query, check_response, is_framing_header,
    MAX_HEADERS_OUT,
};
pub use deadline::TimeoutKind;
pub use engine::{EngineLimits, PolicyEngine};
pub use error::{PolicyError, StepConfigError};
pub use host::log::{escape_log, escape_log_within};
pub use plugin::Plugin;
pub use plugin::Version as PolicyVersion;
pub use reuse::{Isolation, ReuseCounts};
pub use runtime::{Runtime, Step, StepInstance};
pub use state::{RequestScope, StepState};

use plugin::Exports;

/// The host side of a `tollgate:policy/calls.call` handle: a phase's call,
/// whose data the store holds while the phase runs ([`StepState`]).
pub struct CallRep;
