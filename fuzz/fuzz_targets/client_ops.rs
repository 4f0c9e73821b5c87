//! Fuzz target `client_ops`: the logic lives in `tether_core::fuzzing::client_ops`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzzing::client_ops(data));
