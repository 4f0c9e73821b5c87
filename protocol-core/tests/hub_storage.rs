//! The hub on an external store (issue 18, `docs/protocol.md` §7.7): persist before
//! acknowledge, answers in order, failures, and a restart from what the store kept — with
//! the reference [`ModelStore`] as the store.

mod support;

use std::time::Duration;

use support::hub::*;
use tether_core::ErrorCode;
use tether_core::server::{HubConfig, ModelStore, StorageCompletion, StorageMode, StorageRequest};
use tether_core::wire::{
    ClientFrame, Continuity, Direction, HistoryBound, HistoryQuery, Position, ServerFrame,
};

fn durable() -> HubConfig {
    let mut config = config();
    config.storage = StorageMode::External;
    config
}

fn attached(frames: &[ServerFrame]) -> (Position, Continuity) {
    frames
        .iter()
        .find_map(|frame| match frame {
            ServerFrame::Attached {
                position,
                continuity,
                ..
            } => Some((*position, *continuity)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no attached in {frames:?}"))
}

#[test]
fn a_publish_is_acknowledged_and_delivered_only_once_stored() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("pub");
    let answers = h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    assert_eq!(acks(&answers), vec![], "no ACK before the store answers");
    assert_eq!(
        delivered(&h.take(subscriber)),
        Vec::<u64>::new(),
        "no delivery either"
    );
    let append = h
        .storage
        .iter()
        .find_map(|request| match request {
            StorageRequest::Append {
                messages, outcome, ..
            } => Some((messages.clone(), outcome.clone())),
            _ => None,
        })
        .expect("an append");
    assert_eq!(append.0.len(), 1);
    assert_eq!(append.0[0].position.serial, 1);
    assert_eq!(
        append.1.map(|o| o.serial),
        Some(0),
        "the publish's record goes with it"
    );
    store_all(&mut h, &mut store);
    assert_eq!(acks(&h.take(publisher)), vec![(0, None)]);
    assert_eq!(delivered(&h.take(subscriber)), vec![1]);
    assert_eq!(store.stored(&channel("news")).len(), 1);
}

#[test]
fn answers_stay_in_serial_order_behind_one_waiting_for_the_store() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (publisher, _) = h.connect_as("pub");
    // Serial 0 waits for the store; serial 1 is refused at once (empty publish) but must not
    // overtake it; serial 2 waits too.
    h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    assert_eq!(acks(&h.publish(publisher, 1, "news", vec![])), vec![]);
    h.publish(publisher, 2, "news", vec![message("m-2", "x")]);
    store_all(&mut h, &mut store);
    assert_eq!(
        acks(&h.take(publisher)),
        vec![(0, None), (1, Some(ErrorCode::InvalidMessage)), (2, None)]
    );
}

#[test]
fn a_failed_append_is_refused_and_its_positions_and_ids_are_given_again() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    store_all(&mut h, &mut store);
    h.take(publisher);
    h.take(subscriber);
    // The disk fails for two publishes in flight: both refused with storage_failed.
    store.failing = true;
    h.publish(publisher, 1, "news", vec![message("m-1", "x")]);
    h.publish(publisher, 2, "news", vec![message("m-2", "x")]);
    store_all(&mut h, &mut store);
    assert_eq!(
        acks(&h.take(publisher)),
        vec![
            (1, Some(ErrorCode::StorageFailed)),
            (2, Some(ErrorCode::StorageFailed))
        ]
    );
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, tether_core::server::HubEvent::StorageFailed { .. }))
    );
    // Back: the same message ids are stored (not taken for duplicates) at the next positions.
    store.failing = false;
    h.publish(
        publisher,
        3,
        "news",
        vec![message("m-1", "x"), message("m-2", "x")],
    );
    store_all(&mut h, &mut store);
    assert_eq!(acks(&h.take(publisher)), vec![(3, None)]);
    assert_eq!(delivered(&h.take(subscriber)), vec![2, 3]);
    let serials: Vec<u64> = store
        .stored(&channel("news"))
        .iter()
        .map(|m| m.message.position.serial)
        .collect();
    assert_eq!(serials, vec![1, 2, 3], "no hole in the log");
    // A resend of a refused serial is answered from the record, as refused.
    assert_eq!(
        acks(&h.publish(publisher, 1, "news", vec![message("m-1", "x")])),
        vec![(1, Some(ErrorCode::StorageFailed))]
    );
}

#[test]
fn a_failed_append_followed_by_one_already_emitted_takes_its_positions_back_once() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("a", "x")]);
    h.publish(publisher, 1, "news", vec![message("b", "x")]);
    let mut requests = std::mem::take(&mut h.storage);
    let appends: Vec<StorageRequest> = requests
        .drain(..)
        .filter(|r| matches!(r, StorageRequest::Append { .. }))
        .collect();
    let ids: Vec<_> = appends
        .iter()
        .map(|r| match r {
            StorageRequest::Append { id, .. } => *id,
            _ => unreachable!(),
        })
        .collect();
    // The first fails; the second, already emitted, fails as the store refuses a hole.
    h.hub
        .handle_storage(h.stamp(), StorageCompletion::failed(ids[0], "disk"));
    h.drain();
    // A third publish is emitted before the second's answer: it takes position 1.
    let mut answers = acks(&h.publish(publisher, 2, "news", vec![message("c", "x")]));
    let third = std::mem::take(&mut h.storage);
    h.hub
        .handle_storage(h.stamp(), StorageCompletion::failed(ids[1], "hole"));
    h.drain();
    for request in third {
        if let StorageRequest::Append { messages, .. } = &request {
            assert_eq!(
                messages[0].position.serial, 1,
                "the failed positions are given again"
            );
        }
        if let Some(completion) = store.apply(request, h.unix_ms) {
            h.hub.handle_storage(h.stamp(), completion);
            h.drain();
        }
    }
    answers.extend(acks(&h.take(publisher)));
    // The second failure did not take position 1 back again: the next is 2.
    h.publish(publisher, 3, "news", vec![message("d", "x")]);
    let next = h.storage.iter().find_map(|r| match r {
        StorageRequest::Append { messages, .. } => Some(messages[0].position.serial),
        _ => None,
    });
    assert_eq!(next, Some(2));
    store_all(&mut h, &mut store);
    answers.extend(acks(&h.take(publisher)));
    assert_eq!(
        answers,
        vec![
            (0, Some(ErrorCode::StorageFailed)),
            (1, Some(ErrorCode::StorageFailed)),
            (2, None),
            (3, None)
        ]
    );
}

#[test]
fn a_resend_while_the_first_send_waits_is_answered_once_stored() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (publisher, session) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    // The transport drops before the store answers; the client resumes and resends.
    h.drop_connection(publisher);
    let (again, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    assert_eq!(
        acks(&h.publish(again, 0, "news", vec![message("m-0", "x")])),
        vec![]
    );
    store_all(&mut h, &mut store);
    assert_eq!(
        acks(&h.take(again)),
        vec![(0, None)],
        "one answer, once stored"
    );
    assert_eq!(store.stored(&channel("news")).len(), 1, "stored once");
}

/// A hub restored from `store` at the harness's clock.
fn restart(h: &HubHarness, store: &ModelStore, seed: u8) -> HubHarness {
    let mut restarted = HubHarness::with(durable(), seed);
    restarted.now = h.now.saturating_add(Duration::from_secs(3));
    restarted.unix_ms = h.unix_ms + 3000;
    let config = restarted.hub.config().clone();
    let state = store.restored(
        restarted.unix_ms,
        config.retention_count,
        config.retention_age.as_millis() as u64,
        config.dedupe_window.as_millis() as u64,
        config.publish_record,
    );
    restarted.hub.restore(restarted.stamp(), state);
    restarted.drain();
    restarted
}

#[test]
fn a_restart_with_the_store_kept_is_invisible_to_clients() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (subscriber, sub_session) = h.connect_as("sub");
    let (start, _) = attached(&h.attach(subscriber, "news", None));
    let (publisher, pub_session) = h.connect_as("pub");
    for serial in 0..3 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m-{serial}"), "x")],
        );
    }
    store_all(&mut h, &mut store);
    assert_eq!(delivered(&h.take(subscriber)), vec![1, 2, 3]);
    h.take(publisher);

    let mut h = restart(&h, &store, 2);
    // Sessions resume; the channel continues at its epoch; nothing is sent twice.
    let (subscriber, connected) = h.resume("sub", sub_session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    let frames = h.attach(
        subscriber,
        "news",
        Some(Position {
            epoch: start.epoch,
            serial: 2,
        }),
    );
    assert_eq!(attached(&frames).1, Continuity::Continuous);
    assert_eq!(
        delivered(&frames),
        vec![3],
        "the missed message, from the restored cache"
    );
    let (publisher, connected) = h.resume("pub", pub_session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    // A resend of an acknowledged serial is answered from the stored record, not stored.
    assert_eq!(
        acks(&h.publish(publisher, 2, "news", vec![message("m-2", "x")])),
        vec![(2, None)]
    );
    // Another session resending an id within the dedupe window: acknowledged, not stored.
    let (other, _) = h.connect_as("other");
    assert_eq!(
        acks(&h.publish(other, 0, "news", vec![message("m-1", "x")])),
        vec![(0, None)]
    );
    assert!(
        h.storage
            .iter()
            .all(|r| !matches!(r, StorageRequest::Append { .. }))
    );
    // The next publish continues the serials.
    h.publish(publisher, 3, "news", vec![message("m-3", "x")]);
    store_all(&mut h, &mut store);
    assert_eq!(acks(&h.take(publisher)), vec![(3, None)]);
    assert_eq!(delivered(&h.take(subscriber)), vec![4]);
    assert_eq!(store.stored(&channel("news")).len(), 4);
}

#[test]
fn a_restart_that_lost_positions_starts_new_epochs() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    let (start, _) = attached(&h.attach(subscriber, "news", None));
    let (publisher, _) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    store_all(&mut h, &mut store);
    let mut restarted = HubHarness::with(durable(), 2);
    let mut state = store.restored(h.unix_ms, 1000, 120_000, 120_000, 1024);
    state.positions_lost = true;
    restarted.hub.restore(restarted.stamp(), state);
    restarted.drain();
    let (subscriber, _) = restarted.connect_as("sub");
    let frames = restarted.attach(
        subscriber,
        "news",
        Some(Position {
            epoch: start.epoch,
            serial: 1,
        }),
    );
    let (position, continuity) = attached(&frames);
    assert_eq!(continuity, Continuity::Gap);
    assert_ne!(position.epoch, start.epoch);
    assert!(
        restarted.storage.iter().any(|r| matches!(r, StorageRequest::SaveChannel { position: p, .. } if p.epoch == position.epoch)),
        "the new epoch is stored"
    );
}

#[test]
fn a_replay_older_than_the_cache_comes_from_the_store() {
    let mut config = durable();
    config.retention_count = 2;
    let mut h = HubHarness::with(config, 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    let (start, _) = attached(&h.attach(subscriber, "news", None));
    h.drop_connection(subscriber);
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..6 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m-{serial}"), "x")],
        );
    }
    store_all(&mut h, &mut store);
    // The cache holds 5 and 6; a subscriber back from 1 gets 2..6, from the store first.
    let (subscriber, _) = h.connect_as("sub2");
    let frames = h.attach(
        subscriber,
        "news",
        Some(Position {
            epoch: start.epoch,
            serial: 1,
        }),
    );
    assert!(
        frames.is_empty(),
        "the attach waits for the store: {frames:?}"
    );
    store_all(&mut h, &mut store);
    let frames = h.take(subscriber);
    assert_eq!(attached(&frames).1, Continuity::Continuous);
    assert_eq!(delivered(&frames), vec![2, 3, 4, 5, 6]);
}

/// A hub with old messages only in the store and a subscriber whose attach from serial 1
/// waits for the store's page.
fn attach_waiting_for_the_store() -> (
    HubHarness,
    ModelStore,
    tether_core::server::ConnectionId,
    u64,
) {
    let mut config = durable();
    config.retention_count = 2;
    let mut h = HubHarness::with(config, 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    let (start, _) = attached(&h.attach(subscriber, "news", None));
    h.drop_connection(subscriber);
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..6 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m-{serial}"), "x")],
        );
    }
    store_all(&mut h, &mut store);
    let (subscriber, _) = h.connect_as("sub2");
    let from = Position {
        epoch: start.epoch,
        serial: 1,
    };
    assert!(h.attach(subscriber, "news", Some(from)).is_empty());
    (h, store, subscriber, start.epoch)
}

/// Found by reading the client defect of simulator seed 200948: an attach waiting for the
/// store was overtaken by the same session's detach and next attach — `detached` went out
/// first, the store's page then attached the session anyway (after it detached) and the
/// answers no longer kept the order of the requests, which carry no request id (§6.6).
#[test]
fn regression_requests_behind_an_attach_waiting_for_the_store_are_answered_in_order() {
    let (mut h, mut store, subscriber, epoch) = attach_waiting_for_the_store();
    let news = channel("news");
    h.send(
        subscriber,
        &ClientFrame::Detach {
            channel: news.clone(),
        },
    );
    h.send(
        subscriber,
        &ClientFrame::Attach {
            channel: news.clone(),
            from: Some(Position { epoch, serial: 1 }),
        },
    );
    h.send(
        subscriber,
        &ClientFrame::Detach {
            channel: news.clone(),
        },
    );
    assert!(
        h.take(subscriber).is_empty(),
        "all wait behind the first attach"
    );
    store_all(&mut h, &mut store);
    let answers: Vec<&'static str> = h
        .take(subscriber)
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Attached { .. } => Some("attached"),
            ServerFrame::Detached { error: None, .. } => Some("detached"),
            ServerFrame::Detached { .. } => Some("refused"),
            _ => None,
        })
        .collect();
    assert_eq!(answers, ["attached", "detached", "attached", "detached"]);
    // Detached at the end: a new publish reaches it no more.
    let (publisher, _) = h.connect_as("pub2");
    h.publish(publisher, 0, "news", vec![message("late", "x")]);
    store_all(&mut h, &mut store);
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
}

/// The requests held behind an attach waiting for the store are bounded per connection.
#[test]
fn requests_held_behind_the_store_are_bounded() {
    let (mut h, _store, subscriber, _) = attach_waiting_for_the_store();
    let news = channel("news");
    for _ in 0..tether_core::server::MAX_HELD_CHANNEL_REQUESTS {
        h.send(
            subscriber,
            &ClientFrame::Detach {
                channel: news.clone(),
            },
        );
    }
    assert!(!h.closed.contains_key(&subscriber));
    h.send(
        subscriber,
        &ClientFrame::Detach {
            channel: news.clone(),
        },
    );
    assert_eq!(h.closed.get(&subscriber), Some(&ErrorCode::LimitExceeded));
}

#[test]
fn history_older_than_the_cache_is_read_from_the_store() {
    let mut config = durable();
    config.retention_count = 2;
    let mut h = HubHarness::with(config, 1);
    let mut store = ModelStore::new();
    let (publisher, _) = h.connect_as("pub");
    for serial in 0..5 {
        h.publish(
            publisher,
            serial,
            "news",
            vec![message(&format!("m-{serial}"), "x")],
        );
    }
    store_all(&mut h, &mut store);
    let (reader, _) = h.connect_as("reader");
    let forwards = HistoryQuery {
        direction: Direction::Forwards,
        limit: 3,
        ..HistoryQuery::default()
    };
    let page = |frames: Vec<ServerFrame>| -> (Vec<u64>, Option<HistoryQuery>) {
        match frames.as_slice() {
            [
                ServerFrame::HistoryPage {
                    messages,
                    next,
                    error: None,
                    ..
                },
            ] => (messages.iter().map(|m| m.position.serial).collect(), *next),
            other => panic!("expected one page, got {other:?}"),
        }
    };
    h.send(
        reader,
        &ClientFrame::HistoryRequest {
            request_id: 1,
            channel: channel("news"),
            query: forwards,
        },
    );
    assert!(h.take(reader).is_empty(), "answered by the store");
    store_all(&mut h, &mut store);
    let (serials, next) = page(h.take(reader));
    assert_eq!(serials, vec![1, 2, 3]);
    let next = next.expect("more");
    assert!(matches!(next.start, Some(HistoryBound::Position(p)) if p.serial == 4));
    // The newest page comes from the cache at once when the cache holds more than it.
    let backwards = HistoryQuery {
        direction: Direction::Backwards,
        limit: 1,
        ..HistoryQuery::default()
    };
    h.send(
        reader,
        &ClientFrame::HistoryRequest {
            request_id: 2,
            channel: channel("news"),
            query: backwards,
        },
    );
    assert_eq!(page(h.take(reader)).0, vec![5]);
    // At most 16 reads in flight per connection.
    for request_id in 0..17 {
        h.send(
            reader,
            &ClientFrame::HistoryRequest {
                request_id,
                channel: channel("news"),
                query: forwards,
            },
        );
    }
    let refused = h.take(reader);
    assert!(matches!(
        refused.as_slice(),
        [ServerFrame::HistoryPage { error: Some(e), .. }] if e.code == ErrorCode::LimitExceeded
    ));
    store_all(&mut h, &mut store);
    assert_eq!(h.take(reader).len(), 16);
}

#[test]
fn an_in_memory_hub_emits_no_storage_request() {
    let mut h = HubHarness::new();
    let (publisher, _) = h.connect_as("pub");
    assert_eq!(
        acks(&h.publish(publisher, 0, "news", vec![message("m", "x")])),
        vec![(0, None)]
    );
    assert!(h.storage.is_empty());
}

/// Found by the simulator (seed 3151 with `--store`): a publish refused just before a crash
/// had its outcome in a record write the crash lost; the restored session expected that
/// serial again, and the client's next one was taken for a skipped serial — a fatal
/// `invalid_publish_serial`. A restored session now accepts its first serial ahead.
#[test]
fn regression_a_restored_session_accepts_a_serial_past_outcomes_a_crash_lost() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (publisher, session) = h.connect_as("pub");
    h.publish(publisher, 0, "news", vec![message("m-0", "x")]);
    store_all(&mut h, &mut store);
    h.take(publisher);
    // Serial 1 is refused (empty) and NACKed; its record write is lost in the crash.
    assert_eq!(
        acks(&h.publish(publisher, 1, "news", vec![])),
        vec![(1, Some(ErrorCode::InvalidMessage))]
    );
    h.storage.clear();
    let mut h = restart(&h, &store, 2);
    let (publisher, connected) = h.resume("pub", session);
    assert!(matches!(
        connected,
        ServerFrame::Connected { resumed: true, .. }
    ));
    let answers = h.publish(publisher, 2, "news", vec![message("m-2", "x")]);
    assert!(h.closed.is_empty(), "not a protocol error: {answers:?}");
    store_all(&mut h, &mut store);
    let mut answers = acks(&answers);
    answers.extend(acks(&h.take(publisher)));
    assert_eq!(answers, vec![(2, None)]);
    // The lost serial's outcome is unknown; the next serial must follow again.
    assert_eq!(
        acks(&h.publish(publisher, 1, "news", vec![])),
        vec![(1, Some(ErrorCode::PublishOutcomeUnknown))]
    );
    h.publish(publisher, 5, "news", vec![message("m-5", "x")]);
    assert_eq!(
        h.closed.values().copied().collect::<Vec<_>>(),
        vec![ErrorCode::InvalidPublishSerial]
    );
}

/// Issue 19, metrics: the hub's totals count what it stored, delivered, acknowledged and
/// refused, and how long acknowledgements waited for the store.
#[test]
fn totals_count_messages_publishes_and_the_wait_for_the_store() {
    let mut h = HubHarness::with(durable(), 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let (publisher, _) = h.connect_as("pub");
    h.publish(
        publisher,
        0,
        "news",
        vec![message("a", "x"), message("b", "x")],
    );
    h.advance(Duration::from_millis(30));
    store_all(&mut h, &mut store);
    h.publish(publisher, 1, "news", vec![message("c", "x")]);
    store_all(&mut h, &mut store);
    // A resend is not a new publish; a duplicate id is not a new message.
    h.publish(publisher, 1, "news", vec![message("c", "x")]);
    h.publish(publisher, 2, "news", vec![message("a", "x")]);
    store_all(&mut h, &mut store);
    let totals = h.hub.stats().totals;
    assert_eq!(totals.messages_stored, 3);
    assert_eq!(totals.messages_delivered, 3);
    assert_eq!(totals.publishes_acknowledged, 3);
    assert_eq!(totals.publishes_refused, 0);
    let bucket = |ms: u64| {
        tether_core::server::PUBLISH_LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .expect("a bucket")
    };
    assert_eq!(totals.publish_latency[bucket(30)], 1, "{totals:?}");
    assert_eq!(totals.publish_latency[bucket(0)], 2, "{totals:?}");
    assert_eq!(totals.publish_latency_sum_ms, 30);
    assert_eq!(totals.publish_latency.iter().sum::<u64>(), 3);
    // A refused publish (no such capability is needed: an empty publish is refused).
    h.publish(publisher, 3, "news", vec![]);
    store_all(&mut h, &mut store);
    assert_eq!(h.hub.stats().totals.publishes_refused, 1);
}
