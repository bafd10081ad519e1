//! Fuzz target `jwt`: the `jwt` plugin, built natively, checking tokens
//! with the host's crypto service. The body is shared/jwt.rs (replayed on
//! stable by tests/tests/fuzz_corpus.rs). See docs/fuzzing.md.
#![no_main]

#[path = "../shared/jwt.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
