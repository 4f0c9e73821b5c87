//! The values frames are made of: names, ids, positions, credentials and messages.
//!
//! Types whose content comes from the network validate themselves while they are decoded,
//! before anything is allocated for them, against the limits of the decode call (see
//! [`Limits`](super::Limits)).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::codec::{DecodeError, Limits};
use super::context;
use crate::error::ErrorInfo;

/// Longest message id in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 128;
/// Longest message name in bytes.
pub const MAX_MESSAGE_NAME_LEN: usize = 256;
/// Longest client id in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The protocol version, announced in the connect frame.
///
/// The major version changes when frames change incompatibly; a hub refuses a major version
/// it does not speak. Minor versions only add frame types, error codes and optional fields
/// appended to `connect` (`docs/protocol.md` §3).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The version this crate speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 1 };

/// What a client asks of its connection beyond the defaults (`connect`'s appended field of
/// version 1.1, `docs/protocol.md` §4.1). Absent means every default.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectOptions {
    /// Whether the client receives the messages its own session publishes (default true).
    /// When false, the hub sends `own_message` with the position instead (§7.4).
    pub echo: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions { echo: true }
    }
}

/// A channel name: 1 to [`Limits::max_channel_name_len`] bytes of UTF-8, with no control
/// characters and no `*` (reserved for capability patterns). `:` separates segments.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Checks `name` against the protocol maximum length and the character rules.
    pub fn new(name: impl Into<String>) -> Result<ChannelName, ErrorInfo> {
        let name = name.into();
        check_channel_name(&name, Limits::PROTOCOL_MAX.max_channel_name_len)
            .map_err(|error| error.to_error_info())?;
        Ok(ChannelName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_channel_name(name: &str, max_len: usize) -> Result<(), DecodeError> {
    if name.len() > max_len {
        return Err(DecodeError::ChannelNameTooLong {
            len: name.len(),
            max: max_len,
        });
    }
    // Fast path: printable ASCII without `*` is valid; anything else is checked per char.
    let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'*';
    if name.is_empty()
        || (!name.as_bytes().iter().all(plain) && name.chars().any(|c| c.is_control() || c == '*'))
    {
        return Err(DecodeError::InvalidChannelName);
    }
    Ok(())
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let max = context::limits().max_channel_name_len;
        checked_string(deserializer, "a channel name", |name| {
            check_channel_name(name, max)
        })
        .map(ChannelName)
    }
}

/// A message id: stable across reconnects so the hub can drop duplicates (1 to
/// [`MAX_MESSAGE_ID_LEN`] bytes). The client makes one from its instance id and a counter
/// unless the application supplies its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MessageId(String);

impl MessageId {
    /// Checks the length rule.
    pub fn new(id: impl Into<String>) -> Result<MessageId, ErrorInfo> {
        let id = id.into();
        check_message_id(&id).map_err(|error| error.to_error_info())?;
        Ok(MessageId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_message_id(id: &str) -> Result<(), DecodeError> {
    if id.is_empty() || id.len() > MAX_MESSAGE_ID_LEN {
        return Err(DecodeError::InvalidMessage(
            "message id must be 1 to 128 bytes",
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_string(deserializer, "a message id", check_message_id).map(MessageId)
    }
}

/// A client id: who published a message, as proven by the credentials (1 to
/// [`MAX_CLIENT_ID_LEN`] bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ClientId(String);

impl ClientId {
    /// Checks the length rule.
    pub fn new(id: impl Into<String>) -> Result<ClientId, ErrorInfo> {
        let id = id.into();
        check_client_id(&id).map_err(|error| error.to_error_info())?;
        Ok(ClientId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_client_id(id: &str) -> Result<(), DecodeError> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN {
        return Err(DecodeError::BadField("client id must be 1 to 128 bytes"));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_string(deserializer, "a client id", check_client_id).map(ClientId)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deserializes a string, running `check` on the borrowed text before allocating it.
fn checked_string<'de, D: Deserializer<'de>>(
    deserializer: D,
    expecting: &'static str,
    check: impl FnOnce(&str) -> Result<(), DecodeError>,
) -> Result<String, D::Error> {
    struct Checked<F>(&'static str, F);

    impl<F: FnOnce(&str) -> Result<(), DecodeError>> Visitor<'_> for Checked<F> {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            match (self.1)(text) {
                Ok(()) => Ok(text.to_owned()),
                Err(violation) => {
                    let message = violation.to_string();
                    context::report(violation);
                    Err(E::custom(message))
                }
            }
        }
    }

    deserializer.deserialize_str(Checked(expecting, check))
}

/// Deserializes a string of at most `max` bytes (message names), checked before allocating.
pub(crate) fn message_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    checked_string(deserializer, "a message name", |name| {
        if name.len() > MAX_MESSAGE_NAME_LEN {
            Err(DecodeError::InvalidMessage(
                "message name longer than 256 bytes",
            ))
        } else {
            Ok(())
        }
    })
}

/// A channel position: the epoch of the channel's history and the serial of a message in it.
///
/// Serials start at 1 and grow by one per message; serial 0 is the position before the
/// first message. The epoch changes when the hub lost the channel's history, so positions
/// of different epochs do not follow each other. (`Ord` orders by epoch then serial, for use
/// in ordered collections only.)
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// Identifies one continuous history of the channel.
    pub epoch: u64,
    /// The message's number within the epoch.
    pub serial: u64,
}

impl Position {
    /// The position before the first message of `epoch`.
    pub const fn start(epoch: u64) -> Position {
        Position { epoch, serial: 0 }
    }

    /// The position right after this one in the same epoch.
    pub const fn next(self) -> Position {
        Position {
            epoch: self.epoch,
            serial: self.serial.saturating_add(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.serial)
    }
}

/// A session id, assigned by the hub.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The secret that proves a resuming client owns a session. Its `Debug` never shows it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeSecret(pub [u8; 16]);

impl fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeSecret(<redacted>)")
    }
}

impl Serialize for ResumeSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(&self.0))
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ResumeSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            let bytes = hex::decode(&text).map_err(de::Error::custom)?;
            let array = <[u8; 16]>::try_from(bytes.as_slice())
                .map_err(|_| de::Error::custom("a resume secret is 16 bytes"))?;
            Ok(ResumeSecret(array))
        } else {
            <[u8; 16]>::deserialize(deserializer).map(ResumeSecret)
        }
    }
}

/// What a client presents to resume a session: the session id and its secret.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResumeToken {
    /// The session to resume.
    pub session_id: SessionId,
    /// Proof of ownership.
    pub secret: ResumeSecret,
}

/// Credentials sent in the connect frame (never in a URL). `Debug` redacts the secrets.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// An API key, `name:secret`, for trusted servers only.
    ApiKey {
        /// The key's public name.
        name: String,
        /// The key's secret.
        secret: String,
    },
    /// A signed token (JWT, HS256) minted by the application's auth server.
    Token {
        /// The compact JWT.
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ApiKey { name, .. } => f
                .debug_struct("ApiKey")
                .field("name", name)
                .field("secret", &"<redacted>")
                .finish(),
            Credentials::Token { .. } => f
                .debug_struct("Token")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// A message as published by a client.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Stable id used by the hub to drop duplicates.
    pub id: MessageId,
    /// An application-defined event name (may be empty; at most 256 bytes).
    #[serde(deserialize_with = "message_name")]
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::message_name))]
    pub name: String,
    /// The payload, opaque to the protocol.
    #[serde(with = "payload")]
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::fuzzing::bytes))]
    pub data: Bytes,
}

/// A message as stored in a channel and delivered to subscribers.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    /// Where the message stands in the channel.
    pub position: Position,
    /// The published message.
    pub message: Message,
    /// Who published it, as proven by their credentials.
    pub publisher: ClientId,
    /// The hub's wall-clock time when it accepted the message, in Unix milliseconds.
    pub timestamp_ms: u64,
}

/// How an attach continues a channel's stream.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuity {
    /// No position was asked for: deliveries start live after the given position.
    Fresh,
    /// The requested position is continued: missed messages are replayed, then live.
    Continuous,
    /// The requested position cannot be continued (history gone or epoch changed):
    /// deliveries start live after the given position and the client reports a discontinuity.
    Gap,
}

/// Order of a history query.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Newest first.
    #[default]
    Backwards,
    /// Oldest first.
    Forwards,
}

/// One end of a history range.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryBound {
    /// A channel position (inclusive).
    Position(Position),
    /// A hub wall-clock time in Unix milliseconds (inclusive).
    Time(u64),
}

/// A history query: a range, a direction and a page size.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// The oldest message wanted (inclusive), or from the oldest retained.
    pub start: Option<HistoryBound>,
    /// The newest message wanted (inclusive), or up to the newest.
    pub end: Option<HistoryBound>,
    /// Which end the page starts from.
    pub direction: Direction,
    /// Messages per page: 1 to 1000 (default 100).
    pub limit: u32,
}

/// Most messages a history page may hold.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// Page size when the application does not choose one.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;

impl Default for HistoryQuery {
    fn default() -> HistoryQuery {
        HistoryQuery {
            start: None,
            end: None,
            direction: Direction::Backwards,
            limit: DEFAULT_HISTORY_LIMIT,
        }
    }
}

/// Limits a hub announces in its connected frame.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Largest frame the hub accepts, in bytes.
    pub max_frame_size: u32,
    /// Longest channel name, in bytes.
    pub max_channel_name_len: u32,
    /// Most messages in one publish frame.
    pub max_messages_per_publish: u32,
    /// Most channels one session may be attached to.
    pub max_channels: u32,
}

/// Serde for payload bytes: raw bytes in binary formats (shared with the input buffer when
/// decoded by the codec), a hex string in human-readable formats such as JSON.
pub mod payload {
    use super::*;

    /// Serializes payload bytes.
    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&super::hex::encode(data))
        } else {
            serializer.serialize_bytes(data)
        }
    }

    /// Deserializes payload bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        struct Raw;

        impl<'de> Visitor<'de> for Raw {
            type Value = Bytes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("payload bytes")
            }

            fn visit_borrowed_bytes<E: de::Error>(self, data: &'de [u8]) -> Result<Bytes, E> {
                Ok(context::share(data))
            }

            fn visit_bytes<E: de::Error>(self, data: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(data))
            }

            fn visit_byte_buf<E: de::Error>(self, data: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(data))
            }
        }

        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            super::hex::decode(&text)
                .map(Bytes::from)
                .map_err(de::Error::custom)
        } else {
            deserializer.deserialize_bytes(Raw)
        }
    }
}

/// Lower-case hex, used for the human-readable form of bytes.
pub mod hex {
    /// Encodes bytes as lower-case hex.
    pub fn encode(data: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(data.len() * 2);
        for byte in data {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        text
    }

    /// Decodes hex (either case, no separators).
    pub fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
        fn nibble(digit: u8) -> Result<u8, &'static str> {
            match digit {
                b'0'..=b'9' => Ok(digit - b'0'),
                b'a'..=b'f' => Ok(digit - b'a' + 10),
                b'A'..=b'F' => Ok(digit - b'A' + 10),
                _ => Err("not a hex digit"),
            }
        }
        let digits = text.as_bytes();
        if digits.len() % 2 != 0 {
            return Err("odd number of hex digits");
        }
        digits
            .chunks_exact(2)
            .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
            .collect()
    }
}

/// Deserializes a sequence of at most `max` items, refusing a longer one before allocating.
pub(crate) fn bounded_vec<'de, D, T>(
    deserializer: D,
    max: usize,
    too_many: fn(usize, usize) -> DecodeError,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        too_many: fn(usize, usize) -> DecodeError,
        item: std::marker::PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "at most {} items", self.max)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            if announced > self.max {
                let violation = (self.too_many)(announced, self.max);
                let message = violation.to_string();
                context::report(violation);
                return Err(de::Error::custom(message));
            }
            // The announced count is only a claim: reserve little, grow with real items.
            let mut items = Vec::with_capacity(announced.min(64));
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    let violation = (self.too_many)(items.len() + 1, self.max);
                    let message = violation.to_string();
                    context::report(violation);
                    return Err(de::Error::custom(message));
                }
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(Bounded {
        max,
        too_many,
        item: std::marker::PhantomData,
    })
}

/// Messages of a publish frame, bounded by [`Limits::max_messages_per_publish`].
pub(crate) fn publish_messages<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Message>, D::Error> {
    let max = context::limits().max_messages_per_publish;
    bounded_vec(deserializer, max, |count, max| {
        DecodeError::TooManyMessages { count, max }
    })
}

/// Items of a history page, bounded by [`MAX_HISTORY_LIMIT`].
pub(crate) fn history_items<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ChannelMessage>, D::Error> {
    bounded_vec(deserializer, MAX_HISTORY_LIMIT as usize, |_, _| {
        DecodeError::BadField("a history page holds at most 1000 messages")
    })
}

impl DecodeError {
    /// This error as an [`ErrorInfo`] for a frame or an event.
    pub fn to_error_info(&self) -> ErrorInfo {
        ErrorInfo::new(self.code(), self.to_string())
    }
}
