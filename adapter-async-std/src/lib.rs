//! # tether-async-std
//!
//! tether over WebSocket for async-std **and** smol: a [`Client`] and a [`Server`]
//! (`ws://` and `wss://` with rustls) with the same shape as `tether-tokio`'s.
//!
//! Only runtime-neutral pieces are used: sockets and timers from async-io (through
//! async-net) under `tether-driver`, which runs the client and server tasks for every
//! runtime. The one thing a runtime must provide is an executor for background tasks, the
//! [`Spawner`]: async-std's by default, or any other, e.g. smol's:
//!
//! ```no_run
//! use futures_lite::StreamExt;
//! use tether_async_std::{ChannelEvent, Client, ClientOptions, Spawner};
//!
//! # fn main() -> Result<(), tether_async_std::Error> {
//! smol::block_on(async {
//!     let mut options = ClientOptions::api_key("app", "secret");
//!     options.transport.spawner = Spawner::new(|task| smol::spawn(task).detach());
//!     let client = Client::connect("ws://127.0.0.1:7400/", options)?;
//!     let news = client.channel("news")?;
//!     let mut messages = news.subscribe().await?;
//!     news.publish("greeting", "hello").await?; // resolves on the server's ACK
//!     while let Some(ChannelEvent::Message(message)) = messages.next().await {
//!         println!("{:?}", message.message.data);
//!     }
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Glue only, like every adapter: the decisions are [`tether_core`]'s, the bookkeeping
//! around them is [`tether_core::embed`]'s.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod runtime;
mod spawner;

pub use runtime::{ClientTransport, ServerTransport};
pub use spawner::Spawner;
pub use tether_core;
// The types applications name, so they need not depend on tether-core themselves.
pub use tether_driver::api::*;
pub use tether_driver::{
    BINDING_HEADERS, BindingAnswer, BindingRequest, DownBody, PREFLIGHT_HEADERS, StateChanges,
    StateWatch, Subscription, Task, tls_from_pem,
};

/// A tether client on async-std or smol (see [`tether_driver::Client`]). Cheap to clone;
/// the connection lives until `close` or until every clone is dropped; `state()` is a
/// [`StateWatch`].
pub type Client = tether_driver::Client<Spawner>;
/// A channel of a [`Client`].
pub type Channel = tether_driver::Channel<Spawner>;
/// A running tether server on async-std or smol (see [`tether_driver::Server`]); `bind`
/// takes any `async_net::AsyncToSocketAddrs`.
pub type Server = tether_driver::Server<Spawner>;
/// Options of a [`Client`]: credentials, the core's configuration (protocol defaults), a
/// seed, and [`ClientTransport`].
pub type ClientOptions = tether_core::embed::ClientOptions<ClientTransport>;
/// How to run a [`Server`]: the hub's configuration, a seed, and [`ServerTransport`].
pub type ServerConfig = tether_core::embed::ServerOptions<ServerTransport>;

/// The README's Rust examples (both adapters, the codec) compile and run as doctests here.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
