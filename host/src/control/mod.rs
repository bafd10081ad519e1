//! The control plane: the admin REST API and its registry ([`admin`]),
//! configuration reloads and the file watcher ([`reload`]). The data plane
//! ([`crate::gateway`]) never imports anything from here.

pub mod admin;
pub mod oauth;
pub mod plane;
pub mod record_edit;
pub mod reload;
pub mod replica;

pub use plane::{ControlPlane, EditError, ReloadOutcome};
