//! The server hub state machine: `docs/protocol.md` §7.
//!
//! One [`Hub`] owns every session, channel, history buffer and dedupe window of a server.
//!
//! # Calling contract
//!
//! A hub never reads a clock, never touches a socket and never seeds itself. Its caller
//! (an adapter) does, in a loop:
//!
//! 1. Feed one input with the current [`Timestamp`] (monotonic time and wall-clock time):
//!    [`accept`](Hub::accept) a new transport (the hub names it with a [`ConnectionId`]),
//!    [`handle_bytes`](Hub::handle_bytes) received on a connection,
//!    [`handle_written`](Hub::handle_written) when bytes the hub sent are written to the
//!    socket, [`handle_closed`](Hub::handle_closed) when a transport ends, or
//!    [`handle_timeout`](Hub::handle_timeout) when the deadline has passed.
//! 2. Drain [`poll_output`](Hub::poll_output) until it returns `None`, carrying out every
//!    [`HubOutput`]: send bytes to a connection, close a connection, log an event.
//! 3. Read [`poll_timeout`](Hub::poll_timeout) after draining and sleep until that deadline
//!    or the next input. A deadline at or before `now` has fired.
//!
//! Bytes the hub sends count against the connection's pending-bytes limit until the adapter
//! reports them written: an adapter that never calls `handle_written` sees every connection
//! become a slow consumer.
//!
//! ```
//! use bytes::Bytes;
//! use tether_core::server::{ApiKey, Capabilities, Hub, HubConfig, HubOutput};
//! use tether_core::wire::{self, ClientFrame, Credentials, Limits, ServerFrame, PROTOCOL_VERSION};
//! use tether_core::{Time, Timestamp};
//!
//! let mut config = HubConfig::default();
//! config.keys.push(ApiKey { name: "app".into(), secret: "s".into(), capabilities: Capabilities::all() });
//! let mut hub = Hub::new(config, [1; 32]);
//! let now = Timestamp::new(Time::ZERO, 1_767_225_600_000);
//! let connection = hub.accept(now);
//! let connect = ClientFrame::Connect {
//!     version: PROTOCOL_VERSION,
//!     credentials: Credentials::ApiKey { name: "app".into(), secret: "s".into() },
//!     client_id: None, resume: None, heartbeat_interval_ms: None,
//! };
//! hub.handle_bytes(now, connection, wire::encode(&connect, &Limits::DEFAULT).unwrap());
//! let mut connected = false;
//! while let Some(output) = hub.poll_output() {
//!     if let HubOutput::Transmit { bytes, .. } = output {
//!         let frame: ServerFrame = wire::decode(&bytes, &Limits::PROTOCOL_MAX).unwrap();
//!         connected |= matches!(frame, ServerFrame::Connected { .. });
//!     }
//! }
//! assert!(connected);
//! assert!(hub.poll_timeout().is_some()); // heartbeat and idle deadlines
//! ```

pub mod auth;
mod channel;
mod config;
mod event;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use self::auth::{
    ApiKey, Capabilities, Claims, Identity, Operation, TokenRules, mint_token, pattern_matches,
};
use self::channel::Channel;
pub use self::config::HubConfig;
pub use self::event::{ConnectionId, HubEvent, HubOutput};
use self::timers::TimerQueue;
use crate::client::Framing;
use crate::error::{ErrorCode, ErrorInfo};
use crate::rng::{Rng, Seed};
use crate::time::{Clock, Time, Timestamp};
use crate::wire::{
    self, ChannelName, ClientFrame, Continuity, Credentials, HistoryQuery, MAX_HISTORY_LIMIT,
    Message, Position, ResumeSecret, ResumeToken, ServerFrame, SessionId, SessionLimits,
    StreamDecoder,
};

/// Internal key of a session (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(u64);

/// Internal key of a channel (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ChannelKey(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    FirstFrame(ConnectionId),
    Idle(ConnectionId),
    Heartbeat(ConnectionId),
    TokenExpiry(SessionKey, u64),
    SessionExpiry(SessionKey),
    Trim(ChannelKey),
}

#[derive(Debug)]
struct Connection {
    session: Option<SessionKey>,
    last_received: Time,
    last_sent: Time,
    pending_bytes: usize,
    decoder: Option<StreamDecoder<ClientFrame>>,
}

#[derive(Clone, Copy, Debug)]
struct Subscription {
    /// The serial of the last message sent on this attachment.
    cursor: u64,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    secret: ResumeSecret,
    identity: Identity,
    /// The serial the next new publish must have.
    next_serial: u64,
    connection: Option<ConnectionId>,
    subscriptions: BTreeMap<ChannelKey, Subscription>,
    heartbeat_interval: Duration,
    /// When the session lost its transport.
    detached_at: Option<Time>,
    /// Bumped on every token change, so stale expiry timers are recognised.
    token_generation: u64,
}

/// An answer to a publish, coalesced into ranges before it is sent.
#[derive(Clone, Debug)]
struct Answer {
    serial: u64,
    error: Option<ErrorInfo>,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections.
    pub connections: usize,
    /// Sessions, live or waiting to be resumed.
    pub sessions: usize,
    /// Channels held.
    pub channels: usize,
    /// Entries in the timer queue.
    pub timers: usize,
    /// Timer queue pushes and pops since the hub started.
    pub timer_operations: u64,
}

/// The server side of tether. See the [module documentation](self) for the calling contract.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    rng: Rng,
    clock: Clock,
    unix_ms: u64,
    connections: BTreeMap<ConnectionId, Connection>,
    next_connection: u64,
    sessions: BTreeMap<SessionKey, Session>,
    session_ids: HashMap<SessionId, SessionKey>,
    next_session: u64,
    channels: BTreeMap<ChannelKey, Channel>,
    channel_keys: HashMap<ChannelName, ChannelKey>,
    next_channel: u64,
    timers: TimerQueue<Timer>,
    outputs: VecDeque<HubOutput>,
}

impl Hub {
    /// A hub with no connections. `seed` drives session ids, resume secrets and channel
    /// epochs: use fresh randomness in production (a restarted hub must not repeat epochs or
    /// secrets) and a fixed seed in tests.
    pub fn new(config: HubConfig, seed: Seed) -> Hub {
        Hub {
            config,
            rng: Rng::from_seed(seed),
            clock: Clock::default(),
            unix_ms: 0,
            connections: BTreeMap::new(),
            next_connection: 0,
            sessions: BTreeMap::new(),
            session_ids: HashMap::new(),
            next_session: 0,
            channels: BTreeMap::new(),
            channel_keys: HashMap::new(),
            next_channel: 0,
            timers: TimerQueue::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Counters for operators and tests.
    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.connections.len(),
            sessions: self.sessions.len(),
            channels: self.channels.len(),
            timers: self.timers.len(),
            timer_operations: self.timers.operations(),
        }
    }

    /// The next thing the caller must do, if any. Drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.outputs.pop_front()
    }

    /// The next deadline at which [`handle_timeout`](Hub::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    // ----- inputs --------------------------------------------------------------------

    /// A transport was accepted. Over the connection cap it is refused at once (an `error`
    /// frame, then `Close`).
    pub fn accept(&mut self, now: Timestamp) -> ConnectionId {
        let now = self.tick(now);
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let decoder = match self.config.framing {
            Framing::Message => None,
            Framing::Stream => Some(StreamDecoder::new(self.config.limits)),
        };
        self.connections.insert(
            id,
            Connection {
                session: None,
                last_received: now,
                last_sent: now,
                pending_bytes: 0,
                decoder,
            },
        );
        if self.connections.len() > self.config.max_connections {
            let error = ErrorInfo::new(ErrorCode::TooManyConnections, "the server is full");
            self.close(
                now,
                id,
                Some(ServerFrame::Error {
                    error: error.clone(),
                }),
                error,
            );
        } else {
            self.timers.push(
                now.saturating_add(self.config.first_frame_timeout),
                Timer::FirstFrame(id),
            );
        }
        id
    }

    /// Bytes received on a connection: one frame with message framing, any part of the
    /// stream with stream framing.
    pub fn handle_bytes(&mut self, now: Timestamp, connection: ConnectionId, bytes: Bytes) {
        let now = self.tick(now);
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        conn.last_received = now;
        let frames = match conn.decoder.as_mut() {
            None => wire::decode::<ClientFrame>(&bytes, &self.config.limits).map(|f| vec![f]),
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
        let mut answers = Vec::new();
        match frames {
            Ok(frames) => {
                for frame in frames {
                    if !self.connections.contains_key(&connection) {
                        break;
                    }
                    self.handle_frame(now, connection, frame, &mut answers);
                }
            }
            Err(error) => {
                let error = error.to_error_info();
                self.close(
                    now,
                    connection,
                    Some(ServerFrame::Error {
                        error: error.clone(),
                    }),
                    error,
                );
            }
        }
        self.send_answers(now, connection, answers);
    }

    /// `bytes` of what the hub sent on `connection` were written to the socket: they no
    /// longer count as pending, and held-back replays continue.
    pub fn handle_written(&mut self, now: Timestamp, connection: ConnectionId, bytes: usize) {
        let now = self.tick(now);
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.pending_bytes = conn.pending_bytes.saturating_sub(bytes);
            self.pump(now, connection);
        }
    }

    /// The transport of `connection` ended. Its session is kept for the session TTL.
    pub fn handle_closed(&mut self, now: Timestamp, connection: ConnectionId) {
        let now = self.tick(now);
        if self.connections.contains_key(&connection) {
            let reason = ErrorInfo::new(ErrorCode::TransportClosed, "the transport closed");
            self.forget_connection(now, connection, reason);
        }
    }

    /// Closes every connection with `disconnect` (`server_shutting_down`); sessions stay
    /// resumable for as long as the hub lives.
    pub fn shutdown(&mut self, now: Timestamp) {
        let now = self.tick(now);
        let error = ErrorInfo::new(ErrorCode::ServerShuttingDown, "the server is shutting down");
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            self.close(
                now,
                id,
                Some(ServerFrame::Disconnect {
                    error: error.clone(),
                }),
                error.clone(),
            );
        }
    }

    /// Call when the deadline from [`poll_timeout`](Hub::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let now = self.tick(now);
        while let Some((_, timer)) = self.timers.pop_due(now) {
            self.fire(now, timer);
        }
    }

    // ----- internals -----------------------------------------------------------------

    fn tick(&mut self, now: Timestamp) -> Time {
        self.unix_ms = now.unix_ms;
        self.clock.advance(now.monotonic)
    }

    fn emit(&mut self, event: HubEvent) {
        self.outputs.push_back(HubOutput::Event(event));
    }

    fn encode(&self, frame: &ServerFrame) -> Bytes {
        let limits = self.config.limits.for_hub_frames();
        let encoded = match self.config.framing {
            Framing::Message => wire::encode(frame, &limits),
            Framing::Stream => {
                let mut out = BytesMut::new();
                wire::encode_length_prefixed(frame, &limits, &mut out).map(|_| out.freeze())
            }
        };
        // Control frames are small; deliveries and pages are sized by the hub to fit.
        encoded.expect("hub frames fit the hub's frame limit plus overhead")
    }

    /// Queues bytes for a connection and counts them as pending.
    fn transmit(&mut self, now: Time, connection: ConnectionId, bytes: Bytes) {
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.pending_bytes += bytes.len();
            conn.last_sent = now;
            self.outputs
                .push_back(HubOutput::Transmit { connection, bytes });
        }
    }

    fn send(&mut self, now: Time, connection: ConnectionId, frame: &ServerFrame) {
        let bytes = self.encode(frame);
        self.transmit(now, connection, bytes);
    }

    /// Sends an optional last frame, closes the connection and forgets it.
    fn close(
        &mut self,
        now: Time,
        connection: ConnectionId,
        last: Option<ServerFrame>,
        reason: ErrorInfo,
    ) {
        if !self.connections.contains_key(&connection) {
            return;
        }
        if let Some(frame) = last {
            self.send(now, connection, &frame);
        }
        self.outputs.push_back(HubOutput::Close {
            connection,
            reason: reason.clone(),
        });
        self.forget_connection(now, connection, reason);
    }

    /// Removes a connection; its session (if any) loses its transport and waits for resume.
    fn forget_connection(&mut self, now: Time, connection: ConnectionId, reason: ErrorInfo) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        let mut session_id = None;
        if let Some(key) = conn.session {
            if let Some(session) = self.sessions.get_mut(&key) {
                session_id = Some(session.id);
                if session.connection == Some(connection) {
                    session.connection = None;
                    session.detached_at = Some(now);
                    let subscriptions = std::mem::take(&mut session.subscriptions);
                    self.timers.push(
                        now.saturating_add(self.config.session_ttl),
                        Timer::SessionExpiry(key),
                    );
                    for channel in subscriptions.keys() {
                        self.unsubscribe(now, *channel, key);
                    }
                }
            }
        }
        self.emit(HubEvent::Disconnected {
            connection,
            session: session_id,
            reason,
        });
    }

    fn unsubscribe(&mut self, now: Time, channel: ChannelKey, session: SessionKey) {
        if let Some(state) = self.channels.get_mut(&channel) {
            state.subscribers.remove(&session);
            state.last_used = now;
        }
        self.free_if_idle(now, channel);
    }

    /// Frees a channel nothing refers to once it has been unused for the session TTL (a
    /// dropped subscriber may still resume from one of its positions until then).
    fn free_if_idle(&mut self, now: Time, channel: ChannelKey) {
        let Some(state) = self.channels.get(&channel) else {
            return;
        };
        if !state.is_idle() {
            return;
        }
        let keep_until = state.last_used.saturating_add(self.config.session_ttl);
        if keep_until <= now {
            if let Some(state) = self.channels.remove(&channel) {
                self.channel_keys.remove(&state.name);
            }
        } else {
            self.schedule_trim(channel, keep_until);
        }
    }

    fn fire(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::FirstFrame(id) => {
                if self
                    .connections
                    .get(&id)
                    .is_some_and(|c| c.session.is_none())
                {
                    let error =
                        ErrorInfo::new(ErrorCode::FirstFrameTimeout, "no connect frame in time");
                    self.close(
                        now,
                        id,
                        Some(ServerFrame::Error {
                            error: error.clone(),
                        }),
                        error,
                    );
                }
            }
            Timer::Idle(id) => {
                let Some((last, interval)) = self.connection_timing(id) else {
                    return;
                };
                let deadline = last.saturating_add(interval + self.config.idle_grace);
                if deadline <= now {
                    let error =
                        ErrorInfo::new(ErrorCode::IdleTimeout, "nothing received from the client");
                    self.close(
                        now,
                        id,
                        Some(ServerFrame::Disconnect {
                            error: error.clone(),
                        }),
                        error,
                    );
                } else {
                    self.timers.push(deadline, Timer::Idle(id));
                }
            }
            Timer::Heartbeat(id) => {
                let Some(conn) = self.connections.get(&id) else {
                    return;
                };
                let Some((_, interval)) = self.connection_timing(id) else {
                    return;
                };
                let due = conn.last_sent.saturating_add(interval);
                if due <= now {
                    self.send(now, id, &ServerFrame::Heartbeat);
                    self.timers
                        .push(now.saturating_add(interval), Timer::Heartbeat(id));
                } else {
                    self.timers.push(due, Timer::Heartbeat(id));
                }
            }
            Timer::TokenExpiry(key, generation) => {
                let Some(session) = self.sessions.get(&key) else {
                    return;
                };
                if session.token_generation == generation {
                    self.check_token(now, key);
                    if let Some(session) = self.sessions.get(&key) {
                        if session.token_generation == generation && session.connection.is_some() {
                            // Not expired yet by the wall clock (it moved): look again later.
                            self.schedule_token_expiry(now, key);
                        }
                    }
                }
            }
            Timer::SessionExpiry(key) => {
                let expired = self.sessions.get(&key).is_some_and(|s| {
                    s.connection.is_none()
                        && s.detached_at
                            .is_some_and(|at| at.saturating_add(self.config.session_ttl) <= now)
                });
                if expired {
                    if let Some(session) = self.sessions.remove(&key) {
                        self.session_ids.remove(&session.id);
                        self.emit(HubEvent::SessionExpired {
                            session: session.id,
                        });
                    }
                }
            }
            Timer::Trim(key) => {
                let retention = self.config.retention_age;
                let window = self.config.dedupe_window;
                let next = self.channels.get_mut(&key).and_then(|channel| {
                    channel.trim_scheduled = false;
                    channel.trim(now, retention, window)
                });
                match next {
                    Some(at) => self.schedule_trim(key, at),
                    None => self.free_if_idle(now, key),
                }
            }
        }
    }

    fn schedule_trim(&mut self, key: ChannelKey, at: Time) {
        if let Some(channel) = self.channels.get_mut(&key) {
            if !channel.trim_scheduled {
                channel.trim_scheduled = true;
                self.timers.push(at, Timer::Trim(key));
            }
        }
    }

    /// Last receive time and heartbeat interval of a connection with a session.
    fn connection_timing(&self, id: ConnectionId) -> Option<(Time, Duration)> {
        let conn = self.connections.get(&id)?;
        let session = self.sessions.get(&conn.session?)?;
        Some((conn.last_received, session.heartbeat_interval))
    }

    fn schedule_token_expiry(&mut self, now: Time, key: SessionKey) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let Some(expires_at_ms) = session.identity.expires_at_ms else {
            return;
        };
        let leeway = self.config.tokens.leeway.min(auth::MAX_LEEWAY);
        let remaining = Duration::from_millis(expires_at_ms.saturating_sub(self.unix_ms)) + leeway;
        self.timers.push(
            now.saturating_add(remaining),
            Timer::TokenExpiry(key, session.token_generation),
        );
    }

    /// Disconnects the session's transport if its token expired by the wall clock.
    fn check_token(&mut self, now: Time, key: SessionKey) -> bool {
        let Some(session) = self.sessions.get(&key) else {
            return false;
        };
        let leeway_ms = self.config.tokens.leeway.min(auth::MAX_LEEWAY).as_millis() as u64;
        let expired = session
            .identity
            .expires_at_ms
            .is_some_and(|at| at.saturating_add(leeway_ms) <= self.unix_ms);
        if let (true, Some(connection)) = (expired, session.connection) {
            let error =
                ErrorInfo::new(ErrorCode::TokenExpired, "the token expired without renewal");
            self.close(
                now,
                connection,
                Some(ServerFrame::Disconnect {
                    error: error.clone(),
                }),
                error,
            );
            return true;
        }
        false
    }

    fn protocol_error(&mut self, now: Time, connection: ConnectionId, code: ErrorCode, text: &str) {
        let error = ErrorInfo::new(code, text);
        self.close(
            now,
            connection,
            Some(ServerFrame::Error {
                error: error.clone(),
            }),
            error,
        );
    }

    fn handle_frame(
        &mut self,
        now: Time,
        connection: ConnectionId,
        frame: ClientFrame,
        answers: &mut Vec<Answer>,
    ) {
        let session = self.connections.get(&connection).and_then(|c| c.session);
        let Some(key) = session else {
            match frame {
                ClientFrame::Connect {
                    credentials,
                    client_id,
                    resume,
                    heartbeat_interval_ms,
                    ..
                } => self.on_connect(
                    now,
                    connection,
                    credentials,
                    client_id,
                    resume,
                    heartbeat_interval_ms,
                ),
                other => self.protocol_error(
                    now,
                    connection,
                    ErrorCode::UnexpectedFrame,
                    &format!("{} before connect", wire::Frame::kind(&other)),
                ),
            }
            return;
        };
        if self.check_token(now, key) {
            return;
        }
        match frame {
            ClientFrame::Connect { .. } => self.protocol_error(
                now,
                connection,
                ErrorCode::UnexpectedFrame,
                "a second connect",
            ),
            ClientFrame::Auth { token } => self.on_auth(now, connection, key, &token),
            ClientFrame::Attach { channel, from } => {
                self.on_attach(now, connection, key, channel, from)
            }
            ClientFrame::Detach { channel } => self.on_detach(now, connection, key, channel),
            ClientFrame::Publish {
                serial,
                channel,
                messages,
            } => self.on_publish(now, connection, key, serial, channel, messages, answers),
            ClientFrame::HistoryRequest {
                request_id,
                channel,
                query,
            } => self.on_history(now, connection, key, request_id, channel, query),
            ClientFrame::Ping { id } => self.send(now, connection, &ServerFrame::Pong { id }),
            ClientFrame::Heartbeat => {}
            ClientFrame::Close => {
                self.send(now, connection, &ServerFrame::Closed);
                let reason = ErrorInfo::new(ErrorCode::ConnectionClosed, "closed by the client");
                self.close(now, connection, None, reason);
                if let Some(session) = self.sessions.remove(&key) {
                    self.session_ids.remove(&session.id);
                }
            }
        }
    }

    fn on_connect(
        &mut self,
        now: Time,
        connection: ConnectionId,
        credentials: Credentials,
        client_id: Option<wire::ClientId>,
        resume: Option<ResumeToken>,
        heartbeat_interval_ms: Option<u32>,
    ) {
        let identity = match &credentials {
            Credentials::ApiKey { name, secret } => {
                auth::verify_api_key(&self.config.keys, name, secret, client_id.as_ref())
            }
            Credentials::Token { token } => {
                auth::verify_token(&self.config.keys, &self.config.tokens, token, self.unix_ms)
                    .and_then(|identity| match &client_id {
                        Some(asked) if *asked != identity.client_id => Err(ErrorInfo::new(
                            ErrorCode::ClientIdMismatch,
                            "the connect frame names another client id than the token",
                        )),
                        _ => Ok(identity),
                    })
            }
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(error) => {
                // An expired token is worth a renewal and a retry; anything else is final.
                let frame = if error.code == ErrorCode::TokenExpired {
                    ServerFrame::Disconnect {
                        error: error.clone(),
                    }
                } else {
                    ServerFrame::Error {
                        error: error.clone(),
                    }
                };
                self.close(now, connection, Some(frame), error);
                return;
            }
        };
        let heartbeat_interval = heartbeat_interval_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(self.config.heartbeat_interval)
            .clamp(
                self.config.min_heartbeat_interval,
                self.config.max_heartbeat_interval,
            );

        let mut resume_error = None;
        let resumed = resume.and_then(|token| {
            let key = self.session_ids.get(&token.session_id).copied();
            let usable = key
                .and_then(|key| self.sessions.get(&key).map(|s| (key, s)))
                .filter(|(_, s)| {
                    auth::constant_time_eq(&s.secret.0, &token.secret.0)
                        && s.identity.client_id == identity.client_id
                });
            if usable.is_none() {
                resume_error = Some(ErrorInfo::new(
                    ErrorCode::SessionNotFound,
                    "session unknown or expired",
                ));
            }
            usable.map(|(key, _)| key)
        });
        let key = match resumed {
            Some(key) => {
                let old = self.sessions.get(&key).and_then(|s| s.connection);
                if let Some(old) = old {
                    let error = ErrorInfo::new(
                        ErrorCode::SessionReplaced,
                        "the session was resumed elsewhere",
                    );
                    self.close(
                        now,
                        old,
                        Some(ServerFrame::Disconnect {
                            error: error.clone(),
                        }),
                        error,
                    );
                }
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.identity = identity;
                    session.heartbeat_interval = heartbeat_interval;
                    session.detached_at = None;
                    session.connection = Some(connection);
                    session.token_generation += 1;
                }
                key
            }
            None => self.new_session(identity, heartbeat_interval, connection),
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.session = Some(key);
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let frame = ServerFrame::Connected {
            session: ResumeToken {
                session_id: session.id,
                secret: session.secret,
            },
            client_id: session.identity.client_id.clone(),
            resumed: resumed.is_some(),
            server_time_ms: self.unix_ms,
            heartbeat_interval_ms: u32::try_from(heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            session_ttl_ms: u32::try_from(self.config.session_ttl.as_millis()).unwrap_or(u32::MAX),
            token_expires_at_ms: session.identity.expires_at_ms,
            limits: self.session_limits(),
            error: resume_error,
        };
        let event = HubEvent::Connected {
            connection,
            session: session.id,
            client_id: session.identity.client_id.clone(),
            resumed: resumed.is_some(),
        };
        self.send(now, connection, &frame);
        self.emit(event);
        self.timers.push(
            now.saturating_add(heartbeat_interval),
            Timer::Heartbeat(connection),
        );
        self.timers.push(
            now.saturating_add(heartbeat_interval + self.config.idle_grace),
            Timer::Idle(connection),
        );
        self.schedule_token_expiry(now, key);
    }

    fn session_limits(&self) -> SessionLimits {
        let limits = &self.config.limits;
        let to_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        SessionLimits {
            max_frame_size: to_u32(limits.max_frame_size),
            max_channel_name_len: to_u32(limits.max_channel_name_len),
            max_messages_per_publish: to_u32(limits.max_messages_per_publish),
            max_channels: to_u32(self.config.max_channels_per_session),
        }
    }

    fn new_session(
        &mut self,
        identity: Identity,
        heartbeat_interval: Duration,
        connection: ConnectionId,
    ) -> SessionKey {
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        let id = loop {
            let candidate = SessionId(self.rng.next_u64());
            if !self.session_ids.contains_key(&candidate) {
                break candidate;
            }
        };
        let mut secret = [0u8; 16];
        self.rng.fill(&mut secret);
        self.session_ids.insert(id, key);
        self.sessions.insert(
            key,
            Session {
                id,
                secret: ResumeSecret(secret),
                identity,
                next_serial: 0,
                connection: Some(connection),
                subscriptions: BTreeMap::new(),
                heartbeat_interval,
                detached_at: None,
                token_generation: 0,
            },
        );
        key
    }

    fn allows(&self, key: SessionKey, channel: &ChannelName, operation: Operation) -> bool {
        self.sessions
            .get(&key)
            .is_some_and(|s| s.identity.capabilities.allows(channel, operation))
    }

    fn on_auth(&mut self, now: Time, connection: ConnectionId, key: SessionKey, token: &str) {
        let verified =
            auth::verify_token(&self.config.keys, &self.config.tokens, token, self.unix_ms);
        let current = self
            .sessions
            .get(&key)
            .map(|s| s.identity.client_id.clone());
        let outcome = verified.and_then(|identity| {
            if Some(&identity.client_id) == current.as_ref() {
                Ok(identity)
            } else {
                Err(ErrorInfo::new(
                    ErrorCode::ClientIdMismatch,
                    "a renewal may not change the client id",
                ))
            }
        });
        match outcome {
            Err(error) => self.send(
                now,
                connection,
                &ServerFrame::Authed {
                    token_expires_at_ms: None,
                    error: Some(error),
                },
            ),
            Ok(identity) => {
                let expires = identity.expires_at_ms;
                let client_id = identity.client_id.clone();
                let mut revoked = Vec::new();
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.identity = identity;
                    session.token_generation += 1;
                    for channel in session.subscriptions.keys() {
                        if let Some(state) = self.channels.get(channel) {
                            if !session
                                .identity
                                .capabilities
                                .allows(&state.name, Operation::Subscribe)
                            {
                                revoked.push(*channel);
                            }
                        }
                    }
                    for channel in &revoked {
                        session.subscriptions.remove(channel);
                    }
                }
                self.send(
                    now,
                    connection,
                    &ServerFrame::Authed {
                        token_expires_at_ms: expires,
                        error: None,
                    },
                );
                for channel in revoked {
                    let name = self.channels.get(&channel).map(|c| c.name.clone());
                    self.unsubscribe(now, channel, key);
                    if let Some(name) = name {
                        let error = ErrorInfo::new(
                            ErrorCode::Forbidden,
                            "the renewed token does not allow subscribe",
                        );
                        self.send(
                            now,
                            connection,
                            &ServerFrame::Detached {
                                channel: name,
                                error: Some(error),
                            },
                        );
                    }
                }
                self.schedule_token_expiry(now, key);
                self.emit(HubEvent::Reauthenticated {
                    connection,
                    client_id,
                });
            }
        }
    }

    /// The channel's key, creating the channel if there is room.
    fn channel_key(&mut self, now: Time, name: &ChannelName) -> Option<ChannelKey> {
        if let Some(key) = self.channel_keys.get(name) {
            return Some(*key);
        }
        if self.channels.len() >= self.config.max_channels {
            return None;
        }
        let key = ChannelKey(self.next_channel);
        self.next_channel += 1;
        let epoch = self.rng.next_u64();
        self.channels
            .insert(key, Channel::new(name.clone(), epoch, now));
        self.channel_keys.insert(name.clone(), key);
        Some(key)
    }

    fn on_attach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
        from: Option<Position>,
    ) {
        let refuse = |code: ErrorCode, text: &str| ServerFrame::Detached {
            channel: name.clone(),
            error: Some(ErrorInfo::new(code, text)),
        };
        if !self.allows(key, &name, Operation::Subscribe) {
            let frame = refuse(
                ErrorCode::Forbidden,
                "no subscribe capability for this channel",
            );
            self.send(now, connection, &frame);
            return;
        }
        let existing = self.channel_keys.get(&name).copied();
        let attached_count = self.sessions.get(&key).map_or(0, |s| s.subscriptions.len());
        let already = existing.is_some_and(|ck| {
            self.sessions
                .get(&key)
                .is_some_and(|s| s.subscriptions.contains_key(&ck))
        });
        if !already && attached_count >= self.config.max_channels_per_session {
            let frame = refuse(
                ErrorCode::TooManyChannels,
                "the session is attached to its maximum of channels",
            );
            self.send(now, connection, &frame);
            return;
        }
        let Some(channel_key) = self.channel_key(now, &name) else {
            let frame = refuse(
                ErrorCode::LimitExceeded,
                "the server holds its maximum of channels",
            );
            self.send(now, connection, &frame);
            return;
        };
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let current = channel.position();
        let (continuity, position, error) = match from {
            None => (Continuity::Fresh, current, None),
            Some(p) if p.epoch != channel.epoch => (
                Continuity::Gap,
                current,
                Some(ErrorInfo::new(
                    ErrorCode::EpochChanged,
                    "the channel's history was lost",
                )),
            ),
            Some(p) if p.serial <= current.serial && channel.retains_after(p.serial) => {
                (Continuity::Continuous, p, None)
            }
            Some(_) => (
                Continuity::Gap,
                current,
                Some(ErrorInfo::new(
                    ErrorCode::HistoryUnavailable,
                    "the position is older than the retained history",
                )),
            ),
        };
        if let Some(channel) = self.channels.get_mut(&channel_key) {
            channel.subscribers.insert(key);
            channel.last_used = now;
        }
        if let Some(session) = self.sessions.get_mut(&key) {
            session.subscriptions.insert(
                channel_key,
                Subscription {
                    cursor: position.serial,
                },
            );
        }
        self.send(
            now,
            connection,
            &ServerFrame::Attached {
                channel: name,
                position,
                continuity,
                error,
            },
        );
        self.pump(now, connection);
    }

    fn on_detach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
    ) {
        if let Some(channel_key) = self.channel_keys.get(&name).copied() {
            if let Some(session) = self.sessions.get_mut(&key) {
                session.subscriptions.remove(&channel_key);
            }
            self.unsubscribe(now, channel_key, key);
        }
        self.send(
            now,
            connection,
            &ServerFrame::Detached {
                channel: name,
                error: None,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_publish(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        serial: u64,
        name: ChannelName,
        messages: Vec<Message>,
        answers: &mut Vec<Answer>,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if serial > session.next_serial {
            self.protocol_error(
                now,
                connection,
                ErrorCode::InvalidPublishSerial,
                "a publish serial was skipped",
            );
            return;
        }
        if serial == session.next_serial {
            session.next_serial += 1;
        }
        let publisher = session.identity.client_id.clone();
        if !session
            .identity
            .capabilities
            .allows(&name, Operation::Publish)
        {
            answers.push(Answer {
                serial,
                error: Some(ErrorInfo::new(
                    ErrorCode::Forbidden,
                    "no publish capability for this channel",
                )),
            });
            return;
        }
        let Some(channel_key) = self.channel_key(now, &name) else {
            answers.push(Answer {
                serial,
                error: Some(ErrorInfo::new(
                    ErrorCode::LimitExceeded,
                    "the server holds its maximum of channels",
                )),
            });
            return;
        };
        for message in messages {
            let Some(channel) = self.channels.get_mut(&channel_key) else {
                return;
            };
            if channel.is_duplicate(&message.id) {
                continue;
            }
            let stored = channel.store(
                message,
                publisher.clone(),
                now,
                self.unix_ms,
                self.config.framing,
                &self.config.limits,
                self.config.retention_count,
                self.config.dedupe_capacity,
            );
            match stored {
                Ok((stored_serial, frame)) => {
                    let trim_at = now
                        .saturating_add(self.config.retention_age.min(self.config.dedupe_window));
                    self.schedule_trim(channel_key, trim_at);
                    self.fan_out(now, channel_key, stored_serial, &frame);
                }
                Err(error) => {
                    answers.push(Answer {
                        serial,
                        error: Some(error),
                    });
                    return;
                }
            }
        }
        answers.push(Answer {
            serial,
            error: None,
        });
    }

    /// Sends a new message to every subscriber that is caught up; lagging ones get it from
    /// their replay; one whose pending bytes would pass the limit is a slow consumer.
    fn fan_out(&mut self, now: Time, channel_key: ChannelKey, serial: u64, frame: &Bytes) {
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let subscribers: Vec<SessionKey> = channel.subscribers.iter().copied().collect();
        for key in subscribers {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(connection) = session.connection else {
                continue;
            };
            let Some(subscription) = session.subscriptions.get_mut(&channel_key) else {
                continue;
            };
            if subscription.cursor + 1 != serial {
                self.pump(now, connection);
                continue;
            }
            let pending = self
                .connections
                .get(&connection)
                .map_or(0, |c| c.pending_bytes);
            if pending + frame.len() > self.config.max_pending_bytes {
                self.slow_consumer(now, connection, pending);
                continue;
            }
            subscription.cursor = serial;
            self.transmit(now, connection, frame.clone());
        }
    }

    fn slow_consumer(&mut self, now: Time, connection: ConnectionId, pending_bytes: usize) {
        self.emit(HubEvent::SlowConsumer {
            connection,
            pending_bytes,
        });
        let error = ErrorInfo::new(
            ErrorCode::SlowConsumer,
            "the connection fell too far behind",
        );
        self.close(
            now,
            connection,
            Some(ServerFrame::Disconnect {
                error: error.clone(),
            }),
            error,
        );
    }

    /// Continues held-back replays on a connection while its pending bytes are under half
    /// the limit. A replay whose next message is no longer retained cannot continue: the
    /// connection is a slow consumer (it resumes later and is told of the gap).
    fn pump(&mut self, now: Time, connection: ConnectionId) {
        let Some(key) = self.connections.get(&connection).and_then(|c| c.session) else {
            return;
        };
        let budget = self.config.max_pending_bytes / 2;
        let channels: Vec<ChannelKey> = match self.sessions.get(&key) {
            Some(session) => session.subscriptions.keys().copied().collect(),
            None => return,
        };
        for channel_key in channels {
            loop {
                let pending = self
                    .connections
                    .get(&connection)
                    .map_or(usize::MAX, |c| c.pending_bytes);
                if pending >= budget {
                    return;
                }
                let Some(cursor) = self
                    .sessions
                    .get(&key)
                    .and_then(|s| s.subscriptions.get(&channel_key))
                    .map(|s| s.cursor)
                else {
                    break;
                };
                let Some(channel) = self.channels.get(&channel_key) else {
                    break;
                };
                if cursor >= channel.last {
                    break;
                }
                let Some(frame) = channel.frame(cursor + 1).cloned() else {
                    self.slow_consumer(now, connection, pending);
                    return;
                };
                if let Some(subscription) = self
                    .sessions
                    .get_mut(&key)
                    .and_then(|s| s.subscriptions.get_mut(&channel_key))
                {
                    subscription.cursor = cursor + 1;
                }
                self.transmit(now, connection, frame);
            }
        }
    }

    fn on_history(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        request_id: u64,
        name: ChannelName,
        query: HistoryQuery,
    ) {
        let page = |messages, next, error| ServerFrame::HistoryPage {
            request_id,
            channel: name.clone(),
            messages,
            next,
            error,
        };
        let frame = if !self.allows(key, &name, Operation::History) {
            page(
                vec![],
                None,
                Some(ErrorInfo::new(
                    ErrorCode::Forbidden,
                    "no history capability for this channel",
                )),
            )
        } else if query.limit == 0 || query.limit > MAX_HISTORY_LIMIT {
            page(
                vec![],
                None,
                Some(ErrorInfo::new(
                    ErrorCode::InvalidHistoryQuery,
                    "limit must be 1 to 1000",
                )),
            )
        } else {
            match self
                .channel_keys
                .get(&name)
                .and_then(|k| self.channels.get(k))
            {
                None => page(vec![], None, None),
                Some(channel) => {
                    // Leave room for the page's own fields within the frame allowance.
                    let budget = self
                        .config
                        .limits
                        .max_frame_size
                        .saturating_sub(1024)
                        .max(1);
                    match channel.history(&query, budget) {
                        Ok((messages, next)) => page(messages, next, None),
                        Err(error) => page(vec![], None, Some(error)),
                    }
                }
            }
        };
        self.send(now, connection, &frame);
    }

    /// Sends the publish answers of one input, coalescing consecutive ones into ranges.
    fn send_answers(&mut self, now: Time, connection: ConnectionId, answers: Vec<Answer>) {
        if answers.is_empty() || !self.connections.contains_key(&connection) {
            return;
        }
        let mut frames: Vec<ServerFrame> = Vec::new();
        for answer in answers {
            let merged = match (frames.last_mut(), &answer.error) {
                (Some(ServerFrame::Ack { serial, count }), None)
                    if *serial + u64::from(*count) == answer.serial =>
                {
                    *count += 1;
                    true
                }
                (
                    Some(ServerFrame::Nack {
                        serial,
                        count,
                        error,
                    }),
                    Some(new),
                ) if *serial + u64::from(*count) == answer.serial && error == new => {
                    *count += 1;
                    true
                }
                _ => false,
            };
            if !merged {
                frames.push(match answer.error {
                    None => ServerFrame::Ack {
                        serial: answer.serial,
                        count: 1,
                    },
                    Some(error) => ServerFrame::Nack {
                        serial: answer.serial,
                        count: 1,
                        error,
                    },
                });
            }
        }
        for frame in frames {
            self.send(now, connection, &frame);
        }
    }
}
