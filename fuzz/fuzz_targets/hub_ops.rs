//! Fuzz target `hub_ops`: the logic lives in `tether_core::fuzzing::hub_ops`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_core::fuzzing::hub_ops(data));
