//! Fuzz target `sim`: the logic lives in `tether_conformance::sim::fuzz`, which the normal test suite also runs
//! over the committed corpus (`conformance/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_conformance::sim::fuzz(data));
