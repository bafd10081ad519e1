//! Fuzz target `wit_boundary`: the body is `tollgate::fuzzing::wit_boundary` (replayed on
//! stable by tests/tests/fuzz_corpus.rs). See docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::wit_boundary(data));
