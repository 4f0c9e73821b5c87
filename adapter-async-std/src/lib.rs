//! # tether-async-std
//!
//! tether over WebSocket on async-std and smol (async-tungstenite), built on runtime-neutral
//! pieces so the same code runs on both. This crate is glue only: every protocol decision is
//! made by [`tether_core`].
//!
//! Not implemented yet: this crate is a placeholder in the workspace until its issue lands.

#![forbid(unsafe_code)]

pub use tether_core;
