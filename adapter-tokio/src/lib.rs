//! # tether-tokio
//!
//! tether over WebSocket on tokio (tokio-tungstenite): the real client, the real server and
//! the `tether` command-line tool. This crate is glue only: every protocol decision is made
//! by [`tether_core`].
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its issue lands.

#![forbid(unsafe_code)]

pub use tether_core;
