//! The client and the hub together in memory: connect, attach, publish, drop, resume —
//! nothing lost, nothing duplicated, every publish resolved.

mod support;

use std::time::Duration;

use support::hub::{app_key, config};
use support::pair::World;
use tether_core::client::{Auth, ClientConfig, ConnectionState, Event, NewMessage};
use tether_core::server::{Claims, mint_token};
use tether_core::wire::ChannelName;

fn key_client() -> ClientConfig {
    ClientConfig::new(Auth::ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
    })
}

fn news() -> ChannelName {
    ChannelName::new("news").expect("valid")
}

fn received(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Message { message, .. } => {
                Some(String::from_utf8_lossy(&message.message.data).into_owned())
            }
            _ => None,
        })
        .collect()
}

fn resolved_ok(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::PublishResolved { result: Ok(()), .. }))
        .count()
}

#[test]
fn connect_attach_publish_drop_resume_without_loss_or_duplicate() {
    let mut world = World::new(config(), 1);
    let subscriber = world.add_client(key_client(), 2);
    let publisher = world.add_client(key_client(), 3);
    let now = world.now;
    world.client(subscriber).connect(now);
    world.client(publisher).connect(now);
    world.settle();
    world
        .client(subscriber)
        .attach(now, news())
        .expect("usable");
    world.settle();
    let mut sent = Vec::new();
    for n in 0..10 {
        let text = format!("m{n}");
        world
            .client(publisher)
            .publish(now, news(), vec![NewMessage::new("t", text.clone())])
            .expect("accepted");
        sent.push(text);
        world.settle();
        if n == 3 {
            world.cut(subscriber); // the subscriber drops mid-stream
        }
        if n == 6 {
            world.cut(publisher); // and so does the publisher, with publishes in flight
        }
    }
    world.run_for(Duration::from_secs(5));
    assert_eq!(
        world.peers[subscriber].client.state(),
        ConnectionState::Connected
    );
    assert_eq!(
        world.peers[publisher].client.state(),
        ConnectionState::Connected
    );
    assert_eq!(
        received(&world.peers[subscriber].events),
        sent,
        "every message once, in order"
    );
    assert_eq!(
        resolved_ok(&world.peers[publisher].events),
        10,
        "every publish acked"
    );
    assert!(
        !world.peers[subscriber]
            .events
            .iter()
            .any(|e| matches!(e, Event::Discontinuity { .. })),
        "resume was continuous"
    );
}

#[test]
fn a_token_is_renewed_in_band_while_streaming() {
    let mut world = World::new(config(), 1);
    let client = world.add_client(ClientConfig::new(Auth::Token), 2);
    let publisher = world.add_client(key_client(), 3);
    let mint = |unix_ms: u64| {
        mint_token(
            &app_key(),
            &Claims {
                sub: "alice".into(),
                exp: unix_ms / 1000 + 60,
                iat: unix_ms / 1000,
                nbf: None,
                aud: None,
                iss: None,
                cap: tether_core::server::Capabilities::all(),
            },
        )
        .expect("signs")
    };
    let now = world.now;
    world.client(client).connect(now);
    world.client(publisher).connect(now);
    world.settle();
    let token = mint(world.stamp().unix_ms);
    world.client(client).provide_token(now, token);
    world.settle();
    world.client(client).attach(now, news()).expect("usable");
    world.settle();
    let mut renewals = 0;
    for n in 0..30 {
        world.run_for(Duration::from_secs(5));
        let now = world.now;
        world
            .client(publisher)
            .publish(now, news(), vec![NewMessage::new("t", format!("m{n}"))])
            .expect("accepted");
        world.settle();
        let asked = world.peers[client]
            .events
            .iter()
            .filter(|e| matches!(e, Event::TokenRequired { .. }))
            .count();
        if asked > renewals + 1 {
            renewals += 1;
            let token = mint(world.stamp().unix_ms);
            world.client(client).provide_token(now, token);
            world.settle();
        }
    }
    let events = &world.peers[client].events;
    assert!(renewals >= 2, "150 s with 60 s tokens needs renewals");
    assert_eq!(received(events).len(), 30);
    let reconnects = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::StateChanged {
                    current: ConnectionState::Connecting,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        reconnects, 1,
        "only the first connect: renewals were in-band"
    );
}
