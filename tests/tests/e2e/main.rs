//! End-to-end tests: one binary, topic modules, shared helpers in the
//! crate's library.

mod chain;
mod policies_edge;
mod proxying;
mod reload;
mod routing;
mod sandbox;
mod tls;
mod transform_body;
mod ui;
