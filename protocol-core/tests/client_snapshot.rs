//! A client restarted from an exported snapshot resumes without loss or duplicate.

mod support;

use support::scripted::*;
use tether_core::client::{
    Client, ClientConfig, ClientSnapshot, ConnectionState, Event, NewMessage,
};
use tether_core::wire::{ClientFrame, Continuity, Position, ServerFrame};

#[test]
fn a_client_started_from_a_snapshot_resumes_without_loss_or_duplicate() {
    let mut before = Scripted::new(key_auth());
    before.connect_new();
    before
        .client
        .attach(before.now, channel("news"))
        .expect("usable");
    before.reply(attached("news", 3, 0, Continuity::Fresh));
    before.reply(delivery("news", 3, 1));
    before.reply(delivery("news", 3, 2));
    for text in ["a", "b"] {
        publish(&mut before, text);
    }
    let sent_before: Vec<ClientFrame> = before
        .take_sent()
        .into_iter()
        .filter(|f| matches!(f, ClientFrame::Publish { .. }))
        .collect();
    before.reply(ServerFrame::Ack {
        serial: 0,
        count: 1,
    });

    // The process dies; its snapshot survives in the application's storage.
    let snapshot = stored_and_loaded(&before.client.snapshot());
    let (client, restored) =
        Client::from_snapshot(ClientConfig::new(key_auth()), [2; 32], snapshot)
            .expect("a valid snapshot");
    assert_eq!(restored.len(), 1, "the unacknowledged publish comes along");
    let mut after = Scripted::from_client(client);
    let frame = after.connect();
    assert!(matches!(frame, ClientFrame::Connect { resume: Some(r), .. } if r == SESSION));
    after.reply(connected(true));
    let sent = after.take_sent();
    assert_eq!(
        sent[0],
        ClientFrame::Attach {
            channel: channel("news"),
            from: Some(Position {
                epoch: 3,
                serial: 2
            })
        }
    );
    assert_eq!(sent[1], sent_before[1], "same serial, same message id");
    after.reply(attached("news", 3, 1, Continuity::Continuous));
    for serial in 2..=3 {
        after.reply(delivery("news", 3, serial));
    }
    after.reply(ServerFrame::Ack {
        serial: 1,
        count: 1,
    });
    let events = after.all_events();
    let delivered: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.position.serial),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![3], "2 was delivered before the restart");
    assert!(events.contains(&Event::PublishResolved {
        id: restored[0],
        result: Ok(())
    }));
    assert_eq!(after.state(), ConnectionState::Connected);
    // New message ids continue the counter: no id is reused.
    publish(&mut after, "c");
    let ClientFrame::Publish { messages, .. } = &after.take_sent()[0] else {
        panic!("a publish");
    };
    let ClientFrame::Publish { messages: old, .. } = &sent_before[1] else {
        panic!("a publish");
    };
    assert_ne!(messages[0].id, old[0].id);
    assert!(
        messages[0]
            .id
            .as_str()
            .starts_with(before.client.instance_id())
    );
}

/// Publishes one message `text` on "news"; the client accepts it.
fn publish(s: &mut Scripted, text: &str) {
    s.client
        .publish(
            s.now,
            channel("news"),
            vec![NewMessage::new("t", text.to_owned())],
        )
        .expect("accepted");
}

/// Stores a snapshot as bytes and loads it back, as an application would across a restart
/// (the snapshot is plain serde; postcard stands in for the application's format).
fn stored_and_loaded(snapshot: &ClientSnapshot) -> ClientSnapshot {
    let bytes = postcard::to_allocvec(snapshot).expect("serializes");
    postcard::from_bytes(&bytes).expect("deserializes")
}

#[test]
fn a_snapshot_with_an_unusable_instance_id_is_refused_not_a_panic_later() {
    let mut snapshot = Scripted::new(key_auth()).client.snapshot();
    snapshot.instance_id = "x".repeat(200);
    let refused = Client::from_snapshot(ClientConfig::new(key_auth()), [2; 32], snapshot.clone());
    assert_eq!(
        refused.err().map(|e| e.code),
        Some(tether_core::ErrorCode::BadRequest)
    );
    snapshot.instance_id = String::new();
    assert!(Client::from_snapshot(ClientConfig::new(key_auth()), [2; 32], snapshot).is_err());
}

/// Issue 20, defect 1 (snapshot variant): a client restored from a snapshot 130 s after it
/// sent a publish found its session gone and resent the publish to a new session after the
/// hub's dedupe window: stored twice. The snapshot keeps when each publish was first sent (on
/// the hub's clock), and such a publish fails with `publish_outcome_unknown` instead.
#[test]
fn a_publish_restored_after_the_dedupe_window_is_not_resent_to_a_new_session() {
    let mut before = Scripted::new(key_auth());
    before.connect_new();
    publish(&mut before, "old");
    before.forget();
    let snapshot = stored_and_loaded(&before.client.snapshot());
    assert!(
        snapshot.publishes[0].first_sent_ms.is_some(),
        "stamped when sent"
    );
    let (client, restored) =
        Client::from_snapshot(ClientConfig::new(key_auth()), [2; 32], snapshot)
            .expect("a valid snapshot");
    let mut after = Scripted::from_client(client);
    after.connect();
    let mut frame = connected(false);
    if let ServerFrame::Connected {
        server_time_ms,
        dedupe_window_ms,
        ..
    } = &mut frame
    {
        *server_time_ms += 130_000;
        *dedupe_window_ms = Some(120_000);
    }
    after.reply(frame);
    let seen = after.take();
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s, Seen::Sent(_, ClientFrame::Publish { .. }))),
        "not resent: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| matches!(
            s,
            Seen::Event(Event::PublishResolved { id, result: Err(e) })
                if *id == restored[0] && e.code == tether_core::ErrorCode::PublishOutcomeUnknown
        )),
        "{seen:?}"
    );
}

/// The snapshot carries the session's next publish serial: after a resume, a new publish
/// takes the serial after the last one used, even when every earlier publish was
/// acknowledged. Reusing a serial would make the hub answer it from its record as a resend
/// of the old publish — acknowledged, never stored (§6.5).
#[test]
fn a_restored_client_continues_its_sessions_publish_serials() {
    let mut before = Scripted::new(key_auth());
    before.connect_new();
    for text in ["a", "b", "c"] {
        publish(&mut before, text);
    }
    before.reply(ServerFrame::Ack {
        serial: 0,
        count: 1,
    });
    before.reply(ServerFrame::Ack {
        serial: 1,
        count: 2,
    });
    assert_eq!(before.client.pending_publishes(), 0);

    let snapshot = stored_and_loaded(&before.client.snapshot());
    assert_eq!(snapshot.next_serial, 3);
    let (client, restored) =
        Client::from_snapshot(ClientConfig::new(key_auth()), [2; 32], snapshot)
            .expect("a valid snapshot");
    assert!(restored.is_empty());
    let mut after = Scripted::from_client(client);
    after.connect();
    after.reply(connected(true));
    after.take_sent();
    publish(&mut after, "d");
    let serials: Vec<u64> = after
        .take_sent()
        .iter()
        .filter_map(|frame| match frame {
            ClientFrame::Publish { serial, .. } => Some(*serial),
            _ => None,
        })
        .collect();
    assert_eq!(serials, vec![3]);
}
