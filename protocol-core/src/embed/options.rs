//! The options every adapter's client and server take; `T` is the adapter's own part
//! (TLS, executor, …).

use std::sync::Arc;

use crate::Seed;
use crate::client::ClientConfig;
use crate::embed::credentials::{Credentials, TokenProvider};
use crate::server::HubConfig;

/// Options of a client: credentials, the core's configuration (protocol defaults), a seed,
/// and the adapter's transport options.
#[derive(Clone, Debug)]
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

/// Options of a server: the hub's configuration, a seed, and the adapter's transport options.
#[derive(Clone, Debug)]
pub struct ServerOptions<T> {
    /// The hub's configuration: keys, token rules, limits.
    pub hub: HubConfig,
    /// A fixed seed (tests); `None` draws one from the operating system.
    pub seed: Option<Seed>,
    /// The adapter's part: TLS, executor, …
    pub transport: T,
}

impl<T: Default> ServerOptions<T> {
    /// Options around a hub configuration.
    pub fn new(hub: HubConfig) -> ServerOptions<T> {
        ServerOptions {
            hub,
            seed: None,
            transport: T::default(),
        }
    }
}
