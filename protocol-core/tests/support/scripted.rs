//! A client driven against a scripted hub with a virtual clock.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use tether_core::client::{
    Auth, Client, ClientConfig, ConnectionState, Event, Output, TransportId,
};
use tether_core::wire::{
    self, ChannelMessage, ChannelName, ClientFrame, ClientId, Continuity, Limits, Message,
    MessageId, Position, ResumeSecret, ResumeToken, ServerFrame, SessionId, SessionLimits,
};
use tether_core::{ErrorCode, ErrorInfo, Time};

pub const SESSION: ResumeToken = ResumeToken {
    session_id: SessionId(77),
    secret: ResumeSecret([9; 16]),
};

pub fn key_auth() -> Auth {
    Auth::ApiKey {
        name: "app".into(),
        secret: "secret".into(),
    }
}

pub fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("valid channel name")
}

pub fn connected(resumed: bool) -> ServerFrame {
    ServerFrame::Connected {
        session: SESSION,
        client_id: ClientId::new("me").expect("valid"),
        resumed,
        server_time_ms: 1_000_000,
        heartbeat_interval_ms: 15_000,
        session_ttl_ms: 120_000,
        token_expires_at_ms: None,
        limits: SessionLimits {
            max_frame_size: 65536,
            max_channel_name_len: 256,
            max_messages_per_publish: 100,
            max_channels: 100,
        },
        error: None,
        dedupe_window_ms: None,
    }
}

pub fn delivery(name: &str, epoch: u64, serial: u64) -> ServerFrame {
    ServerFrame::Message {
        channel: channel(name),
        message: ChannelMessage {
            position: Position { epoch, serial },
            message: Message {
                id: MessageId::new(format!("other:{serial}")).expect("valid"),
                name: "n".into(),
                data: Bytes::from(format!("payload {serial}")),
            },
            publisher: ClientId::new("other").expect("valid"),
            timestamp_ms: 0,
        },
    }
}

pub fn attached(name: &str, epoch: u64, serial: u64, continuity: Continuity) -> ServerFrame {
    ServerFrame::Attached {
        channel: channel(name),
        position: Position { epoch, serial },
        continuity,
        error: None,
    }
}

/// Everything the client produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Open(TransportId),
    Sent(TransportId, ClientFrame),
    Close(TransportId, ErrorCode),
    Event(Event),
}

pub struct Scripted {
    pub client: Client,
    pub now: Time,
    pub transport: Option<TransportId>,
    pub log: Vec<Seen>,
    cursor: usize,
}

impl Scripted {
    pub fn new(auth: Auth) -> Scripted {
        Scripted::with_config(ClientConfig::new(auth), 1)
    }

    pub fn with_config(config: ClientConfig, seed: u8) -> Scripted {
        Scripted::from_client(Client::new(config, [seed; 32]))
    }

    pub fn from_client(client: Client) -> Scripted {
        Scripted {
            client,
            now: Time::from_millis(1_000),
            transport: None,
            log: Vec::new(),
            cursor: 0,
        }
    }

    /// Drains every output into the log.
    pub fn drain(&mut self) {
        while let Some(output) = self.client.poll_output() {
            let seen = match output {
                Output::OpenTransport { transport, .. } => {
                    self.transport = Some(transport);
                    Seen::Open(transport)
                }
                Output::Transmit { transport, bytes } => {
                    let frame = wire::decode::<ClientFrame>(&bytes, &Limits::PROTOCOL_MAX)
                        .expect("the client sends valid frames");
                    Seen::Sent(transport, frame)
                }
                Output::CloseTransport { transport, reason } => {
                    if self.transport == Some(transport) {
                        self.transport = None;
                    }
                    Seen::Close(transport, reason.code)
                }
                Output::Event(event) => Seen::Event(event),
            };
            self.log.push(seen);
        }
    }

    /// What was produced since the last call.
    pub fn take(&mut self) -> Vec<Seen> {
        self.drain();
        let new = self.log[self.cursor..].to_vec();
        self.cursor = self.log.len();
        new
    }

    pub fn take_sent(&mut self) -> Vec<ClientFrame> {
        self.take()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Sent(_, frame) => Some(frame),
                _ => None,
            })
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.take()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Event(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    /// Forgets everything produced so far (after a test's setup).
    pub fn forget(&mut self) {
        self.drain();
        self.log.clear();
        self.cursor = 0;
    }

    /// Every event since the start (or the last `forget`).
    pub fn all_events(&mut self) -> Vec<Event> {
        self.drain();
        self.log
            .iter()
            .filter_map(|seen| match seen {
                Seen::Event(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn state(&self) -> ConnectionState {
        self.client.state()
    }

    /// Calls `connect`, opens the transport it asks for, and returns the connect frame.
    pub fn connect(&mut self) -> ClientFrame {
        self.client.connect(self.now);
        self.open()
    }

    /// Opens the requested transport and returns the frame the client sends on it.
    pub fn open(&mut self) -> ClientFrame {
        self.drain();
        let transport = self.transport.expect("the client asked for a transport");
        self.client.handle_transport_open(self.now, transport);
        let sent = self.take_sent();
        sent.into_iter().next().expect("a connect frame")
    }

    /// Connects with a key and answers `connected` (new session).
    pub fn connect_new(&mut self) {
        let frame = self.connect();
        assert!(matches!(frame, ClientFrame::Connect { .. }), "{frame:?}");
        self.reply(connected(false));
        assert_eq!(self.state(), ConnectionState::Connected);
    }

    /// Feeds a hub frame on the current transport.
    pub fn reply(&mut self, frame: ServerFrame) {
        let transport = self.transport.expect("an open transport");
        self.reply_on(transport, frame);
    }

    pub fn reply_on(&mut self, transport: TransportId, frame: ServerFrame) {
        let bytes = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("encodes");
        self.client
            .handle_transport_bytes(self.now, transport, bytes);
        self.drain();
    }

    /// The transport drops underneath the client.
    pub fn drop_transport(&mut self) {
        let transport = self.transport.take().expect("an open transport");
        self.client
            .handle_transport_closed(self.now, transport, "connection reset");
        self.drain();
    }

    /// Moves the clock to `until`, firing every deadline on the way, in order.
    pub fn advance_to(&mut self, until: Time) {
        for _ in 0..10_000 {
            match self.client.poll_timeout() {
                Some(deadline) if deadline <= until => {
                    self.now = self.now.max(deadline);
                    self.client.handle_timeout(self.now);
                    self.drain();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        let tail: Vec<String> = self
            .log
            .iter()
            .rev()
            .take(6)
            .map(|x| format!("{x:?}"))
            .collect();
        panic!(
            "more than 10,000 timer firings before {until}: livelock at {} in {:?}, deadline {:?}, last outputs {tail:#?}",
            self.now,
            self.client.state(),
            self.client.poll_timeout()
        );
    }

    /// Advances like [`advance`](Scripted::advance) while the hub sends a heartbeat every
    /// 10 s, so the connection stays alive.
    pub fn advance_alive(&mut self, duration: Duration) {
        let until = self.now.saturating_add(duration);
        while self.now < until {
            let step = until.since(self.now).min(Duration::from_secs(10));
            self.advance(step);
            if self.transport.is_some() && self.client.state() == ConnectionState::Connected {
                self.reply(ServerFrame::Heartbeat);
            }
        }
    }

    pub fn advance(&mut self, duration: Duration) {
        let until = self.now.saturating_add(duration);
        self.advance_to(until);
    }

    /// Advances until the client asks for a transport; returns how long that took.
    pub fn wait_for_open(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        let end = start.saturating_add(limit);
        self.drain();
        while self.transport.is_none() {
            let deadline = self
                .client
                .poll_timeout()
                .filter(|d| *d <= end)
                .expect("a retry is scheduled within the limit");
            self.advance_to(deadline);
        }
        self.now.since(start)
    }
}

pub fn error(code: ErrorCode) -> ErrorInfo {
    ErrorInfo::new(code, code.name())
}

pub fn state_changes(events: &[Event]) -> Vec<ConnectionState> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::StateChanged { current, .. } => Some(*current),
            _ => None,
        })
        .collect()
}
