//! Client scenarios: publishes, acknowledgements, queueing, suspension, resume resends.

mod support;

use std::time::Duration;

use support::scripted::*;
use tether_core::client::{ClientConfig, ConnectionState, Event, NewMessage, PublishId};
use tether_core::wire::{ClientFrame, MessageId, ServerFrame};
use tether_core::{ErrorCode, ErrorInfo};

fn publish(s: &mut Scripted, text: &str) -> PublishId {
    s.client
        .publish(
            s.now,
            channel("news"),
            vec![NewMessage::new("text", text.to_owned())],
        )
        .expect("accepted")
}

fn resolutions(events: &[Event]) -> Vec<(PublishId, Result<(), ErrorCode>)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::PublishResolved { id, result } => {
                Some((*id, result.clone().map_err(|e: ErrorInfo| e.code)))
            }
            _ => None,
        })
        .collect()
}

/// (serial, message ids) of every publish frame.
fn publishes(frames: &[ClientFrame]) -> Vec<(u64, Vec<MessageId>)> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ClientFrame::Publish {
                serial, messages, ..
            } => Some((*serial, messages.iter().map(|m| m.id.clone()).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn ack_resolves_the_publish() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.take();
    let id = publish(&mut s, "hello");
    let sent = publishes(&s.take_sent());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, 0, "serials start at 0");
    s.reply(ServerFrame::Ack {
        serial: 0,
        count: 1,
    });
    assert_eq!(resolutions(&s.take_events()), vec![(id, Ok(()))]);
    assert_eq!(s.client.pending_publishes(), 0);
}

#[test]
fn nack_fails_the_publish_with_its_code_and_the_connection_stays() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let id = publish(&mut s, "hello");
    s.reply(ServerFrame::Nack {
        serial: 0,
        count: 1,
        error: error(ErrorCode::Forbidden),
    });
    assert_eq!(
        resolutions(&s.take_events()),
        vec![(id, Err(ErrorCode::Forbidden))]
    );
    assert_eq!(s.state(), ConnectionState::Connected);
}

#[test]
fn a_range_ack_resolves_several_publishes_once_each() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let ids: Vec<PublishId> = (0..4).map(|n| publish(&mut s, &n.to_string())).collect();
    s.take();
    s.reply(ServerFrame::Ack {
        serial: 0,
        count: 3,
    });
    s.reply(ServerFrame::Ack {
        serial: 0,
        count: 3,
    }); // repeated: no second resolution
    s.reply(ServerFrame::Ack {
        serial: 3,
        count: 1,
    });
    let resolved = resolutions(&s.take_events());
    assert_eq!(
        resolved,
        ids.iter().map(|id| (*id, Ok(()))).collect::<Vec<_>>()
    );
}

#[test]
fn a_publish_while_disconnected_is_queued_then_sent_once() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.drop_transport();
    let id = publish(&mut s, "queued");
    assert!(
        publishes(&s.take_sent()).is_empty(),
        "nothing sent without a transport"
    );
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.reply(connected(true));
    let sent = publishes(&s.take_sent());
    assert_eq!(sent.len(), 1, "sent exactly once: {sent:?}");
    s.reply(ServerFrame::Ack {
        serial: sent[0].0,
        count: 1,
    });
    assert_eq!(resolutions(&s.take_events()), vec![(id, Ok(()))]);
}

#[test]
fn the_queue_bound_refuses_at_once() {
    let mut config = ClientConfig::new(key_auth());
    config.max_pending_publishes = 3;
    let mut s = Scripted::with_config(config, 1);
    for n in 0..3 {
        publish(&mut s, &n.to_string());
    }
    let refused = s
        .client
        .publish(s.now, channel("news"), vec![NewMessage::new("t", "x")])
        .expect_err("the queue is full");
    assert_eq!(refused.code, ErrorCode::PublishQueueFull);
}

#[test]
fn suspended_after_the_session_ttl_fails_pending_publishes_and_refuses_new_ones() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let id = publish(&mut s, "in flight");
    s.drop_transport();
    s.take();
    // No hub answers any more attempt: every transport fails to open.
    let start = s.now;
    while s.state() != ConnectionState::Suspended && s.now.since(start) < Duration::from_secs(300) {
        if let Some(transport) = s.transport.take() {
            s.client
                .handle_transport_closed(s.now, transport, "refused");
            s.drain();
            continue;
        }
        let next = s
            .client
            .poll_timeout()
            .expect("a retry or the suspension is due");
        s.advance_to(next);
    }
    assert_eq!(s.state(), ConnectionState::Suspended);
    assert_eq!(
        s.now.since(start),
        Duration::from_secs(120),
        "suspended at the session TTL"
    );
    assert_eq!(
        resolutions(&s.all_events()),
        vec![(id, Err(ErrorCode::ConnectionSuspended))]
    );
    let refused = s
        .client
        .publish(s.now, channel("news"), vec![NewMessage::new("t", "x")])
        .expect_err("suspended");
    assert_eq!(refused.code, ErrorCode::ConnectionSuspended);
}

#[test]
fn a_resumed_session_resends_unacked_publishes_with_the_same_serials() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    publish(&mut s, "a");
    publish(&mut s, "b");
    publish(&mut s, "c");
    let first = publishes(&s.take_sent());
    s.reply(ServerFrame::Ack {
        serial: 0,
        count: 1,
    });
    s.drop_transport();
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    s.reply(connected(true));
    let again = publishes(&s.take_sent());
    assert_eq!(
        again,
        first[1..].to_vec(),
        "b and c again, same serials and ids"
    );
    let next = publish(&mut s, "d");
    assert_eq!(
        publishes(&s.take_sent())[0].0,
        3,
        "new publishes continue the serials"
    );
    s.reply(ServerFrame::Ack {
        serial: 1,
        count: 3,
    });
    let resolved = resolutions(&s.take_events());
    assert_eq!(resolved.len(), 3);
    assert_eq!(resolved[2], (next, Ok(())));
}

#[test]
fn a_failed_resume_resends_with_new_serials_the_same_ids_and_emits_update() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    publish(&mut s, "a");
    publish(&mut s, "b");
    let first = publishes(&s.take_sent());
    s.reply(ServerFrame::Ack {
        serial: 0,
        count: 1,
    });
    s.drop_transport();
    s.wait_for_open(Duration::from_secs(2));
    s.open();
    let mut reply = connected(false);
    if let ServerFrame::Connected { error: e, .. } = &mut reply {
        *e = Some(error(ErrorCode::SessionNotFound));
    }
    s.reply(reply);
    let seen = s.take();
    assert!(seen.contains(&Seen::Event(Event::Update {
        reason: error(ErrorCode::SessionNotFound)
    })));
    let again: Vec<_> = seen
        .iter()
        .filter_map(|x| match x {
            Seen::Sent(_, frame) => Some(frame.clone()),
            _ => None,
        })
        .collect();
    let again = publishes(&again);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, 0, "a new session starts serials at 0");
    assert_eq!(again[0].1, first[1].1, "same message ids");
}

#[test]
fn message_ids_are_stable_and_application_ids_are_kept() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let own = MessageId::new("order-17").expect("valid");
    s.client
        .publish(
            s.now,
            channel("news"),
            vec![
                NewMessage {
                    id: Some(own.clone()),
                    name: "x".into(),
                    data: "1".into(),
                },
                NewMessage::new("y", "2"),
            ],
        )
        .expect("accepted");
    let sent = publishes(&s.take_sent());
    assert_eq!(sent[0].1[0], own);
    let instance = s.client.instance_id().to_owned();
    assert_eq!(sent[0].1[1].as_str(), format!("{instance}:0"));
}

#[test]
fn a_publish_that_cannot_fit_the_frame_size_is_refused_at_once() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let refused = s
        .client
        .publish(
            s.now,
            channel("news"),
            vec![NewMessage::new("big", vec![0u8; 70_000])],
        )
        .expect_err("over 64 KiB");
    assert_eq!(refused.code, ErrorCode::FrameTooLarge);
}

#[test]
fn close_fails_pending_publishes() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let id = publish(&mut s, "x");
    s.client.close(s.now);
    s.reply(ServerFrame::Closed);
    assert_eq!(
        resolutions(&s.take_events()),
        vec![(id, Err(ErrorCode::ConnectionClosed))]
    );
}

/// Issue 14, defect 4: a publish to a channel name over the hub's announced limit (300
/// bytes against 256) was sent, and the hub's error sent the whole client to Failed. It is
/// refused as a value now, and the connection stays; history likewise.
#[test]
fn a_channel_name_over_the_hubs_limit_is_refused_locally() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    let long = tether_core::wire::ChannelName::new("n".repeat(300)).expect("within 1024");
    let refused = s.client.publish(
        s.now,
        long.clone(),
        vec![NewMessage::new("n", bytes::Bytes::from_static(b"x"))],
    );
    assert_eq!(
        refused.map_err(|e| e.code),
        Err(ErrorCode::ChannelNameTooLong)
    );
    let refused = s
        .client
        .history(s.now, long, tether_core::wire::HistoryQuery::default());
    assert_eq!(
        refused.map_err(|e| e.code),
        Err(ErrorCode::ChannelNameTooLong)
    );
    assert!(s.take_sent().is_empty(), "nothing was sent");
    assert_eq!(s.state(), ConnectionState::Connected);
}
