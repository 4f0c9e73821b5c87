//! Fuzzing support (feature `arbitrary`): `Arbitrary` values that are valid by construction,
//! and the logic of every fuzz target, so the normal test suite can replay the fuzz corpus
//! on stable without the fuzzer.

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::client::{Auth, Client, ClientConfig, NewMessage, Output};
use crate::error::ErrorCode;
use crate::server::{ApiKey, Capabilities, Hub, HubConfig, HubOutput};
use crate::time::{Time, Timestamp};
use crate::wire::{
    self, ChannelMessage, ChannelName, ClientFrame, ClientId, Limits, Message, MessageId,
    PROTOCOL_VERSION, ProtocolVersion, ServerFrame, StreamDecoder,
};

fn text(u: &mut Unstructured<'_>, min: usize, max: usize, forbidden: &[char]) -> Result<String> {
    let raw = String::arbitrary(u)?;
    let mut text: String = raw
        .chars()
        .filter(|c| !c.is_control() && !forbidden.contains(c))
        .collect();
    while text.len() > max {
        text.pop();
    }
    if text.len() < min {
        text.push_str(&"x".repeat(min - text.len()));
    }
    Ok(text)
}

impl<'a> Arbitrary<'a> for ChannelName {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let name = text(u, 1, 64, &['*'])?;
        Ok(ChannelName::new(name).unwrap_or_else(|_| ChannelName::new("fallback").expect("valid")))
    }
}

impl<'a> Arbitrary<'a> for MessageId {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let id = text(u, 1, 64, &[])?;
        Ok(MessageId::new(id).unwrap_or_else(|_| MessageId::new("fallback").expect("valid")))
    }
}

impl<'a> Arbitrary<'a> for ClientId {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let id = text(u, 1, 64, &[])?;
        Ok(ClientId::new(id).unwrap_or_else(|_| ClientId::new("fallback").expect("valid")))
    }
}

impl<'a> Arbitrary<'a> for ErrorCode {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        u.choose(ErrorCode::ALL).copied()
    }
}

/// Payload bytes.
pub fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let len = u.int_in_range(0..=512)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

/// A message name within the protocol's 256 bytes.
pub fn message_name(u: &mut Unstructured<'_>) -> Result<String> {
    text(u, 0, 256, &[])
}

/// The version this crate speaks, with an arbitrary minor.
pub fn version(u: &mut Unstructured<'_>) -> Result<ProtocolVersion> {
    Ok(ProtocolVersion {
        major: PROTOCOL_VERSION.major,
        minor: u16::arbitrary(u)?,
    })
}

/// At most 8 messages (the protocol allows up to 1000; small keeps fuzzing fast).
pub fn messages(u: &mut Unstructured<'_>) -> Result<Vec<Message>> {
    let count = u.int_in_range(1..=8)?;
    (0..count).map(|_| Message::arbitrary(u)).collect()
}

/// At most 8 history items.
pub fn history_items(u: &mut Unstructured<'_>) -> Result<Vec<ChannelMessage>> {
    let count = u.int_in_range(0..=8)?;
    (0..count).map(|_| ChannelMessage::arbitrary(u)).collect()
}

/// Target `decode_frame`: arbitrary bytes as one frame of either direction. Never panics;
/// whatever decodes re-encodes to a frame that decodes to itself.
pub fn decode_frame(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    if let Ok(frame) = wire::decode::<ClientFrame>(&input, &Limits::DEFAULT) {
        let again = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("a decoded frame encodes");
        assert_eq!(
            wire::decode::<ClientFrame>(&again, &Limits::PROTOCOL_MAX),
            Ok(frame)
        );
    }
    if let Ok(frame) = wire::decode::<ServerFrame>(&input, &Limits::DEFAULT) {
        let again = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("a decoded frame encodes");
        assert_eq!(
            wire::decode::<ServerFrame>(&again, &Limits::PROTOCOL_MAX),
            Ok(frame)
        );
    }
}

/// Target `stream_decoder`: arbitrary bytes cut at arbitrary points into the incremental
/// decoder. Never panics; it buffers at most one frame beyond what was pushed.
pub fn stream_decoder(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_frame_size: 1024,
        ..Limits::DEFAULT
    };
    let mut decoder = StreamDecoder::<ClientFrame>::new(limits);
    let step = usize::from(step).max(1);
    for piece in rest.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.buffered_len() <= limits.max_frame_size + 10 + step);
    }
}

/// Target `http_bodies`: arbitrary bytes as an up body and, in pieces of a size the first
/// byte chooses, as a down body of the HTTP binding (§2.5): no panic, what is held bounded by
/// one item, and the frames of an up body that splits re-encode to it.
pub fn http_bodies(data: &[u8]) {
    use crate::wire::http::{DownDecoder, put_frame, split_frames};
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let max_frame = 1024;
    let body = bytes::Bytes::copy_from_slice(rest);
    if let Ok(frames) = split_frames(&body, max_frame) {
        let mut again = BytesMut::new();
        for frame in &frames {
            assert!(!frame.is_empty() && frame.len() <= max_frame);
            put_frame(&mut again, frame);
        }
        // Canonical prefixes re-encode byte for byte; overlong ones are accepted too.
        assert!(again.len() <= body.len());
    }
    let mut decoder = DownDecoder::new(max_frame);
    let step = usize::from(step).max(1);
    let mut held = 0usize;
    for piece in rest.chunks(step) {
        decoder.push(piece);
        held += piece.len();
        loop {
            match decoder.next_item() {
                Ok(Some(_)) => held = 0,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(held <= max_frame + 10 + step);
    }
}

/// Target `frame_roundtrip`: an arbitrary frame encodes (both framings) and decodes to itself.
pub fn frame_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let limits = Limits::PROTOCOL_MAX;
    if let Ok(frame) = ClientFrame::arbitrary(&mut u) {
        let bytes = wire::encode(&frame, &limits).expect("fuzz frames are small");
        assert_eq!(
            wire::decode::<ClientFrame>(&bytes, &limits).as_ref(),
            Ok(&frame)
        );
        let mut stream = BytesMut::new();
        wire::encode_length_prefixed(&frame, &limits, &mut stream).expect("fits");
        let mut decoder = StreamDecoder::<ClientFrame>::new(limits);
        decoder.push(&stream);
        assert_eq!(decoder.next_frame(), Ok(Some(frame)));
    }
    if let Ok(frame) = ServerFrame::arbitrary(&mut u) {
        let bytes = wire::encode(&frame, &limits).expect("fuzz frames are small");
        assert_eq!(wire::decode::<ServerFrame>(&bytes, &limits), Ok(frame));
    }
}

#[derive(Arbitrary, Debug)]
enum ClientOp {
    Frame(ServerFrame),
    Raw(Vec<u8>),
    Advance(u16),
    Publish(u8),
    Attach(bool),
    Detach(bool),
    Open,
    Drop,
    Close,
    Connect,
    RetryNow,
    Token(bool),
    Ping,
    TokenRefused,
}

/// Target `client_ops`: arbitrary inputs against a client. Never panics, sends only valid
/// frames, keeps its queues bounded, and never fires more than a bounded number of timers at
/// one instant.
pub fn client_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let token = bool::arbitrary(&mut u).unwrap_or(false);
    let auth = if token {
        Auth::Token
    } else {
        Auth::ApiKey {
            name: "app".into(),
            secret: "secret".into(),
        }
    };
    let mut config = ClientConfig::new(auth);
    config.max_pending_publishes = 16;
    let mut client = Client::new(config, [3; 32]);
    let mut now = Time::from_millis(1);
    let mut transport = None;
    client.connect(now);
    let channels = ["a", "b"].map(|n| ChannelName::new(n).expect("valid"));
    for _ in 0..200 {
        let Ok(op) = ClientOp::arbitrary(&mut u) else {
            break;
        };
        match op {
            ClientOp::Frame(frame) => {
                if let (Some(t), Ok(bytes)) =
                    (transport, wire::encode(&frame, &Limits::PROTOCOL_MAX))
                {
                    client.handle_transport_bytes(now, t, bytes);
                }
            }
            ClientOp::Raw(bytes) => {
                if let Some(t) = transport {
                    client.handle_transport_bytes(now, t, Bytes::from(bytes));
                }
            }
            ClientOp::Advance(ms) => {
                now = now.saturating_add(Duration::from_millis(u64::from(ms) * 10));
                let mut firings = 0;
                while client.poll_timeout().is_some_and(|d| d <= now) {
                    client.handle_timeout(now);
                    firings += 1;
                    assert!(firings < 1000, "timers fire without end at {now}");
                    drain_client(&mut client, &mut transport);
                }
            }
            ClientOp::Publish(n) => {
                let _ = client.publish(
                    now,
                    channels[usize::from(n % 2)].clone(),
                    vec![NewMessage::new("n", vec![n])],
                );
            }
            ClientOp::Attach(which) => {
                let _ = client.attach(now, channels[usize::from(which)].clone());
            }
            ClientOp::Detach(which) => client.detach(now, &channels[usize::from(which)]),
            ClientOp::Open => {
                if let Some(t) = transport {
                    client.handle_transport_open(now, t);
                }
            }
            ClientOp::Drop => {
                if let Some(t) = transport.take() {
                    client.handle_transport_closed(now, t, "fuzz");
                }
            }
            ClientOp::Close => client.close(now),
            ClientOp::Connect => client.connect(now),
            ClientOp::RetryNow => client.retry_now(now),
            ClientOp::Token(ok) => {
                if ok {
                    client.provide_token(now, "token".into());
                } else {
                    client.token_unavailable(now, "fuzz");
                }
            }
            ClientOp::Ping => {
                let _ = client.ping(now);
            }
            ClientOp::TokenRefused => client.token_refused(now, "fuzz"),
        }
        drain_client(&mut client, &mut transport);
        assert!(
            client.pending_publishes() <= 16,
            "the publish queue is bounded"
        );
    }
}

fn drain_client(client: &mut Client, transport: &mut Option<crate::client::TransportId>) {
    while let Some(output) = client.poll_output() {
        match output {
            Output::OpenTransport { transport: t, .. } => *transport = Some(t),
            Output::Transmit { bytes, .. } => {
                assert!(
                    wire::decode::<ClientFrame>(&bytes, &Limits::PROTOCOL_MAX).is_ok(),
                    "the client sends valid frames"
                );
            }
            Output::CloseTransport { transport: t, .. } => {
                if *transport == Some(t) {
                    *transport = None;
                }
            }
            Output::Event(_) => {}
        }
    }
}

#[derive(Arbitrary, Debug)]
enum HubOp {
    Accept,
    Frame(u8, ClientFrame),
    Raw(u8, Vec<u8>),
    Closed(u8),
    Written(u8, u16),
    Advance(u16),
    ClockJump(u16),
}

/// Target `hub_ops`: arbitrary frames and bytes from many connections with time passing.
/// Never panics, sends only valid frames, stays within its connection cap, and a
/// well-behaved client keeps being served.
pub fn hub_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = HubConfig {
        keys: vec![ApiKey {
            name: "app".into(),
            secret: "secret".into(),
            capabilities: Capabilities::all(),
        }],
        max_connections: 8,
        max_sessions: 16,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config, [5; 32]);
    let mut now = Timestamp::new(Time::from_millis(1), 1_767_225_600_000);
    let good = hub.accept(now);
    let connect = ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: wire::Credentials::ApiKey {
            name: "app".into(),
            secret: "secret".into(),
        },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: Some(300_000),
        options: None,
    };
    hub.handle_bytes(
        now,
        good,
        wire::encode(&connect, &Limits::DEFAULT).expect("encodes"),
    );
    let mut connections = vec![good];
    let mut good_closed = false;
    for _ in 0..200 {
        let Ok(op) = HubOp::arbitrary(&mut u) else {
            break;
        };
        let pick = |n: u8, connections: &[crate::server::ConnectionId]| {
            connections[usize::from(n) % connections.len()]
        };
        match op {
            HubOp::Accept => connections.push(hub.accept(now)),
            HubOp::Frame(n, frame) => {
                let target = pick(n, &connections);
                if target != good {
                    if let Ok(bytes) = wire::encode(&frame, &Limits::PROTOCOL_MAX) {
                        hub.handle_bytes(now, target, bytes);
                    }
                }
            }
            HubOp::Raw(n, bytes) => {
                let target = pick(n, &connections);
                if target != good {
                    hub.handle_bytes(now, target, Bytes::from(bytes));
                }
            }
            HubOp::Closed(n) => {
                let target = pick(n, &connections);
                if target != good {
                    hub.handle_closed(now, target);
                }
            }
            HubOp::Written(n, bytes) => {
                hub.handle_written(now, pick(n, &connections), usize::from(bytes))
            }
            HubOp::Advance(ms) => {
                now.monotonic = now
                    .monotonic
                    .saturating_add(Duration::from_millis(u64::from(ms)));
                now.unix_ms += u64::from(ms);
                hub.handle_timeout(now);
            }
            HubOp::ClockJump(seconds) => now.unix_ms += u64::from(seconds) * 1000,
        }
        // The good client stays alive and served.
        let ping = ClientFrame::Ping { id: 7 };
        hub.handle_bytes(
            now,
            good,
            wire::encode(&ping, &Limits::DEFAULT).expect("encodes"),
        );
        let mut pong = false;
        while let Some(output) = hub.poll_output() {
            match output {
                HubOutput::Transmit { connection, bytes } => {
                    let frame = wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX);
                    assert!(frame.is_ok(), "the hub sends valid frames");
                    if connection == good {
                        pong |= frame == Ok(ServerFrame::Pong { id: 7 });
                        hub.handle_written(now, good, bytes.len());
                    }
                }
                HubOutput::Close { connection, .. } => good_closed |= connection == good,
                HubOutput::Event(_)
                | HubOutput::Storage(_)
                | HubOutput::Api { .. }
                | HubOutput::Hook { .. } => {}
            }
        }
        assert!(!good_closed, "the well-behaved client was closed");
        assert!(pong, "the well-behaved client was not answered");
        assert!(hub.stats().connections <= 8 + 1);
    }
}
