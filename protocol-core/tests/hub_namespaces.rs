//! Namespaces (issue 19, item 4; `docs/protocol.md` §7.3): options per channel pattern —
//! history on or off for clients, echo, who may publish — the first matching pattern
//! deciding.

mod support;

use support::hub::*;
use tether_core::ErrorCode;
use tether_core::server::{ApiAnswer, ApiRequest, ApiRequestId, HubConfig, Namespace, Publishers};
use tether_core::wire::{ClientFrame, ClientId, HistoryQuery, ServerFrame};

fn with(namespaces: Vec<Namespace>) -> HubHarness {
    let mut config = config();
    config.namespaces = namespaces;
    config.validate().expect("a usable configuration");
    HubHarness::with(config, 1)
}

fn namespace(pattern: &str, change: impl FnOnce(&mut Namespace)) -> Namespace {
    let mut namespace = Namespace::new(pattern);
    change(&mut namespace);
    namespace
}

/// The error of the publish answer among `frames`: `None` for an ack.
fn publish_error(frames: &[ServerFrame]) -> Option<ErrorCode> {
    frames
        .iter()
        .find_map(|frame| match frame {
            ServerFrame::Ack { .. } => Some(None),
            ServerFrame::Nack { error, .. } => Some(Some(error.code)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no publish answer in {frames:?}"))
}

fn history_error(
    h: &mut HubHarness,
    connection: tether_core::server::ConnectionId,
    name: &str,
) -> Option<ErrorCode> {
    h.send(
        connection,
        &ClientFrame::HistoryRequest {
            request_id: 7,
            channel: channel(name),
            query: HistoryQuery::default(),
        },
    );
    h.take(connection)
        .iter()
        .find_map(|frame| match frame {
            ServerFrame::HistoryPage { error, .. } => Some(error.as_ref().map(|e| e.code)),
            _ => None,
        })
        .expect("a history page")
}

#[test]
fn history_off_refuses_clients_history_but_not_the_servers() {
    let mut h = with(vec![namespace("secret:*", |n| n.history = Some(false))]);
    let (client, _) = h.connect_as("alice");
    h.publish(client, 0, "secret:a", vec![message("m1", "x")]);
    h.publish(client, 1, "open", vec![message("m2", "x")]);
    assert_eq!(
        history_error(&mut h, client, "secret:a"),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(history_error(&mut h, client, "open"), None);
    h.hub.handle_api(
        h.stamp(),
        ApiRequestId(1),
        ApiRequest::History {
            channel: channel("secret:a"),
            query: HistoryQuery::default(),
        },
    );
    h.drain();
    assert!(
        matches!(&h.api[..], [(_, ApiAnswer::History(Ok((messages, _))))] if messages.len() == 1),
        "{:?}",
        h.api
    );
    // Resume still replays what the channel retains.
    let (subscriber, token) = h.connect_as("bob");
    let attached = h.attach(subscriber, "secret:a", None);
    let position = attached
        .iter()
        .find_map(|f| match f {
            ServerFrame::Attached { position, .. } => Some(*position),
            _ => None,
        })
        .expect("attached");
    h.drop_connection(subscriber);
    h.publish(client, 2, "secret:a", vec![message("m3", "x")]);
    let (again, _) = h.resume("bob", token);
    let frames = h.attach(again, "secret:a", Some(position));
    assert_eq!(delivered(&frames), vec![2]);
}

#[test]
fn echo_off_sends_the_publisher_its_position_only() {
    let mut h = with(vec![namespace("quiet:*", |n| n.echo = Some(false))]);
    let (publisher, _) = h.connect_as("alice");
    let (other, _) = h.connect_as("bob");
    for connection in [publisher, other] {
        h.attach(connection, "quiet:room", None);
        h.attach(connection, "loud", None);
    }
    let frames = h.publish(publisher, 0, "quiet:room", vec![message("m1", "x")]);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, ServerFrame::OwnMessage { position, .. } if position.serial == 1)),
        "{frames:?}"
    );
    assert_eq!(delivered(&frames), Vec::<u64>::new());
    assert_eq!(delivered(&h.take(other)), vec![1]);
    // Elsewhere the publisher gets its message.
    let frames = h.publish(publisher, 1, "loud", vec![message("m2", "x")]);
    assert_eq!(delivered(&frames), vec![1]);
}

#[test]
fn who_may_publish_is_decided_by_the_first_matching_namespace_that_says() {
    let mut h = with(vec![
        namespace("feed:open", |n| n.publish = Some(Publishers::Clients)),
        // Sets no publish option: the next match decides.
        namespace("room:*", |n| n.echo = Some(true)),
        namespace("feed:*", |n| n.publish = Some(Publishers::Server)),
        namespace("room:*", |n| n.publish = Some(Publishers::Subscribers)),
    ]);
    let (client, _) = h.connect_as("alice");
    let frames = h.publish(client, 0, "feed:news", vec![message("m1", "x")]);
    assert_eq!(publish_error(&frames), Some(ErrorCode::Forbidden));
    let frames = h.publish(client, 1, "feed:open", vec![message("m2", "x")]);
    assert_eq!(publish_error(&frames), None);
    let frames = h.publish(client, 2, "room:1", vec![message("m3", "x")]);
    assert_eq!(publish_error(&frames), Some(ErrorCode::Forbidden));
    h.attach(client, "room:1", None);
    let frames = h.publish(client, 3, "room:1", vec![message("m4", "x")]);
    assert_eq!(publish_error(&frames), None);
    // The server-side API publishes on a server-only namespace.
    h.hub.handle_api(
        h.stamp(),
        ApiRequestId(1),
        ApiRequest::Publish {
            channel: channel("feed:news"),
            messages: vec![message("m5", "x")],
            publisher: ClientId::new("backend").expect("id"),
        },
    );
    h.drain();
    assert!(
        matches!(&h.api[..], [(_, ApiAnswer::Published(Ok(_)))]),
        "{:?}",
        h.api
    );
}

#[test]
fn unusable_namespaces_are_refused() {
    for pattern in ["", "a::b", ":", "chat:"] {
        let mut config = HubConfig::default();
        config.namespaces = vec![Namespace::new(pattern)];
        let error = config.validate().expect_err(pattern);
        assert!(error.starts_with("namespaces:"), "{error}");
    }
    let mut config = HubConfig::default();
    config.namespaces = vec![Namespace::new("x"); tether_core::server::MAX_NAMESPACES + 1];
    assert!(config.validate().is_err());
}
