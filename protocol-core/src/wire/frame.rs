//! The frames of protocol version 1, one enum per direction.
//!
//! On the wire a frame is its postcard encoding: the variant index as a varint tag, then
//! the fields in declaration order. Variants are never reordered or changed within a major
//! version; new ones are only appended (see `docs/protocol.md` §3).

use serde::{Deserialize, Serialize};

use super::types::{
    ChannelMessage, ChannelName, ClientId, ConnectOptions, Continuity, Credentials, HistoryQuery,
    Message, Position, ProtocolVersion, ResumeToken, SessionLimits, history_items,
    publish_messages,
};
use crate::error::ErrorInfo;

/// A frame sent by a client to the hub.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame {
    /// Tag 0. The first frame of every transport: who the client is and what it wants.
    Connect {
        /// The protocol version the client speaks. Always the first field (see §3).
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::version))]
        version: ProtocolVersion,
        /// API key or token.
        credentials: Credentials,
        /// The client id wanted, when the credentials allow choosing one.
        client_id: Option<ClientId>,
        /// Present to resume an earlier session.
        resume: Option<ResumeToken>,
        /// The heartbeat interval the client would like, in milliseconds.
        heartbeat_interval_ms: Option<u32>,
        /// Appended in version 1.1: what the client asks beyond the defaults. `None` is
        /// not sent at all (the frame ends before it), so a 1.0 hub reads the frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        options: Option<ConnectOptions>,
    },
    /// Tag 1. In-band token renewal on the live connection.
    Auth {
        /// The new token; it must name the same client id.
        token: String,
    },
    /// Tag 2. Subscribe to a channel, optionally continuing from a position.
    Attach {
        /// The channel.
        channel: ChannelName,
        /// The last position the client delivered, to continue after it.
        from: Option<Position>,
    },
    /// Tag 3. Stop receiving a channel.
    Detach {
        /// The channel.
        channel: ChannelName,
    },
    /// Tag 4. Publish one or more messages to a channel.
    Publish {
        /// Per-connection serial of this publish; the next one uses `serial + 1`.
        serial: u64,
        /// The channel.
        channel: ChannelName,
        /// The messages, in order.
        #[serde(deserialize_with = "publish_messages")]
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::messages))]
        messages: Vec<Message>,
    },
    /// Tag 5. Ask for a page of a channel's retained history.
    HistoryRequest {
        /// Chosen by the client; echoed in the answer.
        request_id: u64,
        /// The channel.
        channel: ChannelName,
        /// Range, direction and page size.
        query: HistoryQuery,
    },
    /// Tag 6. Round-trip probe; answered by a pong with the same id.
    Ping {
        /// Chosen by the client.
        id: u64,
    },
    /// Tag 7. Sent when the client has sent nothing for the heartbeat interval.
    Heartbeat,
    /// Tag 8. Orderly end of the session; answered by `Closed`.
    Close,
}

/// A frame sent by the hub to a client.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame {
    /// Tag 0. The connect frame was accepted.
    Connected {
        /// The session, to present when resuming.
        session: ResumeToken,
        /// The client id the credentials prove.
        client_id: ClientId,
        /// Whether the requested session was resumed (false: a new session).
        resumed: bool,
        /// The hub's wall-clock time, Unix milliseconds, to learn the clock offset.
        server_time_ms: u64,
        /// Negotiated heartbeat interval in milliseconds.
        heartbeat_interval_ms: u32,
        /// How long the hub keeps the session after the transport drops, in milliseconds.
        session_ttl_ms: u32,
        /// When the credentials expire, hub wall-clock Unix milliseconds (tokens only).
        token_expires_at_ms: Option<u64>,
        /// The hub's limits for this session.
        limits: SessionLimits,
        /// Why a requested resume did not happen, when `resumed` is false.
        error: Option<ErrorInfo>,
        /// Appended in version 1.1, sent only to clients of 1.1 or later: the hub's dedupe
        /// window in milliseconds — a message first sent longer ago than this (minus a
        /// margin) is not resent to a new session (§6.5). `None` (a 1.0 hub): 120 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dedupe_window_ms: Option<u32>,
    },
    /// Tag 1. Answer to `Auth`.
    Authed {
        /// The new expiry (hub wall clock, Unix ms) when the token was accepted.
        token_expires_at_ms: Option<u64>,
        /// Why the token was refused; the previous token stays in force until it expires.
        error: Option<ErrorInfo>,
    },
    /// Tag 2. The channel is attached; deliveries follow after `position`.
    Attached {
        /// The channel.
        channel: ChannelName,
        /// Deliveries continue with the message after this position.
        position: Position,
        /// How this attach relates to the position the client asked for.
        continuity: Continuity,
        /// Why continuity was lost, when `continuity` is `Gap`.
        error: Option<ErrorInfo>,
    },
    /// Tag 3. The channel is detached: answer to `Detach`, refusal of `Attach`, or loss of
    /// the right to subscribe.
    Detached {
        /// The channel.
        channel: ChannelName,
        /// Why, when the client did not ask for it.
        error: Option<ErrorInfo>,
    },
    /// Tag 4. Publishes `serial .. serial + count` were accepted.
    Ack {
        /// First publish serial acknowledged.
        serial: u64,
        /// Number of consecutive serials acknowledged (at least 1).
        count: u32,
    },
    /// Tag 5. Publishes `serial .. serial + count` were refused.
    Nack {
        /// First publish serial refused.
        serial: u64,
        /// Number of consecutive serials refused (at least 1).
        count: u32,
        /// Why.
        error: ErrorInfo,
    },
    /// Tag 6. A message delivered on an attached channel.
    Message {
        /// The channel.
        channel: ChannelName,
        /// The message and its position.
        message: ChannelMessage,
    },
    /// Tag 7. A page of history, answer to `HistoryRequest`.
    HistoryPage {
        /// The request's id.
        request_id: u64,
        /// The channel.
        channel: ChannelName,
        /// The messages, in the query's direction.
        #[serde(deserialize_with = "history_items")]
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::history_items))]
        messages: Vec<ChannelMessage>,
        /// The query for the next page, if there is one.
        next: Option<HistoryQuery>,
        /// Why the query was refused (the page is then empty).
        error: Option<ErrorInfo>,
    },
    /// Tag 8. Answer to `Ping`.
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// Tag 9. Sent when the hub has sent nothing for the heartbeat interval.
    Heartbeat,
    /// Tag 10. A fatal error: the hub closes the transport and the client must not retry
    /// on its own (bad credentials, unsupported version, protocol violation).
    Error {
        /// What went wrong.
        error: ErrorInfo,
    },
    /// Tag 11. The hub closes the transport; the client may reconnect and resume
    /// (token expired, slow consumer, idle, shutting down, session replaced).
    Disconnect {
        /// Why.
        error: ErrorInfo,
    },
    /// Tag 12. Answer to `Close`: the session is gone.
    Closed,
    /// Tag 13 (version 1.1). Instead of a `message` of the client's own session when it
    /// asked for no echo: the position it took, so the client's continuity holds.
    OwnMessage {
        /// The channel.
        channel: ChannelName,
        /// The position of the message the client's session published.
        position: Position,
    },
}

/// Which side sends a frame type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Client to hub.
    ClientToServer,
    /// Hub to client.
    ServerToClient,
}

/// What the codec needs to know about a frame type. Implemented by [`ClientFrame`] and
/// [`ServerFrame`] only.
pub trait Frame: Serialize + for<'de> Deserialize<'de> + sealed::Sealed {
    /// Who sends frames of this type.
    const SENDER: Side;
    /// Number of variants: tags at or above it are unknown.
    const TAG_COUNT: u32;
    /// Tags of the frames that carry message payloads (decoded without a copy, by sharing
    /// the received buffer); other frames skip that bookkeeping.
    const PAYLOAD_TAGS: &'static [u64];
    /// The frame type's name, for diagnostics (e.g. `publish`).
    fn kind(&self) -> &'static str;

    /// Whether frames with tag `tag` end with fields appended by a minor version, which a
    /// sender omits when they are `None` (so the frame ends before them) — §3.
    fn has_appended_fields(tag: u64) -> bool;

    /// Whether every appended field of this frame is `None`.
    fn appended_fields_absent(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ClientFrame {}
    impl Sealed for super::ServerFrame {}
}

impl Frame for ClientFrame {
    const SENDER: Side = Side::ClientToServer;
    const TAG_COUNT: u32 = 9;
    /// `publish`.
    const PAYLOAD_TAGS: &'static [u64] = &[4];

    fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Connect { .. } => "connect",
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Attach { .. } => "attach",
            ClientFrame::Detach { .. } => "detach",
            ClientFrame::Publish { .. } => "publish",
            ClientFrame::HistoryRequest { .. } => "history_request",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::Heartbeat => "heartbeat",
            ClientFrame::Close => "close",
        }
    }

    fn has_appended_fields(tag: u64) -> bool {
        tag == 0
    }

    fn appended_fields_absent(&self) -> bool {
        !matches!(
            self,
            ClientFrame::Connect {
                options: Some(_),
                ..
            }
        )
    }
}

impl Frame for ServerFrame {
    const SENDER: Side = Side::ServerToClient;
    const TAG_COUNT: u32 = 14;
    /// `message`, `history_page`.
    const PAYLOAD_TAGS: &'static [u64] = &[6, 7];

    fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Connected { .. } => "connected",
            ServerFrame::Authed { .. } => "authed",
            ServerFrame::Attached { .. } => "attached",
            ServerFrame::Detached { .. } => "detached",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::Nack { .. } => "nack",
            ServerFrame::Message { .. } => "message",
            ServerFrame::HistoryPage { .. } => "history_page",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Heartbeat => "heartbeat",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Disconnect { .. } => "disconnect",
            ServerFrame::Closed => "closed",
            ServerFrame::OwnMessage { .. } => "own_message",
        }
    }

    fn has_appended_fields(tag: u64) -> bool {
        tag == 0
    }

    fn appended_fields_absent(&self) -> bool {
        !matches!(
            self,
            ServerFrame::Connected {
                dedupe_window_ms: Some(_),
                ..
            }
        )
    }
}
