//! Arbitrary frames and bytes from many connections, with time passing: the hub never
//! panics, answers every publish of a well-behaved client, and one client's garbage never
//! disturbs another.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use support::hub::*;
use tether_core::wire::{ClientFrame, ServerFrame};

#[derive(Debug, Clone)]
enum Step {
    Frame(u8, ClientFrame),
    Bytes(u8, Vec<u8>),
    Close(u8),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..4, support::client_frame()).prop_map(|(c, f)| Step::Frame(c, f)),
        2 => (0u8..4, vec(any::<u8>(), 0..64)).prop_map(|(c, b)| Step::Bytes(c, b)),
        1 => (0u8..4).prop_map(Step::Close),
        2 => (0u64..30_000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn hostile_connections_never_panic_the_hub_or_disturb_a_good_client(steps in vec(step(), 1..60)) {
        let mut h = HubHarness::new();
        let (good, _) = h.connect_as("good");
        h.attach(good, "news", None);
        let hostile: Vec<_> = (0..4).map(|_| h.accept()).collect();
        for (serial, step) in (0u64..).zip(steps) {
            match step {
                Step::Frame(c, frame) => h.send(hostile[c as usize], &frame),
                Step::Bytes(c, bytes) => h.send_bytes(hostile[c as usize], Bytes::from(bytes)),
                Step::Close(c) => h.drop_connection(hostile[c as usize]),
                Step::Advance(ms) => h.advance_alive(&[good], Duration::from_millis(ms)),
            }
            // The good client keeps publishing and hearing its own messages.
            let frames = h.publish(good, serial, "news", vec![message(&format!("g{serial}"), "x")]);
            prop_assert!(frames.iter().any(|f| matches!(f, ServerFrame::Ack { serial: s, .. } if *s == serial)), "{frames:?}");
            prop_assert!(!h.closed.contains_key(&good));
        }
    }
}
