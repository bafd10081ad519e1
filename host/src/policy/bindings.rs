//! The one place the host generates bindings for `tollgate:policy`.
//! Everything else in the host sees the plain types of [`super`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy-host",
});

pub use tollgate::policy::{clock, log, types};
