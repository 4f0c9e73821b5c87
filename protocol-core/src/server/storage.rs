//! The storage port: how a hub keeps channel logs and sessions in a store it never touches.
//!
//! The hub stays sans-IO. With [`StorageMode::External`] it emits [`StorageRequest`]s as
//! [`HubOutput::Storage`](super::HubOutput::Storage) and takes [`StorageCompletion`]s through
//! [`Hub::handle_storage`](super::Hub::handle_storage); at start it is given what the store
//! holds through [`Hub::restore`](super::Hub::restore). With [`StorageMode::Memory`] (the
//! default) it emits no request and keeps everything in memory, as `docs/protocol.md` §7
//! describes.
//!
//! # Calling contract (for an engine serving the port)
//!
//! - **Order.** Requests are carried out in the order the hub emitted them; completions may
//!   come in any grouping but an [`Append`](StorageRequest::Append)'s completion must mean
//!   that it *and every request emitted before it* is as durable as the store's mode
//!   promises (`docs/protocol.md` §7.7). One queue with group commit does this.
//! - **Positions are the hub's.** An append carries messages at consecutive positions of one
//!   epoch. The store refuses (with [`Failed`](StorageCompletion::Failed)) an append whose
//!   first serial is not one past the channel's stored last serial of that epoch, or that
//!   starts a new epoch at a serial other than 1 — so after a failed append, the appends of
//!   the same channel already emitted fail too, and nothing leaves a hole in a log. (An
//!   engine shared by several hubs makes the same check atomically: compare and append.)
//! - **Persist before acknowledge.** The hub acknowledges and fans out an append's messages
//!   only on [`Appended`](StorageCompletion::Appended); on `Failed` it refuses the publish
//!   with the completion's error (`storage_failed`, 50001) and forgets its message ids, so a
//!   later resend is stored.
//! - **Fire and forget.** [`RecordPublish`](StorageRequest::RecordPublish),
//!   [`SaveChannel`](StorageRequest::SaveChannel), [`SaveSession`](StorageRequest::SaveSession)
//!   and [`DropSession`](StorageRequest::DropSession) have no completion: they become durable
//!   with the next append's sync (or the store's interval). Losing them in a crash costs at
//!   most a `resumed: false` or a new epoch for a channel nobody published on — never a lost
//!   or duplicated message.
//! - **Reads** ([`Read`](StorageRequest::Read)) see at least every append emitted before
//!   them that the store reported (or will report) stored.
//! - **Never a panic, never a hang**: a store that cannot write answers `Failed`.

use serde::{Deserialize, Serialize};

use super::auth::Identity;
use crate::error::{ErrorCode, ErrorInfo};
use crate::wire::{
    ChannelMessage, ChannelName, HistoryQuery, MessageId, Position, ResumeSecret, SessionId,
};

/// Where the hub keeps channel logs and sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageMode {
    /// In the hub's memory only (the default): nothing survives the hub, no request is
    /// emitted, publishes are acknowledged at once.
    #[default]
    Memory,
    /// In a store the adapter runs: the hub emits [`StorageRequest`]s and acknowledges a
    /// publish only once the store reports it durable.
    External,
}

/// Names one request that has a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorageRequestId(pub u64);

/// The outcome of one publish serial, as a session's record keeps it (§7.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcome {
    /// The publishing session.
    pub session: SessionId,
    /// The publish serial.
    pub serial: u64,
    /// A digest of the publish's message ids (to tell a resend from another publish).
    pub digest: u64,
    /// `None`: acknowledged; otherwise the code it was refused with.
    pub refused: Option<u32>,
}

/// Something the hub asks of its store, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageRequest {
    /// Store `messages` (consecutive positions of one epoch, as delivered) in `channel`'s
    /// log, their ids for deduplication, and the outcome of the publish that carried them;
    /// answer with `Appended` or `Failed`.
    Append {
        /// Names the completion.
        id: StorageRequestId,
        /// The channel.
        channel: ChannelName,
        /// The messages, positions assigned.
        messages: Vec<ChannelMessage>,
        /// The session that published them (so a client asking for no echo is not sent its
        /// own messages after a restart).
        origin: SessionId,
        /// The publish's record entry (acknowledged), when they came from a publish frame.
        outcome: Option<PublishOutcome>,
    },
    /// Record the outcome of a publish serial that stored nothing (refused, or every
    /// message a duplicate). No completion.
    RecordPublish(PublishOutcome),
    /// A new channel starts at `position` (its epoch, serial 0), so a restart keeps the
    /// epoch subscribers were told. No completion.
    SaveChannel {
        /// The channel.
        channel: ChannelName,
        /// Its epoch and last serial.
        position: Position,
    },
    /// Keep a session so it can be resumed after a restart (new, resumed or renewed). No
    /// completion.
    SaveSession(StoredSession),
    /// Forget a session (closed, expired, evicted). No completion.
    DropSession {
        /// The session.
        session: SessionId,
    },
    /// Read one page of `channel`'s history for a client (older than the hub's cache);
    /// answer with `Page` or `Failed`. Page as [`history::page`](super::history::page)
    /// does, over the stored messages of `epoch` (the stored epoch when `None`, after
    /// [`check_epoch`](super::history::check_epoch)) up to serial `until` (when given: the
    /// hub never shows what it has not delivered yet).
    Read {
        /// Names the completion.
        id: StorageRequestId,
        /// The channel.
        channel: ChannelName,
        /// The epoch the hub holds, if it holds the channel.
        epoch: Option<u64>,
        /// The newest serial the page may hold.
        until: Option<u64>,
        /// The client's query (validated: limit 1 to 1,000).
        query: HistoryQuery,
        /// The most bytes of messages in the page (at least one message).
        max_bytes: usize,
    },
    /// Keep these token revocations (all those in force, replacing what was kept; at most
    /// [`MAX_REVOCATIONS`](super::MAX_REVOCATIONS)): no answer; synced with the next batch.
    SaveRevocations(Vec<super::auth::Revocation>),
}

/// How the store answers a request that has a completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageCompletion {
    /// The append (and everything emitted before it) is durable.
    Appended {
        /// The request.
        id: StorageRequestId,
    },
    /// A page of history for a `Read`.
    Page {
        /// The request.
        id: StorageRequestId,
        /// The messages, in the query's direction.
        messages: Vec<ChannelMessage>,
        /// The query for the next page, if there is more.
        next: Option<HistoryQuery>,
    },
    /// The append was not stored, or the read failed; `error` is what the client is told
    /// (50001 `storage_failed` unless the store knows better, e.g. `epoch_changed`).
    Failed {
        /// The request.
        id: StorageRequestId,
        /// Why.
        error: ErrorInfo,
    },
}

impl StorageCompletion {
    /// A failure with the `storage_failed` code and `message`.
    pub fn failed(id: StorageRequestId, message: impl Into<String>) -> StorageCompletion {
        StorageCompletion::Failed {
            id,
            error: ErrorInfo::new(ErrorCode::StorageFailed, message),
        }
    }
}

/// A session as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Its id.
    pub id: SessionId,
    /// Its resume secret.
    pub secret: ResumeSecret,
    /// Who it is and what it may do.
    pub identity: Identity,
    /// Its heartbeat interval, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The outcomes of its last publishes, oldest first, consecutive serials (filled by the
    /// store on restore; empty in `SaveSession`).
    pub record: Vec<PublishOutcome>,
}

/// A stored message, with the session that published it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message as delivered.
    pub message: ChannelMessage,
    /// Its publishing session.
    pub origin: SessionId,
}

/// One channel as the store holds it at a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredChannel {
    /// The channel.
    pub name: ChannelName,
    /// Its epoch and last serial.
    pub position: Position,
    /// Its newest messages, oldest first, ending at `position` (the hub's cache: at most
    /// the hub's retention count and age).
    pub recent: Vec<StoredMessage>,
    /// Message ids stored within the dedupe window, with when (Unix ms).
    pub ids: Vec<(MessageId, u64)>,
}

/// What a store holds when the hub starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoredState {
    /// Channels, each at its stored position.
    pub channels: Vec<RestoredChannel>,
    /// Sessions that can be resumed.
    pub sessions: Vec<StoredSession>,
    /// The store may have lost its last writes (it syncs on an interval and did not stop
    /// cleanly): every channel starts a new epoch, so no position is given twice (§7.7).
    pub positions_lost: bool,
    /// Token revocations last saved (ended ones are dropped by the hub).
    pub revocations: Vec<super::auth::Revocation>,
}

/// Where a server's hub sends its [`StorageRequest`]s: the queue of the thread or task
/// that serves them. Requests must be carried out in the order they are given.
pub trait StorageSink: Send {
    /// Queues one request; never blocks for long (the hub's task calls it).
    fn request(&mut self, request: StorageRequest);

    /// No more requests: finish what is queued, sync, stop cleanly, and return once done
    /// (so a process that exits next loses nothing).
    fn close(self: Box<Self>);

    /// Stop as a crash would — what is queued may be lost and the store is not marked
    /// stopped cleanly — but return only once the store is released (tests and demos that
    /// restart a server in one process).
    fn abandon(self: Box<Self>);
}

/// A store an adapter can run a hub on (an embedded engine, later a shared one).
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// What the store holds now, for [`Hub::restore`](super::Hub::restore); `now_unix_ms`
    /// dates what is within the hub's retention and dedupe windows.
    ///
    /// # Errors
    /// The store cannot be read: the server must not start on it.
    fn restore(&self, now_unix_ms: u64) -> std::io::Result<RestoredState>;

    /// Starts serving requests; each completion is handed to `completions` (which queues it
    /// for the hub's task), in request order.
    ///
    /// # Errors
    /// The store cannot serve requests.
    fn start(
        &self,
        completions: Box<dyn FnMut(StorageCompletion) + Send>,
    ) -> std::io::Result<Box<dyn StorageSink>>;

    /// Whether the store takes writes now, for readiness checks: `Err` with the reason once
    /// it stopped taking them (a failed write or sync, §7.7). By default always `Ok`.
    ///
    /// # Errors
    /// The store failed and refuses every append until it is opened again.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// How long its syncs to disk took so far, for metrics; `None` (the default) for a store
    /// that does not sync.
    fn sync_times(&self) -> Option<SyncTimes> {
        None
    }
}

/// Upper bounds, in microseconds, of the buckets of [`SyncTimes::counts`].
pub const SYNC_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A histogram of sync durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncTimes {
    /// `counts[i]` counts syncs that took more than bound `i - 1` and at most bound `i` of
    /// [`SYNC_BOUNDS_US`]; the last entry counts those above every bound.
    pub counts: [u64; SYNC_BOUNDS_US.len() + 1],
    /// The sum of every sync's duration, in microseconds.
    pub sum_us: u64,
}

impl SyncTimes {
    /// Counts one sync that took `took`.
    pub fn record(&mut self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(SYNC_BOUNDS_US.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}
