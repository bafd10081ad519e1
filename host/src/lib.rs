//! Tollgate: an API gateway whose policies are sandboxed WebAssembly
//! components.
//!
//! The modules form layers; a module imports only from the layers below it
//! (`scripts/check-layers` enforces it in `scripts/test`):
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 0 | [`domain`], [`store`] | types both planes share: time, periods, consumers, grants; the sled store |
//! | 1 | [`observe`] | metrics, traces and the analytics store |
//! | 1b | [`cluster`] | Redis for cluster mode: shared rate limits, quotas and cache, its breaker and scripts |
//! | 2 | [`manifest`], [`net`], [`route`] | the TOML files, TLS and sockets, routing |
//! | 3 | [`upstream`], [`policy`], [`record`], [`openapi`] | the upstream client; the Wasm policy runtime and the host side of its WIT imports; recording calls to trace files; OpenAPI documents read, imported and exported |
//! | 4 | [`loader`], [`author`], [`replay`] | builds a configuration generation from the files, level by level; tools for policy authors; replaying recorded calls against two versions of a policy |
//! | 5 | [`gateway`] | the data plane: listeners and the request pipeline |
//! | 6 | [`control`] | the control plane: admin API, reloads, manifest edits |
//! | 7 | [`portal`] | the developer portal: consumers' pages on their own listener |
//! | 8 | [`app`], [`demo`] | the composition root; the demo upstream |
#![deny(unsafe_code)]

pub mod app;
pub mod author;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod loader;
pub mod manifest;
pub mod net;
pub mod observe;
pub mod openapi;
pub mod policy;
pub mod portal;
pub mod record;
pub mod replay;
pub mod route;
pub mod store;
pub mod upstream;
