//! Fuzz target `http_bodies`: the logic lives in `tether_core::fuzzing::http_bodies`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzzing::http_bodies(data));
