//! The protocol's error codes and the error value carried by frames.
//!
//! Every error that crosses the wire, and every error the client reports to the
//! application, carries one [`ErrorCode`]. Codes are stable numbers in the spirit of HTTP
//! status × 100: the family (`code / 100`) says who is at fault and how to react, the last
//! two digits say what exactly happened. The table is also in `docs/protocol.md` §9.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $close:literal; )+) => {
        /// A stable numeric error code.
        ///
        /// The numeric value never changes once published. A receiver that meets a code it
        /// does not know (sent by a newer peer) reads it as the generic code of its family:
        /// see [`ErrorCode::from_u32`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant = $code, )+
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )+ ];

            /// The stable short name, in `snake_case` (e.g. `token_expired`).
            pub const fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )+ }
            }

            /// The WebSocket close code a hub sends after an `error` or `disconnect` with this
            /// code (`docs/protocol.md` §2.2): one per code, in the private range
            /// 4000–4999, never reused; a new code takes the next free one.
            pub const fn close_code(self) -> u16 {
                match self { $( ErrorCode::$variant => $close, )+ }
            }

            /// The code this number stands for, if it is one this version knows exactly.
            pub const fn from_u32_exact(code: u32) -> Option<ErrorCode> {
                match code { $( $code => Some(ErrorCode::$variant), )+ _ => None }
            }
        }
    };
}

error_codes! {
    /// 40000: the request is invalid in a way no more specific code describes.
    BadRequest = 40000, "bad_request", 4000;
    /// 40001: the bytes are not a valid frame (bad varint, bad tag, bad UTF-8, …).
    MalformedFrame = 40001, "malformed_frame", 4001;
    /// 40002: the frame ended before all of its fields were read.
    TruncatedFrame = 40002, "truncated_frame", 4002;
    /// 40003: bytes were left over after a complete frame.
    TrailingBytes = 40003, "trailing_bytes", 4003;
    /// 40004: the frame type tag is not one this protocol version defines.
    UnknownFrameType = 40004, "unknown_frame_type", 4004;
    /// 40005: the protocol major version in the connect frame is not supported.
    UnsupportedVersion = 40005, "unsupported_version", 4005;
    /// 40006: a valid frame arrived in a state where it is not allowed.
    UnexpectedFrame = 40006, "unexpected_frame", 4006;
    /// 40007: a channel name is empty or contains a forbidden character.
    InvalidChannelName = 40007, "invalid_channel_name", 4007;
    /// 40008: a message is invalid (empty or oversized id, oversized name, …).
    InvalidMessage = 40008, "invalid_message", 4008;
    /// 40009: a history query is invalid (limit 0 or above the maximum, …).
    InvalidHistoryQuery = 40009, "invalid_history_query", 4009;
    /// 40010: a publish serial is not the next one the hub expects.
    InvalidPublishSerial = 40010, "invalid_publish_serial", 4010;
    /// 40100: no usable credentials were presented.
    Unauthorized = 40100, "unauthorized", 4011;
    /// 40101: the API key name is unknown or its secret is wrong.
    InvalidCredentials = 40101, "invalid_credentials", 4012;
    /// 40102: the token is malformed, badly signed or uses a refused algorithm.
    TokenInvalid = 40102, "token_invalid", 4013;
    /// 40103: the token has expired (renew it, then reconnect or resume).
    TokenExpired = 40103, "token_expired", 4014;
    /// 40104: the token names a key (`kid`) the server does not know.
    TokenKeyUnknown = 40104, "token_key_unknown", 4015;
    /// 40105: the token's claims are refused (`aud`, `iss`, `nbf`, missing `sub`, …).
    TokenClaimsRejected = 40105, "token_claims_rejected", 4016;
    /// 40106: a renewed token names a different client id than the connection's.
    ClientIdMismatch = 40106, "client_id_mismatch", 4017;
    /// 40107: the token was revoked (by client id or key, issued before a time): get a new
    /// one and connect again (§8).
    TokenRevoked = 40107, "token_revoked", 4047;
    /// 40300: the credentials do not grant this operation on this channel.
    Forbidden = 40300, "forbidden", 4018;
    /// 40301: the application reported that it cannot obtain a token.
    TokenUnavailable = 40301, "token_unavailable", 4019;
    /// 40302: the application's backend ended this client's connection (§7.8): with an
    /// `error` frame its session is gone and the client does not reconnect on its own; with a
    /// `disconnect` frame the session stays and the client resumes. Added in 1.1; a 1.0
    /// client reads it as `forbidden`.
    DisconnectedByServer = 40302, "disconnected_by_server", 4048;
    /// 40400: something the request names does not exist.
    NotFound = 40400, "not_found", 4020;
    /// 40401: the session to resume is unknown or expired; a new session was started.
    SessionNotFound = 40401, "session_not_found", 4021;
    /// 40800: a request (connect, attach, detach, auth, close) got no answer in time.
    RequestTimeout = 40800, "request_timeout", 4022;
    /// 40801: nothing was received for the heartbeat interval plus the request timeout.
    HeartbeatTimeout = 40801, "heartbeat_timeout", 4023;
    /// 40802: the first frame did not arrive within the deadline after the handshake.
    FirstFrameTimeout = 40802, "first_frame_timeout", 4024;
    /// 40803: the client sent nothing for the server's idle limit.
    IdleTimeout = 40803, "idle_timeout", 4025;
    /// 40900: the session was resumed on another transport; this one is closed.
    SessionReplaced = 40900, "session_replaced", 4026;
    /// 41000: something the request names existed but is gone.
    Gone = 41000, "gone", 4027;
    /// 41001: the requested position is older than the retained history.
    HistoryUnavailable = 41001, "history_unavailable", 4028;
    /// 41002: the channel's epoch changed (its history was lost, or a store that syncs on an interval stopped uncleanly, §7.7); positions do not carry over.
    EpochChanged = 41002, "epoch_changed", 4029;
    /// 41003: whether this publish was stored is no longer known — too old to be answered
    /// from the session's record or resent within the dedupe window (§6.5, §7.4). Added in
    /// 1.1.
    PublishOutcomeUnknown = 41003, "publish_outcome_unknown", 4045;
    /// 41300: a frame is larger than the maximum frame size.
    FrameTooLarge = 41300, "frame_too_large", 4030;
    /// 41301: a channel name is longer than the maximum.
    ChannelNameTooLong = 41301, "channel_name_too_long", 4031;
    /// 41302: a publish carries more messages than the maximum.
    TooManyMessages = 41302, "too_many_messages", 4032;
    /// 42900: a limit was exceeded in a way no more specific code describes.
    LimitExceeded = 42900, "limit_exceeded", 4033;
    /// 42901: the session is attached to the maximum number of channels.
    TooManyChannels = 42901, "too_many_channels", 4034;
    /// 42902: the session's pending outbound bytes passed the limit; it may resume later.
    SlowConsumer = 42902, "slow_consumer", 4035;
    /// 42903: the server holds its maximum number of connections.
    TooManyConnections = 42903, "too_many_connections", 4036;
    /// 42904: the client's queue of publishes waiting for a connection is full.
    PublishQueueFull = 42904, "publish_queue_full", 4037;
    /// 50000: the server failed in a way no more specific code describes.
    Internal = 50000, "internal", 4038;
    /// 50001: the server's store could not keep a publish; it was not stored (§7.7). Added
    /// in 1.1; a 1.0 client reads it as `internal`.
    StorageFailed = 50001, "storage_failed", 4046;
    /// 50300: the service is unavailable in a way no more specific code describes.
    Unavailable = 50300, "unavailable", 4039;
    /// 50301: the connection is Suspended; pending publishes fail with this code.
    ConnectionSuspended = 50301, "connection_suspended", 4040;
    /// 50302: the connection was closed by the application.
    ConnectionClosed = 50302, "connection_closed", 4041;
    /// 50303: the connection is Failed; it will not retry until asked.
    ConnectionFailed = 50303, "connection_failed", 4042;
    /// 50304: the transport closed or failed underneath the connection.
    TransportClosed = 50304, "transport_closed", 4043;
    /// 50305: the server is shutting down; reconnect later.
    ServerShuttingDown = 50305, "server_shutting_down", 4044;
    /// 50400: the application's hook did not answer within its time bound (§7.9); the
    /// attach or publish it was asked about is refused and may be tried again. Added in 1.1;
    /// a 1.0 client reads it as `internal`.
    HookTimeout = 50400, "hook_timeout", 4049;
}

impl ErrorCode {
    /// The numeric value of the code.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Reads a numeric code received from a peer.
    ///
    /// A code this version knows maps to itself. An unknown code maps to the generic code of
    /// its family (`40377` → [`ErrorCode::Forbidden`]); an unknown family maps to
    /// [`ErrorCode::BadRequest`] for 4xxxx and to [`ErrorCode::Internal`] otherwise.
    pub const fn from_u32(code: u32) -> ErrorCode {
        if let Some(exact) = ErrorCode::from_u32_exact(code) {
            return exact;
        }
        if let Some(family) = ErrorCode::from_u32_exact(code / 100 * 100) {
            return family;
        }
        if code >= 40000 && code < 50000 {
            ErrorCode::BadRequest
        } else {
            ErrorCode::Internal
        }
    }

    /// The HTTP-like status family: `code / 100` (e.g. 401 for every token error).
    pub const fn status(self) -> u32 {
        self.as_u32() / 100
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.as_u32(), self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.as_u32())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u32::deserialize(deserializer).map(ErrorCode::from_u32)
    }
}

/// An error as carried by frames and events: a stable code and a human-readable text.
///
/// The text is for people and logs; programs decide on [`ErrorInfo::code`] only.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The stable code.
    pub code: ErrorCode,
    /// A short explanation for people. Never contains credentials.
    pub message: String,
}

impl ErrorInfo {
    /// An error with the given code and text.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo {
            code,
            message: message.into(),
        }
    }
}

impl From<ErrorCode> for ErrorInfo {
    fn from(code: ErrorCode) -> ErrorInfo {
        ErrorInfo::new(code, code.name())
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorInfo {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, defect 9: close codes were 4000 + the last three digits, so 41302 and
    /// 50302 (and 40002 and 41002, …) shared one.
    #[test]
    fn close_codes_are_one_to_one_and_private() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let close = crate::embed::close_code(&ErrorInfo::new(*code, ""));
            assert!((4000..=4999).contains(&close), "{code:?} → {close}");
            assert!(seen.insert(close), "{code:?} reuses close code {close}");
        }
    }

    #[test]
    fn codes_are_sorted_unique_and_named_in_snake_case() {
        let mut previous = 0;
        for code in ErrorCode::ALL {
            assert!(code.as_u32() > previous, "{code} out of order");
            previous = code.as_u32();
            assert_eq!(ErrorCode::from_u32(code.as_u32()), *code);
            assert!(
                code.name()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }

    #[test]
    fn every_family_has_a_generic_code() {
        for code in ErrorCode::ALL {
            let family = ErrorCode::from_u32_exact(code.status() * 100);
            assert!(family.is_some(), "{code} has no generic family code");
        }
    }

    #[test]
    fn unknown_codes_read_as_their_family() {
        assert_eq!(ErrorCode::from_u32(40377), ErrorCode::Forbidden);
        assert_eq!(ErrorCode::from_u32(40199), ErrorCode::Unauthorized);
        assert_eq!(ErrorCode::from_u32(41099), ErrorCode::Gone);
        assert_eq!(ErrorCode::from_u32(41899), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::from_u32(7), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_u32(u32::MAX), ErrorCode::Internal);
    }
}
