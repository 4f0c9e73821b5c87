//! # tether-tokio
//!
//! tether over WebSocket on tokio: a [`Client`], a [`Server`] (`ws://` and `wss://` with
//! rustls), a fault-injecting [`proxy`] for tests, and the `tether` command-line tool.
//!
//! This crate is glue only: the [`Tokio`] runtime (tasks, timers, TCP, a `watch` channel
//! for the connection state) under `tether-driver`, which runs the client and server tasks
//! for every runtime. Every protocol decision — connecting, retrying, resending, renewing,
//! timing out — is made by [`tether_core`].
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

#[cfg(feature = "axum")]
pub mod axum;
pub mod demo;
pub mod proxy;
mod runtime;

pub use runtime::{ClientTransport, ServerTransport, Tokio};
pub use tether_core;
// The types applications name, so they need not depend on tether-core themselves.
pub use tether_driver::api::*;
pub use tether_driver::{
    BINDING_HEADERS, BindingAnswer, BindingRequest, DownBody, PREFLIGHT_HEADERS, StateChanges,
    Subscription, tls_from_pem, websocket_config,
};

/// A tether client on tokio (see [`tether_driver::Client`]). Cheap to clone; the
/// connection lives until `close` or until every clone is dropped; `state()` is a tokio
/// `watch::Receiver`. Start it inside a tokio runtime: outside one, `connect` fails with
/// `internal`.
pub type Client = tether_driver::Client<Tokio>;
/// A channel of a [`Client`].
pub type Channel = tether_driver::Channel<Tokio>;
/// A running tether server on tokio (see [`tether_driver::Server`]); `bind` takes any
/// `tokio::net::ToSocketAddrs`.
///
/// ```no_run
/// use tether_tokio::{ApiKey, Capabilities, HubConfig, Server, ServerConfig};
///
/// # async fn run() -> std::io::Result<()> {
/// let mut hub = HubConfig::default();
/// hub.keys = vec![ApiKey {
///     name: "app".into(),
///     secret: std::env::var("TETHER_SECRET").unwrap_or_default(),
///     capabilities: Capabilities::all(),
/// }];
/// hub.session_ttl = std::time::Duration::from_secs(300);
/// let mut config = ServerConfig::new(hub);
/// // For wss://: config.transport.tls = Some(tether_tokio::tls_from_pem(&chain, &key)?);
/// config.sockets.handshake_timeout = std::time::Duration::from_secs(10);
/// let server = Server::bind("0.0.0.0:7400", config).await?;
/// println!("listening on {}", server.local_addr());
/// tokio::signal::ctrl_c().await?;
/// server.shutdown().await; // clients are told server_shutting_down and resume elsewhere
/// # Ok(())
/// # }
/// ```
pub type Server = tether_driver::Server<Tokio>;
/// A tether server without a listener of its own (see [`tether_driver::Service`]): its
/// connections come from another server's routes — [`axum::websocket`] mounts it in an
/// axum application. `Service::start` must be called inside a tokio runtime.
pub type Service = tether_driver::Service<Tokio>;
/// Options of a [`Client`]: credentials, the core's configuration (protocol defaults), a
/// seed, and [`ClientTransport`].
pub type ClientOptions = tether_core::embed::ClientOptions<ClientTransport>;
/// How to run a [`Server`]: the hub's configuration, a seed, and [`ServerTransport`].
pub type ServerConfig = tether_core::embed::ServerOptions<ServerTransport>;
