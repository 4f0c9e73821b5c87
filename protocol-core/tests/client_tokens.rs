//! Client scenarios: token requests, in-band renewal, expiry, refusal.

mod support;

use std::time::Duration;

use support::scripted::*;
use tether_core::ErrorCode;
use tether_core::client::{Auth, ConnectionState, Event, NewMessage, TokenReason};
use tether_core::wire::{ClientFrame, Credentials, ServerFrame};

const SERVER_NOW: u64 = 1_000_000;

fn connected_with_token(server_time_ms: u64, expires_at_ms: u64, resumed: bool) -> ServerFrame {
    let mut frame = connected(resumed);
    if let ServerFrame::Connected {
        server_time_ms: time,
        token_expires_at_ms,
        ..
    } = &mut frame
    {
        *time = server_time_ms;
        *token_expires_at_ms = Some(expires_at_ms);
    }
    frame
}

/// A token client connected with a token valid for `lifetime` on the hub's clock.
fn connected_client(server_time_ms: u64, lifetime: Duration) -> Scripted {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    s.client.provide_token(s.now, "tok-1".into());
    s.open();
    s.reply(connected_with_token(
        server_time_ms,
        server_time_ms + lifetime.as_millis() as u64,
        false,
    ));
    assert_eq!(s.state(), ConnectionState::Connected);
    s.forget();
    s
}

fn token_requests(events: &[Event]) -> Vec<TokenReason> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::TokenRequired { reason } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn transport_changes(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|x| matches!(x, Seen::Open(_) | Seen::Close(..)))
        .count()
}

#[test]
fn a_token_is_renewed_in_band_before_expiry_without_reconnecting() {
    // One hour: renew at 90 % (54 min), earlier than 30 s before expiry.
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(3600));
    s.advance_alive(Duration::from_secs(3239));
    assert!(token_requests(&s.all_events()).is_empty(), "not yet");
    s.advance_alive(Duration::from_secs(1));
    assert_eq!(token_requests(&s.all_events()), vec![TokenReason::Renewal]);
    s.take();
    s.client.provide_token(s.now, "tok-2".into());
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Auth {
            token: "tok-2".into()
        }]
    );
    s.reply(ServerFrame::Authed {
        token_expires_at_ms: Some(SERVER_NOW + 3_240_000 + 3_600_000),
        error: None,
    });
    assert_eq!(s.state(), ConnectionState::Connected);
    assert_eq!(transport_changes(&s.log), 0, "no reconnect");
}

#[test]
fn renewal_uses_the_hubs_clock_difference_not_the_clients_clock() {
    // The hub's wall clock is far from anything the client knows; only the difference
    // between expiry and hub time matters: 100 s left → renew 30 s before expiry, at 70 s.
    let far = 9_000_000_000_000;
    let mut s = connected_client(far, Duration::from_secs(100));
    s.advance_alive(Duration::from_millis(69_999));
    assert!(token_requests(&s.all_events()).is_empty());
    s.advance_alive(Duration::from_millis(1));
    assert_eq!(token_requests(&s.all_events()), vec![TokenReason::Renewal]);
}

#[test]
fn only_one_token_request_is_in_flight_across_a_reconnect() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(80));
    // 80 s left: renew at min(72 s, 50 s) = 50 s (not before half, 40 s).
    s.advance_alive(Duration::from_secs(50));
    assert_eq!(token_requests(&s.all_events()), vec![TokenReason::Renewal]);
    s.drop_transport();
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.reply(connected_with_token(
        SERVER_NOW + 11_000,
        SERVER_NOW + 40_000,
        true,
    ));
    assert_eq!(s.state(), ConnectionState::Connected);
    assert_eq!(
        token_requests(&s.all_events()),
        vec![TokenReason::Renewal],
        "the outstanding request is not repeated"
    );
    s.take();
    s.client.provide_token(s.now, "tok-2".into());
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Auth {
            token: "tok-2".into()
        }]
    );
}

#[test]
fn token_expired_disconnect_renews_then_resumes() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(3600));
    s.reply(ServerFrame::Disconnect {
        error: error(ErrorCode::TokenExpired),
    });
    assert_eq!(s.state(), ConnectionState::Disconnected);
    let seen = s.take();
    assert!(seen.contains(&Seen::Event(Event::TokenRequired {
        reason: TokenReason::Expired
    })));
    s.advance(Duration::from_secs(5));
    assert!(s.transport.is_none(), "no attempt with the expired token");
    s.client.provide_token(s.now, "tok-2".into());
    let frame = s.open();
    assert!(matches!(
        frame,
        ClientFrame::Connect { credentials: Credentials::Token { ref token }, resume: Some(r), .. }
            if token == "tok-2" && r == SESSION
    ));
    s.reply(connected_with_token(
        SERVER_NOW,
        SERVER_NOW + 3_600_000,
        true,
    ));
    assert_eq!(s.state(), ConnectionState::Connected);
}

#[test]
fn a_refused_token_goes_to_failed_and_fails_pending_publishes() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    let id = s
        .client
        .publish(s.now, channel("c"), vec![NewMessage::new("n", "x")])
        .expect("queued");
    s.client.token_refused(s.now, "user logged out");
    assert_eq!(s.state(), ConnectionState::Failed);
    let events = s.all_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StateChanged { current: ConnectionState::Failed, reason: Some(r), .. }
            if r.code == ErrorCode::TokenUnavailable
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::PublishResolved { id: p, result: Err(r) } if *p == id && r.code == ErrorCode::ConnectionFailed
    )));
    assert_eq!(s.client.poll_timeout(), None, "no retry loop");
}

#[test]
fn a_refused_renewal_is_an_update_and_the_connection_stays() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(3600));
    s.client.provide_token(s.now, "someone-else".into());
    s.take();
    s.reply(ServerFrame::Authed {
        token_expires_at_ms: None,
        error: Some(error(ErrorCode::ClientIdMismatch)),
    });
    assert_eq!(
        s.take_events(),
        vec![Event::Update {
            reason: error(ErrorCode::ClientIdMismatch)
        }]
    );
    assert_eq!(s.state(), ConnectionState::Connected);
}

#[test]
fn an_unanswered_token_request_fails_the_attempt_and_is_asked_again_later() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    s.advance(Duration::from_secs(10));
    assert_eq!(s.state(), ConnectionState::Disconnected);
    let before = token_requests(&s.all_events()).len();
    assert_eq!(before, 1);
    s.advance(Duration::from_secs(5));
    assert_eq!(
        token_requests(&s.all_events()).len(),
        2,
        "asked again on the next attempt"
    );
}

#[test]
fn a_token_shorter_than_the_renewal_margin_is_renewed_at_half_its_life_not_in_a_loop() {
    // 20 s left: "30 s before expiry" is already past; renew at 10 s, not at once.
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(20));
    s.advance_alive(Duration::from_millis(9_999));
    assert!(token_requests(&s.all_events()).is_empty(), "not at once");
    s.advance_alive(Duration::from_millis(1));
    assert_eq!(token_requests(&s.all_events()), vec![TokenReason::Renewal]);
    s.client.provide_token(s.now, "tok-2".into());
    s.take();
    s.reply(ServerFrame::Authed {
        token_expires_at_ms: Some(SERVER_NOW + 10_000 + 20_000),
        error: None,
    });
    s.advance_alive(Duration::from_millis(9_999));
    assert_eq!(
        token_requests(&s.all_events()).len(),
        1,
        "no immediate second renewal"
    );
}

/// The hub's `disconnect token_expired` answering a connect.
fn refuse_as_expired(s: &mut Scripted) {
    s.reply(ServerFrame::Disconnect {
        error: error(ErrorCode::TokenExpired),
    });
}

/// Issue 20, defect 3: a token source whose new tokens the hub already sees as expired made
/// the client ask again and reconnect at once, forever. A refused connect is now a failed
/// attempt: the next token is asked for only after the backoff delay, and after three in a
/// row the application is told its token source gives expired tokens.
#[test]
fn new_tokens_refused_as_expired_back_off_and_are_reported_after_three() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    for round in 1..=3 {
        s.client.provide_token(s.now, format!("stale-{round}"));
        s.open();
        refuse_as_expired(&mut s);
        let events = s.take_events();
        assert!(
            token_requests(&events).is_empty(),
            "round {round}: no new token asked for at once: {events:?}"
        );
        let retry = s.client.poll_timeout().expect("a retry is scheduled");
        assert!(
            retry > s.now,
            "round {round}: a delay before the next attempt"
        );
        let reported = events.iter().any(|e| {
            matches!(e, Event::Update { reason } if reason.code == ErrorCode::TokenExpired
                && reason.message.contains("already expired"))
        });
        assert_eq!(reported, round == 3, "round {round}: {events:?}");
        s.advance_to(retry);
        assert_eq!(
            token_requests(&s.take_events()),
            vec![TokenReason::Expired],
            "round {round}: asked again after the delay, because the last one expired"
        );
    }
}

/// Issue 20, defect 4: a renewal request was not answered, the hub disconnected with
/// `token_expired`, the next request went unanswered too, and the client never asked again.
/// An unanswered request is dropped, the attempt fails, and the next attempt asks again — in
/// every state.
#[test]
fn an_unanswered_token_request_is_dropped_and_asked_again_in_every_state() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(60));
    // Renewal asked for, never answered: the connection stays, and it is asked again.
    s.advance_alive(Duration::from_secs(31));
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Renewal]);
    s.advance_alive(Duration::from_secs(15));
    assert_eq!(s.state(), ConnectionState::Connected);
    assert_eq!(
        token_requests(&s.take_events()),
        vec![TokenReason::Renewal],
        "asked again after the unanswered request timed out"
    );
    // The token runs out while that request is still out (one at a time: it now serves
    // the reconnect), and it is not answered either.
    s.reply(ServerFrame::Disconnect {
        error: error(ErrorCode::TokenExpired),
    });
    assert_eq!(s.state(), ConnectionState::Disconnected);
    s.take();
    s.advance(Duration::from_secs(12));
    let requests = token_requests(&s.take_events());
    assert!(
        !requests.is_empty(),
        "the client asked again after the unanswered request"
    );
    // Long after: it still asks, and a token connects it.
    s.advance(Duration::from_secs(600));
    assert!(!token_requests(&s.take_events()).is_empty(), "still asking");
    s.client.retry_now(s.now);
    s.client.provide_token(s.now, "tok-late".into());
    s.drain();
    assert!(s.transport.is_some(), "connects with the token");
}

/// Issue 20, defect 5: the application could not serve a renewal for a moment and the
/// client went to Failed, though its token was valid for 30 s more. "No token now" keeps the
/// connection while the token lasts and asks again; at connect it is a failed attempt,
/// retried. Only a refusal fails the connection.
#[test]
fn a_token_unavailable_for_a_moment_keeps_the_connection_and_is_asked_again() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(60));
    s.advance_alive(Duration::from_secs(31));
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Renewal]);
    s.client
        .token_unavailable(s.now, "auth service unreachable");
    assert_eq!(s.state(), ConnectionState::Connected);
    let events = s.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Update { reason } if reason.code == ErrorCode::TokenUnavailable
    )));
    s.advance_alive(Duration::from_secs(5));
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Renewal]);
    s.client.provide_token(s.now, "tok-2".into());
    assert!(matches!(
        s.take_sent().as_slice(),
        [ClientFrame::Auth { .. }]
    ));

    // At connect: a failed attempt, retried with backoff, asking again.
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    s.client
        .token_unavailable(s.now, "auth service unreachable");
    assert_eq!(s.state(), ConnectionState::Disconnected);
    s.forget();
    let retry = s.client.poll_timeout().expect("a retry");
    s.advance_to(retry);
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Initial]);
}

/// Issue 20, defect 6: `retry now` was ignored while an attempt waited for a token. It
/// drops the stale request and asks again at once.
#[test]
fn retry_now_asks_again_for_a_token_request_left_unanswered() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Initial]);
    s.advance(Duration::from_secs(3));
    s.client.retry_now(s.now);
    assert_eq!(token_requests(&s.take_events()), vec![TokenReason::Initial]);
    s.client.provide_token(s.now, "tok".into());
    s.drain();
    assert!(s.transport.is_some());
}

/// Review of issue 16, defect 5: a token too large for a frame was kept and sent again at
/// every attempt, each attempt timing out, for good. The connection now fails at once with
/// `token_invalid` (as the hub fails a token it cannot use) and opens nothing more.
#[test]
fn regression_a_token_too_large_to_send_fails_the_connection() {
    let mut s = Scripted::new(Auth::Token);
    s.client.connect(s.now);
    s.client.provide_token(s.now, "t".repeat(2 * 1024 * 1024));
    s.drain();
    let transport = s.transport.expect("the client asked for a transport");
    s.client.handle_transport_open(s.now, transport);
    assert_eq!(s.state(), ConnectionState::Failed);
    let failed = s.all_events().into_iter().find_map(|event| match event {
        Event::StateChanged {
            current: ConnectionState::Failed,
            reason,
            ..
        } => reason,
        _ => None,
    });
    assert_eq!(failed.map(|r| r.code), Some(ErrorCode::TokenInvalid));
    s.forget();
    s.advance(Duration::from_secs(600));
    assert_eq!(
        transport_changes(&s.take()),
        0,
        "no attempt after the failure"
    );
}

/// The same for a renewal: a new token too large for the `auth` frame fails the connection
/// instead of leaving the old token to expire.
#[test]
fn regression_a_renewal_token_too_large_to_send_fails_the_connection() {
    let mut s = connected_client(SERVER_NOW, Duration::from_secs(100));
    s.advance_alive(Duration::from_secs(70));
    assert_eq!(token_requests(&s.all_events()), vec![TokenReason::Renewal]);
    s.client.provide_token(s.now, "t".repeat(2 * 1024 * 1024));
    assert_eq!(s.state(), ConnectionState::Failed);
}
