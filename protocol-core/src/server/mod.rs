//! The server hub state machine: `docs/protocol.md` §7.
//!
//! One [`Hub`] owns every session, channel, history buffer and dedupe window of a server.
//!
//! See [`Hub`] for the calling contract and an example.

mod api;
pub mod auth;
mod channel;
mod config;
mod deadlines;
mod delivery;
mod event;
pub mod history;
mod hooks;
mod model;
mod positions;
mod record;
mod restore;
mod sessions;
pub mod storage;
mod timers;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use self::api::{ApiAnswer, ApiRequest, ApiRequestId, ChannelSummary, PublishedMessage};
pub use self::auth::{
    ApiKey, Capabilities, Claims, Identity, Operation, TokenRules, mint_token, pattern_matches,
};
use self::channel::Channel;
pub use self::config::{ChannelOptions, HubConfig, MAX_NAMESPACES, Namespace, Publishers};
pub use self::event::{ConnectionId, HubEvent, HubOutput, Severity};
pub use self::hooks::{HookAnswer, HookId, HookRequest};
pub use self::model::{ModelStore, continues};
use self::positions::RememberedPositions;
pub use self::storage::{
    PublishOutcome, RestoredChannel, RestoredState, SYNC_BOUNDS_US, StorageCompletion, StorageMode,
    StorageRequest, StorageRequestId, StorageSink, Store, StoredMessage, StoredSession, SyncTimes,
};
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
    TokenExpiry(SessionKey),
    SessionExpiry(SessionKey),
    Trim(ChannelKey),
    /// The time bound of a hook request (§7.9).
    Hook(StorageRequestId),
}

#[derive(Debug)]
struct Connection {
    session: Option<SessionKey>,
    last_received: Time,
    last_sent: Time,
    pending_bytes: usize,
    /// The hub is closing it: only its last frame may still be queued.
    closing: bool,
    /// Whether the client wants its own session's messages (`connect` options, §7.4).
    echo: bool,
    /// The minor protocol version the client announced (it gets the frames and appended
    /// fields of that version at most, §3).
    minor: u16,
    decoder: Option<StreamDecoder<ClientFrame>>,
    /// History reads it has waiting for the store.
    reads: usize,
    /// Channels whose attach waits for the store's page (§7.7), each with the `attach` and
    /// `detach` frames for that channel that came after it, taken in order once it is
    /// answered (answers keep the order of requests, §6.6).
    attaching: BTreeMap<ChannelName, VecDeque<ClientFrame>>,
    /// Frames waiting in `attaching`: at most [`MAX_HELD_CHANNEL_REQUESTS`].
    held: usize,
    /// Its attaches waiting for the application's hook (§7.9): forgotten with it.
    attach_hooks: Vec<StorageRequestId>,
}

#[derive(Clone, Copy, Debug)]
struct Subscription {
    /// The serial of the last message sent on this attachment.
    cursor: u64,
    /// Waiting for the store to send messages older than the hub's cache (a replay, §7.7).
    fetching: bool,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    secret: ResumeSecret,
    identity: Identity,
    /// The serial the next new publish must have.
    next_serial: u64,
    /// The outcome of its last publishes, to answer resends (§7.4).
    record: record::PublishRecord,
    connection: Option<ConnectionId>,
    subscriptions: BTreeMap<ChannelKey, Subscription>,
    heartbeat_interval: Duration,
    /// When the session lost its transport.
    detached_at: Option<Time>,
    /// Channels it created lately, against [`HubConfig::channel_creations_per_second`].
    creations: CreationRate,
    /// Publish answers held back behind one waiting for the store, in serial order
    /// (`StorageMode::External`); emptied when the session loses its transport (the client
    /// resends what was not answered). At most one per publish frame the client has
    /// unacknowledged, which its publish record bounds.
    queued: VecDeque<Queued>,
    /// Restored from a store and not published on since: its first new serial may be
    /// ahead of `next_serial` (§7.7).
    restored: bool,
    /// Its new publish waiting for the application's hook (§7.9), if any: new publishes
    /// wait behind it in `gated`.
    hooked: Option<StorageRequestId>,
    /// New publish frames waiting behind `hooked`, in order: at most
    /// [`HubConfig::publish_record`] of them (what a client keeps unacknowledged, §6.5) and
    /// [`HubConfig::max_pending_bytes`] in all; emptied when the session loses its transport
    /// (the client resends them).
    gated: VecDeque<hooks::Gated>,
    /// The size of `gated`'s publishes as frames.
    gated_bytes: usize,
    /// What revocations look at in the token it holds (`None` for an API key, and for a
    /// session restored from a store until its client presents its token again).
    token: Option<auth::TokenInfo>,
}

/// A publish answer held back (see `Session::queued`).
#[derive(Clone, Debug)]
struct Queued {
    serial: u64,
    /// `None` while waiting for the store's answer to this request.
    waiting: Option<StorageRequestId>,
    error: Option<ErrorInfo>,
}

/// An append on its way to the store.
#[derive(Debug)]
struct PendingAppend {
    channel: ChannelKey,
    /// The channel's generation when it was emitted.
    generation: u64,
    /// Each message's serial, delivery frame (and where its body starts), time and id.
    messages: Vec<PendingMessage>,
    origin: SessionKey,
    /// The publish serial it answers, if it came from a publish frame.
    publish: Option<u64>,
    /// When the hub took the publish.
    received: Time,
}

#[derive(Debug)]
struct PendingMessage {
    serial: u64,
    frame: Bytes,
    body: usize,
    unix_ms: u64,
    id: wire::MessageId,
}

/// How many channels a session created in the current one-second window.
#[derive(Clone, Copy, Debug, Default)]
struct CreationRate {
    window_start: Time,
    count: u32,
}

impl CreationRate {
    /// Counts one more creation at `now` if the window allows `per_second`.
    fn admit(&mut self, now: Time, per_second: u32) -> bool {
        if self.window_start.saturating_add(Duration::from_secs(1)) <= now {
            self.window_start = now;
            self.count = 0;
        }
        if self.count >= per_second {
            return false;
        }
        self.count += 1;
        true
    }
}

/// An answer to a publish, coalesced into ranges before it is sent.
#[derive(Clone, Debug)]
struct Answer {
    serial: u64,
    error: Option<ErrorInfo>,
}

/// Something a transport refused on the hub's behalf (see [`Hub::handle_violation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportViolation {
    /// A message larger than the hub's frame limit (the transport did not read it whole).
    MessageTooLarge {
        /// Its size in bytes, as announced.
        size: usize,
    },
    /// A WebSocket text message: tether frames travel in binary messages only.
    TextMessage,
}

/// Counters for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections.
    pub connections: usize,
    /// Connections the hub closed whose transport has not reported its end yet; they count
    /// against the connection cap until it does.
    pub closing: usize,
    /// Sessions, live or waiting to be resumed.
    pub sessions: usize,
    /// Channels held.
    pub channels: usize,
    /// Positions of freed channels remembered.
    pub remembered_positions: usize,
    /// Entries in the timer queue.
    pub timers: usize,
    /// Timer queue pushes and pops since the hub started.
    pub timer_operations: u64,
    /// Hook requests waiting for the application's answer (§7.9).
    pub hooks_waiting: usize,
    /// What the hub did since it started.
    pub totals: HubTotals,
}

/// Upper bounds, in milliseconds, of the buckets of [`HubTotals::publish_latency`].
pub const PUBLISH_LATENCY_BOUNDS_MS: [u64; 11] = [0, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 2500];

/// Totals since the hub started, for metrics: each only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubTotals {
    /// New messages stored in a channel (fanned out, replayable, in history); a duplicate
    /// dropped by the dedupe window is not counted.
    pub messages_stored: u64,
    /// Message frames sent to subscribers, live and replayed (an `own_message` is not one).
    pub messages_delivered: u64,
    /// New publishes (not resends; from clients and the server-side API) acknowledged.
    pub publishes_acknowledged: u64,
    /// New publishes refused (`nack`), whatever the code.
    pub publishes_refused: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Connects that resumed their session.
    pub resumes: u64,
    /// Connects that asked to resume a session that was unknown or expired (they got a new
    /// one, `session_not_found`).
    pub resumes_refused: u64,
    /// Acknowledged new publishes by the time from the hub taking the publish frame to its
    /// acknowledgement (with a store: the store's answer), in the buckets of
    /// [`PUBLISH_LATENCY_BOUNDS_MS`]: `publish_latency[i]` counts those above bound `i - 1`
    /// and at most bound `i`; the last entry counts those above every bound.
    pub publish_latency: [u64; PUBLISH_LATENCY_BOUNDS_MS.len() + 1],
    /// The sum of those times, in milliseconds.
    pub publish_latency_sum_ms: u64,
}

impl HubTotals {
    /// Counts an acknowledged new publish that took `latency`.
    fn acknowledged(&mut self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let bucket = PUBLISH_LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(PUBLISH_LATENCY_BOUNDS_MS.len());
        self.publish_latency[bucket] += 1;
        self.publish_latency_sum_ms = self.publish_latency_sum_ms.saturating_add(ms);
        self.publishes_acknowledged += 1;
    }
}

/// The server side of tether: every session, channel, history buffer and dedupe window of
/// one server.
///
/// # Calling contract
///
/// A hub never reads a clock, never touches a socket and never seeds itself. Its caller
/// (an adapter) does, in a loop:
///
/// 1. Feed one input with the current [`Timestamp`] (monotonic time and wall-clock time):
///    [`accept`](Hub::accept) a new transport (the hub names it with a [`ConnectionId`]),
///    [`handle_bytes`](Hub::handle_bytes) received on a connection,
///    [`handle_written`](Hub::handle_written) when bytes the hub sent are written to the
///    socket, [`handle_closed`](Hub::handle_closed) when a transport ends, or
///    [`handle_timeout`](Hub::handle_timeout) when the deadline has passed.
/// 2. Drain [`poll_output`](Hub::poll_output) until it returns `None`, carrying out every
///    [`HubOutput`]: send bytes to a connection, close a connection, log an event.
/// 3. Read [`poll_timeout`](Hub::poll_timeout) after draining and sleep until that deadline
///    or the next input. A deadline at or before `now` has fired.
///
/// Bytes the hub sends count against the connection's pending-bytes limit until the adapter
/// reports them written: an adapter that never calls `handle_written` sees every connection
/// become a slow consumer.
///
/// ```
/// use bytes::Bytes;
/// use tether_core::server::{ApiKey, Capabilities, Hub, HubConfig, HubOutput};
/// use tether_core::wire::{self, ClientFrame, Credentials, Limits, ServerFrame, PROTOCOL_VERSION};
/// use tether_core::{Time, Timestamp};
///
/// let mut config = HubConfig::default();
/// config.keys.push(ApiKey { name: "app".into(), secret: "s".into(), capabilities: Capabilities::all() });
/// let mut hub = Hub::new(config, [1; 32]);
/// let now = Timestamp::new(Time::ZERO, 1_767_225_600_000);
/// let connection = hub.accept(now);
/// let connect = ClientFrame::Connect {
///     version: PROTOCOL_VERSION,
///     credentials: Credentials::ApiKey { name: "app".into(), secret: "s".into() },
///     client_id: None, resume: None, heartbeat_interval_ms: None, options: None,
/// };
/// hub.handle_bytes(now, connection, wire::encode(&connect, &Limits::DEFAULT).unwrap());
/// let mut connected = false;
/// while let Some(output) = hub.poll_output() {
///     if let HubOutput::Transmit { bytes, .. } = output {
///         let frame: ServerFrame = wire::decode(&bytes, &Limits::PROTOCOL_MAX).unwrap();
///         connected |= matches!(frame, ServerFrame::Connected { .. });
///     }
/// }
/// assert!(connected);
/// assert!(hub.poll_timeout().is_some()); // heartbeat and idle deadlines
/// ```
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    rng: Rng,
    clock: Clock,
    unix_ms: u64,
    connections: BTreeMap<ConnectionId, Connection>,
    /// Connections the hub closed whose transport has not ended yet (see
    /// [`HubStats::closing`]).
    closing: BTreeSet<ConnectionId>,
    next_connection: u64,
    sessions: BTreeMap<SessionKey, Session>,
    session_ids: HashMap<SessionId, SessionKey>,
    /// Sessions without a transport, oldest drop first (for eviction at the session limit).
    detached: BTreeSet<(Time, SessionKey)>,
    next_session: u64,
    channels: BTreeMap<ChannelKey, Channel>,
    channel_keys: HashMap<ChannelName, ChannelKey>,
    /// Positions of freed channels.
    positions: RememberedPositions,
    next_channel: u64,
    timers: TimerQueue<Timer>,
    outputs: VecDeque<HubOutput>,
    /// Appends on their way to the store (`StorageMode::External`): at most one per publish
    /// frame awaiting its answer, which each session's publish record bounds.
    appends: BTreeMap<StorageRequestId, PendingAppend>,
    /// History reads on their way to the store: at most [`MAX_READS_IN_FLIGHT`] per
    /// connection.
    reads: BTreeMap<StorageRequestId, PendingRead>,
    next_request: u64,
    totals: HubTotals,
    /// API publishes waiting for the store, by append: the request and the positions to
    /// answer with. At most one per API request the caller has waiting (§7.8).
    api_appends: BTreeMap<StorageRequestId, (ApiRequestId, Vec<PublishedMessage>, Time)>,
    /// Token revocations in force (§8): at most [`MAX_REVOCATIONS`], ended ones dropped.
    revocations: Vec<auth::Revocation>,
    /// Hook requests waiting for the application's answer (§7.9), each until its time bound:
    /// per connection at most one attach per channel being attached (bounded by
    /// `max_channels_per_session`) and one publish.
    hooks: BTreeMap<StorageRequestId, hooks::PendingHook>,
}

/// Revocations a hub holds at once; beyond, a new one is refused with `limit_exceeded`.
pub const MAX_REVOCATIONS: usize = 10_000;

/// History requests one connection may have waiting for the store at once; beyond, a
/// request is refused with `limit_exceeded`.
pub const MAX_READS_IN_FLIGHT: usize = 16;

/// `attach` and `detach` frames one connection may have waiting behind attaches that wait
/// for the store (§7.7); beyond, the connection is closed with `limit_exceeded`.
pub const MAX_HELD_CHANNEL_REQUESTS: usize = 64;

/// A read on its way to the store.
#[derive(Debug)]
struct PendingRead {
    connection: ConnectionId,
    channel: ChannelName,
    purpose: ReadFor,
}

/// What a read is for.
#[derive(Debug)]
enum ReadFor {
    /// A client's history request.
    History { request_id: u64 },
    /// A history request of the server-side API.
    Api { id: ApiRequestId },
    /// A replay older than the hub's cache: the attach waiting for its first page (answered
    /// `continuous` if the store has the message after `from`), or a subscription already
    /// attached (`None`).
    Replay {
        session: SessionKey,
        channel: ChannelKey,
        attach: Option<Position>,
    },
}

/// Where a history page comes from.
pub(super) enum Lookup {
    /// The hub's cache answers it.
    Page(Vec<wire::ChannelMessage>, Option<HistoryQuery>),
    /// Refused, with this error.
    Refused(ErrorInfo),
    /// The store must: `held` is the channel's epoch and last serial if known.
    Read {
        held: Option<(u64, u64)>,
        budget: usize,
    },
}

/// Messages per read of a replay from the store.
const REPLAY_BATCH: u32 = 256;

impl Hub {
    /// A hub with no connections. `seed` drives session ids, resume secrets and channel
    /// epochs: use fresh randomness in production (a restarted hub must not repeat epochs or
    /// secrets) and a fixed seed in tests.
    pub fn new(config: HubConfig, seed: Seed) -> Hub {
        let positions = RememberedPositions::new(config.remembered_positions);
        Hub {
            config,
            rng: Rng::from_seed(seed),
            clock: Clock::default(),
            unix_ms: 0,
            connections: BTreeMap::new(),
            closing: BTreeSet::new(),
            next_connection: 0,
            sessions: BTreeMap::new(),
            session_ids: HashMap::new(),
            detached: BTreeSet::new(),
            next_session: 0,
            channels: BTreeMap::new(),
            channel_keys: HashMap::new(),
            positions,
            next_channel: 0,
            timers: TimerQueue::default(),
            outputs: VecDeque::new(),
            appends: BTreeMap::new(),
            reads: BTreeMap::new(),
            totals: HubTotals::default(),
            api_appends: BTreeMap::new(),
            revocations: Vec::new(),
            hooks: BTreeMap::new(),
            next_request: 0,
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
            closing: self.closing.len(),
            sessions: self.sessions.len(),
            channels: self.channels.len(),
            remembered_positions: self.positions.len(),
            timers: self.timers.len(),
            timer_operations: self.timers.operations(),
            hooks_waiting: self.hooks.len(),
            totals: self.totals,
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

    /// A transport was accepted. Over the connection cap — live connections plus those the
    /// hub closed whose transport has not ended yet — it is refused at once (a `disconnect`
    /// frame, so the client retries later, then `Close`).
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
                closing: false,
                echo: true,
                minor: 0,
                decoder,
                reads: 0,
                attaching: BTreeMap::new(),
                held: 0,
                attach_hooks: Vec::new(),
            },
        );
        if self.connections.len() + self.closing.len() > self.config.max_connections {
            let error = ErrorInfo::new(ErrorCode::TooManyConnections, "the server is full");
            self.close_with_disconnect(now, id, error);
        } else {
            self.timers.set(
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
        let frames = wire::decode_received(conn.decoder.as_mut(), &bytes, &self.config.limits);
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
                self.close_with_error(now, connection, error);
            }
        }
        self.send_answers(now, connection, answers);
    }

    /// The transport refused what the client sent before it became bytes for the hub (a
    /// WebSocket message over the frame limit, a text message): the hub answers as §2.2
    /// says — `error` with the violation's code, then close — exactly as it would for the
    /// same fault in a frame.
    pub fn handle_violation(
        &mut self,
        now: Timestamp,
        connection: ConnectionId,
        violation: TransportViolation,
    ) {
        let now = self.tick(now);
        let error = match violation {
            TransportViolation::MessageTooLarge { size } => ErrorInfo::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "a message of {size} bytes; the limit is {}",
                    self.config.limits.max_frame_size
                ),
            ),
            TransportViolation::TextMessage => ErrorInfo::new(
                ErrorCode::MalformedFrame,
                "a text message: tether frames are binary messages",
            ),
        };
        self.close_with_error(now, connection, error);
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

    /// The transport of `connection` ended (also after the hub closed it: until then it
    /// counts against the connection cap). Its session is kept for the session TTL.
    pub fn handle_closed(&mut self, now: Timestamp, connection: ConnectionId) {
        let now = self.tick(now);
        self.closing.remove(&connection);
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
            self.close_with_disconnect(now, id, error.clone());
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

    fn encode(&self, frame: &ServerFrame) -> Result<Bytes, wire::EncodeError> {
        let limits = self.config.limits.for_hub_frames();
        match self.config.framing {
            Framing::Message => wire::encode(frame, &limits),
            Framing::Stream => {
                let mut out = BytesMut::new();
                wire::encode_length_prefixed(frame, &limits, &mut out).map(|_| out.freeze())
            }
        }
    }

    /// Queues bytes for a connection and counts them as pending. Every frame counts,
    /// whatever its kind: one that would take the connection past the pending-bytes limit
    /// is not queued, and the connection is closed as a slow consumer instead (its last
    /// frame, the `disconnect`, is the only one allowed past the limit).
    fn transmit(&mut self, now: Time, connection: ConnectionId, bytes: Bytes) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let pending = conn.pending_bytes;
        if !conn.closing && pending.saturating_add(bytes.len()) > self.config.max_pending_bytes {
            self.slow_consumer(now, connection, pending);
            return;
        }
        conn.pending_bytes = pending.saturating_add(bytes.len());
        conn.last_sent = now;
        self.outputs
            .push_back(HubOutput::Transmit { connection, bytes });
    }

    /// Queues a message frame for a subscriber (counted in [`HubTotals::messages_delivered`]).
    fn deliver(&mut self, now: Time, connection: ConnectionId, frame: Bytes) {
        self.totals.messages_delivered += 1;
        self.transmit(now, connection, frame);
    }

    /// Encodes and queues a frame. Frames are sized to fit the hub's frame allowance; should
    /// one not fit, a history page is replaced by its error and anything else closes the
    /// connection, rather than sending what the client would refuse.
    fn send(&mut self, now: Time, connection: ConnectionId, frame: &ServerFrame) {
        match self.encode(frame) {
            Ok(bytes) => self.transmit(now, connection, bytes),
            Err(error) => {
                let error = ErrorInfo::new(error.code(), error.to_string());
                if let ServerFrame::HistoryPage {
                    request_id,
                    channel,
                    ..
                } = frame
                {
                    let refusal = ServerFrame::HistoryPage {
                        request_id: *request_id,
                        channel: channel.clone(),
                        messages: Vec::new(),
                        next: None,
                        error: Some(error.clone()),
                    };
                    if let Ok(bytes) = self.encode(&refusal) {
                        self.transmit(now, connection, bytes);
                        return;
                    }
                }
                let reason = ErrorInfo::new(
                    ErrorCode::Internal,
                    format!("a frame could not be sent: {error}"),
                );
                self.close(now, connection, None, reason);
            }
        }
    }

    /// Sends an optional last frame, closes the connection and forgets it.
    fn close(
        &mut self,
        now: Time,
        connection: ConnectionId,
        last: Option<ServerFrame>,
        reason: ErrorInfo,
    ) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        if conn.closing {
            return;
        }
        // From here the connection takes no frame but its last, whatever the limits.
        conn.closing = true;
        if let Some(frame) = last {
            self.send(now, connection, &frame);
        }
        self.outputs.push_back(HubOutput::Close {
            connection,
            reason: reason.clone(),
        });
        self.closing.insert(connection);
        self.forget_connection(now, connection, reason);
    }

    /// Whether the hub keeps its state in an external store.
    fn durable(&self) -> bool {
        self.config.storage == StorageMode::External
    }

    /// Emits a storage request when the hub has a store.
    fn store_request(&mut self, request: StorageRequest) {
        if self.durable() {
            self.outputs.push_back(HubOutput::Storage(request));
        }
    }

    /// Frees a session for good.
    fn remove_session(&mut self, key: SessionKey) -> Option<SessionId> {
        let session = self.sessions.remove(&key)?;
        self.store_request(StorageRequest::DropSession {
            session: session.id,
        });
        self.timers.cancel(Timer::TokenExpiry(key));
        self.timers.cancel(Timer::SessionExpiry(key));
        self.session_ids.remove(&session.id);
        if let Some(at) = session.detached_at {
            self.detached.remove(&(at, key));
        }
        Some(session.id)
    }

    /// Closes a connection with a fatal `error` frame (the client must not retry on its own).
    fn close_with_error(&mut self, now: Time, connection: ConnectionId, error: ErrorInfo) {
        let frame = ServerFrame::Error {
            error: error.clone(),
        };
        self.close(now, connection, Some(frame), error);
    }

    /// Closes a connection with a `disconnect` frame (the client may reconnect and resume).
    fn close_with_disconnect(&mut self, now: Time, connection: ConnectionId, error: ErrorInfo) {
        let frame = ServerFrame::Disconnect {
            error: error.clone(),
        };
        self.close(now, connection, Some(frame), error);
    }

    /// Removes a connection; its session (if any) loses its transport and waits for resume.
    fn forget_connection(&mut self, now: Time, connection: ConnectionId, reason: ErrorInfo) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        for timer in [
            Timer::FirstFrame(connection),
            Timer::Idle(connection),
            Timer::Heartbeat(connection),
        ] {
            self.timers.cancel(timer);
        }
        for id in &conn.attach_hooks {
            self.hooks.remove(id);
            self.timers.cancel(Timer::Hook(*id));
        }
        let mut session_id = None;
        if let Some(key) = conn.session {
            if let Some(session) = self.sessions.get_mut(&key) {
                session_id = Some(session.id);
                if session.connection == Some(connection) {
                    session.connection = None;
                    session.queued.clear();
                    session.gated.clear();
                    session.gated_bytes = 0;
                    session.detached_at = Some(now);
                    self.detached.insert((now, key));
                    let subscriptions = std::mem::take(&mut session.subscriptions);
                    self.timers.set(
                        now.saturating_add(self.config.session_ttl),
                        Timer::SessionExpiry(key),
                    );
                    for channel in subscriptions.keys() {
                        self.unsubscribe(*channel, key);
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
}
