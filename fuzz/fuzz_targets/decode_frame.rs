//! Fuzz target `decode_frame`: the logic lives in `tether_core::fuzzing::decode_frame`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzzing::decode_frame(data));
