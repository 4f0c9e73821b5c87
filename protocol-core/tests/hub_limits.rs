//! Hub scenarios: heartbeats, idle and first-frame deadlines, bad input, slow consumers,
//! connection cap, and timer cost at scale.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::hub::*;
use tether_core::ErrorCode;
use tether_core::server::HubEvent;
use tether_core::wire::{ClientFrame, ServerFrame};

#[test]
fn a_heartbeat_is_sent_to_a_session_sent_nothing_for_its_interval() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("a");
    h.advance(Duration::from_millis(14_999));
    assert!(h.take(id).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take(id), vec![ServerFrame::Heartbeat]);
}

#[test]
fn traffic_postpones_the_heartbeat() {
    let mut h = HubHarness::new();
    let (id, _) = h.connect_as("a");
    h.advance(Duration::from_secs(10));
    h.send(id, &ClientFrame::Ping { id: 1 }); // the pong is traffic from the hub
    h.take(id);
    h.advance(Duration::from_secs(14));
    assert!(
        h.take(id).is_empty(),
        "15 s after the pong, not after connected"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(id), vec![ServerFrame::Heartbeat]);
}

#[test]
fn the_requested_heartbeat_interval_is_clamped_to_the_hubs_bounds() {
    let mut h = HubHarness::new();
    for (asked, given) in [(1_000, 5_000), (60_000, 60_000), (3_600_000, 300_000)] {
        let mut frame = key_connect("app", "app-secret", None);
        if let ClientFrame::Connect {
            heartbeat_interval_ms,
            ..
        } = &mut frame
        {
            *heartbeat_interval_ms = Some(asked);
        }
        let (_, frames) = h.open(&frame);
        assert!(
            matches!(frames[0], ServerFrame::Connected { heartbeat_interval_ms, .. } if heartbeat_interval_ms == given),
            "{asked} → {frames:?}"
        );
    }
}

#[test]
fn an_idle_client_is_disconnected_and_its_session_stays_resumable() {
    let mut h = HubHarness::new();
    let (id, session) = h.connect_as("a");
    h.advance(Duration::from_millis(24_999));
    assert!(!h.closed.contains_key(&id));
    h.advance(Duration::from_millis(1));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::IdleTimeout));
    let (_, connected) = h.resume("a", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
}

#[test]
fn a_client_that_sends_no_first_frame_is_closed_after_the_deadline() {
    let mut h = HubHarness::new();
    let id = h.accept();
    h.advance(Duration::from_millis(4_999));
    assert!(!h.closed.contains_key(&id));
    h.advance(Duration::from_millis(1));
    assert_eq!(h.closed.get(&id), Some(&ErrorCode::FirstFrameTimeout));
}

#[test]
fn a_first_frame_timeout_and_a_full_server_are_disconnects_not_fatal_errors() {
    // Regression (simulation seed 463): a connect frame delayed by a stalled network got a
    // fatal `error`, and the client went to Failed instead of retrying.
    let mut h = HubHarness::new();
    let slow = h.accept();
    h.advance(Duration::from_secs(5));
    assert!(
        matches!(h.take(slow).as_slice(), [ServerFrame::Disconnect { error }] if error.code == ErrorCode::FirstFrameTimeout)
    );
    let mut config = config();
    config.max_connections = 0;
    let mut full = HubHarness::with(config, 1);
    let refused = full.accept();
    assert!(
        matches!(full.take(refused).as_slice(), [ServerFrame::Disconnect { error }] if error.code == ErrorCode::TooManyConnections)
    );
}

#[test]
fn a_first_frame_other_than_connect_is_refused() {
    let mut h = HubHarness::new();
    let (id, frames) = h.open(&ClientFrame::Ping { id: 1 });
    assert_eq!(error_code(&frames), Some(ErrorCode::UnexpectedFrame));
    assert!(h.closed.contains_key(&id));
}

#[test]
fn an_oversize_frame_closes_only_its_connection() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (bad, _) = h.connect_as("bad");
    h.send_bytes(bad, Bytes::from(vec![4u8; 70_000]));
    assert_eq!(error_code(&h.take(bad)), Some(ErrorCode::FrameTooLarge));
    assert_eq!(h.closed.get(&bad), Some(&ErrorCode::FrameTooLarge));
    let (good, _) = h.connect_as("good");
    h.publish(good, 0, "news", vec![message("m", "still works")]);
    assert_eq!(delivered(&h.take(subscriber)), vec![1]);
    assert!(!h.closed.contains_key(&subscriber));
}

#[test]
fn a_malformed_frame_closes_only_its_session_and_nothing_acked_is_lost() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("m0", "a")]);
    let (bad, _) = h.connect_as("bad");
    h.send_bytes(bad, Bytes::from_static(&[4, 0, 200])); // a publish cut short
    assert_eq!(h.closed.get(&bad), Some(&ErrorCode::TruncatedFrame));
    h.publish(publisher, 1, "news", vec![message("m1", "b")]);
    assert_eq!(delivered(&h.take(subscriber)), vec![1, 2]);
    assert!(!h.closed.contains_key(&publisher));
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_while_others_keep_receiving() {
    let mut config = config();
    config.max_pending_bytes = 16 * 1024;
    let mut h = HubHarness::with(config, 1);
    let (slow, _) = h.connect_as("slow");
    let (fast, _) = h.connect_as("fast");
    h.attach(slow, "news", None);
    h.attach(fast, "news", None);
    h.stalled.insert(slow);
    let (publisher, _) = h.connect_as("pub");
    let payload = "x".repeat(1000);
    for serial in 0..50 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m{serial}"), &payload)],
        );
    }
    assert_eq!(h.closed.get(&slow), Some(&ErrorCode::SlowConsumer));
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, HubEvent::SlowConsumer { connection, .. } if *connection == slow))
    );
    assert_eq!(delivered(&h.take(fast)), (1..=50).collect::<Vec<u64>>());
    assert!(!h.closed.contains_key(&fast));
}

#[test]
fn a_large_replay_is_paced_by_writes_instead_of_counted_as_a_slow_consumer() {
    let mut config = config();
    config.max_pending_bytes = 8 * 1024;
    let mut h = HubHarness::with(config, 1);
    let (subscriber, session) = h.connect_as("sub");
    let start = match h.attach(subscriber, "news", None).first() {
        Some(ServerFrame::Attached { position, .. }) => *position,
        other => panic!("{other:?}"),
    };
    h.drop_connection(subscriber);
    let (publisher, _) = h.connect_as("pub");
    let payload = "y".repeat(1000);
    for serial in 0..40 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m{serial}"), &payload)],
        );
    }
    let (subscriber, _) = h.resume("sub", session);
    let frames = h.attach(subscriber, "news", Some(start));
    assert_eq!(
        delivered(&frames),
        (1..=40).collect::<Vec<u64>>(),
        "40 KB through an 8 KB window"
    );
    assert!(!h.closed.contains_key(&subscriber));
}

#[test]
fn the_connection_cap_refuses_one_more() {
    let mut config = config();
    config.max_connections = 2;
    let mut h = HubHarness::with(config, 1);
    h.connect_as("a");
    h.connect_as("b");
    let extra = h.accept();
    assert_eq!(h.closed.get(&extra), Some(&ErrorCode::TooManyConnections));
    assert_eq!(
        error_code(&h.take(extra)),
        Some(ErrorCode::TooManyConnections)
    );
}

#[test]
fn the_channel_limit_per_session_refuses_one_more() {
    let mut config = config();
    config.max_channels_per_session = 2;
    let mut h = HubHarness::with(config, 1);
    let (id, _) = h.connect_as("a");
    h.attach(id, "one", None);
    h.attach(id, "two", None);
    assert!(
        matches!(&h.attach(id, "two", None)[0], ServerFrame::Attached { .. }),
        "re-attach is fine"
    );
    assert!(matches!(
        &h.attach(id, "three", None)[0],
        ServerFrame::Detached { error: Some(e), .. } if e.code == ErrorCode::TooManyChannels
    ));
}

#[test]
fn timer_handling_with_10000_sessions_does_not_scan_them_all() {
    let mut h = HubHarness::new();
    let ids: Vec<_> = (0..10_000)
        .map(|n| h.connect_as(&format!("c{n}")).0)
        .collect();
    // Each connect cancelled its first-frame deadline: the table holds a heartbeat and an
    // idle deadline per connection, and nothing is due at 5 s.
    assert_eq!(h.hub.stats().timers, 2 * 10_000);
    let before = h.hub.stats().timer_operations;
    h.advance(Duration::from_secs(6));
    assert_eq!(h.hub.stats().timer_operations - before, 0);
    // Then nothing is due until the heartbeats at 15 s: ticks cost no timer work at all.
    let before = h.hub.stats().timer_operations;
    for _ in 0..80 {
        h.advance(Duration::from_millis(100));
    }
    assert_eq!(
        h.hub.stats().timer_operations,
        before,
        "8 s of ticks touched no timer"
    );
    // One client sends a frame: its deadlines move without touching any other's.
    h.send(ids[0], &ClientFrame::Ping { id: 1 });
    assert!(h.hub.stats().timer_operations - before <= 2);
    // At 15 s every session is due a heartbeat: the work is per due timer (pop, push),
    // not per tick: about 2 operations per session over the whole interval.
    let before = h.hub.stats().timer_operations;
    h.advance(Duration::from_secs(2));
    let spent = h.hub.stats().timer_operations - before;
    assert!(
        spent <= 2 * 10_000 + 10,
        "{spent} timer operations for 10,000 heartbeats"
    );
    assert!(
        spent >= 2 * 9_999,
        "every session got its heartbeat: {spent}"
    );
}
