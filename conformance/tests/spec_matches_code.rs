//! `docs/protocol.md` stays true: its error table and frame tags are checked against the code
//! and the committed vectors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tether_conformance::{vectors_dir, wire_vectors};
use tether_core::ErrorCode;
use tether_core::wire::hex;

fn spec() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

/// Table rows of the spec section whose heading starts with `heading`.
fn rows(spec: &str, heading: &str) -> Vec<Vec<String>> {
    let start = spec.find(heading).expect("section exists");
    spec[start..]
        .lines()
        .skip(1)
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

#[test]
fn error_table_lists_every_code_with_its_name() {
    let table: BTreeMap<u32, String> = rows(&spec(), "## 9. Error codes")
        .into_iter()
        .map(|row| (row[0].parse().expect("numeric code"), row[1].clone()))
        .collect();
    assert_eq!(table.len(), ErrorCode::ALL.len(), "one row per code");
    for code in ErrorCode::ALL {
        assert_eq!(
            table.get(&code.as_u32()).map(String::as_str),
            Some(code.name()),
            "{code}"
        );
    }
}

#[test]
fn frame_tags_in_the_spec_match_the_encoding() {
    let spec = spec();
    for (heading, side, prefix) in [
        ("### 4.1", wire_vectors::Sender::ClientToServer, "client-"),
        ("### 4.2", wire_vectors::Sender::ServerToClient, "server-"),
    ] {
        let tags: BTreeMap<String, u8> = rows(&spec, heading)
            .into_iter()
            .map(|row| (row[1].clone(), row[0].parse().expect("numeric tag")))
            .collect();
        let files = wire_vectors::files(&vectors_dir().join("wire/valid")).expect("vectors");
        let mut checked = 0;
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.starts_with(prefix) {
                continue;
            }
            let vector = wire_vectors::load(&path).expect("loads");
            assert_eq!(vector.sender, side);
            let frame = vector.frame.expect("valid vector");
            let kind = match &frame {
                serde_json::Value::String(unit) => unit.clone(),
                serde_json::Value::Object(map) => map.keys().next().expect("one key").clone(),
                other => panic!("unexpected {other}"),
            };
            let first = hex::decode(&vector.hex).expect("hex")[0];
            assert_eq!(tags.get(&kind), Some(&first), "{name}: spec tag of {kind}");
            checked += 1;
        }
        assert!(checked >= tags.len(), "every tag of {heading} checked");
    }
}
