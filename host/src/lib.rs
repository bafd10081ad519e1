//! Tollgate: an API gateway whose policies are sandboxed WebAssembly
//! components.
//!
//! Modules by role: [`server`] (listeners and the request pipeline),
//! [`route`] (normalisation and routing), [`proxy`] (upstreams),
//! [`policy`] (the Wasm runtime), [`manifest`] and [`config`] (TOML files
//! and building a configuration), [`reload`], [`store`], [`error`].
#![deny(unsafe_code)]

pub mod admin;
pub mod client_io;
pub mod config;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod manifest;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod services;
pub mod store;
pub mod tls;
pub mod tls_client;
pub mod toml_errors;
pub mod workers;
