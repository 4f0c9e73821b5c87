//! The demo: an embedded server and clients in one process, streaming through a proxy that
//! cuts connections, with a token renewed mid-stream — then a check that nothing was lost,
//! duplicated or reordered and that every publish resolved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tether_core::client::ClientConfig;
use tether_core::embed::{DeliveryAudit, unix_ms};
use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, Store, mint_token};

use crate::proxy::{Proxy, ProxyConfig};
use crate::{ChannelEvent, Client, ClientOptions, Server, ServerConfig};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Publishing clients.
    pub publishers: usize,
    /// Subscribing clients (the first authenticates with short-lived tokens).
    pub subscribers: usize,
    /// Messages each publisher sends.
    pub messages: usize,
    /// Pause between two publishes of one publisher.
    pub interval: Duration,
    /// The proxy cuts each connection after a random time in this range.
    pub cut_after: Option<(Duration, Duration)>,
    /// The proxy cuts one random live connection after each random interval in this range.
    pub cut_every: Option<(Duration, Duration)>,
    /// Adjusts every client's configuration (tests shorten the backoff).
    pub tune: fn(&mut ClientConfig),
    /// Lifetime of the tokens of the token-authenticated subscriber.
    pub token_lifetime: Duration,
    /// Seed of the proxy's fault schedule.
    pub seed: u64,
    /// The server's store (opened again for each start), if any: e.g. `tether_engine` on a
    /// temporary directory.
    pub store: Option<StoreFactory>,
    /// With a store: the embedded server is stopped as a crash would ([`Server::abort`])
    /// this long after the publishers start, and started again on the same store.
    pub restart_after: Option<Duration>,
}

/// Opens the demo server's store; called at each start.
#[derive(Clone)]
pub struct StoreFactory(pub Arc<dyn Fn() -> std::io::Result<Arc<dyn Store>> + Send + Sync>);

impl std::fmt::Debug for StoreFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreFactory")
    }
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            publishers: 3,
            subscribers: 3,
            messages: 1000,
            interval: Duration::from_millis(10),
            cut_after: Some((Duration::from_millis(300), Duration::from_millis(1500))),
            cut_every: None,
            tune: |_| {},
            token_lifetime: Duration::from_secs(8),
            seed: 7,
            store: None,
            restart_after: None,
        }
    }
}

/// What happened, and whether every guarantee held.
#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    /// Publishes acknowledged.
    pub acked: usize,
    /// Publishes that failed (with their codes).
    pub failed: Vec<String>,
    /// Messages each subscriber received.
    pub received: Vec<usize>,
    /// Acknowledged messages a subscriber never received.
    pub lost: usize,
    /// Messages a subscriber received twice.
    pub duplicated: usize,
    /// Messages a subscriber received out of their publisher's order.
    pub reordered: usize,
    /// Discontinuities reported to subscribers.
    pub discontinuities: u64,
    /// Connections the proxy cut.
    pub cuts: u64,
    /// Reconnections of all clients.
    pub reconnects: u64,
    /// Of those, sessions resumed.
    pub resumed: u64,
    /// Token renewals, in-band.
    pub renewals: u64,
    /// Hard restarts of the embedded server.
    pub restarts: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Subscribers still short of the acknowledged messages when the run gave up waiting, or
    /// whose stream ended early: what their client said (state, last error, counters).
    pub stalled: Vec<String>,
}

impl DemoReport {
    /// Whether every guarantee held.
    ///
    /// The demo's server retains every message of the run, so a resuming subscriber must
    /// always continue: a discontinuity counts as a failure here too.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.discontinuities == 0
            && self.failed.is_empty()
            && self.stalled.is_empty()
    }
}

const KEY: &str = "demo";
const SECRET: &str = "demo-secret";
/// Time for a subscriber to catch up once connected, on top of its longest backoff delay.
const CATCH_UP: Duration = Duration::from_secs(15);

/// Runs the demo on loopback and reports.
pub async fn run(options: DemoOptions) -> std::io::Result<DemoReport> {
    let started = Instant::now();
    let key = ApiKey {
        name: KEY.into(),
        secret: SECRET.into(),
        capabilities: Capabilities::all(),
    };
    let hub = {
        let mut config = HubConfig::default();
        config.keys = vec![key.clone()];
        // Keep every message of the run, so a reconnecting subscriber always catches up.
        config.retention_count = 100_000;
        config
    };
    let server_config = |store: &Option<StoreFactory>| -> std::io::Result<ServerConfig> {
        let mut config = ServerConfig::new(hub.clone());
        if let Some(factory) = store {
            config.store = Some((factory.0)()?);
        }
        Ok(config)
    };
    let mut server = Server::bind("127.0.0.1:0", server_config(&options.store)?).await?;
    let server_address = server.local_addr();
    let mut proxy_config = ProxyConfig::new(server.local_addr());
    proxy_config.seed = options.seed;
    proxy_config.cut_after = options.cut_after;
    proxy_config.cut_every = options.cut_every;
    let proxy = Proxy::start(proxy_config).await?;
    let url = format!("ws://{}/", proxy.local_addr());

    let mut subscribers = Vec::new();
    let mut clients = Vec::new();
    for index in 0..options.subscribers {
        let mut client_options = if index == 0 {
            let key = key.clone();
            let lifetime = options.token_lifetime;
            ClientOptions::token_provider(move || {
                let key = key.clone();
                async move {
                    let now = unix_ms(SystemTime::now()) / 1000;
                    let claims = Claims::new("demo-subscriber", Capabilities::all(), now, lifetime);
                    mint_token(&key, &claims).map_err(|e| e.to_string())
                }
            })
        } else {
            ClientOptions::api_key(KEY, SECRET)
        };
        (options.tune)(&mut client_options.config);
        let client = Client::connect(&url, client_options).map_err(std::io::Error::other)?;
        let channel = client.channel("demo").map_err(std::io::Error::other)?;
        let subscription = channel.subscribe().await.map_err(std::io::Error::other)?;
        clients.push(client.clone());
        subscribers.push(subscription);
    }
    // Subscribers collect what they receive: (publisher, sequence) in order.
    let expected_total = options.publishers * options.messages;
    let received_counts: Vec<Arc<AtomicU64>> = (0..options.subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let collectors: Vec<_> = subscribers
        .into_iter()
        .zip(received_counts.iter().cloned())
        .map(|(mut subscription, count)| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut discontinuities = 0u64;
                let mut ended = None;
                while let Some(event) = subscription.next().await {
                    match event {
                        ChannelEvent::Message(message) => {
                            seen.extend(DeliveryAudit::parse_label(&message.message.data));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        ChannelEvent::Discontinuity { .. } => discontinuities += 1,
                        ChannelEvent::Failed(error) => {
                            ended = Some(error);
                            break;
                        }
                        _ => {}
                    }
                }
                (seen, discontinuities, ended)
            })
        })
        .collect();

    let mut publishers = Vec::new();
    for index in 0..options.publishers {
        let mut client_options = ClientOptions::api_key(KEY, SECRET);
        (options.tune)(&mut client_options.config);
        let client = Client::connect(&url, client_options).map_err(std::io::Error::other)?;
        clients.push(client.clone());
        let channel = client.channel("demo").map_err(std::io::Error::other)?;
        let (messages, interval) = (options.messages, options.interval);
        publishers.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(messages);
            for sequence in 0..messages {
                // Publishes are queued in order at the call; each resolves on its own ACK.
                let publish = channel.publish("n", DeliveryAudit::label(index, sequence));
                pending.push(tokio::spawn(publish));
                tokio::time::sleep(interval).await;
            }
            let mut outcomes = Vec::with_capacity(messages);
            for (sequence, handle) in pending.into_iter().enumerate() {
                let outcome = handle
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                outcomes.push((sequence, outcome));
            }
            outcomes
        }));
    }

    let mut report = DemoReport::default();
    if let (Some(after), Some(_)) = (options.restart_after, &options.store) {
        // A hard stop mid-stream: no client is told, the store is not closed cleanly.
        tokio::time::sleep(after).await;
        server.abort().await;
        server = Server::bind(server_address, server_config(&options.store)?).await?;
        report.restarts += 1;
    }
    let mut audit = DeliveryAudit::new();
    for (index, publisher) in publishers.into_iter().enumerate() {
        for (sequence, outcome) in publisher.await.map_err(std::io::Error::other)? {
            match outcome {
                Ok(()) => {
                    report.acked += 1;
                    audit.acked(index, sequence);
                }
                Err(error) => report
                    .failed
                    .push(format!("publisher {index} message {sequence}: {error}")),
            }
        }
    }
    // Every publish resolved: stop the faults and let subscribers catch up. A subscriber whose
    // connections kept being cut is backing off (§6.4: the delay grows while no connection
    // stays up for `stable_after`), so it may wait up to the backoff cap before its next
    // attempt; the wait is bounded by that cap plus time to catch up.
    proxy.stop_faults();
    let mut config = ClientOptions::api_key(KEY, SECRET).config;
    (options.tune)(&mut config);
    let catch_up = config.backoff_cap + CATCH_UP;
    let deadline = Instant::now() + catch_up;
    while Instant::now() < deadline
        && received_counts
            .iter()
            .any(|c| (c.load(Ordering::Relaxed) as usize) < report.acked.min(expected_total))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (index, count) in received_counts.iter().enumerate() {
        let received = count.load(Ordering::Relaxed) as usize;
        if received < report.acked.min(expected_total) {
            let client = &clients[index];
            let stats = client.stats();
            report.stalled.push(format!(
                "subscriber {index}: {received} of {} received after waiting {} s; state {:?}, last error {:?}, connects {}, resumes {}, renewals {}",
                report.acked,
                catch_up.as_secs(),
                *client.state().borrow(),
                client.last_error(),
                stats.connects.load(Ordering::Relaxed),
                stats.resumes.load(Ordering::Relaxed),
                stats.renewals.load(Ordering::Relaxed),
            ));
        }
    }
    report.cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    for client in &clients {
        let stats = client.stats();
        let connects = stats.connects.load(Ordering::Relaxed);
        report.reconnects += connects.saturating_sub(1);
        report.resumed += stats
            .resumes
            .load(Ordering::Relaxed)
            .saturating_sub(stats.resume_failures.load(Ordering::Relaxed));
        report.renewals += stats.renewals.load(Ordering::Relaxed);
    }
    for client in &clients {
        client.close().await;
    }
    for (index, collector) in collectors.into_iter().enumerate() {
        let (seen, discontinuities, ended) = collector.await.map_err(std::io::Error::other)?;
        // Closing the client ends each stream with `closed`; anything else ended it early.
        if let Some(error) = ended.filter(|e| e.code != tether_core::ErrorCode::ConnectionClosed) {
            report
                .stalled
                .push(format!("subscriber {index}: stream ended with {error}"));
        }
        report.discontinuities += discontinuities;
        audit.subscriber(seen);
    }
    let audited = audit.report();
    report.received = audited.received;
    report.lost = audited.lost;
    report.duplicated = audited.duplicated;
    report.reordered = audited.reordered;
    proxy.stop();
    server.shutdown().await;
    report.elapsed = started.elapsed();
    Ok(report)
}
