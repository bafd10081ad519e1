//! Tools for policy authors, behind `tollgate policy ...`: a new policy
//! crate ([`scaffold`]), its release build and the rebuild loop
//! ([`build`]), and the test host that runs the built `.wasm` for
//! `tollgate-policy-test` ([`test_host`], over the JSON shapes of
//! [`wire`]).

pub mod build;
pub mod scaffold;
pub mod test_host;
pub mod wire;
