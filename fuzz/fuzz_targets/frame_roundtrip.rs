//! Fuzz target `frame_roundtrip`: the logic lives in `tether_core::fuzzing::frame_roundtrip`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzzing::frame_roundtrip(data));
