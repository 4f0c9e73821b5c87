//! Client scenarios: attach, ordered once-only delivery, resume of channels, discontinuity.

mod support;

use std::time::Duration;

use support::scripted::*;
use tether_core::ErrorCode;
use tether_core::client::{ConnectionState, Event};
use tether_core::wire::{ClientFrame, Continuity, Position, ServerFrame};

fn delivered(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Message { message, .. } => Some(message.position.serial),
            _ => None,
        })
        .collect()
}

fn attach(s: &mut Scripted, name: &str) -> ClientFrame {
    s.client.attach(s.now, channel(name)).expect("usable");
    s.take_sent().into_iter().next().expect("attach sent")
}

fn reconnect(s: &mut Scripted, resumed: bool) -> Vec<ClientFrame> {
    s.drop_transport();
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.reply(connected(resumed));
    s.take_sent()
}

#[test]
fn attach_without_a_position_then_deliveries_in_order() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    assert_eq!(
        attach(&mut s, "news"),
        ClientFrame::Attach {
            channel: channel("news"),
            from: None
        }
    );
    s.reply(attached("news", 5, 10, Continuity::Fresh));
    for serial in 11..=13 {
        s.reply(delivery("news", 5, serial));
    }
    let events = s.take_events();
    assert!(events.contains(&Event::Attached {
        channel: channel("news"),
        position: Position {
            epoch: 5,
            serial: 10
        },
        continuity: Continuity::Fresh,
    }));
    assert_eq!(delivered(&events), vec![11, 12, 13]);
}

#[test]
fn a_position_is_never_delivered_twice() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    for serial in [1, 2, 2, 1, 3, 3] {
        s.reply(delivery("news", 5, serial));
    }
    assert_eq!(delivered(&s.take_events()), vec![1, 2, 3]);
}

#[test]
fn resume_reattaches_from_the_last_position_and_drops_replayed_duplicates() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    s.reply(delivery("news", 5, 1));
    s.reply(delivery("news", 5, 2));
    let sent = reconnect(&mut s, true);
    assert_eq!(
        sent,
        vec![ClientFrame::Attach {
            channel: channel("news"),
            from: Some(Position {
                epoch: 5,
                serial: 2
            })
        }]
    );
    // The hub continues from 1 (older than ours): 2 is a duplicate and dropped.
    s.reply(attached("news", 5, 1, Continuity::Continuous));
    for serial in 2..=4 {
        s.reply(delivery("news", 5, serial));
    }
    let events = s.all_events();
    assert_eq!(delivered(&events), vec![1, 2, 3, 4]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Discontinuity { .. }))
    );
}

#[test]
fn a_gap_emits_an_explicit_discontinuity() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    s.reply(delivery("news", 5, 1));
    reconnect(&mut s, true);
    s.reply(ServerFrame::Attached {
        channel: channel("news"),
        position: Position {
            epoch: 6,
            serial: 0,
        },
        continuity: Continuity::Gap,
        error: Some(error(ErrorCode::EpochChanged)),
    });
    s.reply(delivery("news", 6, 1));
    let events = s.take_events();
    assert_eq!(
        events[0],
        Event::Discontinuity {
            channel: channel("news"),
            last: Some(Position {
                epoch: 5,
                serial: 1
            }),
            resumed_after: Position {
                epoch: 6,
                serial: 0
            },
            reason: Some(error(ErrorCode::EpochChanged)),
        }
    );
    assert_eq!(delivered(&events), vec![1]);
}

#[test]
fn a_skipped_position_in_the_stream_is_reported_as_a_discontinuity() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    s.reply(delivery("news", 5, 1));
    s.reply(delivery("news", 5, 3));
    let events = s.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Discontinuity {
            last: Some(Position { serial: 1, .. }),
            resumed_after: Position { serial: 2, .. },
            ..
        }
    )));
    assert_eq!(delivered(&events), vec![1, 3]);
}

#[test]
fn a_channel_that_received_nothing_resumes_from_its_attached_position() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "quiet");
    s.reply(attached("quiet", 8, 40, Continuity::Fresh));
    let sent = reconnect(&mut s, true);
    assert_eq!(
        sent,
        vec![ClientFrame::Attach {
            channel: channel("quiet"),
            from: Some(Position {
                epoch: 8,
                serial: 40
            })
        }]
    );
    s.reply(attached("quiet", 8, 40, Continuity::Continuous));
    s.reply(delivery("quiet", 8, 41));
    let events = s.take_events();
    assert_eq!(delivered(&events), vec![41]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Discontinuity { .. }))
    );
}

#[test]
fn an_attach_refused_by_the_hub_is_reported_and_forgotten() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "secret");
    s.reply(ServerFrame::Detached {
        channel: channel("secret"),
        error: Some(error(ErrorCode::Forbidden)),
    });
    assert_eq!(
        s.take_events(),
        vec![Event::Detached {
            channel: channel("secret"),
            error: Some(error(ErrorCode::Forbidden))
        }]
    );
    assert!(
        reconnect(&mut s, true).is_empty(),
        "not attached again after a refusal"
    );
}

#[test]
fn detach_forgets_the_position_and_drops_later_deliveries() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    s.client.detach(s.now, &channel("news"));
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Detach {
            channel: channel("news")
        }]
    );
    s.reply(delivery("news", 5, 1)); // in flight before the hub saw the detach
    s.reply(ServerFrame::Detached {
        channel: channel("news"),
        error: None,
    });
    let events = s.take_events();
    assert_eq!(delivered(&events), Vec::<u64>::new());
    assert_eq!(
        attach(&mut s, "news"),
        ClientFrame::Attach {
            channel: channel("news"),
            from: None
        }
    );
}

#[test]
fn an_unanswered_attach_means_the_transport_is_broken() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.advance(Duration::from_secs(5));
    attach(&mut s, "news");
    s.advance(Duration::from_secs(10));
    assert_eq!(s.state(), ConnectionState::Disconnected);
    assert!(s.all_events().iter().any(|e| matches!(
        e,
        Event::StateChanged { current: ConnectionState::Disconnected, reason: Some(r), .. }
            if r.code == ErrorCode::RequestTimeout
    )));
}

#[test]
fn history_pages_are_answered_and_fail_when_the_transport_drops() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.take();
    let query = tether_core::wire::HistoryQuery::default();
    let first = s
        .client
        .history(s.now, channel("news"), query)
        .expect("connected");
    let sent = s.take_sent();
    assert!(
        matches!(sent[0], ClientFrame::HistoryRequest { request_id, .. } if request_id == first.0)
    );
    s.reply(ServerFrame::HistoryPage {
        request_id: first.0,
        channel: channel("news"),
        messages: vec![],
        next: None,
        error: None,
    });
    assert!(matches!(
        s.take_events()[0],
        Event::HistoryPage { id, result: Ok(_), .. } if id == first
    ));
    let second = s
        .client
        .history(s.now, channel("news"), query)
        .expect("connected");
    s.drop_transport();
    assert!(s.all_events().iter().any(|e| matches!(
        e,
        Event::HistoryPage { id, result: Err(r), .. } if *id == second && r.code == ErrorCode::TransportClosed
    )));
}

#[test]
fn a_detach_in_flight_when_the_transport_drops_completes_on_reconnect_without_spinning() {
    // Regression (found by client_properties): the deadline of a detach sent on a dropped
    // transport stayed in the timer table and fired forever while reconnecting. (Transports
    // that never open: without the HTTP fallback, so the attempts stay alike.)
    let mut config = tether_core::client::ClientConfig::new(key_auth());
    config.fallback.enabled = false;
    let mut s = Scripted::with_config(config, 1);
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 0, Continuity::Fresh));
    s.client.detach(s.now, &channel("news"));
    s.drop_transport();
    s.advance(Duration::from_secs(30)); // would panic on a livelock
    s.open();
    s.reply(connected(true));
    let events = s.all_events();
    assert!(events.contains(&Event::Detached {
        channel: channel("news"),
        error: None
    }));
    assert!(
        s.take_sent().is_empty(),
        "the detached channel is not attached again"
    );
}

fn detached_with(events: &[Event]) -> Vec<(String, ErrorCode)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Detached {
                channel,
                error: Some(error),
            } => Some((channel.as_str().to_owned(), error.code)),
            _ => None,
        })
        .collect()
}

/// Issue 14, defects 2 and 3: an attach issued while the connection was failing (wrong
/// key) never got an answer, and a live subscription stayed silent after Failed. Every
/// channel is now reported detached with the failure.
#[test]
fn failing_ends_every_channel_attached_or_attaching() {
    let mut s = Scripted::new(key_auth());
    s.connect();
    s.client.attach(s.now, channel("early")).expect("usable");
    s.take();
    s.reply(ServerFrame::Error {
        error: error(ErrorCode::InvalidCredentials),
    });
    assert_eq!(s.state(), ConnectionState::Failed);
    assert_eq!(
        detached_with(&s.take_events()),
        vec![("early".to_owned(), ErrorCode::ConnectionFailed)]
    );
    let refused = s.client.attach(s.now, channel("late"));
    assert_eq!(
        refused.map_err(|e| e.code),
        Err(ErrorCode::ConnectionFailed)
    );
}

/// Issue 14, defect 3: after close, a live subscription stayed silent forever.
#[test]
fn closing_ends_every_channel() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 7, 0, Continuity::Fresh));
    s.take();
    s.client.close(s.now);
    s.reply(ServerFrame::Closed);
    assert_eq!(s.state(), ConnectionState::Closed);
    assert_eq!(
        detached_with(&s.take_events()),
        vec![("news".to_owned(), ErrorCode::ConnectionClosed)]
    );
}

/// Issue 14, defect 1: an attach of an attached channel (a second subscriber, or a
/// subscribe after dropping the first) got no answer at all, so its caller waited forever.
/// It is answered at once, from the client's own position, and nothing is sent.
#[test]
fn attaching_an_attached_channel_is_answered_at_once() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 7, 3, Continuity::Fresh));
    s.reply(delivery("news", 7, 4));
    s.take();
    s.client.attach(s.now, channel("news")).expect("usable");
    let seen = s.take();
    assert!(
        seen.iter().all(|seen| !matches!(seen, Seen::Sent(..))),
        "nothing sent: {seen:?}"
    );
    let answered = seen.iter().any(|seen| {
        matches!(
            seen,
            Seen::Event(Event::Attached { channel, position, continuity: Continuity::Continuous })
                if channel.as_str() == "news" && *position == Position { epoch: 7, serial: 4 }
        )
    });
    assert!(answered, "{seen:?}");
}

/// Issue 14, defect 5 (unsubscribe, then subscribe again at once): the `detached` answering
/// the detach arrived after the new attach was sent and ended the new attachment, so the
/// second subscribe failed and the hub's `attached` that followed was ignored.
#[test]
fn an_attach_overtaking_a_detach_is_not_ended_by_the_detachs_answer() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 7, 3, Continuity::Fresh));
    s.reply(delivery("news", 7, 4));
    s.take();
    s.client.detach(s.now, &channel("news"));
    assert_eq!(
        s.take_sent(),
        vec![ClientFrame::Detach {
            channel: channel("news")
        }]
    );
    // Attached again before the answer: a fresh attach, sent at once.
    assert_eq!(
        attach(&mut s, "news"),
        ClientFrame::Attach {
            channel: channel("news"),
            from: None
        }
    );
    s.reply(ServerFrame::Detached {
        channel: channel("news"),
        error: None,
    });
    s.reply(attached("news", 7, 6, Continuity::Fresh));
    s.reply(delivery("news", 7, 7));
    let events = s.take_events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Detached { .. })),
        "{events:?}"
    );
    assert!(events.contains(&Event::Attached {
        channel: channel("news"),
        position: Position {
            epoch: 7,
            serial: 6
        },
        continuity: Continuity::Fresh,
    }));
    assert_eq!(delivered(&events), vec![7]);
    // A later `detached` (a revocation) still ends it.
    s.reply(ServerFrame::Detached {
        channel: channel("news"),
        error: None,
    });
    assert!(
        s.take_events()
            .iter()
            .any(|e| matches!(e, Event::Detached { .. }))
    );
}

/// Issue 20, defect 7 (the class): a client decodes hub frames with the limits the hub
/// announced, not only its own defaults — a delivery on a channel name longer than the
/// client's default (300 bytes, hub limit 1024) or larger than its default frame size
/// (100 KiB, hub limit 256 KiB) is delivered, not a transport failure replayed forever.
#[test]
fn hub_frames_are_decoded_with_the_limits_the_hub_announced() {
    let mut s = Scripted::new(key_auth());
    s.connect();
    let mut frame = connected(false);
    if let ServerFrame::Connected { limits, .. } = &mut frame {
        limits.max_channel_name_len = 1024;
        limits.max_frame_size = 256 * 1024;
    }
    s.reply(frame);
    let long = "n".repeat(300);
    attach(&mut s, &long);
    s.reply(attached(&long, 7, 0, Continuity::Fresh));
    let mut big = delivery(&long, 7, 1);
    if let ServerFrame::Message { message, .. } = &mut big {
        message.message.data = vec![1u8; 100 * 1024].into();
    }
    s.reply(big);
    let events = s.take_events();
    assert_eq!(delivered(&events), vec![1], "{:?}", s.state());
    assert_eq!(s.state(), ConnectionState::Connected);
}

/// While the transport is down nothing is attached on the hub: an attach of a channel that
/// was attached waits for the next transport's answer instead of being answered at once
/// (a subscriber told "attached" while disconnected would believe it receives).
#[test]
fn an_attach_while_disconnected_waits_for_the_next_transports_answer() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "news");
    s.reply(attached("news", 5, 3, Continuity::Fresh));
    s.take_events();
    s.drop_transport();
    s.client
        .attach(s.now, channel("news"))
        .expect("usable while disconnected");
    assert!(
        !s.take_events()
            .iter()
            .any(|e| matches!(e, Event::Attached { .. })),
        "answered while disconnected"
    );
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.reply(connected(true));
    assert!(s.take_sent().contains(&ClientFrame::Attach {
        channel: channel("news"),
        from: Some(Position {
            epoch: 5,
            serial: 3
        }),
    }));
    s.reply(attached("news", 5, 3, Continuity::Continuous));
    assert!(s.take_events().contains(&Event::Attached {
        channel: channel("news"),
        position: Position {
            epoch: 5,
            serial: 3
        },
        continuity: Continuity::Continuous,
    }));
}

/// Issue 20, item 10: the client checks an `attached` answer against its own position
/// whatever continuity the hub claims — an answer beyond its last delivered position, or at
/// another epoch, is a discontinuity (§6.6).
#[test]
fn a_continuous_answer_that_does_not_match_the_clients_position_is_a_discontinuity() {
    for (epoch, serial) in [(5, 8), (6, 2)] {
        let mut s = Scripted::new(key_auth());
        s.connect_new();
        attach(&mut s, "news");
        s.reply(attached("news", 5, 0, Continuity::Fresh));
        for delivered in 1..=3 {
            s.reply(delivery("news", 5, delivered));
        }
        s.take_events();
        reconnect(&mut s, true);
        s.reply(attached("news", epoch, serial, Continuity::Continuous));
        let last = Some(Position {
            epoch: 5,
            serial: 3,
        });
        let resumed_after = Position { epoch, serial };
        assert!(
            s.take_events().iter().any(|e| matches!(
                e,
                Event::Discontinuity { last: l, resumed_after: r, .. }
                    if *l == last && *r == resumed_after
            )),
            "continuous at {epoch}:{serial} after 5:3 is not reported"
        );
    }
}

/// Simulator seed 200948 with a store: a stalled link held attach, detach, attach, detach,
/// attach of one channel; the hub's late answers to the first two attaches (`attached` at
/// 83, carrying no request id) were taken for the newest attach, so the client set its
/// position to 83 and reported the newest attach's `attached` at 101 as a discontinuity.
/// Answers to superseded requests are now counted off and dropped.
#[test]
fn regression_answers_to_superseded_attaches_are_not_taken_for_the_newest() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    for _ in 0..2 {
        s.client.attach(s.now, channel("b")).expect("usable");
        s.client.detach(s.now, &channel("b"));
    }
    s.client.attach(s.now, channel("b")).expect("usable");
    assert_eq!(s.take_sent().len(), 5, "each request was sent");
    // The hub answers all five in order, late.
    s.reply(attached("b", 7, 83, Continuity::Fresh));
    s.reply(delivery("b", 7, 84));
    s.reply(ServerFrame::Detached {
        channel: channel("b"),
        error: None,
    });
    s.reply(attached("b", 7, 83, Continuity::Fresh));
    s.reply(ServerFrame::Detached {
        channel: channel("b"),
        error: None,
    });
    s.reply(attached("b", 7, 101, Continuity::Fresh));
    s.reply(delivery("b", 7, 102));
    let events = s.take_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Discontinuity { .. } | Event::Detached { .. })),
        "{events:?}"
    );
    let attached_at: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Attached { position, .. } => Some(position.serial),
            _ => None,
        })
        .collect();
    assert_eq!(attached_at, vec![101], "{events:?}");
    assert_eq!(delivered(&events), vec![102]);
}

/// The same class for a refusal: an attach refused (`detached` with an error) after the
/// application already detached and attached again does not end the new attachment.
#[test]
fn a_refusal_of_a_superseded_attach_does_not_end_the_newest() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    attach(&mut s, "b");
    s.client.detach(s.now, &channel("b"));
    attach(&mut s, "b");
    s.take_sent();
    s.reply(ServerFrame::Detached {
        channel: channel("b"),
        error: Some(tether_core::ErrorInfo::new(
            ErrorCode::TooManyChannels,
            "full",
        )),
    });
    s.reply(ServerFrame::Detached {
        channel: channel("b"),
        error: None,
    });
    s.reply(attached("b", 7, 5, Continuity::Fresh));
    let events = s.take_events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Detached { .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Attached { position, .. } if position.serial == 5)),
        "{events:?}"
    );
}
