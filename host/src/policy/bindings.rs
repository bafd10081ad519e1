//! The one place the host generates bindings for `tollgate:policy`.
//! Everything else in the host sees the plain types of [`super`].

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy-host",
    // Calls into a policy are async so that a long-running guest yields to
    // the executor at every epoch tick instead of holding a worker thread,
    // and so WASI's async host functions run on the ambient tokio runtime.
    exports: { default: async },
    // `send` may wait on the network: async, and trappable so that a call
    // cut short by the step's deadline ends the step as a timeout.
    imports: { "tollgate:policy/http-client.send": async | trappable },
});

pub use self::tollgate::policy::{
    cache, clock, consumers, counters, crypto, http_client, kv, log, outcome, plans, service_types,
    sink, timing, types,
};
