//! Client scenarios: connecting, liveness, heartbeats, ping, close, old transports.

mod support;

use std::time::Duration;

use support::scripted::*;
use tether_core::client::{Auth, ClientConfig, ConnectionState, Event};
use tether_core::wire::{ClientFrame, Credentials, ServerFrame};
use tether_core::{ErrorCode, Time};

#[test]
fn connect_with_key_sends_credentials_in_the_first_frame_and_reaches_connected() {
    let mut s = Scripted::new(key_auth());
    let frame = s.connect();
    let ClientFrame::Connect {
        version,
        credentials,
        resume,
        ..
    } = frame
    else {
        panic!("first frame is connect: {frame:?}");
    };
    assert_eq!(version.major, 1);
    assert_eq!(
        credentials,
        Credentials::ApiKey {
            name: "app".into(),
            secret: "secret".into()
        }
    );
    assert_eq!(resume, None);
    s.reply(connected(false));
    let events = s.all_events();
    assert_eq!(
        state_changes(&events),
        vec![ConnectionState::Connecting, ConnectionState::Connected]
    );
}

#[test]
fn connect_with_token_asks_the_application_before_opening_a_transport() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    let seen = s.take();
    assert!(
        seen.iter().all(|x| !matches!(x, Seen::Open(_))),
        "no transport before a token"
    );
    assert!(seen.contains(&Seen::Event(Event::TokenRequired {
        reason: tether_core::client::TokenReason::Initial
    })));
    s.client.provide_token(s.now, "tok-1".into());
    let frame = s.open();
    assert!(matches!(
        frame,
        ClientFrame::Connect { credentials: Credentials::Token { ref token }, .. } if token == "tok-1"
    ));
    s.reply(connected(false));
    assert_eq!(s.state(), ConnectionState::Connected);
}

#[test]
fn bad_credentials_fail_and_never_retry() {
    let mut s = Scripted::new(key_auth());
    s.connect();
    s.reply(ServerFrame::Error {
        error: error(ErrorCode::InvalidCredentials),
    });
    assert_eq!(s.state(), ConnectionState::Failed);
    let events = s.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StateChanged { current: ConnectionState::Failed, reason: Some(r), .. }
            if r.code == ErrorCode::InvalidCredentials
    )));
    assert_eq!(s.client.poll_timeout(), None, "no timer: no retry");
    s.advance(Duration::from_secs(3600));
    assert!(s.take().is_empty(), "nothing happens in an hour");
}

#[test]
fn silence_disconnects_then_reconnects_and_resumes() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.take();
    // Heartbeat 15 s + request timeout 10 s of silence: the transport is dead at 25 s.
    s.advance(Duration::from_millis(24_999));
    assert_eq!(s.state(), ConnectionState::Connected);
    s.advance(Duration::from_millis(1));
    assert_eq!(s.state(), ConnectionState::Disconnected);
    let seen = s.take();
    assert!(
        seen.iter()
            .any(|x| matches!(x, Seen::Close(_, ErrorCode::HeartbeatTimeout)))
    );
    let waited = s.wait_for_open(Duration::from_secs(2));
    assert!(
        waited <= Duration::from_secs(1),
        "first retry within 0-1 s, got {waited:?}"
    );
    let frame = s.open();
    assert!(matches!(frame, ClientFrame::Connect { resume: Some(r), .. } if r == SESSION));
}

#[test]
fn any_frame_from_the_hub_resets_liveness() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    for _ in 0..10 {
        s.advance(Duration::from_secs(20));
        s.reply(ServerFrame::Pong { id: 999 }); // even an unsolicited frame counts
    }
    assert_eq!(
        s.state(),
        ConnectionState::Connected,
        "200 s with a frame every 20 s"
    );
}

#[test]
fn heartbeat_interval_is_requested_and_the_hubs_choice_is_used() {
    let mut config = ClientConfig::new(key_auth());
    config.heartbeat_interval = Some(Duration::from_secs(60));
    let mut s = Scripted::with_config(config, 1);
    let frame = s.connect();
    assert!(matches!(
        frame,
        ClientFrame::Connect {
            heartbeat_interval_ms: Some(60_000),
            ..
        }
    ));
    let mut reply = connected(false);
    if let ServerFrame::Connected {
        heartbeat_interval_ms,
        ..
    } = &mut reply
    {
        *heartbeat_interval_ms = 30_000; // the hub clamps
    }
    s.reply(reply);
    s.take();
    s.advance(Duration::from_secs(30));
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Heartbeat],
        "sent after 30 s of sending nothing"
    );
    s.advance(Duration::from_millis(9_999));
    assert_eq!(s.state(), ConnectionState::Connected);
    s.advance(Duration::from_millis(1));
    assert_eq!(
        s.state(),
        ConnectionState::Disconnected,
        "30 + 10 s of silence"
    );
}

#[test]
fn ping_reports_the_round_trip_time() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.take();
    let id = s.client.ping(s.now).expect("connected");
    assert_eq!(s.take_sent(), vec![ClientFrame::Ping { id: id.0 }]);
    s.advance(Duration::from_millis(42));
    s.reply(ServerFrame::Pong { id: id.0 });
    assert_eq!(
        s.take_events(),
        vec![Event::Pong {
            id,
            result: Ok(Duration::from_millis(42))
        }]
    );
}

#[test]
fn close_sends_close_and_ends_on_closed() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.take();
    s.client.close(s.now);
    assert_eq!(s.state(), ConnectionState::Closing);
    assert_eq!(s.take_sent(), vec![ClientFrame::Close]);
    s.reply(ServerFrame::Closed);
    assert_eq!(s.state(), ConnectionState::Closed);
    assert!(s.take().iter().any(|x| matches!(x, Seen::Close(..))));
    assert_eq!(s.client.poll_timeout(), None);
}

#[test]
fn close_without_an_answer_times_out_and_closes() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.client.close(s.now);
    s.advance(Duration::from_millis(9_999));
    assert_eq!(s.state(), ConnectionState::Closing);
    s.advance(Duration::from_millis(1));
    assert_eq!(s.state(), ConnectionState::Closed);
}

#[test]
fn frames_of_an_old_transport_are_ignored() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let old = s.transport.expect("open");
    s.drop_transport();
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.take();
    // The old transport delivers late frames: a connected, a disconnect, a message.
    s.reply_on(old, connected(true));
    s.reply_on(
        old,
        ServerFrame::Disconnect {
            error: error(ErrorCode::SlowConsumer),
        },
    );
    s.client.handle_transport_closed(s.now, old, "late close");
    s.drain();
    assert_eq!(
        s.state(),
        ConnectionState::Connecting,
        "still waiting on the new transport"
    );
    assert!(s.take().is_empty(), "nothing came of the old transport");
    s.reply(connected(true));
    assert_eq!(s.state(), ConnectionState::Connected);
}

#[test]
fn connect_timeout_counts_as_a_failed_attempt() {
    let mut s = Scripted::new(key_auth());
    s.connect();
    s.advance(Duration::from_secs(10));
    assert_eq!(s.state(), ConnectionState::Disconnected);
    assert!(
        s.take()
            .iter()
            .any(|x| matches!(x, Seen::Close(_, ErrorCode::RequestTimeout)))
    );
}

#[test]
fn the_same_seed_and_inputs_give_byte_identical_outputs() {
    fn run(seed: u8) -> Vec<Seen> {
        let mut s = Scripted::with_config(ClientConfig::new(key_auth()), seed);
        s.connect_new();
        for round in 0..5u64 {
            s.client
                .publish(
                    s.now,
                    channel("c"),
                    vec![tether_core::client::NewMessage::new("n", "x")],
                )
                .expect("accepted");
            s.drop_transport();
            s.wait_for_open(Duration::from_secs(60));
            s.open();
            s.reply(connected(round % 2 == 0));
        }
        s.advance(Duration::from_secs(100));
        s.take()
    }
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4), "the seed drives jitter and ids");
    let _ = Time::ZERO;
}

#[test]
fn a_hub_heartbeat_interval_of_zero_is_raised_to_the_minimum() {
    // Regression (found by client_properties): a hostile hub announcing 0 ms made the client
    // send heartbeats every millisecond.
    let mut s = Scripted::new(key_auth());
    s.connect();
    let mut reply = connected(false);
    if let ServerFrame::Connected {
        heartbeat_interval_ms,
        ..
    } = &mut reply
    {
        *heartbeat_interval_ms = 0;
    }
    s.reply(reply);
    s.take();
    s.advance(Duration::from_millis(999));
    assert!(s.take_sent().is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Heartbeat],
        "one per second at most"
    );
}

#[test]
fn a_hub_frame_size_limit_of_zero_is_raised_so_heartbeats_still_go_out() {
    // Regression (found by the client_ops fuzz target): a hostile hub announcing
    // max_frame_size 0 made every heartbeat fail to encode; its deadline stayed in the past
    // and the timer fired without end.
    let mut s = Scripted::new(key_auth());
    s.connect();
    let mut reply = connected(false);
    if let ServerFrame::Connected { limits, .. } = &mut reply {
        limits.max_frame_size = 0;
    }
    s.reply(reply);
    s.take();
    s.advance(Duration::from_secs(15)); // would panic on a livelock
    assert_eq!(s.take_sent(), vec![ClientFrame::Heartbeat]);
}
