//! # tether-core
//!
//! The whole logic of the tether realtime pub/sub protocol as pure, sans-IO code: no
//! sockets, no clocks, no runtime, no hidden randomness. Adapters feed it bytes, time and
//! commands, and carry out what it asks for.
//!
//! - [`wire`]: frame types, their encoding, and the framings for messages and streams.
//! - [`client`]: the client connection state machine.
//! - [`server`]: the server hub state machine.
//! - [`error`]: the stable error codes every frame and event carries.
//! - [`embed`]: what every adapter needs around the state machines, whatever its runtime.
//!
//! The protocol is specified in `docs/protocol.md` of the repository.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod embed;
pub mod error;
#[cfg(feature = "arbitrary")]
pub mod fuzzing;
pub mod rng;
#[cfg(feature = "sabotage")]
pub mod sabotage;
#[cfg(feature = "server")]
pub mod server;
pub mod time;
pub mod wire;

pub use error::{ErrorCode, ErrorInfo};
pub use rng::{Rng, Seed};
pub use time::{Time, Timestamp};
