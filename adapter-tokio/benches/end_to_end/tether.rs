//! The scenarios on tether: the tokio adapter's server and clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tether_core::client::ConnectionState;
use tether_core::server::{ApiKey, Capabilities, HubConfig};
use tether_tokio::{
    Channel, ChannelEvent, Client, ClientOptions, Server, ServerConfig, Subscription,
};
use tokio::sync::Notify;

use crate::common::{
    Measure, free_port, histogram, nanos_since, payload, per_connection, percentiles, rss,
    spawn_self, stamp_of, wait_for_port,
};
use crate::gate::Gate;

/// The hub of every scenario: one key; room for 10,000+ connections; everything of a run
/// retained so a resuming subscriber always catches up.
pub fn hub_config() -> HubConfig {
    {
        let mut config = HubConfig::default();
        config.keys = vec![ApiKey {
            name: "bench".into(),
            secret: "bench-secret".into(),
            capabilities: Capabilities::all(),
        }];
        config.max_connections = 20_000;
        config.max_sessions = 40_000;
        config.retention_count = 100_000;
        config
    }
}

fn options() -> ClientOptions {
    ClientOptions::api_key("bench", "bench-secret")
}

/// The transport the clients of a scenario use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    /// The HTTP binding (§2.5), streaming (the fallback where WebSocket is blocked).
    Http,
}

fn options_for(transport: Transport) -> ClientOptions {
    let mut options = options();
    options.config.fallback.http_only = transport == Transport::Http;
    options
}

async fn server() -> Server {
    Server::bind("127.0.0.1:0", ServerConfig::new(hub_config()))
        .await
        .expect("binds")
}

/// The child process of the memory scenario: a server on `port` until killed.
pub async fn serve(port: u16) {
    let _server = Server::bind(("127.0.0.1", port), ServerConfig::new(hub_config()))
        .await
        .expect("binds");
    std::future::pending::<()>().await;
}

/// Waits until `client` is connected (bounded).
async fn connected(client: &Client) -> bool {
    tokio::time::timeout(Duration::from_secs(60), client.connected())
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Counts messages on `subscription` until `count`, then signals.
fn count_messages(mut subscription: Subscription, count: usize, done: Arc<(AtomicUsize, Notify)>) {
    tokio::spawn(async move {
        let mut seen = 0;
        while seen < count {
            match subscription.next().await {
                Some(ChannelEvent::Message(_)) => seen += 1,
                Some(_) => {}
                None => return,
            }
        }
        if done.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            done.1.notify_one();
        }
    });
}

/// Publishes `messages` payloads with `window` publishes in flight; each must be acknowledged.
async fn publish_acknowledged(channel: &Channel, messages: usize, window: usize) {
    futures_util::stream::iter(0..messages)
        .map(|n| channel.publish("m", payload(n as u64)))
        .buffer_unordered(window)
        .for_each(|r| {
            r.expect("acknowledged");
            async {}
        })
        .await;
}

/// Waits (bounded) until every subscriber counted down `done`; `waiting` was taken before
/// the run started, so a notification during the run is not missed.
async fn all_done(done: &(AtomicUsize, Notify), waiting: impl std::future::Future<Output = ()>) {
    if done.0.load(Ordering::Acquire) > 0 {
        tokio::time::timeout(Duration::from_secs(120), waiting)
            .await
            .expect("every subscriber got every message");
    }
}

/// a. One publisher, `subscribers` subscribers, `messages` messages: deliveries per second.
pub async fn fan_out(
    subscribers: usize,
    messages: usize,
    window: usize,
    transport: Transport,
) -> Measure {
    let server = server().await;
    let url = format!("ws://{}/", server.local_addr());
    let done = Arc::new((AtomicUsize::new(subscribers), Notify::new()));
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let client = Client::connect(&url, options_for(transport)).expect("url");
        let subscription = client
            .channel("bench")
            .expect("name")
            .subscribe()
            .await
            .expect("attached");
        count_messages(subscription, messages, done.clone());
        clients.push(client);
    }
    let publisher = Client::connect(&url, options_for(transport)).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let started = Instant::now();
    let waiting = done.1.notified();
    publish_acknowledged(&channel, messages, window).await;
    all_done(&done, waiting).await;
    let elapsed = started.elapsed();
    drop(clients);
    server.shutdown().await;
    Measure::Rate((subscribers * messages) as f64 / elapsed.as_secs_f64())
}

/// b. Publish → ACK on one connection with `window` publishes in flight: messages/s.
pub async fn publish_ack(messages: usize, window: usize) -> Measure {
    let server = server().await;
    let url = format!("ws://{}/", server.local_addr());
    let publisher = Client::connect(&url, options()).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let started = Instant::now();
    publish_acknowledged(&channel, messages, window).await;
    let elapsed = started.elapsed();
    server.shutdown().await;
    Measure::Rate(messages as f64 / elapsed.as_secs_f64())
}

/// b″. The same on a durable server (`--data-dir`: the embedded store, synced per batch
/// before each acknowledgement).
pub async fn publish_ack_durable(
    messages: usize,
    window: usize,
    durability: tether_engine::Durability,
) -> Measure {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = ServerConfig::new(hub_config());
    let mut engine_config = tether_engine::EngineConfig::for_hub(&config.hub);
    engine_config.durability = durability;
    let engine = tether_engine::Engine::open(dir.path(), engine_config).expect("opens the store");
    config.store = Some(std::sync::Arc::new(engine));
    let server = Server::bind("127.0.0.1:0", config).await.expect("binds");
    let url = format!("ws://{}/", server.local_addr());
    let publisher = Client::connect(&url, options()).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let started = Instant::now();
    publish_acknowledged(&channel, messages, window).await;
    let elapsed = started.elapsed();
    server.shutdown().await;
    Measure::Rate(messages as f64 / elapsed.as_secs_f64())
}

/// c. One publisher at `rate` messages/s for `count` messages, one subscriber: latency from
/// publish call to delivery.
pub async fn latency(rate: u64, count: usize, transport: Transport) -> Measure {
    let server = server().await;
    let url = format!("ws://{}/", server.local_addr());
    let subscriber = Client::connect(&url, options_for(transport)).expect("url");
    let mut subscription = subscriber
        .channel("bench")
        .expect("name")
        .subscribe()
        .await
        .expect("attached");
    let publisher = Client::connect(&url, options_for(transport)).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let base = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut h = histogram();
        let mut seen = 0;
        while seen < count {
            if let Some(ChannelEvent::Message(m)) = subscription.next().await {
                let micros = nanos_since(base).saturating_sub(stamp_of(&m.message.data)) / 1000;
                h.saturating_record(micros.max(1));
                seen += 1;
            }
        }
        h
    });
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for _ in 0..count {
        ticks.tick().await;
        tokio::spawn(channel.publish("m", payload(nanos_since(base))));
    }
    let h = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("all delivered")
        .expect("receiver");
    server.shutdown().await;
    percentiles(&h)
}

/// `count` clients connected to `url`, 500 at a time (each batch connected before the
/// next starts, so the server's handshake cap is not the bottleneck).
async fn connect_all(url: &str, count: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(500) {
        let start = clients.len();
        for _ in 0..500.min(count - batch * 500) {
            clients.push(Client::connect(url, options()).expect("url"));
        }
        for client in &clients[start..] {
            assert!(connected(client).await, "connected");
        }
    }
    clients
}

/// d. The server's memory per idle connection with `count` connected clients.
pub async fn idle_memory(count: usize) -> Measure {
    let port = free_port();
    let child = spawn_self("serve-tether", port).expect("spawns the server");
    assert!(wait_for_port(port).await, "the server listens");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(child.0.id()).expect("rss");
    let url = format!("ws://127.0.0.1:{port}/");
    let clients = connect_all(&url, count).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(child.0.id()).expect("rss");
    drop(clients);
    drop(child);
    per_connection(before, after, count)
}

/// e. A subscriber misses `missed` messages while its network is down; time from the
/// network coming back to the last missed message, median of `rounds`.
pub async fn resume_catch_up(missed: usize, rounds: usize) -> Measure {
    let server = server().await;
    let gate = Gate::start(server.local_addr()).await;
    let subscriber =
        Client::connect(&format!("ws://{}/", gate.local_addr()), options()).expect("url");
    let mut subscription = subscriber
        .channel("bench")
        .expect("name")
        .subscribe()
        .await
        .expect("attached");
    let publisher =
        Client::connect(&format!("ws://{}/", server.local_addr()), options()).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let mut times = Vec::new();
    let mut next = 0u64;
    for _ in 0..rounds {
        gate.close();
        let mut state = subscriber.state();
        tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| *s != ConnectionState::Connected),
        )
        .await
        .expect("the subscriber saw the drop")
        .expect("state");
        let publishes: Vec<_> = (0..missed)
            .map(|n| channel.publish("m", payload(next + n as u64)))
            .collect();
        for publish in futures_util::future::join_all(publishes).await {
            publish.expect("acknowledged");
        }
        next += missed as u64;
        gate.open();
        let started = Instant::now();
        subscriber.network_is_back();
        let mut seen = 0;
        while seen < missed {
            let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .expect("caught up in time");
            match event {
                Some(ChannelEvent::Message(_)) => seen += 1,
                Some(ChannelEvent::Discontinuity { .. }) => panic!("continuity lost"),
                Some(_) => {}
                None => panic!("subscription ended"),
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    server.shutdown().await;
    Measure::Millis(times[times.len() / 2].as_secs_f64() * 1000.0)
}

/// a, server side only: the tether server fanning out to `subscribers` thin WebSocket
/// readers that speak just enough of the protocol to attach (connect, attach) and then only
/// count frames — no client state machine. Separates the server's cost from the clients'.
pub async fn fan_out_thin(subscribers: usize, messages: usize, window: usize) -> Measure {
    use futures_util::SinkExt;
    use tether_core::wire::{self, ChannelName, ClientFrame, Credentials, Limits};
    use tokio_tungstenite::tungstenite::Message;

    let server = server().await;
    let url = format!("ws://{}/", server.local_addr());
    let connect = wire::encode(
        &ClientFrame::Connect {
            version: wire::PROTOCOL_VERSION,
            credentials: Credentials::ApiKey {
                name: "bench".into(),
                secret: "bench-secret".into(),
            },
            client_id: None,
            resume: None,
            heartbeat_interval_ms: None,
            options: None,
        },
        &Limits::DEFAULT,
    )
    .expect("encodes");
    let attach = wire::encode(
        &ClientFrame::Attach {
            channel: ChannelName::new("bench").expect("name"),
            from: None,
        },
        &Limits::DEFAULT,
    )
    .expect("encodes");
    let done = Arc::new((AtomicUsize::new(subscribers), Notify::new()));
    let attached = Arc::new((AtomicUsize::new(subscribers), Notify::new()));
    for _ in 0..subscribers {
        let config = tether_tokio::websocket_config(64 * 1024);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
            .await
            .expect("connects");
        ws.send(Message::Binary(connect.clone()))
            .await
            .expect("sent");
        ws.send(Message::Binary(attach.clone()))
            .await
            .expect("sent");
        let (done, attached) = (done.clone(), attached.clone());
        tokio::spawn(async move {
            // connected, attached, then the messages.
            let mut frames = 0;
            while frames < messages + 2 {
                match ws.next().await {
                    Some(Ok(Message::Binary(_))) => {
                        frames += 1;
                        if frames == 2 && attached.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                            attached.1.notify_one();
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
            if done.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                done.1.notify_one();
            }
            // Stay connected (and answer pings) until the run ends.
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    let waiting_attach = attached.1.notified();
    if attached.0.load(Ordering::Acquire) > 0 {
        tokio::time::timeout(Duration::from_secs(60), waiting_attach)
            .await
            .expect("every thin subscriber attached");
    }
    let publisher = Client::connect(&url, options()).expect("url");
    connected(&publisher).await;
    let channel = publisher.channel("bench").expect("name");
    let waiting = done.1.notified();
    let started = Instant::now();
    publish_acknowledged(&channel, messages, window).await;
    all_done(&done, waiting).await;
    let elapsed = started.elapsed();
    server.shutdown().await;
    Measure::Rate((subscribers * messages) as f64 / elapsed.as_secs_f64())
}

/// What a reconnect storm looked like from the clients.
pub struct Storm {
    /// The largest share of the clients' connection attempts in one 100 ms window.
    pub peak_share: f64,
    /// Connection attempts per client, from the kill until all were back.
    pub attempts_per_client: f64,
    /// From the kill until every client was connected again.
    pub all_back_after: Duration,
}

/// f. Reconnect storm on real sockets: `count` clients connected to a server process that
/// is killed (SIGKILL) and started again on the same port `down` later. Every transition to
/// Connecting after the kill is an attempt (those refused while the server is down too);
/// they are counted per 100 ms window. `None` if the clients were not all back within
/// `down` + 60 s.
pub async fn reconnect_storm(count: usize, down: Duration) -> Option<Storm> {
    let port = free_port();
    let mut child = spawn_self("serve-tether", port).expect("spawns the server");
    assert!(wait_for_port(port).await, "the server listens");
    let url = format!("ws://127.0.0.1:{port}/");
    let clients = connect_all(&url, count).await;
    // Each client's transitions, stamped as they are read; the stream keeps up to 64
    // changes for a slow reader, far more than a client goes through here.
    let attempts = Arc::new(std::sync::Mutex::new(Vec::<Instant>::with_capacity(
        count * 4,
    )));
    let back = Arc::new(AtomicUsize::new(0));
    let all_back = Arc::new(Notify::new());
    let mut watchers = Vec::with_capacity(count);
    for client in &clients {
        let mut changes = client.state_changes();
        let (attempts, back, all_back) = (attempts.clone(), back.clone(), all_back.clone());
        watchers.push(tokio::spawn(async move {
            let mut lost = false;
            while let Some(change) = changes.next().await {
                match change.current {
                    ConnectionState::Connecting => {
                        lost = true;
                        if let Ok(mut attempts) = attempts.lock() {
                            attempts.push(Instant::now());
                        }
                    }
                    ConnectionState::Connected if lost => {
                        if back.fetch_add(1, Ordering::SeqCst) + 1 == count {
                            all_back.notify_one();
                        }
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }
    let kill = Instant::now();
    drop(child);
    tokio::time::sleep(down).await;
    child = spawn_self("serve-tether", port).expect("restarts the server");
    let in_time = tokio::time::timeout(down + Duration::from_secs(60), all_back.notified())
        .await
        .is_ok();
    let all_back_after = kill.elapsed();
    for watcher in watchers {
        watcher.abort();
    }
    drop(clients);
    drop(child);
    if !in_time {
        return None;
    }
    let attempts = attempts.lock().map(|a| a.clone()).unwrap_or_default();
    let mut windows = std::collections::BTreeMap::<u128, usize>::new();
    for at in &attempts {
        *windows
            .entry(at.saturating_duration_since(kill).as_millis() / 100)
            .or_default() += 1;
    }
    let peak = windows.values().copied().max().unwrap_or(0);
    Some(Storm {
        peak_share: peak as f64 / count as f64,
        attempts_per_client: attempts.len() as f64 / count as f64,
        all_back_after,
    })
}
