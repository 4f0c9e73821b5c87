//! What every adapter needs around the state machines, whatever its runtime.
//!
//! An adapter owns sockets, clocks, channels and tasks; everything else it would write is
//! here, once, so that two adapters never carry two copies of the same logic:
//!
//! - [`Dispatcher`]: the client side's bookkeeping. Application commands go to the
//!   [`Client`](crate::client::Client); its events come back to the right waiting caller
//!   (publish ACK/NACK, history page, pong, attach) or subscriber stream, and the token
//!   policy of the chosen [`Credentials`] is applied.
//! - [`Connections`]: the server side's routing of hub outputs to connection writers.
//! - [`Origin`]: turns readings of a monotonic clock into the core's [`Time`](crate::Time)
//!   and deadlines back into instants (the adapter reads the clock; this only converts).
//! - [`DeliveryAudit`]: checks, from the outside, that every acknowledged message reached
//!   every subscriber exactly once and in order — for demos and chaos tests.
//!
//! The adapter chooses its channel types by implementing [`Plumbing`].

mod audit;
mod connections;
mod credentials;
mod dispatcher;
#[cfg(feature = "server")]
mod hooks;
mod options;
mod origin;

pub use audit::{AuditReport, DeliveryAudit};
#[cfg(feature = "server")]
pub use connections::{ApiReply, Connections, ServerInput};
pub use connections::{Flow, INPUT_BATCH, Outbound, WRITE_BATCH, WriteBatch, Writer, handle_batch};
pub use credentials::{Credentials, Refusable, TokenError, TokenFuture, TokenProvider};
pub use dispatcher::{
    ChannelEvent, Command, ConnectionStateChange, ConnectionStats, Dispatcher, Error, Notice,
    Plumbing, SubscriberId,
};
#[cfg(feature = "server")]
pub use hooks::{HookFuture, HookSink, Hooks};
pub use options::ClientOptions;
#[cfg(feature = "server")]
pub use options::{ServerOptions, SocketLimits};
pub use origin::{MillisOrigin, Origin, unix_ms};

/// WebSocket limits derived from the hub's or client's frame limit: one frame per message,
/// no message larger than a frame, a small read buffer and a bounded write buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    /// Largest message, and largest WebSocket frame.
    pub max_message: usize,
    /// Read buffer size: 1 KiB, allocated per connection for its whole life, so 10,000 idle
    /// connections cost little; a larger frame still arrives whole, in more reads (see
    /// `docs/benchmarks.md`, scenario d).
    pub read_buffer: usize,
    /// Write buffer size.
    pub write_buffer: usize,
    /// The most bytes a writer may buffer before it refuses.
    pub max_write_buffer: usize,
}

impl TransportLimits {
    /// The limits for frames of at most `max_frame_size` bytes.
    pub fn for_frame_size(max_frame_size: usize) -> TransportLimits {
        TransportLimits {
            max_message: max_frame_size,
            // Allocated per connection for its whole life: small, so idle connections stay
            // cheap; larger frames still arrive whole (the buffer grows while reading one).
            read_buffer: 1024,
            write_buffer: 16 * 1024,
            max_write_buffer: max_frame_size.saturating_add(64 * 1024),
        }
    }
}

/// The WebSocket close code for a hub error: the code's own, one to one, in the private
/// range ([`ErrorCode::close_code`](crate::ErrorCode::close_code), `docs/protocol.md` §2.2).
pub fn close_code(reason: &crate::ErrorInfo) -> u16 {
    reason.code.close_code()
}
