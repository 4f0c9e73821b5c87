//! Encoding and decoding of frames: one frame per message, limits checked before
//! allocating, and errors as values with stable codes.

use bytes::{BufMut, Bytes, BytesMut};
use postcard::ser_flavors::Flavor;

use super::context;
use super::frame::{Frame, Side};
use super::types::{ChannelName, Message, PROTOCOL_VERSION};
use crate::error::ErrorCode;

/// Size and count limits applied while decoding (and the frame size while encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame, in bytes (default 64 KiB).
    pub max_frame_size: usize,
    /// Longest channel name, in bytes (default 256).
    pub max_channel_name_len: usize,
    /// Most messages in one publish frame (default 100).
    pub max_messages_per_publish: usize,
}

impl Limits {
    /// The defaults of `docs/protocol.md` §8.
    pub const DEFAULT: Limits = Limits {
        max_frame_size: 64 * 1024,
        max_channel_name_len: 256,
        max_messages_per_publish: 100,
    };

    /// The largest values the protocol allows any peer to configure.
    pub const PROTOCOL_MAX: Limits = Limits {
        max_frame_size: 16 * 1024 * 1024,
        max_channel_name_len: 1024,
        max_messages_per_publish: 1000,
    };
}

/// The smallest frame size limit a peer may announce: a client raises a smaller one to it, so
/// control frames (heartbeat, ping, close, …) can always be sent.
pub const MIN_FRAME_SIZE: usize = 4096;

/// How much larger than the hub's own frame size limit a frame the hub sends may be: a
/// delivery wraps a published message (at most the frame size) with its position,
/// publisher and timestamp.
pub const HUB_FRAME_OVERHEAD: usize = 4096;

impl Limits {
    /// The limits a client applies to hub frames when the hub enforces `self`.
    pub const fn for_hub_frames(self) -> Limits {
        Limits {
            max_frame_size: self.max_frame_size + HUB_FRAME_OVERHEAD,
            ..self
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// Why bytes could not be decoded into a frame. [`DecodeError::code`] gives its stable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame of zero bytes.
    #[error("empty frame")]
    Empty,
    /// The frame (or the length a stream prefix announces) is over the limit.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The size found or announced.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// The input ended inside the frame.
    #[error("frame truncated")]
    Truncated,
    /// Bytes remain after a complete frame.
    #[error("{count} trailing bytes after the frame")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The frame tag is not defined by this protocol version.
    #[error("unknown frame type tag {tag}")]
    UnknownFrameType {
        /// The tag found.
        tag: u64,
    },
    /// A connect frame announces a major version this crate does not speak.
    #[error("unsupported protocol major version {major} (this side speaks {})", PROTOCOL_VERSION.major)]
    UnsupportedVersion {
        /// The major version found.
        major: u64,
    },
    /// The bytes do not follow the encoding.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A channel name is over the length limit.
    #[error("channel name of {len} bytes exceeds the maximum of {max}")]
    ChannelNameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A channel name is empty or has a forbidden character.
    #[error("channel name is empty or contains a control character or '*'")]
    InvalidChannelName,
    /// A publish carries more messages than allowed.
    #[error("publish of {count} messages exceeds the maximum of {max}")]
    TooManyMessages {
        /// The count announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A message field breaks its rule.
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// Another field breaks its rule.
    #[error("invalid field: {0}")]
    BadField(&'static str),
}

impl DecodeError {
    /// The stable error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Empty | DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::Truncated => ErrorCode::TruncatedFrame,
            DecodeError::TrailingBytes { .. } => ErrorCode::TrailingBytes,
            DecodeError::UnknownFrameType { .. } => ErrorCode::UnknownFrameType,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::ChannelNameTooLong { .. } => ErrorCode::ChannelNameTooLong,
            DecodeError::InvalidChannelName => ErrorCode::InvalidChannelName,
            DecodeError::TooManyMessages { .. } => ErrorCode::TooManyMessages,
            DecodeError::InvalidMessage(_) => ErrorCode::InvalidMessage,
            DecodeError::BadField(_) => ErrorCode::BadRequest,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would be over the frame size limit; nothing was written.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl EncodeError {
    /// The stable error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            EncodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }
}

/// Appends postcard output to a `BytesMut` without an intermediate buffer.
struct Append<'a>(&'a mut BytesMut);

impl Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The encoded size of `frame`, checked against the limit. (Appended fields that are `None`
/// are skipped by the frame's serializer: they are not sent, §3.)
fn checked_size<F: Frame>(frame: &F, limits: &Limits) -> Result<usize, EncodeError> {
    // Our frame types only contain types postcard can always serialize (no maps of
    // unknown length, no custom errors), so a failure here is a bug in this crate.
    let size = postcard::serialize_with_flavor(frame, postcard::ser_flavors::Size::default())
        .expect("tether frames always serialize");
    if size > limits.max_frame_size {
        return Err(EncodeError::FrameTooLarge {
            size,
            max: limits.max_frame_size,
        });
    }
    Ok(size)
}

fn append<F: Frame>(frame: &F, out: &mut BytesMut) {
    postcard::serialize_with_flavor(frame, Append(out)).expect("tether frames always serialize");
}

/// The encoded size of a publish frame of `messages` to `channel` with the largest possible
/// serial: a publish this size or smaller fits whatever serial it is given.
pub fn publish_frame_len(channel: &ChannelName, messages: &[Message]) -> usize {
    // A publish is tag 4 (one byte), serial, channel, messages: the same bytes as this tuple.
    let fields = (4u8, u64::MAX, channel, messages);
    postcard::serialize_with_flavor(&fields, postcard::ser_flavors::Size::default())
        .expect("tether frames always serialize")
}

/// Encodes one frame, for transports that delimit messages themselves (a WebSocket binary
/// message carries exactly one frame).
pub fn encode<F: Frame>(frame: &F, limits: &Limits) -> Result<Bytes, EncodeError> {
    let size = checked_size(frame, limits)?;
    let mut out = BytesMut::with_capacity(size);
    append(frame, &mut out);
    Ok(out.freeze())
}

/// Appends one frame with its length prefix (a LEB128 varint), for byte streams.
/// Returns the number of bytes written; on error nothing is written.
pub fn encode_length_prefixed<F: Frame>(
    frame: &F,
    limits: &Limits,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let size = checked_size(frame, limits)?;
    let before = out.len();
    out.reserve(size + MAX_VARINT_LEN);
    put_varint(out, size as u64);
    append(frame, out);
    Ok(out.len() - before)
}

/// Longest LEB128 encoding of a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

pub(crate) fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Reads a LEB128 `u64` from the start of `input`: `Ok(None)` when more bytes are needed,
/// otherwise the value and the number of bytes it took.
pub(crate) fn read_varint(input: &[u8]) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (index, byte) in input.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if index == MAX_VARINT_LEN - 1 && (*byte > 1) {
            return Err(DecodeError::Malformed("varint overflows 64 bits"));
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    if input.len() >= MAX_VARINT_LEN {
        return Err(DecodeError::Malformed("varint overflows 64 bits"));
    }
    Ok(None)
}

/// Checks the frame tag and, for a client's connect frame, the protocol major version,
/// before anything else is decoded (the version prefix is frozen across versions).
fn check_header<F: Frame>(input: &[u8]) -> Result<u64, DecodeError> {
    let (tag, tag_len) = read_varint(input)?.ok_or(DecodeError::Truncated)?;
    if tag >= u64::from(F::TAG_COUNT) {
        return Err(DecodeError::UnknownFrameType { tag });
    }
    if F::SENDER == Side::ClientToServer && tag == 0 {
        let (major, _) = read_varint(&input[tag_len..])?.ok_or(DecodeError::Truncated)?;
        if major != u64::from(PROTOCOL_VERSION.major) {
            return Err(DecodeError::UnsupportedVersion { major });
        }
    }
    Ok(tag)
}

fn map_postcard_error(error: postcard::Error) -> DecodeError {
    use postcard::Error as E;
    match error {
        E::DeserializeUnexpectedEnd => DecodeError::Truncated,
        E::DeserializeBadVarint => DecodeError::Malformed("bad varint"),
        E::DeserializeBadBool => DecodeError::Malformed("bool is neither 0 nor 1"),
        E::DeserializeBadChar => DecodeError::Malformed("bad char"),
        E::DeserializeBadUtf8 => DecodeError::Malformed("text is not UTF-8"),
        E::DeserializeBadOption => DecodeError::Malformed("option tag is neither 0 nor 1"),
        E::DeserializeBadEnum | E::SerdeDeCustom => {
            DecodeError::Malformed("unknown variant or invalid value")
        }
        _ => DecodeError::Malformed("undecodable"),
    }
}

/// Decodes exactly one frame from `input`.
///
/// Payloads of the decoded frame share `input`'s memory (no copy). Every limit is checked
/// before the field it guards is allocated; any failure is a [`DecodeError`] with a stable
/// code, whatever the input.
pub fn decode<F: Frame>(input: &Bytes, limits: &Limits) -> Result<F, DecodeError> {
    if input.is_empty() {
        return Err(DecodeError::Empty);
    }
    if input.len() > limits.max_frame_size {
        return Err(DecodeError::FrameTooLarge {
            size: input.len() as u64,
            max: limits.max_frame_size,
        });
    }
    let tag = check_header::<F>(input)?;
    match decode_fields::<F>(input, tag, limits) {
        // A frame that ends where a minor version appended a field: the field is `None`
        // (§3). Read it again with that `None` (one `0` byte) supplied. That is the frame
        // only if the supplied byte was read as the appended field's `None`: a frame that
        // ended earlier, or inside the appended field, stays truncated.
        Err(DecodeError::Truncated) if F::has_appended_fields(tag) => {
            let mut padded = BytesMut::with_capacity(input.len() + 1);
            padded.extend_from_slice(input);
            padded.put_u8(0);
            match decode_fields::<F>(&padded.freeze(), tag, limits) {
                Ok(frame) if frame.appended_fields_absent() => Ok(frame),
                _ => Err(DecodeError::Truncated),
            }
        }
        other => other,
    }
}

/// Decodes the frame's fields: exactly one frame.
fn decode_fields<F: Frame>(input: &Bytes, tag: u64, limits: &Limits) -> Result<F, DecodeError> {
    let share = F::PAYLOAD_TAGS.contains(&tag).then_some(input);
    let (result, violation) = context::decode_scoped(input, share, *limits, |bytes| {
        let mut deserializer =
            postcard::Deserializer::from_flavor(Claimed(postcard::de_flavors::Slice::new(bytes)));
        let frame = F::deserialize(&mut deserializer)?;
        deserializer.finalize().map(|rest| (frame, rest.len()))
    });
    match result {
        Ok((frame, 0)) => Ok(frame),
        Ok((_, count)) => Err(DecodeError::TrailingBytes { count }),
        Err(error) => Err(violation.unwrap_or_else(|| map_postcard_error(error))),
    }
}

/// Postcard's slice flavor, except that it gives no size hint: postcard then hands every
/// sequence its claimed length as is (with a hint it hides a count larger than the bytes
/// left), so the bounded lists of §2.4 check the count itself before reading any item —
/// a publish claiming 2^32 messages is `too_many_messages`, not `truncated_frame`. Nothing
/// allocates by the claim: bounded lists reserve at most 64 items up front.
struct Claimed<'de>(postcard::de_flavors::Slice<'de>);

impl<'de> postcard::de_flavors::Flavor<'de> for Claimed<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    fn pop(&mut self) -> postcard::Result<u8> {
        self.0.pop()
    }

    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        self.0.try_take_n(count)
    }

    fn finalize(self) -> postcard::Result<&'de [u8]> {
        self.0.finalize()
    }
}

/// Decodes exactly one frame from a borrowed slice (payloads are copied once).
pub fn decode_slice<F: Frame>(input: &[u8], limits: &Limits) -> Result<F, DecodeError> {
    if input.len() > limits.max_frame_size {
        return Err(DecodeError::FrameTooLarge {
            size: input.len() as u64,
            max: limits.max_frame_size,
        });
    }
    decode(&Bytes::copy_from_slice(input), limits)
}
