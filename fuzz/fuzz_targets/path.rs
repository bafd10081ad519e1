//! Fuzz target `path`: the body is `tollgate::fuzzing::path` (replayed on
//! stable by tests/tests/fuzz_corpus.rs). See docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate::fuzzing::path(data));
