//! The options every adapter's client and server take; `T` is the adapter's own part
//! (TLS, executor, …).

use std::sync::Arc;
#[cfg(feature = "server")]
use std::time::Duration;

use crate::Seed;
use crate::client::ClientConfig;
use crate::embed::credentials::{Credentials, TokenProvider};
#[cfg(feature = "server")]
use crate::server::{HubConfig, Store};

/// Options of a client: credentials, the core's configuration (protocol defaults), a seed,
/// and the adapter's transport options.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions<T> {
    /// How to authenticate.
    pub credentials: Credentials,
    /// The core's configuration; its `auth` is set from `credentials`.
    pub config: ClientConfig,
    /// A fixed seed (tests); `None` draws one from the operating system.
    pub seed: Option<Seed>,
    /// The adapter's part: TLS, executor, …
    pub transport: T,
}

impl<T: Default> ClientOptions<T> {
    /// Options for `credentials` with the protocol defaults.
    pub fn new(credentials: Credentials) -> ClientOptions<T> {
        ClientOptions {
            config: ClientConfig::new(credentials.auth()),
            credentials,
            seed: None,
            transport: T::default(),
        }
    }

    /// Options for an API key.
    pub fn api_key(name: impl Into<String>, secret: impl Into<String>) -> ClientOptions<T> {
        ClientOptions::new(Credentials::ApiKey {
            name: name.into(),
            secret: secret.into(),
        })
    }

    /// Options for tokens from `provider`.
    pub fn token_provider(provider: impl TokenProvider) -> ClientOptions<T> {
        ClientOptions::new(Credentials::Provider(Arc::new(provider)))
    }
}

#[cfg(feature = "server")]
/// Options of a server: the hub's configuration, a seed, and the adapter's transport options.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerOptions<T> {
    /// The hub's configuration: keys, token rules, limits.
    pub hub: HubConfig,
    /// A fixed seed (tests); `None` draws one from the operating system.
    pub seed: Option<Seed>,
    /// Limits on sockets before the hub sees them and after it closed them.
    pub sockets: SocketLimits,
    /// The adapter's part: TLS, executor, …
    pub transport: T,
    /// A store for channel logs and sessions (e.g. `tether_engine::Engine`): the hub then
    /// restores what it holds at start and acknowledges publishes once they are durable
    /// (`docs/protocol.md` §7.7). `None` (the default): everything in memory.
    pub store: Option<Arc<dyn Store>>,
    /// The application's hooks (§7.9), needed when a namespace of the hub's configuration
    /// asks for one (`HubConfig::uses_hooks`); `None` (the default): no hooks.
    pub hooks: Option<super::Hooks>,
}

#[cfg(feature = "server")]
impl<T: Default> ServerOptions<T> {
    /// Options around a hub configuration.
    pub fn new(hub: HubConfig) -> ServerOptions<T> {
        ServerOptions {
            hub,
            seed: None,
            sockets: SocketLimits::default(),
            transport: T::default(),
            store: None,
            hooks: None,
        }
    }
}

#[cfg(feature = "server")]
/// What a server allows a socket outside the hub's life of a connection: before the
/// transport handshake (TLS, WebSocket upgrade) is done, and after the hub closed the
/// connection. The hub's own limits (connection cap, first-frame deadline, pending bytes)
/// start where these end. `docs/security.md` lists every limit. A timeout above one day is
/// read as one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketLimits {
    /// A socket that has not finished its handshake this long after it was accepted is
    /// closed (default 5 s).
    pub handshake_timeout: Duration,
    /// Sockets accepted and still in their handshake at once — TLS, the WebSocket upgrade,
    /// and until the hub accepted their `connect`; a socket accepted beyond it is closed at
    /// once (default 512). This bounds what unauthenticated clients can make the server
    /// hold: a partial frame of up to the frame limit each.
    pub max_pending_handshakes: usize,
    /// After the hub closed a connection, the most time its socket may take to send what
    /// was queued and its close; then it is dropped, whether or not the peer reads
    /// (default 5 s). Until it is gone it counts against the hub's connection cap.
    pub close_timeout: Duration,
}

#[cfg(feature = "server")]
impl Default for SocketLimits {
    fn default() -> SocketLimits {
        SocketLimits {
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 512,
            close_timeout: Duration::from_secs(5),
        }
    }
}
