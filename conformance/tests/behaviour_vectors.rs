//! Replays the committed client and hub behaviour vectors, and shows the runner can fail.

use serde_json::Value;
use tether_conformance::behaviour::{self, BehaviourVector};
use tether_conformance::{behaviour_record, run_dir, vectors_dir, wire_vectors};

fn load(relative: &str) -> BehaviourVector {
    behaviour::load(&vectors_dir().join(relative)).expect("committed vector")
}

fn count(kind: &str) -> usize {
    wire_vectors::files(&vectors_dir().join(kind))
        .expect("folder")
        .len()
}

#[test]
fn every_committed_behaviour_vector_passes() {
    for kind in ["client", "hub"] {
        let outcomes = run_dir(&vectors_dir().join(kind)).expect("folder");
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
    }
    assert!(count("client") >= 40, "at least 40 client vectors");
    assert!(count("hub") >= 30, "at least 30 hub vectors");
}

#[test]
fn committed_behaviour_vectors_match_the_recorder() {
    for (name, recorded) in behaviour_record::all_vectors() {
        assert_eq!(
            load(&name),
            recorded,
            "{name}: re-record and review the change"
        );
    }
}

/// Every (step, output) position of a vector.
fn output_slots(vector: &BehaviourVector) -> Vec<(usize, usize)> {
    let outputs: Vec<&Vec<Value>> = if vector.client_steps.is_empty() {
        vector.hub_steps.iter().map(|s| &s.outputs).collect()
    } else {
        vector.client_steps.iter().map(|s| &s.outputs).collect()
    };
    outputs
        .iter()
        .enumerate()
        .flat_map(|(step, list)| (0..list.len()).map(move |index| (step, index)))
        .collect()
}

fn outputs_mut(vector: &mut BehaviourVector, step: usize) -> &mut Vec<Value> {
    if vector.client_steps.is_empty() {
        &mut vector.hub_steps[step].outputs
    } else {
        &mut vector.client_steps[step].outputs
    }
}

#[test]
fn corrupting_any_single_expected_output_makes_the_runner_fail() {
    for name in [
        "client/resume-success-resends-same-serials.json",
        "client/gap-discontinuity.json",
        "client/token-renewal-in-band.json",
        "hub/resume-replay.json",
        "hub/slow-consumer.json",
        "hub/token-auth.json",
    ] {
        let vector = load(name);
        let slots = output_slots(&vector);
        assert!(!slots.is_empty(), "{name} has outputs");
        for (step, index) in slots {
            // Replace the output by a different, well-formed one.
            let mut changed = vector.clone();
            outputs_mut(&mut changed, step)[index] = serde_json::json!({"event": "something_else"});
            assert!(
                changed.check().is_err(),
                "{name}: output {index} of step {step} replaced"
            );
            // Drop it.
            let mut dropped = vector.clone();
            outputs_mut(&mut dropped, step).remove(index);
            assert!(
                dropped.check().is_err(),
                "{name}: output {index} of step {step} removed"
            );
        }
    }
}

#[test]
fn a_changed_deadline_or_an_extra_output_makes_the_runner_fail() {
    let mut vector = load("client/liveness-timeout.json");
    let step = &mut vector.client_steps[2];
    step.next_deadline_ms = step.next_deadline_ms.map(|d| d + 1);
    assert!(vector.check().is_err());
    let mut vector = load("hub/heartbeat-when-idle.json");
    vector.hub_steps[1]
        .outputs
        .push(serde_json::json!({"event": "extra"}));
    assert!(vector.check().is_err());
}

/// Issue 20, defect 9: the runner passed a vector whose steps were deleted and one relabelled
/// from hub to client. Both are refused with a message saying why.
#[test]
fn vectors_that_check_nothing_are_refused_with_a_clear_message() {
    let mut emptied = load("client/publish-ack.json");
    emptied.client_steps.clear();
    let error = emptied.check().expect_err("no steps");
    assert!(
        error.contains("without `client_steps` checks nothing"),
        "{error}"
    );

    let mut relabelled = load("hub/key-auth.json");
    relabelled.machine = behaviour::Machine::Client;
    let error = relabelled.check().expect_err("relabelled");
    assert!(error.contains("needs `client` settings"), "{error}");
    relabelled.client = Some(behaviour::ClientSettings::default());
    let error = relabelled.check().expect_err("relabelled with settings");
    assert!(error.contains("relabelled"), "{error}");

    let mut silent = load("client/publish-ack.json");
    for step in &mut silent.client_steps {
        step.outputs.clear();
        step.next_deadline_ms = None;
    }
    let error = silent.validate().expect_err("records nothing");
    assert!(error.contains("checks nothing"), "{error}");
}
