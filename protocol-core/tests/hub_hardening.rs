//! Issue 13's defects in the hub, each kept as the regression test that failed on the old
//! code: outbound memory bounded for every frame kind, closed connections counted against
//! the cap until their transport ends, one token-expiry timer per session.

mod support;

use std::time::Duration;

use support::hub::*;
use tether_core::ErrorCode;
use tether_core::wire::{ClientFrame, Direction, HistoryQuery, ServerFrame};

fn history_request(request_id: u64) -> ClientFrame {
    ClientFrame::HistoryRequest {
        request_id,
        channel: channel("hist"),
        query: HistoryQuery {
            start: None,
            end: None,
            direction: Direction::Backwards,
            limit: 1,
        },
    }
}

/// Issue 13, defect 1: answers to a client's own requests queued without limit (20,000
/// `history_request`s of a client that never reads grew the server to 1 GB). Every frame now
/// counts toward the connection's pending bytes: past the limit it is a slow consumer.
#[test]
fn history_pages_for_a_client_that_never_reads_count_toward_its_pending_bytes() {
    let mut h = HubHarness::new();
    let (publisher, _) = h.connect_as("pub");
    let payload = "h".repeat(60_000);
    for serial in 0..20 {
        h.publish(
            publisher,
            serial,
            "hist",
            vec![message(&format!("m{serial}"), &payload)],
        );
    }
    let (attacker, _) = h.connect_as("attacker");
    h.stalled.insert(attacker);
    for request_id in 0..200 {
        if h.closed.contains_key(&attacker) {
            break;
        }
        h.send(attacker, &history_request(request_id));
    }
    assert_eq!(h.closed.get(&attacker), Some(&ErrorCode::SlowConsumer));
    let pages = h
        .take(attacker)
        .iter()
        .filter(|f| matches!(f, ServerFrame::HistoryPage { .. }))
        .count();
    // 1 MiB of pending bytes holds 17 pages of 60 KB; nothing past the limit was queued.
    assert!(
        pages <= 17,
        "{pages} pages queued for a client that never reads"
    );
    assert!(!h.closed.contains_key(&publisher));
}

/// The same class for pongs: any answer counts, not only history pages and deliveries.
#[test]
fn pongs_for_a_client_that_never_reads_count_toward_its_pending_bytes() {
    let mut config = config();
    config.max_pending_bytes = 4 * 1024;
    let mut h = HubHarness::with(config, 1);
    let (attacker, _) = h.connect_as("attacker");
    h.stalled.insert(attacker);
    for id in 0..10_000 {
        if h.closed.contains_key(&attacker) {
            break;
        }
        h.send(attacker, &ClientFrame::Ping { id });
    }
    assert_eq!(h.closed.get(&attacker), Some(&ErrorCode::SlowConsumer));
    assert!(
        h.take(attacker).len() < 4 * 1024,
        "pongs stopped at the limit"
    );
}

/// Issue 13, defect 3 (the hub's part): a connection the hub closed stopped counting
/// toward the cap at once, though its socket was still open, so the cap could be exceeded.
#[test]
fn a_connection_the_hub_closed_counts_against_the_cap_until_its_transport_ends() {
    let mut config = config();
    config.max_connections = 2;
    let mut h = HubHarness::with(config, 1);
    let (closed_by_hub, _) = h.connect_as("a");
    h.connect_as("b");
    // A second connect is a protocol error: the hub closes the connection.
    h.send(closed_by_hub, &key_connect("app", "app-secret", None));
    assert_eq!(
        h.closed.get(&closed_by_hub),
        Some(&ErrorCode::UnexpectedFrame)
    );
    assert_eq!(h.hub.stats().closing, 1);
    let refused = h.accept();
    assert_eq!(
        h.closed.get(&refused),
        Some(&ErrorCode::TooManyConnections),
        "the closed connection's socket is still open"
    );
    h.drop_connection(closed_by_hub);
    h.drop_connection(refused);
    assert_eq!(h.hub.stats().closing, 0);
    let (admitted, _) = h.connect_as("c");
    assert!(!h.closed.contains_key(&admitted));
}

/// Issue 13, defect 6: every in-band `auth` added a timer living until that token's `exp`,
/// even after the session was gone (1 M renewals with a one-year token: +40 MB).
#[test]
fn token_renewals_keep_one_expiry_timer_per_session_and_none_after_it_ends() {
    let mut h = HubHarness::new();
    let year = Duration::from_secs(365 * 24 * 3600);
    let (id, frames) = h.open(&token_connect(token(&claims("alice", h.unix_ms, year))));
    assert!(matches!(frames[0], ServerFrame::Connected { .. }));
    let baseline = h.hub.stats().timers;
    for _ in 0..1_000 {
        h.unix_ms += 1_000;
        let renewed = token(&claims("alice", h.unix_ms, year));
        h.send(id, &ClientFrame::Auth { token: renewed });
        assert!(matches!(
            h.take(id).as_slice(),
            [ServerFrame::Authed { error: None, .. }]
        ));
    }
    assert_eq!(
        h.hub.stats().timers,
        baseline,
        "one expiry timer, moved each time"
    );
    h.send(id, &ClientFrame::Close);
    h.drop_connection(id);
    assert_eq!(h.hub.stats().sessions, 0);
    assert_eq!(h.hub.stats().timers, 0, "nothing outlives the session");
}

/// The same class for sessions that come and go: each drop and resume moves the session's
/// one expiry timer instead of adding one that lives for the session TTL.
#[test]
fn resuming_again_and_again_keeps_one_session_timer() {
    let mut h = HubHarness::new();
    let (mut id, session) = h.connect_as("roamer");
    for _ in 0..1_000 {
        h.drop_connection(id);
        h.advance(Duration::from_millis(10));
        let (next, connected) = h.resume("roamer", session);
        assert!(matches!(
            connected,
            ServerFrame::Connected { resumed: true, .. }
        ));
        id = next;
    }
    // Heartbeat and idle of the live connection: nothing left from the 1,000 drops.
    assert_eq!(h.hub.stats().timers, 2);
}

/// A publish frame to `news` with serial 0 whose message count is `count`, followed by no
/// message at all.
fn publish_claiming(count: u64) -> bytes::Bytes {
    let empty = tether_core::wire::encode(
        &ClientFrame::Publish {
            serial: 0,
            channel: channel("news"),
            messages: vec![],
        },
        &tether_core::wire::Limits::DEFAULT,
    )
    .expect("encodes");
    // The empty publish ends with its count, 0: replace it with `count` as a varint.
    let mut bytes = empty[..empty.len() - 1].to_vec();
    let mut rest = count;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes::Bytes::from(bytes)
}

/// Issue 13, defect 9: a claimed message count of 2^32 got 40002 (`truncated_frame`), though
/// the spec checks the count before reading any message (41302 `too_many_messages`).
#[test]
fn a_publish_claiming_two_to_the_32_messages_is_too_many_messages() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("a");
    h.send_bytes(id, publish_claiming(1 << 32));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::TooManyMessages));
}

/// Issue 13, defect 9: a publish of no message was acknowledged. It is refused now; like
/// every publish frame it uses its serial, so the client's numbering stays in step.
#[test]
fn a_publish_of_no_message_is_refused_with_a_code() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("a");
    let answer = h.publish(id, 0, "news", vec![]);
    assert!(
        matches!(answer.as_slice(), [ServerFrame::Nack { serial: 0, count: 1, error }] if error.code == ErrorCode::InvalidMessage),
        "{answer:?}"
    );
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let answer = h.publish(id, 1, "news", vec![message("m", "first")]);
    assert!(
        matches!(
            answer.as_slice(),
            [ServerFrame::Ack {
                serial: 1,
                count: 1
            }]
        ),
        "{answer:?}"
    );
    assert_eq!(delivered(&h.take(subscriber)), vec![1]);
}

fn attach_frame(name: &str) -> ClientFrame {
    ClientFrame::Attach {
        channel: channel(name),
        from: None,
    }
}

fn detach_frame(name: &str) -> ClientFrame {
    ClientFrame::Detach {
        channel: channel(name),
    }
}

/// Issue 13, defect 4: 100,000 × (attach `x:<i>`, detach `x:<i>`) from one connection
/// filled the server-wide channel table for two minutes: every other client's attach or
/// publish on a new channel failed with `limit_exceeded`. A channel nothing refers to is
/// freed at once now (its position remembered).
#[test]
fn attaching_and_detaching_unique_channels_does_not_fill_the_channel_table() {
    let mut config = config();
    config.max_channels = 1_000;
    let mut h = HubHarness::with(config, 1);
    let (attacker, _) = h.connect_as("attacker");
    for i in 0..5_000 {
        let name = format!("x:{i}");
        h.send(attacker, &attach_frame(&name));
        h.send(attacker, &detach_frame(&name));
        h.advance(Duration::from_millis(20)); // 50 a second: under the creation rate
        if i % 500 == 0 {
            h.send(attacker, &ClientFrame::Heartbeat);
        }
    }
    assert!(h.hub.stats().channels <= 1, "{:?}", h.hub.stats());
    let (other, _) = h.connect_as("other");
    assert!(matches!(
        h.attach(other, "fresh", None).as_slice(),
        [ServerFrame::Attached { .. }]
    ));
    assert!(matches!(
        h.publish(other, 0, "fresh:too", vec![message("m", "x")])
            .as_slice(),
        [ServerFrame::Ack { .. }]
    ));
}

/// Issue 13, defect 4: the per-session bound on channel creation.
#[test]
fn a_session_creating_channels_too_fast_is_refused_and_others_are_not() {
    let mut h = HubHarness::new();
    let (attacker, _) = h.connect_as("attacker");
    let mut refused = None;
    for i in 0..101 {
        let name = format!("y:{i}");
        match h.attach(attacker, &name, None).as_slice() {
            [ServerFrame::Attached { .. }] => {
                h.send(attacker, &detach_frame(&name));
                h.take(attacker);
            }
            [ServerFrame::Detached { error: Some(e), .. }] => {
                refused = Some((i, e.code));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, Some((100, ErrorCode::LimitExceeded)));
    let (other, _) = h.connect_as("other");
    assert!(matches!(
        h.attach(other, "elsewhere", None).as_slice(),
        [ServerFrame::Attached { .. }]
    ));
    h.advance(Duration::from_secs(1));
    assert!(
        matches!(
            h.attach(attacker, "y:later", None).as_slice(),
            [ServerFrame::Attached { .. }]
        ),
        "the next second allows creations again"
    );
}

/// Issue 20, defect 8: a subscriber away 130 s from a channel on which nothing was
/// published got `epoch_changed`, and a message published just before its return was
/// reported lost instead of replayed.
#[test]
fn a_channel_idle_longer_than_the_session_ttl_keeps_its_position() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    let start = match h.attach(subscriber, "quiet", None).as_slice() {
        [ServerFrame::Attached { position, .. }] => *position,
        other => panic!("{other:?}"),
    };
    h.drop_connection(subscriber);
    h.advance(Duration::from_secs(129));
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "quiet", vec![message("late", "x")]);
    h.advance(Duration::from_secs(1));
    let (back, _) = h.connect_as("sub");
    let frames = h.attach(back, "quiet", Some(start));
    assert!(
        matches!(
            frames.first(),
            Some(ServerFrame::Attached {
                continuity: tether_core::wire::Continuity::Continuous,
                error: None,
                ..
            })
        ),
        "{frames:?}"
    );
    assert_eq!(delivered(&frames), vec![1]);
}

/// Issue 13, defect 7, the hub's part: what the WebSocket layer refused is answered like
/// the same fault in a frame.
#[test]
fn a_refused_transport_message_is_answered_with_its_code_then_closed() {
    use tether_core::server::TransportViolation;
    let mut h = HubHarness::new();
    for (violation, code) in [
        (
            TransportViolation::MessageTooLarge { size: 65_537 },
            ErrorCode::FrameTooLarge,
        ),
        (TransportViolation::TextMessage, ErrorCode::MalformedFrame),
    ] {
        let (id, _) = h.connect_as("sender");
        h.hub.handle_violation(h.stamp(), id, violation);
        h.drain();
        assert_eq!(error_code(&h.take(id)), Some(code));
        assert_eq!(h.closed.get(&id), Some(&code));
    }
}
