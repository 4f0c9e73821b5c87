//! Random frame sequences from the hub, in random states: no panic, and the delivery and
//! resolution invariants hold whatever the hub sends.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use support::scripted::*;
use tether_core::client::{Event, NewMessage};
use tether_core::wire::{self, Limits, ServerFrame};

#[derive(Debug, Clone)]
enum Step {
    Frame(ServerFrame),
    Garbage(Vec<u8>),
    Advance(u64),
    Publish,
    Attach(u8),
    Detach(u8),
    Drop,
    Open,
    Close,
    Connect,
    Token,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => support::server_frame().prop_map(Step::Frame),
        3 => (1u64..=40, 0u64..=8).prop_map(|(serial, epoch)| Step::Frame(delivery(["a", "b"][(serial % 2) as usize], epoch % 2, serial % 6))),
        1 => vec(any::<u8>(), 0..40).prop_map(Step::Garbage),
        2 => (0u64..40_000).prop_map(Step::Advance),
        2 => Just(Step::Publish),
        1 => (0u8..2).prop_map(Step::Attach),
        1 => (0u8..2).prop_map(Step::Detach),
        1 => Just(Step::Drop),
        2 => Just(Step::Open),
        1 => Just(Step::Close),
        1 => Just(Step::Connect),
        1 => Just(Step::Token),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn no_frame_sequence_from_the_hub_panics_or_breaks_the_invariants(steps in vec(step(), 1..80)) {
        let auth = if steps.len() % 2 == 0 { key_auth() } else { tether_core::client::Auth::Token };
        let mut s = Scripted::new(auth);
        s.client.connect(s.now);
        let mut published = BTreeSet::new();
        for step in steps {
            match step {
                Step::Frame(frame) => {
                    if let Some(t) = s.transport {
                        s.reply_on(t, frame);
                    }
                }
                Step::Garbage(bytes) => {
                    if let Some(t) = s.transport {
                        s.client.handle_transport_bytes(s.now, t, Bytes::from(bytes));
                    }
                }
                Step::Advance(ms) => s.advance(Duration::from_millis(ms)),
                Step::Publish => {
                    if let Ok(id) = s.client.publish(s.now, channel("a"), vec![NewMessage::new("n", "x")]) {
                        published.insert(id);
                    }
                }
                Step::Attach(n) => { let _ = s.client.attach(s.now, channel(["a", "b"][n as usize])); }
                Step::Detach(n) => s.client.detach(s.now, &channel(["a", "b"][n as usize])),
                Step::Drop => {
                    if let Some(t) = s.transport.take() {
                        s.client.handle_transport_closed(s.now, t, "drop");
                    }
                }
                Step::Open => {
                    if let Some(t) = s.transport {
                        s.client.handle_transport_open(s.now, t);
                        s.drain();
                        let encoded = wire::encode(&connected(s.now.as_millis() % 2 == 0), &Limits::DEFAULT).expect("encodes");
                        s.client.handle_transport_bytes(s.now, t, encoded);
                    }
                }
                Step::Close => s.client.close(s.now),
                Step::Connect => s.client.connect(s.now),
                Step::Token => s.client.provide_token(s.now, "t".into()),
            }
            s.drain();
        }
        // Invariants over everything the application saw.
        let mut resolved = BTreeSet::new();
        let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for event in s.all_events() {
            match event {
                Event::PublishResolved { id, .. } => {
                    prop_assert!(published.contains(&id), "resolved an unknown publish");
                    prop_assert!(resolved.insert(id), "resolved twice: {id:?}");
                }
                Event::Message { channel, message } => {
                    let key = channel.as_str().to_owned();
                    let position = (message.position.epoch, message.position.serial);
                    if let Some(previous) = last.get(&key) {
                        prop_assert!(
                            previous.0 != position.0 || position.1 > previous.1,
                            "{key}: {position:?} after {previous:?}"
                        );
                    }
                    last.insert(key, position);
                }
                Event::Discontinuity { channel, resumed_after, .. } => {
                    last.insert(channel.as_str().to_owned(), (resumed_after.epoch, resumed_after.serial));
                }
                _ => {}
            }
        }
        // Everything published and not resolved is still pending (none was dropped silently).
        prop_assert_eq!(published.len() - resolved.len(), s.client.pending_publishes());
    }
}
