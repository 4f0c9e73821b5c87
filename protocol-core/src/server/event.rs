//! What the hub tells its caller.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::wire::{ClientId, SessionId};

/// Identifies one transport connection, given by the hub when the adapter accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

/// Something the caller must do or may log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubOutput {
    /// Send these bytes on the connection (one transport message with message framing).
    /// Report them with `handle_written` once written to the socket.
    Transmit {
        /// The connection.
        connection: ConnectionId,
        /// The bytes; frames sent to many connections share them.
        bytes: Bytes,
    },
    /// Close the connection after sending what was queued before this output. The hub
    /// has forgotten it: later inputs about it are ignored.
    Close {
        /// The connection.
        connection: ConnectionId,
        /// Why (also the close code to use, where the transport has one).
        reason: ErrorInfo,
    },
    /// For the operator's logs and metrics.
    Event(HubEvent),
    /// Carry out this request on the store, in order (only with
    /// [`StorageMode::External`](super::StorageMode::External); see
    /// [`storage`](super::storage) for the calling contract).
    Storage(super::storage::StorageRequest),
    /// Ask the application's hook (§7.9) and give its answer to
    /// [`Hub::handle_hook`](super::Hub::handle_hook) with this id; the hub refuses with
    /// `hook_timeout` what is not answered within `HubConfig::hook_timeout`.
    Hook {
        /// The request's id.
        id: super::HookId,
        /// What to decide.
        request: super::HookRequest,
    },
    /// The answer to a server-side API request (§7.8): give it to whoever asked.
    Api {
        /// The request.
        id: super::ApiRequestId,
        /// Its answer.
        answer: super::ApiAnswer,
    },
}

/// What happened, for operators. Never contains credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HubEvent {
    /// A client authenticated and has a session.
    Connected {
        /// The connection.
        connection: ConnectionId,
        /// The session.
        session: SessionId,
        /// Who.
        client_id: ClientId,
        /// Whether an existing session was resumed.
        resumed: bool,
    },
    /// A token was renewed in-band.
    Reauthenticated {
        /// The connection.
        connection: ConnectionId,
        /// Who.
        client_id: ClientId,
    },
    /// A connection ended, closed by the hub (`reason`) or by the transport.
    Disconnected {
        /// The connection.
        connection: ConnectionId,
        /// Its session, if it had one (kept for the session TTL unless closed).
        session: Option<SessionId>,
        /// Why.
        reason: ErrorInfo,
    },
    /// A connection fell too far behind and was disconnected.
    SlowConsumer {
        /// The connection.
        connection: ConnectionId,
        /// Bytes sent but not yet written when it was disconnected.
        pending_bytes: usize,
    },
    /// A dropped session was not resumed within the TTL and is freed.
    SessionExpired {
        /// The session.
        session: SessionId,
    },
    /// The store did not keep an append: its publish was refused with `reason` (§7.7).
    StorageFailed {
        /// The channel, if the hub still holds it.
        channel: Option<crate::wire::ChannelName>,
        /// The store's error.
        reason: ErrorInfo,
    },
}

/// How much an operator cares about a [`HubEvent`], for the adapter's logger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Routine bookkeeping.
    Debug,
    /// A connection's life.
    Info,
    /// Something an operator should look at.
    Warn,
}

impl HubEvent {
    /// The log level this event deserves.
    pub fn severity(&self) -> Severity {
        match self {
            HubEvent::SessionExpired { .. } => Severity::Debug,
            HubEvent::SlowConsumer { .. } | HubEvent::StorageFailed { .. } => Severity::Warn,
            HubEvent::Connected { .. }
            | HubEvent::Reauthenticated { .. }
            | HubEvent::Disconnected { .. } => Severity::Info,
        }
    }
}

/// One log line; never contains credentials (events carry none).
impl std::fmt::Display for HubEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubEvent::Connected {
                connection,
                session,
                client_id,
                resumed,
            } => write!(
                f,
                "client connected: connection={} session={session} client_id={client_id} resumed={resumed}",
                connection.0
            ),
            HubEvent::Reauthenticated {
                connection,
                client_id,
            } => write!(
                f,
                "token renewed: connection={} client_id={client_id}",
                connection.0
            ),
            HubEvent::Disconnected {
                connection, reason, ..
            } => write!(
                f,
                "connection ended: connection={} code={} reason={}",
                connection.0,
                reason.code.as_u32(),
                reason.message
            ),
            HubEvent::SlowConsumer {
                connection,
                pending_bytes,
            } => write!(
                f,
                "slow consumer disconnected: connection={} pending_bytes={pending_bytes}",
                connection.0
            ),
            HubEvent::SessionExpired { session } => write!(f, "session expired: session={session}"),
            HubEvent::StorageFailed { channel, reason } => write!(
                f,
                "store failed, publish refused: channel={} code={} reason={}",
                channel.as_ref().map_or("?", |c| c.as_str()),
                reason.code.as_u32(),
                reason.message
            ),
        }
    }
}
