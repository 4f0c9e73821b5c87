//! The hub's in-process fan-out: one publish to 1,000 attached subscribers, each delivery
//! handed out and reported written, as an adapter does. Reports deliveries per second
//! (criterion's throughput) and, before timing, allocations per delivery (a counting
//! allocator over the steady state).
//!
//! `cargo bench -p tether-core --bench fanout`

#[path = "../tests/support/hub.rs"]
mod hub;

use std::alloc::System;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tether_core::server::{ConnectionId, HubOutput};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SUBSCRIBERS: usize = 1_000;

/// A publish of one 100-byte message.
fn publish(serial: u64) -> Bytes {
    hub::encoded_publish(serial, 100)
}

/// A hub with 1,000 subscribers on `news` and a publisher.
fn setup() -> (hub::HubHarness, ConnectionId) {
    let mut h = hub::HubHarness::new();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|n| h.connect_as(&format!("s{n}")).0)
        .collect();
    for id in &subscribers {
        h.attach(*id, "news", None);
    }
    let (publisher, _) = h.connect_as("pub");
    (h, publisher)
}

/// Feeds one publish and carries out its outputs; returns the deliveries made.
fn fan_out(h: &mut hub::HubHarness, publisher: ConnectionId, frame: Bytes) -> usize {
    let now = h.stamp();
    h.hub.handle_bytes(now, publisher, frame);
    let mut deliveries = 0;
    while let Some(output) = h.hub.poll_output() {
        if let HubOutput::Transmit { connection, bytes } = output {
            if connection != publisher {
                deliveries += 1;
            }
            h.hub.handle_written(now, connection, bytes.len());
        }
    }
    deliveries
}

fn fanout(c: &mut Criterion) {
    let (mut h, publisher) = setup();
    // Steady state first (queues and retention at their working size), then count.
    let mut serial = 0;
    for _ in 0..2_000 {
        fan_out(&mut h, publisher, publish(serial));
        serial += 1;
    }
    let frames: Vec<Bytes> = (serial..serial + 100).map(publish).collect();
    serial += 100;
    let region = Region::new(GLOBAL);
    let mut deliveries = 0;
    for frame in frames {
        deliveries += fan_out(&mut h, publisher, frame);
    }
    let stats = region.change();
    println!(
        "fanout/allocations: {} allocations for {} deliveries = {:.4} per delivery \
         ({:.1} per publish, including its ACK)",
        stats.allocations,
        deliveries,
        stats.allocations as f64 / deliveries as f64,
        stats.allocations as f64 / 100.0
    );

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.bench_function("1_publish_to_1000_subscribers", |b| {
        b.iter_custom(|iters| {
            let frames: Vec<Bytes> = (serial..serial + iters).map(publish).collect();
            serial += iters;
            let started = Instant::now();
            for frame in frames {
                assert_eq!(fan_out(&mut h, publisher, frame), SUBSCRIBERS);
            }
            started.elapsed()
        });
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
