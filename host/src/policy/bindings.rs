//! The one place the host generates bindings for `tollgate:policy`, both
//! versions it serves: 0.1.0 (`wit/deps/policy-0.1.0`) and 0.2.0 (`wit/`).
//! The host services are 0.1.0's in both: 0.2.0 imports them unchanged, so
//! one implementation serves both. Everything else in the host sees the
//! plain types of [`super`].

/// `tollgate:policy@0.1.0`: the services, the 0.1.0 types and the 0.1.0
/// `policy` export.
pub mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/deps/policy-0.1.0",
        world: "policy-host",
        // Calls into a policy are async so that a long-running guest yields to
        // the executor at every epoch tick instead of holding a worker thread,
        // and so WASI's async host functions run on the ambient tokio runtime.
        exports: { default: async },
        // `send` may wait on the network: async, and trappable so that a call
        // cut short by the step's deadline ends the step as a timeout.
        // The counters and the cache may wait on Redis in cluster mode (at
        // most `[cluster] command-timeout`): async, so a worker thread runs
        // other calls meanwhile.
        imports: {
            "tollgate:policy/http-client.send": async | trappable,
            "tollgate:policy/counters": async,
            "tollgate:policy/cache": async,
        },
    });
}

/// `tollgate:policy@0.2.0`: the call resource and the 0.2.0 `policy`
/// export, over 0.1.0's services and types.
pub mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-host",
        exports: { default: async },
        // Several limits in one call to Redis in cluster mode.
        imports: { "tollgate:policy/limits": async },
        with: {
            "tollgate:policy/types@0.1.0": super::v01::tollgate::policy::types,
            "tollgate:policy/service-types@0.1.0": super::v01::tollgate::policy::service_types,
            "tollgate:policy/log@0.1.0": super::v01::tollgate::policy::log,
            "tollgate:policy/clock@0.1.0": super::v01::tollgate::policy::clock,
            "tollgate:policy/counters@0.1.0": super::v01::tollgate::policy::counters,
            "tollgate:policy/cache@0.1.0": super::v01::tollgate::policy::cache,
            "tollgate:policy/kv@0.1.0": super::v01::tollgate::policy::kv,
            "tollgate:policy/consumers@0.1.0": super::v01::tollgate::policy::consumers,
            "tollgate:policy/http-client@0.1.0": super::v01::tollgate::policy::http_client,
            "tollgate:policy/crypto@0.1.0": super::v01::tollgate::policy::crypto,
            "tollgate:policy/timing@0.1.0": super::v01::tollgate::policy::timing,
            "tollgate:policy/outcome@0.1.0": super::v01::tollgate::policy::outcome,
            "tollgate:policy/sink@0.1.0": super::v01::tollgate::policy::sink,
            "tollgate:policy/plans@0.1.0": super::v01::tollgate::policy::plans,
            "tollgate:policy/calls.call": crate::policy::CallRep,
        },
    });
}

pub use self::v01::tollgate::policy::{
    cache, clock, consumers, counters, crypto, http_client, kv, log, outcome, plans, service_types,
    sink, timing, types,
};
pub use self::v02::tollgate::policy0_2_0::access;
pub use self::v02::tollgate::policy0_2_0::calls;
pub use self::v02::tollgate::policy0_2_0::limits;
pub use self::v02::tollgate::policy0_2_0::types as types2;
