//! Fuzz target `wit_boundary`: the body is `tollgate_fuzz_targets::wit_boundary` (replayed on
//! stable by tests/tests/fuzz_corpus.rs). See docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz_targets::wit_boundary(data));
