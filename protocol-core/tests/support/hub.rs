//! A hub driven with a virtual clock, its clients played by the test.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tether_core::server::{
    ApiAnswer, ApiKey, ApiRequestId, Capabilities, Claims, ConnectionId, HookId, HookRequest, Hub,
    HubConfig, HubEvent, HubOutput, Operation, StorageRequest, mint_token,
};
use tether_core::wire::{
    self, ChannelName, ClientFrame, ClientId, Credentials, Limits, Message, MessageId,
    PROTOCOL_VERSION, Position, ResumeToken, ServerFrame,
};
use tether_core::{ErrorCode, Time, Timestamp};

pub const START_UNIX_MS: u64 = 1_767_225_600_000;

pub fn app_key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

pub fn reader_key() -> ApiKey {
    ApiKey {
        name: "reader".into(),
        secret: "reader-secret".into(),
        capabilities: Capabilities::default()
            .with("*", &[Operation::Subscribe, Operation::History]),
    }
}

pub fn config() -> HubConfig {
    {
        let mut config = HubConfig::default();
        config.keys = vec![app_key(), reader_key()];
        config
    }
}

pub fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("valid")
}

pub fn message(id: &str, data: &str) -> Message {
    Message {
        id: MessageId::new(id).expect("valid"),
        name: "n".into(),
        data: Bytes::from(data.to_owned()),
    }
}

/// A publish frame of one message of `payload_len` bytes to `news`, encoded; the message id
/// follows the serial, so every frame is a new message.
pub fn encoded_publish(serial: u64, payload_len: usize) -> Bytes {
    let frame = ClientFrame::Publish {
        serial,
        channel: channel("news"),
        messages: vec![Message {
            id: MessageId::new(format!("p:{serial}")).expect("valid"),
            name: "n".into(),
            data: Bytes::from(vec![7u8; payload_len]),
        }],
    };
    wire::encode(&frame, &Limits::DEFAULT).expect("encodes")
}

pub fn key_connect(name: &str, secret: &str, client_id: Option<&str>) -> ClientFrame {
    ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::ApiKey {
            name: name.into(),
            secret: secret.into(),
        },
        client_id: client_id.map(|id| ClientId::new(id).expect("valid")),
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    }
}

pub fn token_connect(token: String) -> ClientFrame {
    ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::Token { token },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    }
}

/// Claims for `sub`, valid for `ttl` from the harness's wall clock.
pub fn claims(sub: &str, now_unix_ms: u64, ttl: Duration) -> Claims {
    Claims {
        sub: sub.into(),
        exp: (now_unix_ms + ttl.as_millis() as u64) / 1000,
        iat: now_unix_ms / 1000,
        nbf: None,
        aud: None,
        iss: None,
        cap: Capabilities::all(),
    }
}

pub fn token(claims: &Claims) -> String {
    mint_token(&app_key(), claims).expect("signs")
}

pub struct HubHarness {
    pub hub: Hub,
    pub now: Time,
    pub unix_ms: u64,
    /// Frames received per connection, not yet taken.
    inbox: BTreeMap<ConnectionId, Vec<ServerFrame>>,
    /// Connections the hub closed, with the reason code.
    pub closed: BTreeMap<ConnectionId, ErrorCode>,
    pub events: Vec<HubEvent>,
    /// Connections whose bytes are never reported written (they stopped reading).
    pub stalled: BTreeSet<ConnectionId>,
    /// Storage requests the hub emitted, not yet taken.
    pub storage: Vec<StorageRequest>,
    /// Answers to server-side API requests, not yet taken.
    pub api: Vec<(ApiRequestId, ApiAnswer)>,
    /// Hook requests the hub emitted, not yet taken.
    pub hooks: Vec<(HookId, HookRequest)>,
}

impl HubHarness {
    pub fn new() -> HubHarness {
        HubHarness::with(config(), 1)
    }

    pub fn with(config: HubConfig, seed: u8) -> HubHarness {
        HubHarness {
            hub: Hub::new(config, [seed; 32]),
            now: Time::from_millis(10_000),
            unix_ms: START_UNIX_MS,
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            events: Vec::new(),
            stalled: BTreeSet::new(),
            storage: Vec::new(),
            api: Vec::new(),
            hooks: Vec::new(),
        }
    }

    pub fn stamp(&self) -> Timestamp {
        Timestamp::new(self.now, self.unix_ms)
    }

    /// Drains the hub: frames into inboxes, writes reported at once (except stalled ones).
    pub fn drain(&mut self) {
        loop {
            let mut written = Vec::new();
            while let Some(output) = self.hub.poll_output() {
                match output {
                    HubOutput::Transmit { connection, bytes } => {
                        let frame = wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX)
                            .expect("the hub sends valid frames");
                        self.inbox.entry(connection).or_default().push(frame);
                        if !self.stalled.contains(&connection) {
                            written.push((connection, bytes.len()));
                        }
                    }
                    HubOutput::Close { connection, reason } => {
                        self.closed.insert(connection, reason.code);
                    }
                    HubOutput::Event(event) => self.events.push(event),
                    HubOutput::Storage(request) => self.storage.push(request),
                    HubOutput::Api { id, answer } => self.api.push((id, answer)),
                    HubOutput::Hook { id, request } => self.hooks.push((id, request)),
                }
            }
            if written.is_empty() {
                return;
            }
            for (connection, bytes) in written {
                self.hub.handle_written(self.stamp(), connection, bytes);
            }
        }
    }

    pub fn accept(&mut self) -> ConnectionId {
        let id = self.hub.accept(self.stamp());
        self.drain();
        id
    }

    pub fn send(&mut self, connection: ConnectionId, frame: &ClientFrame) {
        let bytes = wire::encode(frame, &Limits::PROTOCOL_MAX).expect("encodes");
        self.send_bytes(connection, bytes);
    }

    pub fn send_bytes(&mut self, connection: ConnectionId, bytes: Bytes) {
        self.hub.handle_bytes(self.stamp(), connection, bytes);
        self.drain();
    }

    pub fn take(&mut self, connection: ConnectionId) -> Vec<ServerFrame> {
        self.inbox.remove(&connection).unwrap_or_default()
    }

    /// Accepts a connection, sends `frame` as its first frame, returns the answers.
    pub fn open(&mut self, frame: &ClientFrame) -> (ConnectionId, Vec<ServerFrame>) {
        let id = self.accept();
        self.send(id, frame);
        let frames = self.take(id);
        (id, frames)
    }

    /// A connected key client with the given client id; returns its resume token.
    pub fn connect_as(&mut self, client_id: &str) -> (ConnectionId, ResumeToken) {
        let (id, frames) = self.open(&key_connect("app", "app-secret", Some(client_id)));
        match frames.as_slice() {
            [ServerFrame::Connected { session, .. }] => (id, *session),
            other => panic!("expected connected, got {other:?}"),
        }
    }

    /// Resumes `session` on a new connection; returns the connection and `connected`.
    pub fn resume(&mut self, client_id: &str, session: ResumeToken) -> (ConnectionId, ServerFrame) {
        let mut frame = key_connect("app", "app-secret", Some(client_id));
        if let ClientFrame::Connect { resume, .. } = &mut frame {
            *resume = Some(session);
        }
        let (id, mut frames) = self.open(&frame);
        (id, frames.remove(0))
    }

    /// Attaches and returns the `attached` position and whatever followed it.
    pub fn attach(
        &mut self,
        connection: ConnectionId,
        name: &str,
        from: Option<Position>,
    ) -> Vec<ServerFrame> {
        self.send(
            connection,
            &ClientFrame::Attach {
                channel: channel(name),
                from,
            },
        );
        self.take(connection)
    }

    pub fn publish(
        &mut self,
        connection: ConnectionId,
        serial: u64,
        name: &str,
        messages: Vec<Message>,
    ) -> Vec<ServerFrame> {
        self.send(
            connection,
            &ClientFrame::Publish {
                serial,
                channel: channel(name),
                messages,
            },
        );
        self.take(connection)
    }

    pub fn drop_connection(&mut self, connection: ConnectionId) {
        self.hub.handle_closed(self.stamp(), connection);
        self.drain();
    }

    /// Moves both clocks forward, firing every due timer in order.
    pub fn advance(&mut self, duration: Duration) {
        let until = self.now.saturating_add(duration);
        let mut firings = 0;
        while let Some(deadline) = self.hub.poll_timeout().filter(|d| *d <= until) {
            let step = deadline.since(self.now);
            self.now = self.now.max(deadline);
            self.unix_ms += step.as_millis() as u64;
            self.hub.handle_timeout(self.stamp());
            self.drain();
            firings += 1;
            assert!(firings < 1_000_000, "timer livelock");
        }
        self.unix_ms += until.since(self.now).as_millis() as u64;
        self.now = until;
    }
}

impl HubHarness {
    /// Advances while the given clients send a heartbeat every 10 s (so they are not idle).
    pub fn advance_alive(&mut self, clients: &[ConnectionId], duration: Duration) {
        let until = self.now.saturating_add(duration);
        while self.now < until {
            let step = until.since(self.now).min(Duration::from_secs(10));
            self.advance(step);
            for client in clients {
                if !self.closed.contains_key(client) {
                    self.send(*client, &ClientFrame::Heartbeat);
                }
            }
        }
    }
}

/// Serials of the message frames among `frames`.
pub fn delivered(frames: &[ServerFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Message { message, .. } => Some(message.position.serial),
            _ => None,
        })
        .collect()
}

pub fn error_code(frames: &[ServerFrame]) -> Option<ErrorCode> {
    frames.iter().find_map(|frame| match frame {
        ServerFrame::Error { error } | ServerFrame::Disconnect { error } => Some(error.code),
        _ => None,
    })
}

/// Carries out every request the hub emitted on `store`, and gives the hub the answers.
pub fn store_all(h: &mut HubHarness, store: &mut tether_core::server::ModelStore) {
    loop {
        let requests = std::mem::take(&mut h.storage);
        if requests.is_empty() {
            return;
        }
        for request in requests {
            if let Some(completion) = store.apply(request, h.unix_ms) {
                h.hub.handle_storage(h.stamp(), completion);
                h.drain();
            }
        }
    }
}

/// The publish answers among `frames`, one per serial: `None` for an ACK, else the code.
pub fn acks(frames: &[ServerFrame]) -> Vec<(u64, Option<ErrorCode>)> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Ack { serial, count } => Some((*serial, *count, None)),
            ServerFrame::Nack {
                serial,
                count,
                error,
            } => Some((*serial, *count, Some(error.code))),
            _ => None,
        })
        .flat_map(|(serial, count, code)| {
            (serial..serial + u64::from(count)).map(move |s| (s, code))
        })
        .collect()
}
