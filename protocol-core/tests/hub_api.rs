//! The server-side API (issue 19, `docs/protocol.md` §7.8): publishes without a client
//! connection — positions answered, deduplicated by message id, delivered once — history
//! and the channels held, in memory and on a store.

mod support;

use std::time::Duration;
use support::hub::*;
use tether_core::ErrorCode;

use tether_core::server::auth::{Revocation, RevocationTarget};
use tether_core::server::{
    ApiAnswer, ApiRequest, ApiRequestId, HubConfig, ModelStore, StorageMode,
};
use tether_core::wire::{ClientId, Direction, HistoryQuery};

fn api(h: &mut HubHarness, id: u64, request: ApiRequest) -> Vec<ApiAnswer> {
    h.hub.handle_api(h.stamp(), ApiRequestId(id), request);
    h.drain();
    std::mem::take(&mut h.api)
        .into_iter()
        .inspect(|(answered, _)| assert_eq!(*answered, ApiRequestId(id)))
        .map(|(_, answer)| answer)
        .collect()
}

fn publish(channel: &str, ids: &[&str]) -> ApiRequest {
    ApiRequest::Publish {
        channel: support::hub::channel(channel),
        messages: ids.iter().map(|id| message(id, "x")).collect(),
        publisher: ClientId::new("backend").expect("valid"),
    }
}

fn serials(answer: &ApiAnswer) -> Vec<Option<u64>> {
    match answer {
        ApiAnswer::Published(Ok(published)) => published
            .iter()
            .map(|p| p.position.map(|position| position.serial))
            .collect(),
        other => panic!("not published: {other:?}"),
    }
}

#[test]
fn an_api_publish_is_delivered_once_and_a_resend_is_not_stored_again() {
    let mut h = HubHarness::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    let answers = api(&mut h, 1, publish("news", &["a", "b", "a"]));
    assert_eq!(serials(&answers[0]), [Some(1), Some(2), None]);
    let frames = h.take(subscriber);
    assert_eq!(delivered(&frames), vec![1, 2]);
    let publisher = frames.iter().find_map(|frame| match frame {
        tether_core::wire::ServerFrame::Message { message, .. } => Some(message.publisher.clone()),
        _ => None,
    });
    assert_eq!(
        publisher.map(|p| p.as_str().to_owned()),
        Some("backend".into())
    );
    // The same request again (a retried HTTP call): nothing stored, nothing delivered.
    let answers = api(&mut h, 2, publish("news", &["a", "b"]));
    assert_eq!(serials(&answers[0]), [None, None]);
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
    let answers = api(&mut h, 3, publish("news", &["c"]));
    assert_eq!(serials(&answers[0]), [Some(3)]);
    assert_eq!(delivered(&h.take(subscriber)), vec![3]);
}

#[test]
fn api_history_and_channels() {
    let mut h = HubHarness::new();
    api(&mut h, 1, publish("news", &["a", "b"]));
    api(&mut h, 2, publish("sport", &["c"]));
    let query = HistoryQuery {
        direction: Direction::Forwards,
        limit: 10,
        ..HistoryQuery::default()
    };
    let answers = api(
        &mut h,
        3,
        ApiRequest::History {
            channel: channel("news"),
            query,
        },
    );
    match &answers[..] {
        [ApiAnswer::History(Ok((messages, None)))] => {
            let ids: Vec<&str> = messages.iter().map(|m| m.message.id.as_str()).collect();
            assert_eq!(ids, ["a", "b"]);
        }
        other => panic!("{other:?}"),
    }
    let answers = api(&mut h, 4, ApiRequest::Channels);
    match &answers[..] {
        [ApiAnswer::Channels(channels)] => {
            let mut names: Vec<(&str, u64)> = channels
                .iter()
                .map(|c| (c.channel.as_str(), c.position.serial))
                .collect();
            names.sort();
            assert_eq!(names, [("news", 2), ("sport", 1)]);
        }
        other => panic!("{other:?}"),
    }
    // Refusals are answered with their code.
    let answers = api(&mut h, 5, publish("news", &[]));
    assert!(
        matches!(&answers[0], ApiAnswer::Published(Err(e)) if e.code == ErrorCode::InvalidMessage)
    );
    let bad = HistoryQuery {
        limit: 0,
        ..HistoryQuery::default()
    };
    let answers = api(
        &mut h,
        6,
        ApiRequest::History {
            channel: channel("news"),
            query: bad,
        },
    );
    assert!(
        matches!(&answers[0], ApiAnswer::History(Err(e)) if e.code == ErrorCode::InvalidHistoryQuery)
    );
}

#[test]
fn with_a_store_an_api_publish_is_answered_once_stored() {
    let mut config = HubConfig::default();
    config.keys = config_keys();
    config.storage = StorageMode::External;
    config.retention_count = 2;
    let mut h = HubHarness::with(config, 1);
    let mut store = ModelStore::new();
    let (subscriber, _) = h.connect_as("sub");
    h.attach(subscriber, "news", None);
    assert!(
        api(&mut h, 1, publish("news", &["a", "b", "c"])).is_empty(),
        "waits"
    );
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
    store_all(&mut h, &mut store);
    let answers = std::mem::take(&mut h.api);
    assert_eq!(answers.len(), 1);
    assert_eq!(serials(&answers[0].1), [Some(1), Some(2), Some(3)]);
    assert_eq!(delivered(&h.take(subscriber)), vec![1, 2, 3]);
    // History older than the cache (2 messages) comes from the store.
    let query = HistoryQuery {
        direction: Direction::Forwards,
        limit: 10,
        ..HistoryQuery::default()
    };
    assert!(
        api(
            &mut h,
            2,
            ApiRequest::History {
                channel: channel("news"),
                query
            }
        )
        .is_empty(),
        "read from the store"
    );
    store_all(&mut h, &mut store);
    match &std::mem::take(&mut h.api)[..] {
        [(ApiRequestId(2), ApiAnswer::History(Ok((messages, _))))] => {
            let serials: Vec<u64> = messages.iter().map(|m| m.position.serial).collect();
            assert_eq!(serials, [1, 2, 3]);
        }
        other => panic!("{other:?}"),
    }
    // A store that fails: the publish is refused with storage_failed, nothing delivered.
    assert!(api(&mut h, 3, publish("news", &["d"])).is_empty());
    let requests = std::mem::take(&mut h.storage);
    for request in requests {
        if let tether_core::server::StorageRequest::Append { id, .. } = request {
            h.hub.handle_storage(
                h.stamp(),
                tether_core::server::StorageCompletion::Failed {
                    id,
                    error: tether_core::ErrorInfo::new(ErrorCode::StorageFailed, "disk full"),
                },
            );
            h.drain();
        }
    }
    match &std::mem::take(&mut h.api)[..] {
        [(ApiRequestId(3), ApiAnswer::Published(Err(e)))] => {
            assert_eq!(e.code, ErrorCode::StorageFailed)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(delivered(&h.take(subscriber)), Vec::<u64>::new());
}

fn config_keys() -> Vec<tether_core::server::ApiKey> {
    config().keys
}

fn revoke(h: &mut HubHarness, id: u64, target: RevocationTarget, issued_before_ms: u64) -> usize {
    let revocation = Revocation {
        target,
        issued_before_ms,
        expires_at_ms: h.unix_ms + 60_000,
    };
    match &api(h, id, ApiRequest::Revoke(revocation))[..] {
        [ApiAnswer::Revoked(Ok(closed))] => *closed,
        other => panic!("{other:?}"),
    }
}

/// §8: revocations by client id, by key and of every token, by issue time; sessions
/// holding a revoked token are disconnected with token_revoked, the tokens refused until the
/// revocation ends; API-key sessions are not touched.
#[test]
fn revocations_disconnect_holders_and_refuse_their_tokens_until_they_end() {
    let mut h = HubHarness::new();
    let now = h.unix_ms;
    let alice_old = token(&claims("alice", now - 10_000, Duration::from_secs(600)));
    let bob_old = token(&claims("bob", now - 10_000, Duration::from_secs(600)));
    let (alice, frames) = h.open(&token_connect(alice_old.clone()));
    assert!(error_code(&frames).is_none(), "{frames:?}");
    let (bob, _) = h.open(&token_connect(bob_old.clone()));
    let (keyed, _) = h.connect_as("service");
    assert_eq!(
        revoke(
            &mut h,
            1,
            RevocationTarget::ClientId(ClientId::new("alice").expect("id")),
            now
        ),
        1
    );
    assert_eq!(h.closed.get(&alice), Some(&ErrorCode::TokenRevoked));
    assert!(!h.closed.contains_key(&bob) && !h.closed.contains_key(&keyed));
    // The old token is refused; one issued from the revocation's time on is taken.
    let (_, frames) = h.open(&token_connect(alice_old.clone()));
    assert_eq!(error_code(&frames), Some(ErrorCode::TokenRevoked));
    let (_, frames) = h.open(&token_connect(token(&claims(
        "alice",
        now,
        Duration::from_secs(600),
    ))));
    assert!(error_code(&frames).is_none(), "{frames:?}");
    // By key: every token signed with `app`, issued before now; then every token.
    assert_eq!(
        revoke(&mut h, 2, RevocationTarget::Key("app".into()), now),
        1
    );
    assert_eq!(h.closed.get(&bob), Some(&ErrorCode::TokenRevoked));
    let (_, frames) = h.open(&token_connect(bob_old.clone()));
    assert_eq!(error_code(&frames), Some(ErrorCode::TokenRevoked));
    assert!(
        !h.closed.contains_key(&keyed),
        "API-key sessions are not revoked"
    );
    // Ended: the revocations are dropped, the old tokens taken again.
    // (The connections above go idle meanwhile: the test does not answer heartbeats.)
    h.advance(Duration::from_secs(61));
    let (bob_again, frames) = h.open(&token_connect(bob_old));
    assert!(error_code(&frames).is_none(), "{frames:?}");
    let later = h.unix_ms + 1;
    assert_eq!(revoke(&mut h, 3, RevocationTarget::All, later), 1);
    assert_eq!(h.closed.get(&bob_again), Some(&ErrorCode::TokenRevoked));
}

fn disconnect(h: &mut HubHarness, id: u64, client_id: &str, reconnect: bool) -> (usize, usize) {
    let request = ApiRequest::Disconnect {
        client_id: ClientId::new(client_id).expect("id"),
        reconnect,
    };
    match &api(h, id, request)[..] {
        [
            ApiAnswer::Disconnected {
                connections,
                sessions,
            },
        ] => (*connections, *sessions),
        other => panic!("{other:?}"),
    }
}

/// §7.8 disconnect: with `reconnect: false` the client's connections get an `error` frame
/// and every session of it is freed (also one waiting for resume), so a resume starts anew;
/// with `reconnect: true` a `disconnect` frame, and the session resumes. Others are untouched.
#[test]
fn disconnect_ends_a_clients_connections_and_sessions() {
    let mut h = HubHarness::new();
    let (alice, alice_token) = h.connect_as("alice");
    let (alice_two, _) = h.connect_as("alice");
    let (bob, bob_token) = h.connect_as("bob");
    // A session of alice's that waits for resume has no connection but is freed too.
    let (alice_three, waiting_token) = h.connect_as("alice");
    h.drop_connection(alice_three);
    h.take(alice);
    assert_eq!(disconnect(&mut h, 1, "alice", false), (2, 3));
    for connection in [alice, alice_two] {
        let frames = h.take(connection);
        assert!(
            matches!(&frames[..], [tether_core::wire::ServerFrame::Error { error }] if error.code == ErrorCode::DisconnectedByServer),
            "{frames:?}"
        );
        assert_eq!(
            h.closed.get(&connection),
            Some(&ErrorCode::DisconnectedByServer)
        );
    }
    assert!(!h.closed.contains_key(&bob));
    for token in [alice_token, waiting_token] {
        let (_, connected) = h.resume("alice", token);
        match connected {
            tether_core::wire::ServerFrame::Connected { resumed, .. } => {
                assert!(!resumed, "a freed session was resumed")
            }
            other => panic!("{other:?}"),
        }
    }
    // reconnect: true keeps bob's session.
    assert_eq!(disconnect(&mut h, 2, "bob", true), (1, 0));
    assert_eq!(
        error_code(&h.take(bob)),
        Some(ErrorCode::DisconnectedByServer)
    );
    let (_, connected) = h.resume("bob", bob_token);
    assert!(
        matches!(
            connected,
            tether_core::wire::ServerFrame::Connected { resumed: true, .. }
        ),
        "{connected:?}"
    );
    // Nobody of that id: nothing to do.
    assert_eq!(disconnect(&mut h, 3, "carol", false), (0, 0));
}
