//! The bottom layer: plain types that the data plane, the control plane
//! and the loader all use. Nothing here imports another module of the
//! crate.

pub mod consumer;
pub mod grants;
pub mod oauth;
pub mod time;
pub mod units;
