//! Encode and decode of the hot frames — publish, delivery, ack — with 16 B, 100 B and 1 KiB
//! payloads, against serde_json (the same frames) and prost (equivalent messages, derived).
//!
//! `cargo bench -p tether-core --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tether_core::wire::{
    self, ChannelMessage, ChannelName, ClientFrame, ClientId, Limits, Message, MessageId, Position,
    ServerFrame,
};

const SIZES: [usize; 3] = [16, 100, 1024];

/// A message as in a publish, in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct PbMessage {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(bytes = "bytes", tag = "3")]
    data: Bytes,
}

/// The publish frame, in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct PbPublish {
    #[prost(uint64, tag = "1")]
    serial: u64,
    #[prost(string, tag = "2")]
    channel: String,
    #[prost(message, repeated, tag = "3")]
    messages: Vec<PbMessage>,
}

/// The delivery frame, in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct PbDelivery {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(uint64, tag = "3")]
    serial: u64,
    #[prost(message, optional, tag = "4")]
    message: Option<PbMessage>,
    #[prost(string, tag = "5")]
    publisher: String,
    #[prost(uint64, tag = "6")]
    timestamp_ms: u64,
}

/// The ack frame, in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct PbAck {
    #[prost(uint64, tag = "1")]
    serial: u64,
    #[prost(uint32, tag = "2")]
    count: u32,
}

fn message(size: usize) -> Message {
    Message {
        id: MessageId::new("c1f3a9:000042").expect("valid"),
        name: "update".into(),
        data: Bytes::from(vec![0x5a; size]),
    }
}

fn publish(size: usize) -> ClientFrame {
    ClientFrame::Publish {
        serial: 42,
        channel: ChannelName::new("chat:lobby").expect("valid"),
        messages: vec![message(size)],
    }
}

fn delivery(size: usize) -> ServerFrame {
    ServerFrame::Message {
        channel: ChannelName::new("chat:lobby").expect("valid"),
        message: ChannelMessage {
            position: Position {
                epoch: 0x1234_5678_9abc,
                serial: 1_000_042,
            },
            message: message(size),
            publisher: ClientId::new("alice").expect("valid"),
            timestamp_ms: 1_767_225_600_123,
        },
    }
}

fn pb_message(size: usize) -> PbMessage {
    PbMessage {
        id: "c1f3a9:000042".into(),
        name: "update".into(),
        data: Bytes::from(vec![0x5a; size]),
    }
}

fn pb_publish(size: usize) -> PbPublish {
    PbPublish {
        serial: 42,
        channel: "chat:lobby".into(),
        messages: vec![pb_message(size)],
    }
}

fn pb_delivery(size: usize) -> PbDelivery {
    PbDelivery {
        channel: "chat:lobby".into(),
        epoch: 0x1234_5678_9abc,
        serial: 1_000_042,
        message: Some(pb_message(size)),
        publisher: "alice".into(),
        timestamp_ms: 1_767_225_600_123,
    }
}

/// Benchmarks one frame three ways: tether, serde_json, prost.
fn compare<F, P>(c: &mut Criterion, group: &str, size: usize, frame: F, pb: P)
where
    F: wire::Frame + serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    P: prost::Message + Default + PartialEq,
{
    let limits = Limits::DEFAULT;
    let tether = wire::encode(&frame, &limits).expect("encodes");
    let json = serde_json::to_vec(&frame).expect("json");
    let proto = Bytes::from(pb.encode_to_vec());
    assert_eq!(wire::decode::<F>(&tether, &limits).expect("decodes"), frame);
    assert_eq!(serde_json::from_slice::<F>(&json).expect("json"), frame);
    assert!(P::decode(proto.clone()).expect("prost") == pb);

    let mut g = c.benchmark_group(format!("{group}/encode"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("tether", size), |b| {
        b.iter(|| wire::encode(black_box(&frame), &limits).expect("encodes"))
    });
    g.bench_function(BenchmarkId::new("serde_json", size), |b| {
        b.iter(|| serde_json::to_vec(black_box(&frame)).expect("json"))
    });
    g.bench_function(BenchmarkId::new("prost", size), |b| {
        b.iter(|| black_box(&pb).encode_to_vec())
    });
    g.finish();

    let mut g = c.benchmark_group(format!("{group}/decode"));
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("tether", size), |b| {
        b.iter(|| wire::decode::<F>(black_box(&tether), &limits).expect("decodes"))
    });
    g.bench_function(BenchmarkId::new("serde_json", size), |b| {
        b.iter(|| serde_json::from_slice::<F>(black_box(&json)).expect("json"))
    });
    g.bench_function(BenchmarkId::new("prost", size), |b| {
        b.iter(|| P::decode(black_box(proto.clone())).expect("prost"))
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    for size in SIZES {
        compare(c, "publish", size, publish(size), pb_publish(size));
        compare(c, "delivery", size, delivery(size), pb_delivery(size));
    }
    compare(
        c,
        "ack",
        0,
        ServerFrame::Ack {
            serial: 1_000_042,
            count: 1,
        },
        PbAck {
            serial: 1_000_042,
            count: 1,
        },
    );
}

criterion_group!(benches, codec);
criterion_main!(benches);
