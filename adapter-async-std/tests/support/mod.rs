//! Shared by the end-to-end tests: both runtimes, a server, keys, tokens, bounded waits, and
//! the tokio-side helpers (the fault-injecting proxy runs on its own tokio runtime).

#![allow(dead_code)]

pub mod sockets;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures_lite::FutureExt;
use tether_async_std::{Server, ServerConfig, Spawner};
use tether_core::embed::unix_ms;
use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, Operation, mint_token};

/// How long any single wait may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The executor a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Runtime {
    /// async-std's `block_on` and executor.
    AsyncStd,
    /// smol's `block_on` and executor.
    Smol,
}

impl Runtime {
    /// Runs `test` to completion on this runtime, with this runtime's spawner.
    pub fn run<F: Future<Output = ()>>(self, test: impl FnOnce(Spawner) -> F) {
        match self {
            Runtime::AsyncStd => async_std::task::block_on(test(Spawner::async_std())),
            Runtime::Smol => smol::block_on(test(Spawner::new(|task| smol::spawn(task).detach()))),
        }
    }
}

/// Declares one `#[test]` per runtime for an `async fn(Spawner)` scenario.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn on_async_std() {
                    $crate::support::Runtime::AsyncStd.run(super::$scenario);
                }

                #[test]
                fn on_smol() {
                    $crate::support::Runtime::Smol.run(super::$scenario);
                }
            }
        )*
    };
}

/// Fails the test if `future` takes longer than [`LIMIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let expired = async {
        async_io::Timer::after(LIMIT).await;
        panic!("{what}: not done within {LIMIT:?}");
    };
    future.or(expired).await
}

/// Sleeps on async-io's timer (runtime-neutral).
pub async fn sleep(duration: Duration) {
    async_io::Timer::after(duration).await;
}

/// A key allowed everything.
pub fn key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

/// A key allowed only `public:*`.
pub fn limited_key() -> ApiKey {
    ApiKey {
        name: "limited".into(),
        secret: "limited-secret".into(),
        capabilities: Capabilities::default()
            .with("public:*", &[Operation::Subscribe, Operation::Publish]),
    }
}

/// The hub configuration of every test: both keys, everything else default.
pub fn hub_config() -> HubConfig {
    {
        let mut config = HubConfig::default();
        config.keys = vec![key(), limited_key()];
        config.retention_count = 100_000;
        config
    }
}

/// A server of this adapter on loopback.
pub async fn server(spawner: &Spawner) -> Server {
    let mut config = ServerConfig::new(hub_config());
    config.transport.spawner = spawner.clone();
    Server::bind("127.0.0.1:0", config).await.expect("binds")
}

/// The `ws://` URL of `address`.
pub fn url(address: SocketAddr) -> String {
    format!("ws://{address}/")
}

/// A token for `sub` with every capability, signed by the `app` key.
pub fn token(sub: &str, lifetime: Duration) -> String {
    let now = unix_ms(SystemTime::now()) / 1000;
    mint_token(
        &key(),
        &Claims::new(sub, Capabilities::all(), now, lifetime),
    )
    .expect("signs")
}

/// A one-worker tokio runtime in the background, for the tokio side of a test.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
