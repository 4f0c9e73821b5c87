//! Replays the committed wire vectors, and shows that the runner can fail.

use std::path::Path;

use tether_conformance::wire_vectors::{self, Sender, WireVector};
use tether_conformance::{run_dir, vectors_dir};

fn load(relative: &str) -> WireVector {
    wire_vectors::load(&vectors_dir().join("wire").join(relative)).expect("committed vector")
}

#[test]
fn every_committed_wire_vector_passes() {
    let outcomes = run_dir(&vectors_dir().join("wire")).expect("vectors folder");
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", o.path.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    let count = |kind: &str| {
        outcomes
            .iter()
            .filter(|o| o.path.components().any(|c| c.as_os_str() == kind))
            .count()
    };
    assert!(count("invalid") >= 12, "at least 12 invalid vectors");
    assert!(count("valid") >= 22, "every frame type has a valid vector");
}

#[test]
fn every_frame_type_has_a_valid_vector() {
    let outcomes = wire_vectors::files(&vectors_dir().join("wire").join("valid")).expect("files");
    let mut seen = std::collections::BTreeSet::new();
    for path in outcomes {
        let vector = wire_vectors::load(&path).expect("loads");
        let Some(frame) = vector.frame else {
            // An HTTP binding body: its frames are counted under their own vectors.
            assert!(
                vector.items.is_some(),
                "{}: valid vectors have a frame or items",
                path.display()
            );
            continue;
        };
        let kind = match &frame {
            serde_json::Value::String(unit) => unit.clone(),
            serde_json::Value::Object(map) => map.keys().next().expect("one key").clone(),
            other => panic!("unexpected readable frame {other}"),
        };
        let side = match vector.sender {
            Sender::ClientToServer => "client",
            Sender::ServerToClient => "server",
        };
        seen.insert(format!("{side}:{kind}"));
    }
    let expected = [
        "client:connect",
        "client:auth",
        "client:attach",
        "client:detach",
        "client:publish",
        "client:history_request",
        "client:ping",
        "client:heartbeat",
        "client:close",
        "server:connected",
        "server:authed",
        "server:attached",
        "server:detached",
        "server:ack",
        "server:nack",
        "server:message",
        "server:history_page",
        "server:pong",
        "server:heartbeat",
        "server:error",
        "server:disconnect",
        "server:closed",
    ];
    for kind in expected {
        assert!(seen.contains(kind), "no valid vector for {kind}");
    }
}

#[test]
fn committed_vectors_match_the_recorder() {
    // The recorder is how the files were made; if this fails, either the encoding changed
    // (and the vectors must be reviewed and re-recorded) or a file was edited by hand.
    for (name, recorded) in tether_conformance::record::all_vectors() {
        assert_eq!(load(&name), recorded, "{name}");
    }
}

#[test]
fn a_corrupted_byte_in_a_valid_vector_fails() {
    for name in [
        "valid/client-publish-one.json",
        "valid/server-message.json",
        "valid/server-connected-new.json",
    ] {
        let mut vector = load(name);
        let last = vector.hex.len() - 1;
        let flipped = if &vector.hex[last..] == "0" { "1" } else { "0" };
        vector.hex.replace_range(last.., flipped);
        assert!(
            vector.check().is_err(),
            "{name} passed with a corrupted byte"
        );
    }
}

#[test]
fn a_changed_readable_field_in_a_valid_vector_fails() {
    let mut vector = load("valid/client-ping.json");
    vector.frame = Some(serde_json::json!({"ping": {"id": 8}}));
    assert!(vector.check().is_err());
}

#[test]
fn a_different_expected_code_in_an_invalid_vector_fails() {
    for name in [
        "invalid/truncated-ping.json",
        "invalid/stream-prefix-2-pow-60.json",
        "invalid/unsupported-version.json",
    ] {
        let mut vector = load(name);
        let error = vector.error.as_mut().expect("invalid vector");
        error.code = 40001;
        error.name = "malformed_frame".into();
        assert!(vector.check().is_err(), "{name} passed with another code");
    }
}

#[test]
fn an_invalid_vector_whose_bytes_are_valid_fails() {
    let mut vector = load("invalid/trailing-bytes.json");
    vector.hex = "07".into(); // a plain heartbeat
    assert!(vector.check().is_err());
}

#[test]
fn files_other_than_json_are_not_vectors() {
    let outcomes = run_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path())
        .expect("folder exists");
    assert!(outcomes.is_empty());
}
