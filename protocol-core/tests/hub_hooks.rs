//! Hooks (issue 19, item 7; `docs/protocol.md` §7.9): the application decides on attaches
//! and publishes of the namespaces that ask for it — answers come back into the hub as
//! inputs, within a time bound, with `hook_timeout` after it — and order holds around them.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::hub::*;
use tether_core::ErrorCode;
use tether_core::server::{
    ApiAnswer, ApiRequest, ApiRequestId, HookAnswer, HookId, HookRequest, HubConfig, ModelStore,
    Namespace, Publishers, StorageMode,
};
use tether_core::wire::{ClientFrame, ClientId, Message, MessageId, Position, ServerFrame};

const TIMEOUT: Duration = Duration::from_secs(2);

fn hooked() -> HubConfig {
    let mut config = config();
    let mut attach = Namespace::new("vip:*");
    attach.attach_hook = Some(true);
    let mut publish = Namespace::new("moderated:*");
    publish.publish_hook = Some(true);
    let mut members = Namespace::new("members:*");
    members.publish_hook = Some(true);
    members.publish = Some(Publishers::Subscribers);
    config.namespaces = vec![attach, publish, members];
    config.hook_timeout = TIMEOUT;
    config.validate().expect("usable");
    config
}

fn answer(h: &mut HubHarness, id: HookId, answer: HookAnswer) {
    h.hub.handle_hook(h.stamp(), id, answer);
    h.drain();
}

/// The one hook request waiting, taken.
fn waiting(h: &mut HubHarness) -> (HookId, HookRequest) {
    assert_eq!(h.hooks.len(), 1, "{:?}", h.hooks);
    h.hooks.remove(0)
}

fn detached_error(frames: &[ServerFrame]) -> Option<Option<ErrorCode>> {
    frames.iter().find_map(|frame| match frame {
        ServerFrame::Detached { error, .. } => Some(error.as_ref().map(|e| e.code)),
        _ => None,
    })
}

fn kinds(frames: &[ServerFrame]) -> Vec<&'static str> {
    frames
        .iter()
        .map(|f| tether_core::wire::Frame::kind(f))
        .collect()
}

#[test]
fn an_attach_waits_for_its_hook_and_the_requests_behind_it_keep_their_order() {
    let mut h = HubHarness::with(hooked(), 1);
    let (client, _) = h.connect_as("alice");
    assert_eq!(h.attach(client, "vip:lounge", None), vec![]);
    match waiting(&mut h) {
        (
            id,
            HookRequest::Attach {
                client_id, channel, ..
            },
        ) => {
            assert_eq!(
                (client_id.as_str(), channel.as_str()),
                ("alice", "vip:lounge")
            );
            // A detach of the same channel waits behind it; another channel does not.
            h.send(
                client,
                &ClientFrame::Detach {
                    channel: channel.clone(),
                },
            );
            assert_eq!(h.take(client), vec![]);
            assert_eq!(kinds(&h.attach(client, "open", None)), ["attached"]);
            answer(&mut h, id, HookAnswer::Allow);
            assert_eq!(kinds(&h.take(client)), ["attached", "detached"]);
        }
        other => panic!("{other:?}"),
    }
    // Refused: detached with forbidden and the application's text.
    h.attach(client, "vip:lounge", None);
    let (id, _) = waiting(&mut h);
    answer(&mut h, id, HookAnswer::Refuse("members only".into()));
    let frames = h.take(client);
    assert_eq!(detached_error(&frames), Some(Some(ErrorCode::Forbidden)));
    assert!(format!("{frames:?}").contains("members only"));
}

#[test]
fn a_hook_that_does_not_answer_in_time_refuses_with_hook_timeout_and_its_late_answer_is_ignored() {
    let mut h = HubHarness::with(hooked(), 1);
    let (client, _) = h.connect_as("alice");
    h.attach(client, "vip:lounge", None);
    let (attach, _) = waiting(&mut h);
    h.publish(client, 0, "moderated:chat", vec![message("m0", "x")]);
    let (publish, _) = waiting(&mut h);
    h.advance_alive(&[client], TIMEOUT - Duration::from_millis(1));
    assert_eq!(h.take(client), vec![]);
    h.advance_alive(&[client], Duration::from_millis(1));
    let frames = h.take(client);
    assert_eq!(detached_error(&frames), Some(Some(ErrorCode::HookTimeout)));
    assert_eq!(acks(&frames), vec![(0, Some(ErrorCode::HookTimeout))]);
    answer(&mut h, attach, HookAnswer::Allow);
    answer(&mut h, publish, HookAnswer::Allow);
    assert_eq!(h.take(client), vec![], "late answers change nothing");
    assert!(!h.closed.contains_key(&client));
}

#[test]
fn publishes_behind_one_waiting_for_its_hook_keep_their_order_and_a_replacement_is_stored() {
    let mut h = HubHarness::with(hooked(), 1);
    let (subscriber, _) = h.connect_as("bob");
    h.attach(subscriber, "moderated:chat", None);
    h.attach(subscriber, "open", None);
    let (publisher, _) = h.connect_as("alice");
    assert_eq!(
        h.publish(
            publisher,
            0,
            "moderated:chat",
            vec![message("m0", "bad word")]
        ),
        vec![]
    );
    // Behind it, even on a channel without a hook: nothing stored or answered yet.
    assert_eq!(
        h.publish(publisher, 1, "open", vec![message("m1", "x")]),
        vec![]
    );
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
    let (id, request) = waiting(&mut h);
    let HookRequest::Publish { messages, .. } = request else {
        panic!("{request:?}")
    };
    let mut clean: Vec<Message> = messages;
    clean[0].data = Bytes::from_static(b"*** word");
    answer(&mut h, id, HookAnswer::Replace(clean));
    assert_eq!(acks(&h.take(publisher)), vec![(0, None), (1, None)]);
    let frames = h.take(subscriber);
    let data: Vec<(String, Bytes)> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message { channel, message } => {
                Some((channel.as_str().to_owned(), message.message.data.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        data,
        [
            ("moderated:chat".to_owned(), Bytes::from_static(b"*** word")),
            ("open".to_owned(), Bytes::from_static(b"x")),
        ]
    );
    // A replacement with other ids is refused (resends and dedupe go by id).
    h.publish(publisher, 2, "moderated:chat", vec![message("m2", "x")]);
    let (id, _) = waiting(&mut h);
    answer(&mut h, id, HookAnswer::Replace(vec![message("other", "x")]));
    assert_eq!(
        acks(&h.take(publisher)),
        vec![(2, Some(ErrorCode::Internal))]
    );
    // A refusal: nack forbidden; the next publish goes on.
    h.publish(publisher, 3, "moderated:chat", vec![message("m3", "x")]);
    let (id, _) = waiting(&mut h);
    answer(&mut h, id, HookAnswer::Refuse("no".into()));
    assert_eq!(
        acks(&h.take(publisher)),
        vec![(3, Some(ErrorCode::Forbidden))]
    );
    assert_eq!(
        acks(&h.publish(publisher, 4, "open", vec![message("m4", "x")])),
        vec![(4, None)]
    );
}

#[test]
fn a_resend_after_a_reconnect_waits_for_the_first_sends_hook_and_is_stored_once() {
    for durable in [false, true] {
        let mut config = hooked();
        if durable {
            config.storage = StorageMode::External;
        }
        let mut h = HubHarness::with(config, 1);
        let mut store = ModelStore::new();
        let (publisher, token) = h.connect_as("alice");
        h.publish(publisher, 0, "moderated:chat", vec![message("m0", "x")]);
        h.publish(publisher, 1, "moderated:chat", vec![message("m1", "x")]);
        let (id, _) = waiting(&mut h);
        h.drop_connection(publisher);
        let (again, _) = h.resume("alice", token);
        // The client resends both: serial 0 waits for the hook, serial 1 behind it.
        h.publish(again, 0, "moderated:chat", vec![message("m0", "x")]);
        h.publish(again, 1, "moderated:chat", vec![message("m1", "x")]);
        assert_eq!(acks(&h.take(again)), vec![]);
        answer(&mut h, id, HookAnswer::Allow);
        store_all(&mut h, &mut store);
        // Serial 1 now asks its own hook.
        let (second, _) = waiting(&mut h);
        answer(&mut h, second, HookAnswer::Allow);
        store_all(&mut h, &mut store);
        assert_eq!(
            acks(&h.take(again)),
            vec![(0, None), (1, None)],
            "durable: {durable}"
        );
        let (reader, _) = h.connect_as("reader-of-history");
        let epoch = match h.attach(reader, "moderated:chat", None).first() {
            Some(ServerFrame::Attached { position, .. }) => position.epoch,
            other => panic!("{other:?}"),
        };
        let from = tether_core::wire::Position { epoch, serial: 0 };
        let frames = h.attach(reader, "moderated:chat", Some(from));
        assert_eq!(delivered(&frames), vec![1, 2], "stored once each");
    }
}

#[test]
fn waiting_publishes_are_bounded_by_the_publish_record() {
    let mut config = hooked();
    config.publish_record = 4;
    let mut h = HubHarness::with(config, 1);
    let (publisher, _) = h.connect_as("alice");
    h.publish(publisher, 0, "moderated:chat", vec![message("m0", "x")]);
    for serial in 1..=4 {
        h.publish(
            publisher,
            serial,
            "open",
            vec![message(&format!("m{serial}"), "x")],
        );
    }
    assert!(!h.closed.contains_key(&publisher));
    h.publish(publisher, 5, "open", vec![message("m5", "x")]);
    assert_eq!(h.closed.get(&publisher), Some(&ErrorCode::LimitExceeded));
}

#[test]
fn attaches_waiting_for_hooks_are_bounded_by_the_channel_limit() {
    let mut config = hooked();
    config.max_channels_per_session = 3;
    let mut h = HubHarness::with(config, 1);
    let (client, _) = h.connect_as("alice");
    for n in 0..3 {
        assert_eq!(h.attach(client, &format!("vip:{n}"), None), vec![]);
    }
    let frames = h.attach(client, "vip:3", None);
    assert_eq!(
        detached_error(&frames),
        Some(Some(ErrorCode::TooManyChannels))
    );
    assert_eq!(h.hooks.len(), 3);
}

fn long_name(id: &str) -> Message {
    Message {
        id: MessageId::new(id).expect("id"),
        name: "n".repeat(1000),
        data: Bytes::from_static(b"x"),
    }
}

/// Review of issue 19, defect 1: an attach the hook allowed that then waits for the store
/// (a replay older than the cache) let the detach behind it be answered first, and left the
/// session attached after it detached.
#[test]
fn regression_a_hooked_attach_waiting_for_the_store_keeps_the_detach_behind_it() {
    let mut config = hooked();
    config.storage = StorageMode::External;
    config.retention_count = 2;
    let mut h = HubHarness::with(config, 1);
    let mut store = ModelStore::new();
    let (first, _) = h.connect_as("sub");
    h.attach(first, "vip:news", None);
    let (id, _) = waiting(&mut h);
    answer(&mut h, id, HookAnswer::Allow);
    let epoch = match h.take(first).first() {
        Some(ServerFrame::Attached { position, .. }) => position.epoch,
        other => panic!("{other:?}"),
    };
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..6 {
        h.publish(
            publisher,
            serial,
            "vip:news",
            vec![message(&format!("m-{serial}"), "x")],
        );
    }
    store_all(&mut h, &mut store);
    let (client, _) = h.connect_as("sub2");
    let from = Position { epoch, serial: 1 };
    assert_eq!(h.attach(client, "vip:news", Some(from)), vec![]);
    let (id, _) = waiting(&mut h);
    h.send(
        client,
        &ClientFrame::Detach {
            channel: channel("vip:news"),
        },
    );
    answer(&mut h, id, HookAnswer::Allow);
    assert_eq!(h.take(client), vec![], "nothing before the store answers");
    store_all(&mut h, &mut store);
    let frames = h.take(client);
    let order: Vec<&str> = kinds(&frames)
        .into_iter()
        .filter(|k| *k != "message")
        .collect();
    assert_eq!(order, ["attached", "detached"]);
    assert_eq!(delivered(&frames), vec![2, 3, 4, 5, 6]);
    h.publish(publisher, 6, "vip:news", vec![message("m-6", "late")]);
    store_all(&mut h, &mut store);
    assert_eq!(delivered(&h.take(client)), Vec::<u64>::new(), "detached");
}

/// Review of issue 19, defect 4: with `publish = "subscribers"`, a transport drop while
/// the hook waited turned the allowed publish into `forbidden` (the check was made again
/// when the hook answered, after the attachments went with the transport).
#[test]
fn regression_an_allowed_publish_is_stored_after_the_transport_dropped_meanwhile() {
    let mut h = HubHarness::with(hooked(), 1);
    let (client, token) = h.connect_as("alice");
    h.attach(client, "members:room", None);
    assert_eq!(
        h.publish(client, 0, "members:room", vec![message("m0", "hi")]),
        vec![]
    );
    let (id, _) = waiting(&mut h);
    h.drop_connection(client);
    answer(&mut h, id, HookAnswer::Allow);
    let (again, _) = h.resume("alice", token);
    h.attach(again, "members:room", None);
    let frames = h.publish(again, 0, "members:room", vec![message("m0", "hi")]);
    assert_eq!(acks(&frames), vec![(0, None)]);
}

/// Review of issue 19, defect 2: a replacement with a message name over 256 bytes was
/// stored and sent in frames no client can decode; so was such a name from the server-side
/// API.
#[test]
fn regression_message_names_over_the_limit_are_refused_from_hooks_and_the_api() {
    let mut h = HubHarness::with(hooked(), 1);
    let (subscriber, _) = h.connect_as("bob");
    h.attach(subscriber, "moderated:chat", None);
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("alice");
    h.publish(publisher, 0, "moderated:chat", vec![message("m0", "x")]);
    let (id, _) = waiting(&mut h);
    // The harness decodes every frame the hub sends, and fails on one it cannot.
    answer(&mut h, id, HookAnswer::Replace(vec![long_name("m0")]));
    h.hub.handle_api(
        h.stamp(),
        ApiRequestId(1),
        ApiRequest::Publish {
            channel: channel("news"),
            messages: vec![long_name("a")],
            publisher: ClientId::new("backend").expect("id"),
        },
    );
    h.drain();
    assert!(
        matches!(&h.api[..], [(_, ApiAnswer::Published(Err(e)))] if e.code == ErrorCode::InvalidMessage),
        "{:?}",
        h.api
    );
    assert_eq!(
        acks(&h.take(publisher)),
        vec![(0, Some(ErrorCode::Internal))]
    );
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
}

/// Review of issue 19, weakness 5: publishes held behind a waiting hook were bounded in
/// count only (1,024 × 60 kB were held for one session).
#[test]
fn regression_publishes_behind_a_hook_are_bounded_in_bytes() {
    let mut h = HubHarness::with(hooked(), 1);
    let (publisher, _) = h.connect_as("alice");
    h.publish(publisher, 0, "moderated:chat", vec![message("m0", "x")]);
    let big = "y".repeat(60_000);
    let mut serial = 1;
    while !h.closed.contains_key(&publisher) {
        h.publish(
            publisher,
            serial,
            "open",
            vec![message(&format!("m{serial}"), &big)],
        );
        serial += 1;
        assert!(serial < 100, "still held after {serial} publishes of 60 kB");
    }
    assert_eq!(h.closed.get(&publisher), Some(&ErrorCode::LimitExceeded));
    // 1 MiB (max_pending_bytes) / 60 kB.
    assert_eq!(serial, 19);
}

/// Review of issue 19, weakness 6: a connection's attach hooks outlived it (50 connections
/// dropped at once left 5,000 requests waiting).
#[test]
fn regression_attach_hooks_are_forgotten_with_their_connection() {
    let mut h = HubHarness::with(hooked(), 1);
    for round in 0..3 {
        let (client, _) = h.connect_as(&format!("c{round}"));
        for n in 0..10 {
            h.attach(client, &format!("vip:{n}"), None);
        }
        h.drop_connection(client);
    }
    assert_eq!(h.hub.stats().hooks_waiting, 0);
    // Their late answers change nothing.
    for (id, _) in std::mem::take(&mut h.hooks) {
        answer(&mut h, id, HookAnswer::Allow);
    }
    assert_eq!(h.hub.stats().hooks_waiting, 0);
}

/// Review of issue 19, doc mismatch: attaches waiting for hooks count against the channel
/// limit together with the channels attached.
#[test]
fn attaches_waiting_and_attached_count_together_against_the_channel_limit() {
    let mut config = hooked();
    config.max_channels_per_session = 3;
    let mut h = HubHarness::with(config, 1);
    let (client, _) = h.connect_as("alice");
    for name in ["a", "b"] {
        h.attach(client, name, None);
    }
    assert_eq!(h.attach(client, "vip:0", None), vec![]);
    let frames = h.attach(client, "vip:1", None);
    assert_eq!(
        detached_error(&frames),
        Some(Some(ErrorCode::TooManyChannels))
    );
    assert_eq!(h.hooks.len(), 1);
}
