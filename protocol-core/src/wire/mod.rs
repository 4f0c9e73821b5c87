//! The wire format: frame types, their postcard encoding, and the two framings.
//!
//! - [`ClientFrame`] and [`ServerFrame`] are every frame of protocol version 1.
//! - [`encode`] / [`decode`] handle one frame per transport message (WebSocket).
//! - [`encode_length_prefixed`] / [`StreamDecoder`] handle ordered byte streams.
//!
//! ```
//! use tether_core::wire::{self, ClientFrame, Limits};
//!
//! let ping = ClientFrame::Ping { id: 7 };
//! let bytes = wire::encode(&ping, &Limits::DEFAULT).unwrap();
//! assert_eq!(&bytes[..], &[6, 7]); // tag 6 (ping), id 7
//! let back: ClientFrame = wire::decode(&bytes, &Limits::DEFAULT).unwrap();
//! assert_eq!(back, ping);
//! ```

mod codec;
mod context;
mod frame;
pub mod http;
mod stream;
mod types;

pub use codec::{
    DecodeError, EncodeError, HUB_FRAME_OVERHEAD, Limits, MIN_FRAME_SIZE, decode, decode_slice,
    encode, encode_length_prefixed, publish_frame_len,
};
pub use frame::{ClientFrame, Frame, ServerFrame, Side};
pub use stream::{StreamDecoder, decode_received};
pub use types::{
    ChannelMessage, ChannelName, ClientId, ConnectOptions, Continuity, Credentials,
    DEFAULT_HISTORY_LIMIT, Direction, HistoryBound, HistoryQuery, MAX_CLIENT_ID_LEN,
    MAX_HISTORY_LIMIT, MAX_MESSAGE_ID_LEN, MAX_MESSAGE_NAME_LEN, Message, MessageId,
    PROTOCOL_VERSION, Position, ProtocolVersion, ResumeSecret, ResumeToken, SessionId,
    SessionLimits, hex, payload,
};
