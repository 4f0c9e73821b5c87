//! The client connection state machine: `docs/protocol.md` §6.
//!
//! See [`Client`] for the calling contract and an example.

mod backoff;
mod channels;
mod commands;
mod config;
mod event;
mod frames;
mod lifecycle;
mod publishes;
#[cfg(feature = "sabotage")]
mod sabotage;
mod snapshot;
mod vec_map;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use self::backoff::Backoff;
use self::channels::{Attach, Channels, Detach};
pub use self::config::{Auth, ClientConfig, Fallback, Framing};
pub use self::event::{
    ConnectionState, Event, HistoryPage, Output, PingId, PublishId, RequestId, TokenReason,
    TransportId, TransportKind,
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

/// Longest instance id (the prefix of client-made message ids) a snapshot may carry: with
/// a colon and a 20-digit counter it stays within the 128-byte message id limit.
pub const MAX_INSTANCE_ID_LEN: usize = 64;

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
    kind: TransportKind,
    /// A WebSocket that falls back when not open by then (§6.10).
    open_deadline: Option<Time>,
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
    /// The current token was provided for the attempt under way (not kept from an earlier
    /// connection).
    fresh: bool,
    /// Connects refused with `token_expired` in a row, each with a fresh token (§6.8).
    stale_in_a_row: u32,
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

/// The client side of one tether connection.
///
/// # Calling contract
///
/// A [`Client`] never reads a clock, never touches a socket and never seeds itself. Its
/// caller (an adapter) does, in a loop:
///
/// 1. Feed one input, with the current monotonic [`Time`]: an application command
///    ([`connect`](Client::connect), [`publish`](Client::publish), …), a transport event
///    ([`handle_transport_open`](Client::handle_transport_open),
///    [`handle_transport_bytes`](Client::handle_transport_bytes),
///    [`handle_transport_closed`](Client::handle_transport_closed)), or
///    [`handle_timeout`](Client::handle_timeout) when the deadline has passed.
/// 2. Drain [`poll_output`](Client::poll_output) until it returns `None`, carrying out every
///    [`Output`]: open or close a transport, send bytes, pass events to the application.
/// 3. Read [`poll_timeout`](Client::poll_timeout) *after* draining, and sleep until that
///    deadline or the next input, whichever comes first. A deadline at or before `now` has
///    fired: call `handle_timeout`.
///
/// Transports are named by the [`TransportId`] of the `OpenTransport` output that asked for
/// them; inputs about any other transport are ignored. After `CloseTransport` the client
/// never uses that transport again.
///
/// ```
/// use bytes::Bytes;
/// use tether_core::client::{Auth, Client, ClientConfig, ConnectionState, Event, Output};
/// use tether_core::wire::{self, ClientFrame, Limits, ServerFrame};
/// use tether_core::Time;
/// # use tether_core::wire::{ClientId, ResumeSecret, ResumeToken, SessionId, SessionLimits};
///
/// let config = ClientConfig::new(Auth::ApiKey { name: "app".into(), secret: "s".into() });
/// let mut client = Client::new(config, [7; 32]);
/// let mut now = Time::ZERO;
/// client.connect(now);
///
/// // A fake transport: the "hub" answers the connect frame with `connected`.
/// let mut transport = None;
/// let mut state = ConnectionState::Initialized;
/// for _ in 0..10 {
///     while let Some(output) = client.poll_output() {
///         match output {
///             Output::OpenTransport { transport: id, .. } => transport = Some(id),
///             Output::Transmit { bytes, .. } => {
///                 let frame: ClientFrame = wire::decode(&bytes, &Limits::DEFAULT).unwrap();
///                 assert!(matches!(frame, ClientFrame::Connect { .. }));
/// #               let reply = ServerFrame::Connected {
/// #                   session: ResumeToken { session_id: SessionId(1), secret: ResumeSecret([0; 16]) },
/// #                   client_id: ClientId::new("app").unwrap(), resumed: false,
/// #                   server_time_ms: 0, heartbeat_interval_ms: 15_000, session_ttl_ms: 120_000,
/// #                   token_expires_at_ms: None, error: None,
/// #                   limits: SessionLimits { max_frame_size: 65536, max_channel_name_len: 256,
/// #                                           max_messages_per_publish: 100, max_channels: 100 },
/// #                   dedupe_window_ms: None,
/// #               };
///                 let bytes = wire::encode(&reply, &Limits::DEFAULT).unwrap();
///                 client.handle_transport_bytes(now, transport.unwrap(), bytes);
///             }
///             Output::CloseTransport { .. } => transport = None,
///             Output::Event(Event::StateChanged { current, .. }) => state = current,
///             Output::Event(_) => {}
///         }
///     }
///     if let Some(id) = transport.filter(|_| state == ConnectionState::Connecting) {
///         client.handle_transport_open(now, id);
///         continue;
///     }
///     match client.poll_timeout() {
///         Some(deadline) if state != ConnectionState::Connected => {
///             now = deadline;
///             client.handle_timeout(now);
///         }
///         _ => break,
///     }
/// }
/// assert_eq!(state, ConnectionState::Connected);
/// ```
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
    history: vec_map::VecMap<RequestId, PendingHistory>,
    pings: vec_map::VecMap<PingId, PendingPing>,
    next_request: u64,
    backoff: Backoff,
    /// When to start the next connection attempt.
    retry_at: Option<Time>,
    /// Fell back to the HTTP binding (§6.10): its transports until then, then WebSocket
    /// is tried again at the next attempt.
    fallback_until: Option<Time>,
    /// When Disconnected turns into Suspended.
    suspend_at: Option<Time>,
    /// Past the session TTL: publishes are refused and failed attempts go to Suspended.
    suspended: bool,
    close_deadline: Option<Time>,
    /// Our time and the hub's wall clock at the last `connected`.
    server_clock: Option<(Time, u64)>,
    outputs: VecDeque<Output>,
    #[cfg(feature = "sabotage")]
    sabotage_state: sabotage::SabotageState,
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
            history: vec_map::VecMap::default(),
            pings: vec_map::VecMap::default(),
            next_request: 0,
            backoff: Backoff::default(),
            retry_at: None,
            fallback_until: None,
            suspend_at: None,
            suspended: false,
            close_deadline: None,
            server_clock: None,
            outputs: VecDeque::new(),
            #[cfg(feature = "sabotage")]
            sabotage_state: sabotage::SabotageState::default(),
        }
    }

    /// A client that continues the session of `snapshot` (taken by
    /// [`snapshot`](Client::snapshot), possibly in another process). Returns the ids under
    /// which the snapshot's unresolved publishes will be resolved, in order; refuses a
    /// snapshot whose instance id could not prefix message ids (empty or over 64 bytes).
    pub fn from_snapshot(
        config: ClientConfig,
        seed: Seed,
        snapshot: ClientSnapshot,
    ) -> Result<(Client, Vec<PublishId>), ErrorInfo> {
        if snapshot.instance_id.is_empty() || snapshot.instance_id.len() > MAX_INSTANCE_ID_LEN {
            return Err(ErrorInfo::new(
                ErrorCode::BadRequest,
                "a snapshot's instance id must be 1 to 64 bytes",
            ));
        }
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
                    .restore(p.channel, p.messages, p.serial, p.first_sent_ms)
            })
            .collect();
        client.publishes.restore_next_serial(snapshot.next_serial);
        Ok((client, ids))
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
                    first_sent_ms: p.first_sent_ms,
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
                Phase::Opening | Phase::Handshaking => {
                    consider(Some(transport.connect_deadline));
                    if matches!(transport.phase, Phase::Opening) {
                        consider(transport.open_deadline);
                    }
                }
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

    // ----- internals -----------------------------------------------------------------

    fn is_connected(&self) -> bool {
        self.state == ConnectionState::Connected
    }

    fn outgoing_limits(&self) -> Limits {
        self.session
            .map_or(Limits::DEFAULT, |session| session.limits)
    }

    /// The limits hub frames are decoded with: the configured ones, raised to what the hub
    /// announced (plus the delivery overhead, §5) once connected — a hub allowing larger
    /// frames or longer names than the client's defaults must not see its deliveries refused —
    /// never above the protocol's maximum.
    fn incoming_limits(&self) -> Limits {
        let configured = self.config.limits;
        let Some(session) = self.session else {
            return configured;
        };
        let announced = session.limits.for_hub_frames();
        let most = Limits::PROTOCOL_MAX.for_hub_frames();
        Limits {
            max_frame_size: configured
                .max_frame_size
                .max(announced.max_frame_size.min(most.max_frame_size)),
            max_channel_name_len: configured.max_channel_name_len.max(
                announced
                    .max_channel_name_len
                    .min(most.max_channel_name_len),
            ),
            max_messages_per_publish: configured.max_messages_per_publish.max(
                announced
                    .max_messages_per_publish
                    .min(most.max_messages_per_publish),
            ),
        }
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
        #[cfg(feature = "sabotage")]
        let Some(event) = self.sabotage_event(event) else {
            return;
        };
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
                // oversized credentials can get here; the application hears of it.
                self.emit(Event::Update {
                    reason: ErrorInfo::new(
                        error.code(),
                        format!("{} frame not sent: {error}", wire::Frame::kind(frame)),
                    ),
                });
                // Credentials that cannot be sent never will be: the connection fails as the
                // hub would fail it for unusable ones (§6.8), instead of retrying with them
                // for good.
                let refused = match frame {
                    ClientFrame::Connect {
                        credentials: Credentials::ApiKey { .. },
                        ..
                    } => Some(ErrorCode::InvalidCredentials),
                    ClientFrame::Connect { .. } | ClientFrame::Auth { .. } => {
                        Some(ErrorCode::TokenInvalid)
                    }
                    _ => None,
                };
                if let Some(code) = refused {
                    self.fail(ErrorInfo::new(
                        code,
                        "the credentials are larger than a frame may be",
                    ));
                }
            }
        }
    }
}

/// Refuses a channel name longer than the hub accepts (its announced limit, or the
/// protocol's default before it announced one): sent, it would end the connection.
fn check_channel_name(channel: &ChannelName, limits: &Limits) -> Result<(), ErrorInfo> {
    if channel.as_str().len() > limits.max_channel_name_len {
        return Err(ErrorInfo::new(
            ErrorCode::ChannelNameTooLong,
            format!(
                "the channel name takes {} bytes; the hub accepts {}",
                channel.as_str().len(),
                limits.max_channel_name_len
            ),
        ));
    }
    Ok(())
}

/// Refuses a publish that could never be sent within `limits`.
fn check_publish_fits(
    channel: &ChannelName,
    messages: &[Message],
    limits: &Limits,
) -> Result<(), ErrorInfo> {
    check_channel_name(channel, limits)?;
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
