//! What one step of each state machine costs: the client's publish → ACK cycle and its
//! handling of a delivery; the hub's handling of a publish (store, ACK) and of a timer tick
//! with 10,000 idle sessions.
//!
//! `cargo bench -p tether-core --bench steps`

#[path = "../tests/support/hub.rs"]
mod hub;
#[path = "../tests/support/scripted.rs"]
mod scripted;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_core::client::{NewMessage, Output};
use tether_core::wire::{self, Limits, ServerFrame};

fn client_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("client");
    g.throughput(Throughput::Elements(1));

    // publish (encode, queue, transmit) then the hub's ACK (decode, resolve): one cycle.
    g.bench_function("publish_then_ack", |b| {
        let mut s = scripted::Scripted::new(scripted::key_auth());
        s.connect_new();
        s.forget();
        let transport = s.transport.expect("open");
        let channel = scripted::channel("news");
        let payload = Bytes::from(vec![7u8; 100]);
        let mut serial = 0u64;
        b.iter_custom(|iters| {
            let acks: Vec<Bytes> = (0..iters)
                .map(|n| {
                    let ack = ServerFrame::Ack {
                        serial: serial + n,
                        count: 1,
                    };
                    wire::encode(&ack, &Limits::DEFAULT).expect("encodes")
                })
                .collect();
            serial += iters;
            let now = s.now;
            let started = Instant::now();
            for ack in acks {
                s.client
                    .publish(
                        now,
                        channel.clone(),
                        vec![NewMessage::new("n", payload.clone())],
                    )
                    .expect("queued");
                while let Some(output) = s.client.poll_output() {
                    black_box(output);
                }
                s.client.handle_transport_bytes(now, transport, ack);
                while let Some(output) = s.client.poll_output() {
                    black_box(output);
                }
            }
            started.elapsed()
        });
    });

    // one delivery on an attached channel: decode, order check, event.
    g.bench_function("delivery", |b| {
        let mut s = scripted::Scripted::new(scripted::key_auth());
        s.connect_new();
        s.client
            .attach(s.now, scripted::channel("news"))
            .expect("attach");
        s.reply(scripted::attached(
            "news",
            1,
            0,
            tether_core::wire::Continuity::Fresh,
        ));
        s.forget();
        let transport = s.transport.expect("open");
        let mut next = 1u64;
        b.iter_custom(|iters| {
            let frames: Vec<Bytes> = (0..iters)
                .map(|n| {
                    let frame = scripted::delivery("news", 1, next + n);
                    wire::encode(&frame, &Limits::DEFAULT).expect("encodes")
                })
                .collect();
            next += iters;
            let now = s.now;
            let started = Instant::now();
            for frame in frames {
                s.client.handle_transport_bytes(now, transport, frame);
                while let Some(output) = s.client.poll_output() {
                    if let Output::Event(event) = output {
                        black_box(event);
                    }
                }
            }
            started.elapsed()
        });
    });
    g.finish();
}

/// A publish of one 100-byte message.
fn publish(serial: u64) -> Bytes {
    hub::encoded_publish(serial, 100)
}

fn hub_steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("hub");
    g.throughput(Throughput::Elements(1));

    // one publish on a channel nobody is attached to: decode, dedupe, store, ACK.
    g.bench_function("publish_to_ack", |b| {
        let mut h = hub::HubHarness::new();
        let (publisher, _) = h.connect_as("pub");
        let mut serial = 0u64;
        b.iter_custom(|iters| {
            let frames: Vec<Bytes> = (0..iters).map(|n| publish(serial + n)).collect();
            serial += iters;
            let now = h.stamp();
            let started = Instant::now();
            for frame in frames {
                h.hub.handle_bytes(now, publisher, frame);
                while let Some(output) = h.hub.poll_output() {
                    if let tether_core::server::HubOutput::Transmit { connection, bytes } = output {
                        h.hub.handle_written(now, connection, bytes.len());
                    }
                }
            }
            started.elapsed()
        });
    });

    // a timer tick with 10,000 idle sessions and nothing due.
    g.bench_function("tick_10000_idle_sessions", |b| {
        let mut h = hub::HubHarness::new();
        for n in 0..10_000 {
            h.connect_as(&format!("c{n}"));
        }
        h.advance(Duration::from_millis(1));
        b.iter(|| {
            h.hub.handle_timeout(black_box(h.stamp()));
            while let Some(output) = h.hub.poll_output() {
                black_box(output);
            }
        });
    });
    g.finish();
}

criterion_group!(benches, client_steps, hub_steps);
criterion_main!(benches);
