//! The client connection state machine: `docs/protocol.md` §6.
//!
//! # Calling contract
//!
//! A [`Client`] never reads a clock, never touches a socket and never seeds itself. Its
//! caller (an adapter) does, in a loop:
//!
//! 1. Feed one input, with the current monotonic [`Time`]: an application command
//!    ([`connect`](Client::connect), [`publish`](Client::publish), …), a transport event
//!    ([`handle_transport_open`](Client::handle_transport_open),
//!    [`handle_transport_bytes`](Client::handle_transport_bytes),
//!    [`handle_transport_closed`](Client::handle_transport_closed)), or
//!    [`handle_timeout`](Client::handle_timeout) when the deadline has passed.
//! 2. Drain [`poll_output`](Client::poll_output) until it returns `None`, carrying out every
//!    [`Output`]: open or close a transport, send bytes, pass events to the application.
//! 3. Read [`poll_timeout`](Client::poll_timeout) *after* draining, and sleep until that
//!    deadline or the next input, whichever comes first. A deadline at or before `now` has
//!    fired: call `handle_timeout`.
//!
//! Transports are named by the [`TransportId`] of the `OpenTransport` output that asked for
//! them; inputs about any other transport are ignored. After `CloseTransport` the client
//! never uses that transport again.
//!
//! ```
//! use bytes::Bytes;
//! use tether_core::client::{Auth, Client, ClientConfig, ConnectionState, Event, Output};
//! use tether_core::wire::{self, ClientFrame, Limits, ServerFrame};
//! use tether_core::Time;
//! # use tether_core::wire::{ClientId, ResumeSecret, ResumeToken, SessionId, SessionLimits};
//!
//! let config = ClientConfig::new(Auth::ApiKey { name: "app".into(), secret: "s".into() });
//! let mut client = Client::new(config, [7; 32]);
//! let mut now = Time::ZERO;
//! client.connect(now);
//!
//! // A fake transport: the "hub" answers the connect frame with `connected`.
//! let mut transport = None;
//! let mut state = ConnectionState::Initialized;
//! for _ in 0..10 {
//!     while let Some(output) = client.poll_output() {
//!         match output {
//!             Output::OpenTransport { transport: id } => transport = Some(id),
//!             Output::Transmit { bytes, .. } => {
//!                 let frame: ClientFrame = wire::decode(&bytes, &Limits::DEFAULT).unwrap();
//!                 assert!(matches!(frame, ClientFrame::Connect { .. }));
//! #               let reply = ServerFrame::Connected {
//! #                   session: ResumeToken { session_id: SessionId(1), secret: ResumeSecret([0; 16]) },
//! #                   client_id: ClientId::new("app").unwrap(), resumed: false,
//! #                   server_time_ms: 0, heartbeat_interval_ms: 15_000, session_ttl_ms: 120_000,
//! #                   token_expires_at_ms: None, error: None,
//! #                   limits: SessionLimits { max_frame_size: 65536, max_channel_name_len: 256,
//! #                                           max_messages_per_publish: 100, max_channels: 100 },
//! #               };
//!                 let bytes = wire::encode(&reply, &Limits::DEFAULT).unwrap();
//!                 client.handle_transport_bytes(now, transport.unwrap(), bytes);
//!             }
//!             Output::CloseTransport { .. } => transport = None,
//!             Output::Event(Event::StateChanged { current, .. }) => state = current,
//!             Output::Event(_) => {}
//!         }
//!     }
//!     if let Some(id) = transport.filter(|_| state == ConnectionState::Connecting) {
//!         client.handle_transport_open(now, id);
//!         continue;
//!     }
//!     match client.poll_timeout() {
//!         Some(deadline) if state != ConnectionState::Connected => {
//!             now = deadline;
//!             client.handle_timeout(now);
//!         }
//!         _ => break,
//!     }
//! }
//! assert_eq!(state, ConnectionState::Connected);
//! ```

mod backoff;
mod channels;
mod config;
mod event;
mod publishes;
mod snapshot;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::backoff::Backoff;
use self::channels::{Channels, Detach};
pub use self::config::{Auth, ClientConfig, Framing};
pub use self::event::{
    ConnectionState, Event, HistoryPage, Output, PingId, PublishId, RequestId, TokenReason,
    TransportId,
};
use self::publishes::Publishes;
pub use self::snapshot::{ClientSnapshot, SnapshotPublish};
use crate::error::{ErrorCode, ErrorInfo};
use crate::rng::{Rng, Seed};
use crate::time::{Clock, Time};
use crate::wire::{
    self, ChannelName, ClientFrame, Credentials, HistoryQuery, Limits, MAX_HISTORY_LIMIT, Message,
    MessageId, PROTOCOL_VERSION, ResumeToken, ServerFrame, StreamDecoder,
};

/// The shortest heartbeat interval the client accepts from a hub (a shorter one is raised).
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest heartbeat interval the client accepts from a hub (a longer one is lowered).
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3600);

/// Most pings and history queries awaiting an answer at once.
pub const MAX_OUTSTANDING_REQUESTS: usize = 100;

/// A message to publish; the client gives it a stable id unless the application did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The application's id, stable across retries, or `None` for one made by the client.
    pub id: Option<MessageId>,
    /// The event name (at most 256 bytes).
    pub name: String,
    /// The payload.
    pub data: Bytes,
}

impl NewMessage {
    /// A message with a client-made id.
    pub fn new(name: impl Into<String>, data: impl Into<Bytes>) -> NewMessage {
        NewMessage {
            id: None,
            name: name.into(),
            data: data.into(),
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the transport to open.
    Opening,
    /// `connect` sent, waiting for `connected`.
    Handshaking,
    /// `connected` received at `since`.
    Connected { since: Time },
}

#[derive(Debug)]
struct Transport {
    id: TransportId,
    phase: Phase,
    /// Deadline for reaching Connected.
    connect_deadline: Time,
    last_received: Time,
    last_sent: Time,
    /// Whether `connect` asked to resume.
    asked_resume: bool,
    decoder: Option<StreamDecoder<ServerFrame>>,
}

/// What the hub told us in its last `connected`.
#[derive(Clone, Copy, Debug)]
struct Session {
    resume: ResumeToken,
    heartbeat_interval: Duration,
    ttl: Duration,
    limits: Limits,
}

#[derive(Clone, Debug, Default)]
struct Tokens {
    current: Option<String>,
    /// When the current token expires, on our monotonic clock.
    expires: Option<Time>,
    /// When to ask for the next one.
    renew_at: Option<Time>,
    /// A `TokenRequired` is outstanding; answer due by this deadline.
    requested: Option<Time>,
    /// An `auth` frame awaits `authed` by this deadline.
    auth_deadline: Option<Time>,
    /// Connect as soon as a token arrives.
    connect_when_provided: bool,
}

#[derive(Clone, Debug)]
struct PendingHistory {
    channel: ChannelName,
    deadline: Time,
}

#[derive(Clone, Copy, Debug)]
struct PendingPing {
    sent: Time,
    deadline: Time,
}

/// The client side of one tether connection. See the [module documentation](self) for the
/// calling contract.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: Rng,
    clock: Clock,
    state: ConnectionState,
    transport: Option<Transport>,
    next_transport: u64,
    session: Option<Session>,
    instance_id: String,
    message_counter: u64,
    publishes: Publishes,
    channels: Channels,
    tokens: Tokens,
    history: BTreeMap<RequestId, PendingHistory>,
    pings: BTreeMap<PingId, PendingPing>,
    next_request: u64,
    backoff: Backoff,
    /// When to start the next connection attempt.
    retry_at: Option<Time>,
    /// When Disconnected turns into Suspended.
    suspend_at: Option<Time>,
    /// Past the session TTL: publishes are refused and failed attempts go to Suspended.
    suspended: bool,
    close_deadline: Option<Time>,
    /// Our time and the hub's wall clock at the last `connected`.
    server_clock: Option<(Time, u64)>,
    outputs: VecDeque<Output>,
}

impl Client {
    /// A client in state Initialized. `seed` drives every random choice (jitter, message ids):
    /// use fresh randomness in production and a fixed seed in tests.
    pub fn new(config: ClientConfig, seed: Seed) -> Client {
        let mut rng = Rng::from_seed(seed);
        let mut id = [0u8; 8];
        rng.fill(&mut id);
        let instance_id = wire::hex::encode(&id);
        Client {
            config,
            rng,
            clock: Clock::default(),
            state: ConnectionState::Initialized,
            transport: None,
            next_transport: 0,
            session: None,
            instance_id,
            message_counter: 0,
            publishes: Publishes::default(),
            channels: Channels::default(),
            tokens: Tokens::default(),
            history: BTreeMap::new(),
            pings: BTreeMap::new(),
            next_request: 0,
            backoff: Backoff::default(),
            retry_at: None,
            suspend_at: None,
            suspended: false,
            close_deadline: None,
            server_clock: None,
            outputs: VecDeque::new(),
        }
    }

    /// A client that continues the session of `snapshot` (taken by
    /// [`snapshot`](Client::snapshot), possibly in another process). Returns the ids under
    /// which the snapshot's unresolved publishes will be resolved, in order.
    pub fn from_snapshot(
        config: ClientConfig,
        seed: Seed,
        snapshot: ClientSnapshot,
    ) -> (Client, Vec<PublishId>) {
        let mut client = Client::new(config, seed);
        client.instance_id = snapshot.instance_id;
        client.message_counter = snapshot.message_counter;
        client.session = snapshot.session.map(|resume| Session {
            resume,
            heartbeat_interval: Duration::from_secs(15),
            ttl: client.config.session_ttl,
            limits: Limits::DEFAULT,
        });
        for (channel, last) in snapshot.channels {
            client.channels.restore(channel, last);
        }
        let ids = snapshot
            .publishes
            .into_iter()
            .map(|p| {
                client
                    .publishes
                    .restore(p.channel, p.messages, p.serial, snapshot.next_serial)
            })
            .collect();
        (client, ids)
    }

    /// Exports what a new process needs to continue this client's session.
    pub fn snapshot(&self) -> ClientSnapshot {
        ClientSnapshot {
            session: self.resume_token(),
            instance_id: self.instance_id.clone(),
            message_counter: self.message_counter,
            next_serial: self.publishes.next_serial(),
            channels: self.channels.positions(),
            publishes: self
                .publishes
                .iter()
                .map(|p| SnapshotPublish {
                    serial: p.serial,
                    channel: p.channel.clone(),
                    messages: p.messages.clone(),
                })
                .collect(),
        }
    }

    // ----- getters -------------------------------------------------------------------

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The client's instance id, the prefix of the message ids it makes.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The session the client would resume, if any.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.session.map(|session| session.resume)
    }

    /// Publishes not yet resolved.
    pub fn pending_publishes(&self) -> usize {
        self.publishes.len()
    }

    // ----- outputs -------------------------------------------------------------------

    /// The next thing the caller must do, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Client::handle_timeout) must be called,
    /// if any. Read it after draining the outputs.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut next: Option<Time> = None;
        let mut consider = |deadline: Option<Time>| {
            if let Some(deadline) = deadline {
                next = Some(next.map_or(deadline, |current| current.min(deadline)));
            }
        };
        consider(self.retry_at);
        consider(self.suspend_at);
        consider(self.close_deadline);
        consider(self.tokens.renew_at);
        consider(self.tokens.requested);
        consider(self.history.values().map(|h| h.deadline).min());
        consider(self.pings.values().map(|p| p.deadline).min());
        if let Some(transport) = &self.transport {
            match transport.phase {
                Phase::Opening | Phase::Handshaking => consider(Some(transport.connect_deadline)),
                Phase::Connected { .. } => {
                    consider(self.liveness_deadline(transport));
                    consider(self.heartbeat_deadline(transport));
                    // Requests only have deadlines while their transport is up.
                    consider(self.tokens.auth_deadline);
                    consider(self.channels.next_deadline());
                }
            }
        }
        next
    }

    // ----- application commands ------------------------------------------------------

    /// Starts connecting (from Initialized, Closed or Failed), or retries at once (from
    /// Disconnected or Suspended). Does nothing in other states.
    pub fn connect(&mut self, now: Time) {
        let now = self.clock.advance(now);
        match self.state {
            ConnectionState::Initialized | ConnectionState::Closed | ConnectionState::Failed => {
                self.backoff = Backoff::default();
                self.suspended = false;
                self.suspend_at = None;
                self.start_attempt(now);
            }
            ConnectionState::Disconnected | ConnectionState::Suspended => self.start_attempt(now),
            ConnectionState::Connecting | ConnectionState::Connected | ConnectionState::Closing => {
            }
        }
    }

    /// Retries at once from Disconnected or Suspended, e.g. when the operating system says
    /// the network is back. The backoff count is kept.
    pub fn retry_now(&mut self, now: Time) {
        let now = self.clock.advance(now);
        if matches!(
            self.state,
            ConnectionState::Disconnected | ConnectionState::Suspended
        ) {
            self.start_attempt(now);
        }
    }

    /// Ends the session: in order when Connected, at once otherwise. Pending publishes fail
    /// with `connection_closed`.
    pub fn close(&mut self, now: Time) {
        let now = self.clock.advance(now);
        match self.state {
            ConnectionState::Closing | ConnectionState::Closed => {}
            ConnectionState::Connected => {
                self.send(now, &ClientFrame::Close);
                self.close_deadline = Some(now.saturating_add(self.config.request_timeout));
                self.set_state(ConnectionState::Closing, None);
            }
            _ => self.finish_close(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "closed by the application",
            )),
        }
    }

    /// Attaches a channel: continues from its last position if it had one. The outcome is
    /// an [`Event::Attached`] or [`Event::Detached`].
    pub fn attach(&mut self, now: Time, channel: ChannelName) -> Result<(), ErrorInfo> {
        let now = self.clock.advance(now);
        self.check_usable()?;
        if channel.as_str().len() > self.outgoing_limits().max_channel_name_len {
            return Err(ErrorInfo::new(
                ErrorCode::ChannelNameTooLong,
                "channel name over the hub's limit",
            ));
        }
        let deadline = now.saturating_add(self.config.request_timeout);
        if let Some(frame) = self.channels.attach(channel, self.is_connected(), deadline) {
            self.send(now, &frame);
        }
        Ok(())
    }

    /// Detaches a channel and forgets its position. The outcome is an [`Event::Detached`].
    pub fn detach(&mut self, now: Time, channel: &ChannelName) {
        let now = self.clock.advance(now);
        let deadline = now.saturating_add(self.config.request_timeout);
        match self.channels.detach(channel, deadline) {
            Detach::Send(frame) => self.send(now, &frame),
            Detach::Underway => {}
            Detach::Done => self.emit(Event::Detached {
                channel: channel.clone(),
                error: None,
            }),
        }
    }

    /// Publishes messages to a channel. The returned id is resolved exactly once by an
    /// [`Event::PublishResolved`]. Refused at once (with the code) when the client is
    /// Suspended, Closed or Failed, when too many publishes are pending, or when the
    /// publish could never fit the hub's limits.
    pub fn publish(
        &mut self,
        now: Time,
        channel: ChannelName,
        messages: Vec<NewMessage>,
    ) -> Result<PublishId, ErrorInfo> {
        let now = self.clock.advance(now);
        self.check_usable()?;
        if self.suspended {
            return Err(ErrorInfo::new(
                ErrorCode::ConnectionSuspended,
                "the connection is suspended",
            ));
        }
        if self.publishes.len() >= self.config.max_pending_publishes {
            return Err(publishes::queue_full(self.config.max_pending_publishes));
        }
        let messages: Vec<Message> = messages
            .into_iter()
            .map(|message| {
                let id = match message.id {
                    Some(id) => id,
                    None => self.next_message_id(),
                };
                Message {
                    id,
                    name: message.name,
                    data: message.data,
                }
            })
            .collect();
        check_publish_fits(&channel, &messages, &self.outgoing_limits())?;
        let id = self.publishes.push(channel, messages);
        if self.is_connected() {
            if let Some(frame) = self.publishes.send_newest() {
                self.send(now, &frame);
            }
        }
        Ok(id)
    }

    /// Asks for a page of a channel's history. Answered by an [`Event::HistoryPage`].
    pub fn history(
        &mut self,
        now: Time,
        channel: ChannelName,
        query: HistoryQuery,
    ) -> Result<RequestId, ErrorInfo> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(ErrorInfo::new(
                ErrorCode::Unavailable,
                "history needs a connection",
            ));
        }
        if query.limit == 0 || query.limit > MAX_HISTORY_LIMIT {
            return Err(ErrorInfo::new(
                ErrorCode::InvalidHistoryQuery,
                "limit must be 1 to 1000",
            ));
        }
        if self.history.len() + self.pings.len() >= MAX_OUTSTANDING_REQUESTS {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "too many requests awaiting an answer",
            ));
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.history.insert(
            id,
            PendingHistory {
                channel: channel.clone(),
                deadline: now.saturating_add(self.config.request_timeout),
            },
        );
        self.send(
            now,
            &ClientFrame::HistoryRequest {
                request_id: id.0,
                channel,
                query,
            },
        );
        Ok(id)
    }

    /// Measures the round trip to the hub. Answered by an [`Event::Pong`].
    pub fn ping(&mut self, now: Time) -> Result<PingId, ErrorInfo> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(ErrorInfo::new(
                ErrorCode::Unavailable,
                "ping needs a connection",
            ));
        }
        if self.history.len() + self.pings.len() >= MAX_OUTSTANDING_REQUESTS {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "too many requests awaiting an answer",
            ));
        }
        let id = PingId(self.next_request);
        self.next_request += 1;
        self.pings.insert(
            id,
            PendingPing {
                sent: now,
                deadline: now.saturating_add(self.config.request_timeout),
            },
        );
        self.send(now, &ClientFrame::Ping { id: id.0 });
        Ok(id)
    }

    /// Answers [`Event::TokenRequired`] with a token.
    pub fn provide_token(&mut self, now: Time, token: String) {
        let now = self.clock.advance(now);
        self.tokens.requested = None;
        self.tokens.current = Some(token.clone());
        // Until the hub states the expiry, the previous estimate no longer applies.
        self.tokens.expires = None;
        self.tokens.renew_at = None;
        match self.state {
            ConnectionState::Connected => {
                self.tokens.auth_deadline = Some(now.saturating_add(self.config.request_timeout));
                self.send(now, &ClientFrame::Auth { token });
            }
            ConnectionState::Connecting if self.transport.is_none() => self.open_transport(now),
            ConnectionState::Disconnected | ConnectionState::Suspended
                if self.tokens.connect_when_provided =>
            {
                self.start_attempt(now);
            }
            _ => {}
        }
    }

    /// Answers [`Event::TokenRequired`]: no token can be had. The client goes to Failed.
    pub fn token_unavailable(&mut self, now: Time, reason: impl Into<String>) {
        self.clock.advance(now);
        self.tokens.requested = None;
        let error = ErrorInfo::new(ErrorCode::TokenUnavailable, reason);
        self.fail(error);
    }

    // ----- transport events ----------------------------------------------------------

    /// The transport asked for by `OpenTransport { transport }` is open.
    pub fn handle_transport_open(&mut self, now: Time, transport: TransportId) {
        let now = self.clock.advance(now);
        let Some(current) = self.transport.as_mut().filter(|t| t.id == transport) else {
            return;
        };
        if !matches!(current.phase, Phase::Opening) {
            return;
        }
        current.phase = Phase::Handshaking;
        current.last_received = now;
        let credentials = match &self.config.auth {
            Auth::ApiKey { name, secret } => Credentials::ApiKey {
                name: name.clone(),
                secret: secret.clone(),
            },
            Auth::Token => Credentials::Token {
                token: self.tokens.current.clone().unwrap_or_default(),
            },
        };
        let resume = self.session.map(|session| session.resume);
        current.asked_resume = resume.is_some();
        let frame = ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials,
            client_id: self.config.client_id.clone(),
            resume,
            heartbeat_interval_ms: self
                .config
                .heartbeat_interval
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        };
        self.send(now, &frame);
    }

    /// The transport closed or failed underneath the client.
    pub fn handle_transport_closed(
        &mut self,
        now: Time,
        transport: TransportId,
        reason: impl Into<String>,
    ) {
        let now = self.clock.advance(now);
        if self.transport.as_ref().is_some_and(|t| t.id == transport) {
            let error = ErrorInfo::new(ErrorCode::TransportClosed, reason);
            self.lose_transport(now, error, false);
        }
    }

    /// Bytes received on a transport: one frame with message framing, any part of the
    /// stream with stream framing.
    pub fn handle_transport_bytes(&mut self, now: Time, transport: TransportId, bytes: Bytes) {
        let now = self.clock.advance(now);
        let Some(current) = self.transport.as_mut().filter(|t| t.id == transport) else {
            return;
        };
        current.last_received = now;
        let frames = match current.decoder.as_mut() {
            None => wire::decode::<ServerFrame>(&bytes, &self.config.limits).map(|f| vec![f]),
            Some(decoder) => {
                decoder.push(&bytes);
                let mut frames = Vec::new();
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => frames.push(frame),
                        Ok(None) => break Ok(frames),
                        Err(error) => break Err(error),
                    }
                }
            }
        };
        match frames {
            Ok(frames) => {
                for frame in frames {
                    if self.transport.as_ref().is_none_or(|t| t.id != transport) {
                        break; // an earlier frame ended this transport
                    }
                    self.handle_frame(now, frame);
                }
            }
            Err(error) => self.lose_transport(now, error.to_error_info(), true),
        }
    }

    /// Call when the deadline from [`poll_timeout`](Client::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Time) {
        let now = self.clock.advance(now);
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.finish_close(ErrorInfo::new(
                ErrorCode::RequestTimeout,
                "no answer to close",
            ));
            return;
        }
        if let Some(transport) = &self.transport {
            let error = match transport.phase {
                Phase::Opening | Phase::Handshaking if transport.connect_deadline <= now => Some(
                    ErrorInfo::new(ErrorCode::RequestTimeout, "connect timed out"),
                ),
                Phase::Connected { .. }
                    if self.liveness_deadline(transport).is_some_and(|d| d <= now) =>
                {
                    Some(ErrorInfo::new(
                        ErrorCode::HeartbeatTimeout,
                        "nothing received from the hub",
                    ))
                }
                Phase::Connected { .. }
                    if self.channels.next_deadline().is_some_and(|d| d <= now)
                        || self.tokens.auth_deadline.is_some_and(|d| d <= now) =>
                {
                    Some(ErrorInfo::new(
                        ErrorCode::RequestTimeout,
                        "a request got no answer",
                    ))
                }
                _ => None,
            };
            if let Some(error) = error {
                self.lose_transport(now, error, true);
            }
        }
        self.expire_requests(now);
        if let Some(transport) = &self.transport {
            if self.heartbeat_deadline(transport).is_some_and(|d| d <= now) {
                self.send(now, &ClientFrame::Heartbeat);
            }
        }
        if self.tokens.requested.is_some_and(|d| d <= now) {
            // The application did not answer: ask again on the next attempt.
            self.tokens.requested = None;
            if self.state == ConnectionState::Connecting && self.transport.is_none() {
                let error =
                    ErrorInfo::new(ErrorCode::RequestTimeout, "no token was provided in time");
                self.attempt_failed(now, error);
            }
        }
        if self.tokens.renew_at.is_some_and(|d| d <= now) {
            self.tokens.renew_at = None;
            self.request_token(now, TokenReason::Renewal);
        }
        if self.suspend_at.is_some_and(|d| d <= now) {
            self.suspend_at = None;
            self.enter_suspended();
        }
        if self.retry_at.is_some_and(|d| d <= now) {
            self.retry_at = None;
            self.start_attempt(now);
        }
    }

    // ----- internals -----------------------------------------------------------------

    fn is_connected(&self) -> bool {
        self.state == ConnectionState::Connected
    }

    fn check_usable(&self) -> Result<(), ErrorInfo> {
        match self.state {
            ConnectionState::Closing | ConnectionState::Closed => Err(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "the connection is closed",
            )),
            ConnectionState::Failed => Err(ErrorInfo::new(
                ErrorCode::ConnectionFailed,
                "the connection failed",
            )),
            _ => Ok(()),
        }
    }

    fn next_message_id(&mut self) -> MessageId {
        let id = format!("{}:{}", self.instance_id, self.message_counter);
        self.message_counter += 1;
        MessageId::new(id).expect("16 hex digits, a colon and a number fit in 128 bytes")
    }

    fn outgoing_limits(&self) -> Limits {
        self.session
            .map_or(Limits::DEFAULT, |session| session.limits)
    }

    fn liveness_deadline(&self, transport: &Transport) -> Option<Time> {
        let interval = self.session?.heartbeat_interval;
        Some(
            transport
                .last_received
                .saturating_add(interval + self.config.request_timeout),
        )
    }

    fn heartbeat_deadline(&self, transport: &Transport) -> Option<Time> {
        match transport.phase {
            Phase::Connected { .. } => Some(
                transport
                    .last_sent
                    .saturating_add(self.session?.heartbeat_interval),
            ),
            _ => None,
        }
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn set_state(&mut self, state: ConnectionState, reason: Option<ErrorInfo>) {
        if self.state == state {
            return;
        }
        let previous = std::mem::replace(&mut self.state, state);
        self.emit(Event::StateChanged {
            previous,
            current: state,
            reason,
        });
    }

    fn resolve(&mut self, ids: Vec<PublishId>, result: &Result<(), ErrorInfo>) {
        for id in ids {
            self.emit(Event::PublishResolved {
                id,
                result: result.clone(),
            });
        }
    }

    fn send(&mut self, now: Time, frame: &ClientFrame) {
        let Some(transport) = self.transport.as_mut() else {
            return;
        };
        let limits = self
            .session
            .map_or(Limits::DEFAULT, |session| session.limits);
        let encoded = match self.config.framing {
            Framing::Message => wire::encode(frame, &limits),
            Framing::Stream => {
                let mut out = BytesMut::new();
                wire::encode_length_prefixed(frame, &limits, &mut out).map(|_| out.freeze())
            }
        };
        match encoded {
            Ok(bytes) => {
                transport.last_sent = now;
                let id = transport.id;
                self.outputs.push_back(Output::Transmit {
                    transport: id,
                    bytes,
                });
            }
            Err(error) => {
                // Publishes are checked against the limits before they are queued, so only
                // an oversized token can get here; the application hears of it.
                self.emit(Event::Update {
                    reason: ErrorInfo::new(
                        error.code(),
                        format!("{} frame not sent: {error}", wire::Frame::kind(frame)),
                    ),
                });
            }
        }
    }

    fn request_token(&mut self, now: Time, reason: TokenReason) {
        if self.tokens.requested.is_some() {
            return; // exactly one request in flight
        }
        self.tokens.requested = Some(now.saturating_add(self.config.request_timeout));
        self.emit(Event::TokenRequired { reason });
    }

    /// Starts a connection attempt: asks for a token first if one is needed.
    fn start_attempt(&mut self, now: Time) {
        self.retry_at = None;
        if let Some(old) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: old.id,
                reason: ErrorInfo::new(ErrorCode::TransportClosed, "replaced by a new attempt"),
            });
        }
        self.set_state(ConnectionState::Connecting, None);
        if self.config.auth == Auth::Token {
            let expired = self.tokens.expires.is_some_and(|expiry| expiry <= now);
            if self.tokens.current.is_none() || expired {
                if expired {
                    self.tokens.current = None;
                }
                let reason = if expired {
                    TokenReason::Expired
                } else {
                    TokenReason::Initial
                };
                self.tokens.connect_when_provided = true;
                self.request_token(now, reason);
                return;
            }
        }
        self.open_transport(now);
    }

    fn open_transport(&mut self, now: Time) {
        self.tokens.connect_when_provided = false;
        let id = TransportId(self.next_transport);
        self.next_transport += 1;
        let decoder = match self.config.framing {
            Framing::Message => None,
            Framing::Stream => Some(StreamDecoder::new(self.config.limits)),
        };
        self.transport = Some(Transport {
            id,
            phase: Phase::Opening,
            connect_deadline: now.saturating_add(self.config.request_timeout),
            last_received: now,
            last_sent: now,
            asked_resume: false,
            decoder,
        });
        self.outputs
            .push_back(Output::OpenTransport { transport: id });
    }

    /// The current transport is gone (closed underneath us, or given up by us when
    /// `close_it`).
    fn lose_transport(&mut self, now: Time, reason: ErrorInfo, close_it: bool) {
        let Some(transport) = self.transport.take() else {
            return;
        };
        if close_it {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: reason.clone(),
            });
        }
        self.fail_requests(ErrorInfo::new(
            ErrorCode::TransportClosed,
            "the transport closed",
        ));
        self.channels.on_transport_lost();
        self.tokens.auth_deadline = None;
        match (self.state, transport.phase) {
            (ConnectionState::Closing, _) => self.finish_close(reason),
            (ConnectionState::Connected, Phase::Connected { since }) => {
                let ttl = self.session.map_or(self.config.session_ttl, |s| s.ttl);
                self.suspend_at = Some(now.saturating_add(ttl));
                let delay = self.backoff.after_connection_lost(
                    now.since(since),
                    &self.config,
                    &mut self.rng,
                );
                self.set_state(ConnectionState::Disconnected, Some(reason.clone()));
                self.schedule_retry(now, delay, &reason);
            }
            (ConnectionState::Connecting, _) => self.attempt_failed(now, reason),
            _ => {}
        }
    }

    /// An attempt did not reach Connected.
    fn attempt_failed(&mut self, now: Time, reason: ErrorInfo) {
        if self.suspend_at.is_none() && !self.suspended {
            let ttl = self.session.map_or(self.config.session_ttl, |s| s.ttl);
            self.suspend_at = Some(now.saturating_add(ttl));
        }
        if self.suspended {
            let delay = Backoff::suspended(&self.config, &mut self.rng);
            self.set_state(ConnectionState::Suspended, Some(reason.clone()));
            self.schedule_retry(now, delay, &reason);
        } else {
            let delay = self
                .backoff
                .after_failed_attempt(&self.config, &mut self.rng);
            self.set_state(ConnectionState::Disconnected, Some(reason.clone()));
            self.schedule_retry(now, delay, &reason);
        }
    }

    fn schedule_retry(&mut self, now: Time, delay: Duration, reason: &ErrorInfo) {
        if reason.code == ErrorCode::TokenExpired && self.config.auth == Auth::Token {
            // Renew, then resume as soon as the token arrives.
            self.tokens.current = None;
            self.tokens.expires = None;
            self.tokens.renew_at = None;
            self.tokens.connect_when_provided = true;
            self.retry_at = None;
            self.request_token(now, TokenReason::Expired);
            return;
        }
        self.retry_at = Some(now.saturating_add(delay));
    }

    fn enter_suspended(&mut self) {
        self.suspended = true;
        let error = ErrorInfo::new(
            ErrorCode::ConnectionSuspended,
            "disconnected for longer than the session TTL",
        );
        let failed = self.publishes.drain_all();
        self.resolve(failed, &Err(error.clone()));
        if self.state == ConnectionState::Disconnected {
            let delay = Backoff::suspended(&self.config, &mut self.rng);
            let now = self.clock.now();
            self.set_state(ConnectionState::Suspended, Some(error));
            if self.retry_at.is_some() {
                self.retry_at = Some(now.saturating_add(delay));
            }
        }
    }

    fn finish_close(&mut self, reason: ErrorInfo) {
        if let Some(transport) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: reason.clone(),
            });
        }
        self.close_deadline = None;
        self.retry_at = None;
        self.suspend_at = None;
        self.tokens = Tokens {
            current: self.tokens.current.take(),
            ..Tokens::default()
        };
        let failed = self.publishes.drain_all();
        self.resolve(
            failed,
            &Err(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "the connection was closed",
            )),
        );
        self.fail_requests(ErrorInfo::new(
            ErrorCode::ConnectionClosed,
            "the connection was closed",
        ));
        self.channels.clear();
        self.session = None;
        let reason = (reason.code != ErrorCode::ConnectionClosed).then_some(reason);
        self.set_state(ConnectionState::Closed, reason);
    }

    fn fail(&mut self, error: ErrorInfo) {
        if let Some(transport) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: error.clone(),
            });
        }
        self.retry_at = None;
        self.suspend_at = None;
        self.close_deadline = None;
        self.tokens.renew_at = None;
        self.tokens.auth_deadline = None;
        self.tokens.requested = None;
        self.tokens.connect_when_provided = false;
        let failure = ErrorInfo::new(
            ErrorCode::ConnectionFailed,
            format!("the connection failed: {error}"),
        );
        let failed = self.publishes.drain_all();
        self.resolve(failed, &Err(failure.clone()));
        self.fail_requests(failure);
        self.channels.on_transport_lost();
        self.set_state(ConnectionState::Failed, Some(error));
    }

    fn fail_requests(&mut self, error: ErrorInfo) {
        for (id, pending) in std::mem::take(&mut self.history) {
            self.emit(Event::HistoryPage {
                id,
                channel: pending.channel,
                result: Err(error.clone()),
            });
        }
        for id in std::mem::take(&mut self.pings).into_keys() {
            self.emit(Event::Pong {
                id,
                result: Err(error.clone()),
            });
        }
    }

    fn expire_requests(&mut self, now: Time) {
        let timeout = ErrorInfo::new(ErrorCode::RequestTimeout, "no answer in time");
        let expired: Vec<RequestId> = self
            .history
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.history.remove(&id) {
                self.emit(Event::HistoryPage {
                    id,
                    channel: pending.channel,
                    result: Err(timeout.clone()),
                });
            }
        }
        let expired: Vec<PingId> = self
            .pings
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.pings.remove(&id);
            self.emit(Event::Pong {
                id,
                result: Err(timeout.clone()),
            });
        }
    }

    fn handle_frame(&mut self, now: Time, frame: ServerFrame) {
        let handshaking = self
            .transport
            .as_ref()
            .is_some_and(|t| !matches!(t.phase, Phase::Connected { .. }));
        match frame {
            ServerFrame::Connected { .. } if handshaking => self.on_connected(now, frame),
            ServerFrame::Error { error } => self.fail(error),
            ServerFrame::Disconnect { error } => self.lose_transport(now, error, true),
            _ if handshaking => {
                let error = ErrorInfo::new(
                    ErrorCode::UnexpectedFrame,
                    format!("{} before connected", wire::Frame::kind(&frame)),
                );
                self.lose_transport(now, error, true);
            }
            ServerFrame::Connected { .. } => {
                let error = ErrorInfo::new(ErrorCode::UnexpectedFrame, "a second connected frame");
                self.lose_transport(now, error, true);
            }
            ServerFrame::Authed {
                token_expires_at_ms,
                error,
            } => {
                self.tokens.auth_deadline = None;
                match error {
                    Some(error) => self.emit(Event::Update { reason: error }),
                    None => {
                        if let Some(expires_at) = token_expires_at_ms {
                            self.plan_renewal(now, expires_at, self.server_now_estimate(now));
                        }
                    }
                }
            }
            ServerFrame::Attached {
                channel,
                position,
                continuity,
                error,
            } => {
                let mut events = Vec::new();
                self.channels
                    .on_attached(channel, position, continuity, error, &mut events);
                self.emit_all(events);
            }
            ServerFrame::Detached { channel, error } => {
                let mut events = Vec::new();
                self.channels.on_detached(channel, error, &mut events);
                self.emit_all(events);
            }
            ServerFrame::Ack { serial, count } => {
                let resolved = self.publishes.resolve_range(serial, count);
                self.resolve(resolved, &Ok(()));
            }
            ServerFrame::Nack {
                serial,
                count,
                error,
            } => {
                let resolved = self.publishes.resolve_range(serial, count);
                self.resolve(resolved, &Err(error));
            }
            ServerFrame::Message { channel, message } => {
                let mut events = Vec::new();
                self.channels.on_message(channel, message, &mut events);
                self.emit_all(events);
            }
            ServerFrame::HistoryPage {
                request_id,
                channel,
                messages,
                next,
                error,
            } => {
                let id = RequestId(request_id);
                if self.history.remove(&id).is_some() {
                    let result = match error {
                        Some(error) => Err(error),
                        None => Ok(HistoryPage { messages, next }),
                    };
                    self.emit(Event::HistoryPage {
                        id,
                        channel,
                        result,
                    });
                }
            }
            ServerFrame::Pong { id } => {
                let id = PingId(id);
                if let Some(ping) = self.pings.remove(&id) {
                    self.emit(Event::Pong {
                        id,
                        result: Ok(now.since(ping.sent)),
                    });
                }
            }
            ServerFrame::Heartbeat => {}
            ServerFrame::Closed => {
                if self.state == ConnectionState::Closing {
                    self.finish_close(ErrorInfo::new(ErrorCode::ConnectionClosed, "closed"));
                }
            }
        }
    }

    fn emit_all(&mut self, events: Vec<Event>) {
        for event in events {
            self.emit(event);
        }
    }

    /// The hub's wall clock now, as last learned (only differences of it are ever used).
    fn server_now_estimate(&self, now: Time) -> u64 {
        self.server_clock.map_or(0, |(at, server_ms)| {
            server_ms.saturating_add(now.since(at).as_millis() as u64)
        })
    }

    fn plan_renewal(&mut self, now: Time, expires_at_ms: u64, server_now_ms: u64) {
        let remaining = Duration::from_millis(expires_at_ms.saturating_sub(server_now_ms));
        self.tokens.expires = Some(now.saturating_add(remaining));
        let by_fraction = remaining * self.config.renew_at_percent.min(100) / 100;
        let by_margin = remaining.saturating_sub(self.config.renew_before_expiry);
        self.tokens.renew_at = Some(now.saturating_add(by_fraction.min(by_margin)));
    }

    fn on_connected(&mut self, now: Time, frame: ServerFrame) {
        let ServerFrame::Connected {
            session,
            resumed,
            server_time_ms,
            heartbeat_interval_ms,
            session_ttl_ms,
            token_expires_at_ms,
            limits,
            error,
            ..
        } = frame
        else {
            return;
        };
        let Some(transport) = self.transport.as_mut() else {
            return;
        };
        transport.phase = Phase::Connected { since: now };
        let asked_resume = transport.asked_resume;
        let to_usize = |value: u32| usize::try_from(value).unwrap_or(usize::MAX);
        self.session = Some(Session {
            resume: session,
            heartbeat_interval: Duration::from_millis(u64::from(heartbeat_interval_ms))
                .clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL),
            ttl: Duration::from_millis(u64::from(session_ttl_ms)),
            limits: Limits {
                max_frame_size: to_usize(limits.max_frame_size),
                max_channel_name_len: to_usize(limits.max_channel_name_len),
                max_messages_per_publish: to_usize(limits.max_messages_per_publish),
            },
        });
        self.server_clock = Some((now, server_time_ms));
        self.retry_at = None;
        self.suspend_at = None;
        self.suspended = false;
        match token_expires_at_ms {
            Some(expires_at) if self.config.auth == Auth::Token => {
                self.plan_renewal(now, expires_at, server_time_ms);
            }
            _ => {
                self.tokens.expires = None;
                self.tokens.renew_at = None;
            }
        }
        self.set_state(ConnectionState::Connected, None);
        if !resumed {
            self.publishes.restart_serials();
            if asked_resume {
                let reason = error.unwrap_or_else(|| ErrorInfo::from(ErrorCode::SessionNotFound));
                self.emit(Event::Update { reason });
            }
        }
        // Publishes queued before the hub's limits were known may not fit them.
        let limits = self.outgoing_limits();
        let too_large = self.publishes.remove_where(|p| {
            p.serial.is_none() && check_publish_fits(&p.channel, &p.messages, &limits).is_err()
        });
        self.resolve(
            too_large,
            &Err(ErrorInfo::new(
                ErrorCode::FrameTooLarge,
                "the publish does not fit the hub's limits",
            )),
        );
        let deadline = now.saturating_add(self.config.request_timeout);
        let mut events = Vec::new();
        let attaches = self.channels.on_connected(deadline, &mut events);
        self.emit_all(events);
        for frame in attaches {
            self.send(now, &frame);
        }
        for frame in self.publishes.frames_for_new_transport() {
            self.send(now, &frame);
        }
        if self.tokens.renew_at.is_some_and(|at| at <= now) {
            self.tokens.renew_at = None;
            self.request_token(now, TokenReason::Renewal);
        }
    }
}

/// Refuses a publish that could never be sent within `limits`.
fn check_publish_fits(
    channel: &ChannelName,
    messages: &[Message],
    limits: &Limits,
) -> Result<(), ErrorInfo> {
    if messages.is_empty() {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidMessage,
            "a publish needs at least one message",
        ));
    }
    if messages.len() > limits.max_messages_per_publish {
        return Err(ErrorInfo::new(
            ErrorCode::TooManyMessages,
            format!(
                "{} messages; the hub accepts {}",
                messages.len(),
                limits.max_messages_per_publish
            ),
        ));
    }
    if messages
        .iter()
        .any(|m| m.name.len() > wire::MAX_MESSAGE_NAME_LEN)
    {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidMessage,
            "message name longer than 256 bytes",
        ));
    }
    let size = wire::publish_frame_len(channel, messages);
    if size > limits.max_frame_size {
        return Err(ErrorInfo::new(
            ErrorCode::FrameTooLarge,
            format!(
                "the publish takes {size} bytes; the hub accepts {}",
                limits.max_frame_size
            ),
        ));
    }
    Ok(())
}
