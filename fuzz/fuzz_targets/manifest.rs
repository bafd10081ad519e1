//! Fuzz target `manifest`: the body is `tollgate::fuzzing::manifest` (replayed on
//! stable by tests/tests/fuzz_corpus.rs). See docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::manifest(data));
