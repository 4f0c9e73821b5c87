//! # tether-tokio
//!
//! tether over WebSocket on tokio (tokio-tungstenite): a [`Client`], a [`Server`] (`ws://`
//! and `wss://` with rustls), a fault-injecting [`proxy`] for tests, and the `tether`
//! command-line tool.
//!
//! This crate is glue only. It opens sockets, sleeps until the core's next deadline, moves
//! bytes, and turns events into futures and streams; every protocol decision — connecting,
//! retrying, resending, renewing, timing out — is made by [`tether_core`].
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use tether_tokio::{Client, ClientOptions, ChannelEvent};
//!
//! # async fn run() -> Result<(), tether_tokio::Error> {
//! let client = Client::connect("ws://127.0.0.1:7400/", ClientOptions::api_key("app", "secret"))?;
//! let news = client.channel("news")?;
//! let mut messages = news.subscribe().await?;
//! news.publish("greeting", "hello").await?; // resolves on the server's ACK
//! while let Some(ChannelEvent::Message(message)) = messages.next().await {
//!     println!("{:?}", message.message.data);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod clock;
pub mod demo;
pub mod proxy;
mod server;

pub use client::{Channel, Client, ClientOptions, ClientTransport, Subscription};
pub use server::{Server, ServerConfig, ServerTransport, tls_from_pem, websocket_config};
pub use tether_core;
pub use tether_core::embed::{
    ChannelEvent, ConnectionStats, Credentials, Error, TokenFuture, TokenProvider,
};
