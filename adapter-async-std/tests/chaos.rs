//! The chaos test of the tokio adapter, with this adapter's client and server: a proxy cuts
//! a random connection every 25–250 ms while 10 publishers send 2,000 messages each to 10
//! subscribers; then every guarantee is checked from the outside.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use support::{server, sleep, url, within};
use tether_async_std::{ChannelEvent, Client, ClientOptions, Spawner};
use tether_core::embed::DeliveryAudit;
use tether_tokio::proxy::{Proxy, ProxyConfig};

on_both_runtimes!(chaos_20000_messages_through_a_cutting_proxy_keep_every_guarantee);

const PUBLISHERS: usize = 10;
const SUBSCRIBERS: usize = 10;
const MESSAGES: usize = 2_000;

/// One subscriber's receipts: labels in arrival order, and discontinuities seen.
type Receipts = (Vec<(usize, usize)>, usize);

async fn chaos_20000_messages_through_a_cutting_proxy_keep_every_guarantee(spawner: Spawner) {
    let server = server(&spawner).await;
    let tokio = support::tokio_runtime();
    let mut proxy = ProxyConfig::new(server.local_addr());
    proxy.seed = 11;
    proxy.cut_every = Some((Duration::from_millis(25), Duration::from_millis(250)));
    let proxy = tokio.block_on(Proxy::start(proxy)).expect("proxy");
    let address = url(proxy.local_addr());
    let mut options = ClientOptions::api_key("app", "app-secret");
    options.transport.spawner = spawner.clone();
    // Connections live seconds at most here; keep the backoff short so the run ends.
    options.config.stable_after = Duration::from_secs(1);
    options.config.backoff_cap = Duration::from_secs(2);
    let connect = || Client::connect(&address, options.clone()).expect("url");

    // Subscribers: each collects its receipts on its own task until told to stop.
    let received = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let (receipts, collected) = async_channel::unbounded::<Receipts>();
    let mut clients = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let client = connect();
        let mut events = within(
            "subscribe",
            client.channel("chaos").expect("name").subscribe(),
        )
        .await
        .expect("attached");
        let (received, stopped, receipts) = (received.clone(), stopped.clone(), receipts.clone());
        spawner.spawn(async move {
            let mut seen = Vec::new();
            let mut discontinuities = 0;
            loop {
                let next = futures_lite::future::or(events.next(), async {
                    let _ = stopped.recv().await;
                    None
                });
                match next.await {
                    Some(ChannelEvent::Message(m)) => {
                        seen.extend(DeliveryAudit::parse_label(&m.message.data));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(ChannelEvent::Discontinuity { .. }) => discontinuities += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            let _ = receipts.send((seen, discontinuities)).await;
        });
        clients.push(client);
    }

    // Publishers, concurrently: each queues its publishes in order, 2 ms apart; each
    // publish resolves on its own ACK, on its own task.
    let (outcomes, results) = async_channel::unbounded();
    for publisher in 0..PUBLISHERS {
        let client = connect();
        let channel = client.channel("chaos").expect("name");
        clients.push(client);
        let (outcomes, tasks) = (outcomes.clone(), spawner.clone());
        spawner.spawn(async move {
            for sequence in 0..MESSAGES {
                let publish = channel.publish("n", DeliveryAudit::label(publisher, sequence));
                let outcomes = outcomes.clone();
                tasks.spawn(async move {
                    let _ = outcomes.send((publisher, sequence, publish.await)).await;
                });
                sleep(Duration::from_millis(2)).await;
            }
        });
    }
    drop(outcomes);

    // G4: every publish resolves; under these faults every one must be acknowledged.
    let mut audit = DeliveryAudit::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    while let Ok((publisher, sequence, outcome)) =
        within("every publish resolves", results.recv()).await
    {
        match outcome {
            Ok(()) => audit.acked(publisher, sequence),
            Err(error) => failures.push(format!("{publisher}-{sequence}: {error}")),
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "publishing too slow"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failed, first {:?}",
        failures.len(),
        failures.first()
    );

    // Let subscribers catch up (bounded), then stop them and audit.
    let total = PUBLISHERS * MESSAGES * SUBSCRIBERS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    stop.close();
    let mut discontinuities = 0;
    for _ in 0..SUBSCRIBERS {
        let (seen, gaps) = within("receipts", collected.recv()).await.expect("sent");
        discontinuities += gaps;
        audit.subscriber(seen);
    }
    let report = audit.report();
    assert_eq!(report.acked, PUBLISHERS * MESSAGES);
    assert_eq!(report.lost, 0, "G1: no acknowledged message lost");
    assert_eq!(report.duplicated, 0, "G2: no duplicate");
    assert_eq!(report.reordered, 0, "G3: in order");
    assert_eq!(
        discontinuities, 0,
        "the server retains every message of the run"
    );
    assert!(
        report.received.iter().all(|n| *n == PUBLISHERS * MESSAGES),
        "every subscriber got every message: {:?}",
        report.received
    );
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    assert!(cuts >= 20, "{cuts} cuts");
    // G6: with the faults stopped, every client is connected again.
    proxy.stop_cutting();
    for client in &clients {
        within("reconnected after the faults stopped", client.connected())
            .await
            .expect("connected");
    }
    for client in &clients {
        client.close().await;
    }
    proxy.stop();
    tokio.shutdown_background();
    server.shutdown().await;
}
