//! A model-based test of the application API (issue 14): bounded random sequences of API
//! calls — subscribe, unsubscribe, publish, history, ping, close, dropped subscriptions and
//! futures — mixed with server restarts, wrong credentials and token providers that fail or
//! hang, against a real server on loopback. It asserts that every call resolves within a
//! bound and that every subscription stream and state-change stream ends once the client is
//! Failed or Closed.
//!
//! It runs the same model on each adapter's client: async-std, smol (this adapter) and tokio.
//! The server is tether's tokio server on its own runtime, restarted on the same port.
//! A sabotage variant (a client that never answers an attach of an attached channel) shows
//! that the model catches a hung future.
//!
//! `TETHER_MODEL_SEEDS=N` runs N seeds per runtime instead of the default.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{FutureExt, StreamExt};
use support::{key, token};
use tether_core::client::ConnectionState;
use tether_core::embed::ClientOptions;
use tether_core::server::HubConfig;
use tether_core::wire::HistoryQuery;
use tether_core::{ErrorCode, Rng};
use tether_driver::{Client, Runtime, StateChanges, Subscription};

/// Each call must resolve within this: the longest legitimate wait is a publish queued while
/// the client cannot connect, resolved when it becomes Suspended (session TTL 2 s after the
/// last connection, plus one attempt's 2 s request timeout), with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(10);
/// Operations per sequence.
const STEPS: usize = 40;
/// Seeds per runtime, unless `TETHER_MODEL_SEEDS` says otherwise.
const SEEDS: u64 = 3;
const CHANNELS: [&str; 3] = ["model:a", "model:b", "model:c"];

/// How a client incarnation authenticates.
#[derive(Clone, Copy, Debug)]
enum Creds {
    Key,
    WrongKey,
    Token,
    TokenFails,
    TokenHangs,
}

/// Client options for these credentials, with the short timers the bound assumes.
fn client_options<T: Default>(creds: Creds, seed: u64) -> ClientOptions<T> {
    let mut options = match creds {
        Creds::Key => ClientOptions::api_key("app", "app-secret"),
        Creds::WrongKey => ClientOptions::api_key("app", "wrong"),
        Creds::Token => ClientOptions::token_provider(|| async {
            Ok::<_, String>(token("model", Duration::from_secs(600)))
        }),
        Creds::TokenFails => {
            ClientOptions::token_provider(|| async { Err::<String, _>("auth server down".into()) })
        }
        Creds::TokenHangs => {
            ClientOptions::token_provider(std::future::pending::<Result<String, String>>)
        }
    };
    let mut fixed = [0u8; 32];
    fixed[..8].copy_from_slice(&seed.to_le_bytes());
    options.seed = Some(fixed);
    let config = &mut options.config;
    config.request_timeout = Duration::from_secs(2);
    config.session_ttl = Duration::from_secs(2);
    config.first_retry_max = Duration::from_millis(200);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_cap = Duration::from_millis(400);
    config.suspended_retry = Duration::from_secs(1);
    options
}

/// The hub of the model: a short session TTL, so that Suspended comes quickly.
fn hub_config() -> HubConfig {
    {
        let mut config = HubConfig::default();
        config.keys = vec![key()];
        config.session_ttl = Duration::from_secs(2);
        config
    }
}

/// tether's tokio server on its own runtime, restartable on the same address.
struct Host {
    runtime: tokio::runtime::Runtime,
    server: Option<tether_tokio::Server>,
    address: SocketAddr,
}

impl Host {
    fn start() -> Host {
        let runtime = support::tokio_runtime();
        let server = runtime
            .block_on(tether_tokio::Server::bind(
                "127.0.0.1:0",
                tether_tokio::ServerConfig::new(hub_config()),
            ))
            .expect("binds");
        Host {
            address: server.local_addr(),
            server: Some(server),
            runtime,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.address)
    }

    /// Stops the server and starts a fresh one on the same address (a restart: sessions
    /// are gone). Awaitable from any executor.
    async fn restart(&mut self) -> Result<(), String> {
        let old = self.server.take();
        let address = self.address;
        let started = self.runtime.spawn(async move {
            if let Some(old) = old {
                old.shutdown().await;
            }
            // The old listener is closed; SO_REUSEADDR lets the port be bound again at once.
            let mut last = None;
            for _ in 0..50 {
                match tether_tokio::Server::bind(
                    address,
                    tether_tokio::ServerConfig::new(hub_config()),
                )
                .await
                {
                    Ok(server) => return Ok(server),
                    Err(error) => last = Some(error),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(format!("cannot bind {address} again: {last:?}"))
        });
        self.server = Some(started.await.map_err(|e| e.to_string())??);
        Ok(())
    }
}

/// Waits for `future`, or fails with what did not resolve.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> Result<T, String> {
    let expired = async {
        async_io::Timer::after(BOUND).await;
        Err(format!("{what} did not resolve within {BOUND:?}"))
    };
    async { Ok(future.await) }.or(expired).await
}

/// One client incarnation and what the model holds of it.
struct Incarnation<R: Runtime> {
    client: Client<R>,
    creds: Creds,
    changes: StateChanges,
    /// The last state seen on `changes`.
    state: ConnectionState,
    subscriptions: Vec<Subscription>,
}

impl<R: Runtime> Incarnation<R> {
    fn start(url: &str, options: ClientOptions<R::ClientTransport>, creds: Creds) -> Self {
        let client = Client::<R>::connect(url, options).expect("a valid URL");
        let changes = client.state_changes();
        Incarnation {
            client,
            creds,
            changes,
            state: ConnectionState::Initialized,
            subscriptions: Vec::new(),
        }
    }

    /// Reads the state changes that are ready.
    async fn catch_up(&mut self) {
        while let Some(Some(change)) = futures_lite::future::poll_once(self.changes.next()).await {
            self.state = change.current;
        }
    }

    fn terminal(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Failed | ConnectionState::Closed
        )
    }

    /// Once Failed or Closed: every subscription stream and the state-change stream end.
    async fn check_ended(&mut self) -> Result<(), String> {
        for (index, mut subscription) in self.subscriptions.drain(..).enumerate() {
            bounded(&format!("the end of subscription {index}"), async {
                while subscription.next().await.is_some() {}
            })
            .await?;
        }
        bounded("the end of the state-change stream", async {
            while let Some(change) = self.changes.next().await {
                self.state = change.current;
            }
        })
        .await
    }
}

/// The model's operations, with weights.
#[derive(Clone, Copy, Debug)]
enum Op {
    Subscribe(usize),
    SubscribeDropped(usize),
    Unsubscribe,
    DropSubscription,
    Publish(usize),
    PublishDropped(usize),
    PublishMany(usize),
    History(usize),
    Ping,
    Pause(u64),
    RestartServer,
    NewClient(Creds, bool),
    Close,
}

fn draw(rng: &mut Rng) -> Op {
    let channel = rng.between(0, CHANNELS.len() as u64 - 1) as usize;
    match rng.between(0, 99) {
        0..=17 => Op::Subscribe(channel),
        18..=20 => Op::SubscribeDropped(channel),
        21..=28 => Op::Unsubscribe,
        29..=32 => Op::DropSubscription,
        33..=50 => Op::Publish(channel),
        51..=54 => Op::PublishDropped(channel),
        55..=59 => Op::PublishMany(channel),
        60..=66 => Op::History(channel),
        67..=73 => Op::Ping,
        74..=79 => Op::Pause(rng.between(0, 300)),
        80..=85 => Op::RestartServer,
        86..=96 => {
            let creds = match rng.between(0, 9) {
                0..=4 => Creds::Key,
                5 => Creds::Token,
                6 => Creds::WrongKey,
                7 => Creds::TokenFails,
                _ => Creds::TokenHangs,
            };
            Op::NewClient(creds, rng.between(0, 1) == 0)
        }
        _ => Op::Close,
    }
}

/// Runs one sequence; `Err` names the seed, the step and what did not hold.
async fn run_model<R: Runtime>(
    seed: u64,
    host: &mut Host,
    options: &dyn Fn(Creds, u64) -> ClientOptions<R::ClientTransport>,
) -> Result<(), String> {
    let mut rng = Rng::from_u64(seed);
    let url = host.url();
    let mut current = Incarnation::<R>::start(&url, options(Creds::Key, seed), Creds::Key);
    let mut trace = Vec::new();
    // What happened, for the log: outcomes by kind.
    let mut tally: Vec<String> = Vec::new();
    for step in 0..STEPS {
        let op = draw(&mut rng);
        trace.push(format!("{op:?}"));
        let creds = current.creds;
        let outcome: Result<(), String> = async {
            match op {
                Op::Subscribe(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    match bounded("subscribe", channel.subscribe()).await? {
                        Ok(subscription) => {
                            tally.push("subscribe ok".into());
                            current.subscriptions.push(subscription);
                        }
                        Err(error) => tally.push(format!("subscribe {}", error.code())),
                    }
                }
                Op::SubscribeDropped(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    let mut subscribe = Box::pin(channel.subscribe());
                    let _ = futures_lite::future::poll_once(&mut subscribe).await;
                }
                Op::Unsubscribe => {
                    if !current.subscriptions.is_empty() {
                        let index = rng.between(0, current.subscriptions.len() as u64 - 1);
                        let subscription = current.subscriptions.swap_remove(index as usize);
                        bounded("unsubscribe", subscription.unsubscribe()).await?;
                    }
                }
                Op::DropSubscription => {
                    if !current.subscriptions.is_empty() {
                        let index = rng.between(0, current.subscriptions.len() as u64 - 1);
                        drop(current.subscriptions.swap_remove(index as usize));
                    }
                }
                Op::Publish(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    let outcome =
                        bounded("publish", channel.publish("n", format!("step {step}"))).await?;
                    tally.push(match outcome {
                        Ok(()) => "publish ok".into(),
                        Err(error) => format!("publish {}", error.code()),
                    });
                }
                Op::PublishDropped(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    drop(channel.publish("n", "dropped"));
                }
                Op::PublishMany(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    let publishes: Vec<_> = (0..5)
                        .map(|n| channel.publish("n", format!("{step}.{n}")))
                        .collect();
                    // Awaited in reverse order: each resolves whatever the order.
                    for publish in publishes.into_iter().rev() {
                        let _ = bounded("one of several publishes", publish).await?;
                    }
                }
                Op::History(c) => {
                    let channel = current.client.channel(CHANNELS[c]).expect("a valid name");
                    let _ = bounded("history", channel.history(HistoryQuery::default())).await?;
                }
                Op::Ping => {
                    let _ = bounded("ping", current.client.ping()).await?;
                }
                Op::Pause(ms) => {
                    async_io::Timer::after(Duration::from_millis(ms)).await;
                }
                Op::RestartServer => host.restart().await?,
                Op::NewClient(creds, close_old) => {
                    let old = std::mem::replace(
                        &mut current,
                        Incarnation::start(&url, options(creds, seed ^ step as u64), creds),
                    );
                    let mut old = old;
                    if close_old {
                        bounded("close", old.client.close()).await?;
                        old.catch_up().await;
                        if old.state != ConnectionState::Closed && !old.terminal() {
                            return Err(format!("close left the client {}", old.state));
                        }
                        old.check_ended().await?;
                    }
                    // Otherwise dropped: its task ends with its last handle.
                }
                Op::Close => {
                    bounded("close", current.client.close()).await?;
                    current.catch_up().await;
                    if !current.terminal() {
                        return Err(format!("close left the client {}", current.state));
                    }
                }
            }
            current.catch_up().await;
            if current.terminal() {
                tally.push(format!("client {}", current.state));
                current.check_ended().await?;
                // Calls on a Failed or Closed client still resolve, with an error.
                let channel = current.client.channel(CHANNELS[0]).expect("a valid name");
                let refused = bounded("subscribe after the end", channel.subscribe()).await?;
                if refused.is_ok() {
                    return Err("a subscribe on a terminal client succeeded".into());
                }
                let code = bounded("publish after the end", channel.publish("n", "x"))
                    .await?
                    .err()
                    .map(|e| e.code());
                if !matches!(
                    code,
                    Some(ErrorCode::ConnectionFailed | ErrorCode::ConnectionClosed)
                ) {
                    return Err(format!("a publish after the end gave {code:?}"));
                }
                current = Incarnation::start(&url, options(Creds::Key, seed ^ 0x5eed), Creds::Key);
            }
            Ok(())
        }
        .await;
        outcome.map_err(|error| {
            format!(
                "seed {seed}, step {step} ({op:?}, credentials {creds:?}): {error}; steps: {}",
                trace.join(", ")
            )
        })?;
    }
    bounded("the final close", current.client.close()).await?;
    current.catch_up().await;
    current.check_ended().await?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for outcome in tally {
        *counts.entry(outcome).or_default() += 1;
    }
    eprintln!("seed {seed}: {counts:?}");
    Ok(())
}

fn seeds() -> u64 {
    std::env::var("TETHER_MODEL_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SEEDS)
}

/// Runs every seed on one runtime; the first failure fails the test.
fn all_seeds<R: Runtime>(
    block_on: impl Fn(
        std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + '_>>,
    ) -> Result<(), String>,
    options: &dyn Fn(Creds, u64) -> ClientOptions<R::ClientTransport>,
) {
    let mut host = Host::start();
    for seed in 1..=seeds() {
        if let Err(error) = block_on(Box::pin(run_model::<R>(seed, &mut host, options))) {
            panic!("{error}");
        }
    }
}

#[test]
fn every_call_resolves_and_every_stream_ends_on_async_std() {
    let spawner = tether_async_std::Spawner::async_std();
    all_seeds::<tether_async_std::Spawner>(|run| async_std::task::block_on(run), &|creds, seed| {
        let mut options = client_options::<tether_async_std::ClientTransport>(creds, seed);
        options.transport.spawner = spawner.clone();
        options
    });
}

#[test]
fn every_call_resolves_and_every_stream_ends_on_smol() {
    let spawner = tether_async_std::Spawner::new(|task| smol::spawn(task).detach());
    all_seeds::<tether_async_std::Spawner>(|run| smol::block_on(run), &|creds, seed| {
        let mut options = client_options::<tether_async_std::ClientTransport>(creds, seed);
        options.transport.spawner = spawner.clone();
        options
    });
}

#[test]
fn every_call_resolves_and_every_stream_ends_on_tokio() {
    let runtime = support::tokio_runtime();
    all_seeds::<tether_tokio::Tokio>(
        |run| runtime.block_on(run),
        &client_options::<tether_tokio::ClientTransport>,
    );
}

/// The model catches a hung future: with the client sabotaged to leave an attach of an
/// attached channel unanswered (issue 14's defect 1, back), some seed fails on a subscribe
/// that does not resolve.
#[test]
fn the_model_catches_a_subscribe_that_never_resolves() {
    let spawner = tether_async_std::Spawner::async_std();
    let mut host = Host::start();
    let options = |creds, seed| {
        let mut options = client_options::<tether_async_std::ClientTransport>(creds, seed);
        options.transport.spawner = spawner.clone();
        options.config.sabotage = tether_core::sabotage::Sabotage::ClientIgnoresAttachOfAttached;
        options
    };
    let caught = (1..=5).find_map(|seed| {
        async_std::task::block_on(run_model::<tether_async_std::Spawner>(
            seed, &mut host, &options,
        ))
        .err()
    });
    let error =
        caught.expect("the sabotaged client passed every seed: the model misses hung futures");
    assert!(error.contains("subscribe did not resolve"), "{error}");
}
