//! What the client tells its caller: outputs to carry out and events for the application.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::wire::{ChannelMessage, ChannelName, Continuity, HistoryQuery, Position};

/// Identifies one transport the client asked to open. Inputs about any other transport are
/// ignored, so frames of an old transport never act on a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransportId(pub u64);

/// Identifies one publish; resolved exactly once by [`Event::PublishResolved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublishId(pub u64);

/// Identifies one history query; answered by [`Event::HistoryPage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// Identifies one ping; answered by [`Event::Pong`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PingId(pub u64);

/// The connection states of `docs/protocol.md` §6.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionState {
    /// Created; `connect` not called yet.
    Initialized,
    /// Opening a transport, waiting for a token, or waiting for `connected`.
    Connecting,
    /// Connected to the hub.
    Connected,
    /// The transport dropped; a retry is scheduled and the session can be resumed.
    Disconnected,
    /// Disconnected for longer than the session TTL; retrying slowly.
    Suspended,
    /// Closing on the application's request.
    Closing,
    /// Closed by the application.
    Closed,
    /// Stopped on a fatal error; no retry until the application calls `connect`.
    Failed,
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why the client needs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenReason {
    /// No token yet.
    Initial,
    /// The current token is near its expiry.
    Renewal,
    /// The current token expired (or the hub said so).
    Expired,
}

/// A page of history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The messages, in the query's direction.
    pub messages: Vec<ChannelMessage>,
    /// The query for the next page, if any.
    pub next: Option<HistoryQuery>,
}

/// Something the application should know about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The connection state changed.
    StateChanged {
        /// The state before.
        previous: ConnectionState,
        /// The new state.
        current: ConnectionState,
        /// Why, when an error caused it.
        reason: Option<ErrorInfo>,
    },
    /// Conditions changed without a state change: a resume failed and a new session began,
    /// a token renewal was refused, …
    Update {
        /// What happened.
        reason: ErrorInfo,
    },
    /// The client needs a token: answer with `provide_token` or `token_unavailable`.
    TokenRequired {
        /// Why.
        reason: TokenReason,
    },
    /// A publish was acknowledged (`Ok`) or refused / failed (`Err`, with its code).
    PublishResolved {
        /// Which publish.
        id: PublishId,
        /// The outcome.
        result: Result<(), ErrorInfo>,
    },
    /// A channel is attached; deliveries continue after `position`.
    Attached {
        /// The channel.
        channel: ChannelName,
        /// Where deliveries continue.
        position: Position,
        /// How this attach relates to the channel's last position.
        continuity: Continuity,
    },
    /// A channel is detached: on request, or refused / revoked by the hub (`error`).
    Detached {
        /// The channel.
        channel: ChannelName,
        /// Why, when the application did not ask for it.
        error: Option<ErrorInfo>,
    },
    /// A message, delivered once and in order.
    Message {
        /// The channel.
        channel: ChannelName,
        /// The message with its position.
        message: ChannelMessage,
    },
    /// Continuity was lost on a channel: messages between `last` and `resumed_after` may be
    /// missing. The history API may fill the gap when the epoch did not change.
    Discontinuity {
        /// The channel.
        channel: ChannelName,
        /// The last position delivered before the gap, if any.
        last: Option<Position>,
        /// Deliveries continue after this position.
        resumed_after: Position,
        /// Why, as the hub said.
        reason: Option<ErrorInfo>,
    },
    /// The answer to a history query.
    HistoryPage {
        /// Which query.
        id: RequestId,
        /// The channel.
        channel: ChannelName,
        /// The page, or why there is none.
        result: Result<HistoryPage, ErrorInfo>,
    },
    /// The answer to a ping: the round-trip time, or why there is none.
    Pong {
        /// Which ping.
        id: PingId,
        /// The round-trip time (in whole milliseconds in serialized forms).
        #[serde(with = "rtt_millis")]
        result: Result<Duration, ErrorInfo>,
    },
}

/// The kind of transport the client asks for (`docs/protocol.md` §6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A WebSocket (§2.2).
    WebSocket,
    /// The HTTP binding (§2.5): a streaming or polled response down, `POST`s up.
    HttpStream,
}

/// Something the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a transport to the hub and report it with `handle_transport_open`.
    OpenTransport {
        /// The id to report it with.
        transport: TransportId,
        /// Which kind (§6.10): a WebSocket unless the client fell back to the HTTP binding.
        kind: TransportKind,
    },
    /// Send these bytes on the transport (one transport message with message framing).
    Transmit {
        /// The transport.
        transport: TransportId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close the transport; the client no longer uses it.
    CloseTransport {
        /// The transport.
        transport: TransportId,
        /// Why, for logs.
        reason: ErrorInfo,
    },
    /// Tell the application.
    Event(Event),
}

/// Serde for a round-trip result: `{"Ok": milliseconds}` or `{"Err": error}`.
mod rtt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::error::ErrorInfo;

    pub(super) fn serialize<S: Serializer>(
        result: &Result<Duration, ErrorInfo>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        result
            .as_ref()
            .map(|rtt| u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX))
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Duration, ErrorInfo>, D::Error> {
        let result = Result::<u64, ErrorInfo>::deserialize(deserializer)?;
        Ok(result.map(Duration::from_millis))
    }
}
