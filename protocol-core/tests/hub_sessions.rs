//! Hub scenarios: sessions, resume, replay, gaps, dedupe, history.

mod support;

use std::time::Duration;

use support::hub::*;
use tether_core::ErrorCode;
use tether_core::wire::{
    ClientFrame, Continuity, Direction, HistoryBound, HistoryQuery, Position, ServerFrame,
};

fn attached(frames: &[ServerFrame]) -> (Position, Continuity, Option<ErrorCode>) {
    match frames.first() {
        Some(ServerFrame::Attached {
            position,
            continuity,
            error,
            ..
        }) => (*position, *continuity, error.as_ref().map(|e| e.code)),
        other => panic!("expected attached, got {other:?}"),
    }
}

#[test]
fn resume_within_the_ttl_keeps_serials_and_dedupe() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, session) = h.connect_as("pub");
    assert_eq!(
        h.publish(publisher, 0, "news", vec![message("p:0", "a")]),
        vec![ServerFrame::Ack {
            serial: 0,
            count: 1
        }]
    );
    h.drop_connection(publisher);
    h.advance_alive(&[subscriber], Duration::from_secs(60));
    let (publisher, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected {
            resumed: true,
            error: None,
            ..
        }
    ));
    // The ack was lost: the client sends serial 0 again, same id. Acked again, not stored.
    assert_eq!(
        h.publish(publisher, 0, "news", vec![message("p:0", "a")]),
        vec![ServerFrame::Ack {
            serial: 0,
            count: 1
        }]
    );
    assert_eq!(
        h.publish(publisher, 1, "news", vec![message("p:1", "b")]),
        vec![ServerFrame::Ack {
            serial: 1,
            count: 1
        }]
    );
    assert_eq!(
        delivered(&h.take(subscriber)),
        vec![1, 2],
        "each stored and delivered once"
    );
}

#[test]
fn a_publish_serial_that_skips_ahead_is_a_protocol_error() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("pub");
    let frames = h.publish(id, 5, "news", vec![message("x", "y")]);
    assert_eq!(error_code(&frames), Some(ErrorCode::InvalidPublishSerial));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::InvalidPublishSerial));
}

#[test]
fn resume_after_the_ttl_starts_a_new_session() {
    let mut h = HubHarness::new();
    let (id, session) = h.connect_as("pub");
    h.drop_connection(id);
    h.advance(Duration::from_secs(121));
    assert_eq!(h.hub.stats().sessions, 0, "the expired session was freed");
    let (_, connected) = h.resume("pub", session);
    match connected {
        ServerFrame::Connected {
            resumed: false,
            error: Some(error),
            session: new,
            ..
        } => {
            assert_eq!(error.code, ErrorCode::SessionNotFound);
            assert_ne!(new.session_id, session.session_id);
        }
        other => panic!("expected a new session, got {other:?}"),
    }
}

#[test]
fn resume_with_a_wrong_secret_or_client_id_starts_a_new_session() {
    let mut h = HubHarness::new();
    let (id, mut session) = h.connect_as("pub");
    h.drop_connection(id);
    let (_, connected) = h.resume("someone-else", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: false, .. }
    ));
    session.secret.0[0] ^= 1;
    let (_, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: false, .. }
    ));
}

#[test]
fn resuming_a_live_session_elsewhere_disconnects_the_old_transport() {
    let mut h = HubHarness::new();
    let (old, session) = h.connect_as("pub");
    let (_, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    assert_eq!(h.closed.get(&old), Some(&ErrorCode::SessionReplaced));
}

#[test]
fn a_resumed_attach_replays_missed_messages_in_order_then_goes_live() {
    let mut h = HubHarness::new();
    let (subscriber, session) = h.connect_as("sub");
    let (position, _, _) = attached(&h.attach(subscriber, "news", None));
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("p:0", "a")]);
    let last_seen = Position {
        epoch: position.epoch,
        serial: 1,
    };
    assert_eq!(delivered(&h.take(subscriber)), vec![1]);
    h.drop_connection(subscriber);
    for serial in 1..4 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("p:{serial}"), "x")],
        );
    }
    let (subscriber, _) = h.resume("sub", session);
    let frames = h.attach(subscriber, "news", Some(last_seen));
    assert_eq!(attached(&frames), (last_seen, Continuity::Continuous, None));
    assert_eq!(
        delivered(&frames),
        vec![2, 3, 4],
        "the missed messages, in order"
    );
    h.publish(publisher, 4, "news", vec![message("p:4", "live")]);
    assert_eq!(delivered(&h.take(subscriber)), vec![5]);
}

#[test]
fn a_position_beyond_retention_gets_an_explicit_gap_never_a_partial_replay() {
    let mut config = config();
    config.retention_count = 3;
    let mut h = HubHarness::with(config, 1);
    let (subscriber, _) = h.connect_as("sub");
    let (start, _, _) = attached(&h.attach(subscriber, "news", None));
    h.drop_connection(subscriber);
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..6 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("p:{serial}"), "x")],
        );
    }
    let (subscriber, _) = h.connect_as("sub2");
    let frames = h.attach(subscriber, "news", Some(start));
    assert_eq!(
        attached(&frames),
        (
            Position {
                epoch: start.epoch,
                serial: 6
            },
            Continuity::Gap,
            Some(ErrorCode::HistoryUnavailable)
        )
    );
    assert!(delivered(&frames).is_empty(), "no partial replay");
}

#[test]
fn a_new_hub_starts_new_epochs_so_old_positions_get_a_gap() {
    let mut first = HubHarness::with(config(), 1);
    let (id, _) = first.connect_as("sub");
    let (position, _, _) = attached(&first.attach(id, "news", None));
    let mut restarted = HubHarness::with(config(), 2);
    let (id, _) = restarted.connect_as("sub");
    let (new_position, continuity, error) = attached(&restarted.attach(id, "news", Some(position)));
    assert_ne!(new_position.epoch, position.epoch);
    assert_eq!(continuity, Continuity::Gap);
    assert_eq!(error, Some(ErrorCode::EpochChanged));
}

#[test]
fn a_duplicate_message_id_within_the_window_is_stored_once_and_acked_twice() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (a, _) = h.connect_as("a");
    let (b, _) = h.connect_as("b");
    assert_eq!(
        h.publish(a, 0, "news", vec![message("same", "1")]),
        vec![ServerFrame::Ack {
            serial: 0,
            count: 1
        }]
    );
    // Another session (e.g. a new session after a failed resume) sends the same id.
    assert_eq!(
        h.publish(b, 0, "news", vec![message("same", "1")]),
        vec![ServerFrame::Ack {
            serial: 0,
            count: 1
        }]
    );
    assert_eq!(delivered(&h.take(subscriber)), vec![1]);
    // After the window, the id is forgotten.
    h.advance_alive(&[subscriber, a, b], Duration::from_secs(121));
    h.publish(a, 1, "news", vec![message("same", "1")]);
    assert_eq!(delivered(&h.take(subscriber)), vec![2]);
}

#[test]
fn consecutive_answers_to_one_input_are_coalesced_into_a_range() {
    let mut h = HubHarness::with(
        {
            let mut config = config();
            config.framing = tether_core::client::Framing::Stream;
            config
        },
        1,
    );
    let id = h.accept();
    let mut stream = bytes::BytesMut::new();
    let limits = tether_core::wire::Limits::DEFAULT;
    tether_core::wire::encode_length_prefixed(
        &key_connect("app", "app-secret", None),
        &limits,
        &mut stream,
    )
    .expect("encodes");
    for serial in 0..3 {
        let frame = ClientFrame::Publish {
            serial,
            channel: channel("news"),
            messages: vec![message(&format!("m{serial}"), "x")],
        };
        tether_core::wire::encode_length_prefixed(&frame, &limits, &mut stream).expect("encodes");
    }
    // The harness decodes message framing, so read the hub's raw output here.
    h.hub.handle_bytes(h.stamp(), id, stream.freeze());
    let mut decoder = tether_core::wire::StreamDecoder::<ServerFrame>::new(
        tether_core::wire::Limits::PROTOCOL_MAX,
    );
    while let Some(output) = h.hub.poll_output() {
        if let tether_core::server::HubOutput::Transmit { bytes, .. } = output {
            decoder.push(&bytes);
        }
    }
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("valid stream") {
        frames.push(frame);
    }
    assert!(matches!(frames[0], ServerFrame::Connected { .. }));
    assert_eq!(
        frames[1..],
        [ServerFrame::Ack {
            serial: 0,
            count: 3
        }]
    );
}

#[test]
fn history_pages_forwards_and_backwards_cover_every_message_once() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("pub");
    for serial in 0..10 {
        h.publish(
            id,
            serial,
            "news",
            vec![message(&format!("m{serial}"), "x")],
        );
    }
    for direction in [Direction::Forwards, Direction::Backwards] {
        let mut query = Some(HistoryQuery {
            start: None,
            end: None,
            direction,
            limit: 4,
        });
        let mut seen = Vec::new();
        let mut pages = 0;
        while let Some(q) = query {
            h.send(
                id,
                &ClientFrame::HistoryRequest {
                    request_id: pages,
                    channel: channel("news"),
                    query: q,
                },
            );
            let frames = h.take(id);
            let [
                ServerFrame::HistoryPage {
                    messages,
                    next,
                    error: None,
                    ..
                },
            ] = frames.as_slice()
            else {
                panic!("a page: {frames:?}");
            };
            seen.extend(messages.iter().map(|m| m.position.serial));
            query = *next;
            pages += 1;
            assert!(pages <= 3);
        }
        let mut expected: Vec<u64> = (1..=10).collect();
        if direction == Direction::Backwards {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{direction:?}");
    }
}

#[test]
fn history_by_position_range_and_refusals() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("pub");
    for serial in 0..10 {
        h.publish(
            id,
            serial,
            "news",
            vec![message(&format!("m{serial}"), "x")],
        );
    }
    let Some(ServerFrame::HistoryPage { messages, .. }) = ({
        h.send(
            id,
            &ClientFrame::HistoryRequest {
                request_id: 0,
                channel: channel("news"),
                query: HistoryQuery::default(),
            },
        );
        h.take(id).pop()
    }) else {
        panic!("a page");
    };
    let epoch = messages[0].position.epoch;
    let query = HistoryQuery {
        start: Some(HistoryBound::Position(Position { epoch, serial: 3 })),
        end: Some(HistoryBound::Position(Position { epoch, serial: 5 })),
        direction: Direction::Forwards,
        limit: 100,
    };
    h.send(
        id,
        &ClientFrame::HistoryRequest {
            request_id: 1,
            channel: channel("news"),
            query,
        },
    );
    let frames = h.take(id);
    assert!(
        matches!(&frames[0], ServerFrame::HistoryPage { messages, next: None, .. }
        if messages.iter().map(|m| m.position.serial).collect::<Vec<_>>() == vec![3, 4, 5])
    );
    let bad = HistoryQuery {
        limit: 1001,
        ..HistoryQuery::default()
    };
    h.send(
        id,
        &ClientFrame::HistoryRequest {
            request_id: 2,
            channel: channel("news"),
            query: bad,
        },
    );
    assert!(
        matches!(&h.take(id)[0], ServerFrame::HistoryPage { error: Some(e), .. } if e.code == ErrorCode::InvalidHistoryQuery)
    );
    let (reader, _) = h.open(&key_connect("reader", "reader-secret", None));
    h.send(
        reader,
        &ClientFrame::HistoryRequest {
            request_id: 3,
            channel: channel("news"),
            query: HistoryQuery::default(),
        },
    );
    assert!(
        matches!(&h.take(reader)[0], ServerFrame::HistoryPage { error: None, messages, .. } if messages.len() == 10)
    );
}

#[test]
fn close_ends_the_session_for_good() {
    let mut h = HubHarness::new();
    let (id, session) = h.connect_as("pub");
    h.send(id, &ClientFrame::Close);
    assert_eq!(h.take(id), vec![ServerFrame::Closed]);
    assert!(h.closed.contains_key(&id));
    let (_, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: false, .. }
    ));
}

#[test]
fn an_empty_channel_keeps_its_epoch_for_a_dropped_subscriber_to_resume() {
    // Regression: the channel was freed when its only subscriber dropped, so the resume
    // from (epoch, 0) met a new epoch and reported a false gap.
    let mut h = HubHarness::new();
    let (subscriber, session) = h.connect_as("sub");
    let (start, _, _) = attached(&h.attach(subscriber, "news", None));
    h.drop_connection(subscriber);
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("p:0", "x")]);
    let (subscriber, _) = h.resume("sub", session);
    let frames = h.attach(subscriber, "news", Some(start));
    assert_eq!(attached(&frames), (start, Continuity::Continuous, None));
    assert_eq!(delivered(&frames), vec![1]);
}

#[test]
fn an_unused_channel_is_freed_at_once_and_its_position_remembered() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("sub");
    let (start, _, _) = attached(&h.attach(id, "news", None));
    h.send(
        id,
        &ClientFrame::Detach {
            channel: channel("news"),
        },
    );
    h.take(id);
    assert_eq!(h.hub.stats().channels, 0);
    assert_eq!(h.hub.stats().remembered_positions, 1);
    let frames = h.attach(id, "news", Some(start));
    assert_eq!(attached(&frames), (start, Continuity::Continuous, None));
}

#[test]
fn at_the_session_limit_the_session_dropped_longest_ago_makes_room() {
    let mut config = config();
    config.max_sessions = 2;
    let mut h = HubHarness::with(config, 1);
    let (a, session_a) = h.connect_as("a");
    h.drop_connection(a);
    h.advance(Duration::from_secs(1));
    let (b, session_b) = h.connect_as("b");
    h.drop_connection(b);
    let (_, _) = h.connect_as("c");
    assert_eq!(h.hub.stats().sessions, 2);
    assert!(h.events.iter().any(|e| matches!(
        e,
        tether_core::server::HubEvent::SessionExpired { session } if *session == session_a.session_id
    )));
    let (_, connected) = h.resume("b", session_b);
    assert!(
        matches!(connected, ServerFrame::Connected { resumed: true, .. }),
        "b was kept"
    );
}

/// Issue 20, defect 1: the dedupe window (120 s from storing) ran out while the session —
/// whose TTL runs from when the drop was detected — was still alive. A resend 127 s after
/// the message was stored, same serial and id, was stored at a second position and
/// delivered twice. A resumed session answers a serial it already processed from its record,
/// for as long as it lives.
#[test]
fn a_resend_after_the_dedupe_window_is_answered_from_the_session_record() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, session) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("p:0", "a")]);
    // The link dies silently; the drop is noticed 26 s later; the client is back at 127 s.
    h.advance_alive(&[subscriber, publisher], Duration::from_secs(26));
    h.drop_connection(publisher);
    h.advance_alive(&[subscriber], Duration::from_secs(101));
    let (publisher, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    assert_eq!(
        h.publish(publisher, 0, "news", vec![message("p:0", "a")]),
        vec![ServerFrame::Ack {
            serial: 0,
            count: 1
        }],
        "acknowledged again, from the record"
    );
    assert_eq!(
        delivered(&h.take(subscriber)),
        vec![1],
        "stored and delivered once"
    );
}

/// Issue 20, item 10: a resent serial whose message ids are not the ones it first carried
/// is refused (`invalid_publish_serial`) and stores nothing; a serial older than the
/// session's record is refused with `publish_outcome_unknown`.
#[test]
fn a_resend_with_other_messages_or_beyond_the_record_is_refused() {
    let mut config = config();
    config.publish_record = 2;
    let mut h = HubHarness::with(config, 1);
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..3 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("p:{serial}"), "x")],
        );
    }
    let other = h.publish(publisher, 2, "news", vec![message("q:9", "y")]);
    assert!(
        matches!(&other[..], [ServerFrame::Nack { serial: 2, error, .. }] if error.code == ErrorCode::InvalidPublishSerial),
        "{other:?}"
    );
    let forgotten = h.publish(publisher, 0, "news", vec![message("p:0", "x")]);
    assert!(
        matches!(&forgotten[..], [ServerFrame::Nack { serial: 0, error, .. }] if error.code == ErrorCode::PublishOutcomeUnknown),
        "{forgotten:?}"
    );
    assert_eq!(
        delivered(&h.take(subscriber)),
        vec![1, 2, 3],
        "nothing stored twice"
    );
}

/// Found by a reviewer: with `min_heartbeat_interval` above `max_heartbeat_interval` (a
/// configuration `HubConfig::validate` refuses, but a hub built without it) the first
/// connect panicked in `Duration::clamp` and stopped the server. The hub never panics on
/// its configuration: the interval is bounded by the maximum, then the minimum.
#[test]
fn regression_crossed_heartbeat_bounds_do_not_panic_the_hub() {
    let mut config = config();
    config.min_heartbeat_interval = Duration::from_secs(600);
    config.max_heartbeat_interval = Duration::from_secs(60);
    assert!(config.validate().is_err());
    let mut h = HubHarness::with(config, 1);
    let (connection, _) = h.connect_as("alice");
    assert!(!h.closed.contains_key(&connection));
}
