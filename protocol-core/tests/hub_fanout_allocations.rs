//! One fan-out to 1,000 subscribers allocates O(1) for the frame bytes, not O(subscribers).
//! Alone in its binary: the counting allocator sees every thread of the process.

mod support;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use support::hub::*;
use tether_core::server::HubOutput;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn one_fan_out_to_1000_subscribers_allocates_o1_not_per_subscriber() {
    let mut h = HubHarness::new();
    let subscribers: Vec<_> = (0..1000)
        .map(|n| h.connect_as(&format!("s{n}")).0)
        .collect();
    for id in &subscribers {
        h.attach(*id, "news", None);
    }
    let (publisher, _) = h.connect_as("pub");
    let publish = |serial: u64| encoded_publish(serial, 100);
    // Warm up: the output queue grows to its working size once.
    let warm = publish(0);
    h.hub.handle_bytes(h.stamp(), publisher, warm);
    while h.hub.poll_output().is_some() {}

    let input = publish(1);
    let region = Region::new(GLOBAL);
    h.hub.handle_bytes(h.stamp(), publisher, input);
    let stats = region.change();
    let mut transmits = 0;
    let mut shared = std::collections::BTreeSet::new();
    while let Some(output) = h.hub.poll_output() {
        if let HubOutput::Transmit { bytes, .. } = output {
            transmits += 1;
            shared.insert(bytes.as_ptr() as usize);
        }
    }
    assert_eq!(transmits, 1001, "1000 deliveries and one ack");
    assert_eq!(
        shared.len(),
        2,
        "every delivery shares one buffer (plus the ack's)"
    );
    assert!(
        stats.allocations < 60,
        "{} allocations for one publish to 1000 subscribers",
        stats.allocations
    );
}
