//! Replays the committed fuzz corpora on stable: every input that ever found a bug (and the
//! seeds) runs through the same function as its fuzz target, without the fuzzer.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).expect("readable");
            (path, data)
        })
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn decode_frame_corpus() {
    replay("decode_frame", tether_core::fuzzing::decode_frame);
}

#[test]
fn stream_decoder_corpus() {
    replay("stream_decoder", tether_core::fuzzing::stream_decoder);
}

#[test]
fn http_bodies_corpus() {
    replay("http_bodies", tether_core::fuzzing::http_bodies);
}

#[test]
fn frame_roundtrip_corpus() {
    replay("frame_roundtrip", tether_core::fuzzing::frame_roundtrip);
}

#[test]
fn client_ops_corpus() {
    replay("client_ops", tether_core::fuzzing::client_ops);
}

#[test]
fn hub_ops_corpus() {
    replay("hub_ops", tether_core::fuzzing::hub_ops);
}

#[test]
fn sim_corpus() {
    replay("sim", tether_conformance::sim::fuzz);
}
