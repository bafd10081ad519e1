//! End-to-end tests: one binary, topic modules, shared helpers in the
//! crate's library.

mod admin;
mod admin_cli;
mod admin_crash;
mod admin_listener;
mod admin_openapi;
mod chain;
mod deadlines;
mod fairness;
mod hostile_h2;
mod hostile_head;
mod hostile_http1;
mod hostile_paths;
mod hostile_slow;
mod identity;
mod isolation;
mod jwt;
mod plugin_guards;
mod policies_cache_log;
mod policies_edge;
mod policies_limits;
mod proxying;
mod reload;
mod routing;
mod sandbox;
mod sdk;
mod services;
mod snapshots;
mod storage_crash;
mod tls;
mod transform_body;
mod ui;
mod upstream_faults;
mod upstream_tls;
