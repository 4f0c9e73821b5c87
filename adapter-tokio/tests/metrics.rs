//! Issue 19, metrics and health: `/metrics`, `/health` and `/ready` on the server's own port,
//! scraped after a scripted workload on a durable server — publishes with ACK, deliveries,
//! a failed authentication, a resume after a cut transport, a slow consumer — show every
//! family with the values the workload implies.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_core::server::{ApiKey, Capabilities, HubConfig};
use tether_core::wire::{self, ClientFrame, Credentials, Limits, PROTOCOL_VERSION};
use tether_tokio::proxy::{Proxy, ProxyConfig};
use tether_tokio::{ChannelEvent, Client, ClientOptions, Server, ServerConfig};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{LIMIT, get};

/// The value of the sample `name` (with its labels, as printed) in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_workload_show_every_family() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut hub = HubConfig::default();
    hub.keys = vec![ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }];
    hub.max_pending_bytes = 64 * 1024;
    let mut config = ServerConfig::new(hub);
    let engine = tether_engine::Engine::open(
        dir.path(),
        tether_engine::EngineConfig::for_hub(&config.hub),
    )
    .expect("opens the store");
    config.store = Some(std::sync::Arc::new(engine));
    let server = Server::bind("127.0.0.1:0", config).await.expect("binds");
    let address = server.local_addr();
    let url = format!("ws://{address}/");

    let health = get(address, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(address, "/ready").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // A subscriber behind a proxy (cut once: it resumes), a publisher, 20 publishes.
    let proxy = Proxy::start(ProxyConfig::new(address))
        .await
        .expect("a proxy");
    let subscriber = Client::connect(
        &format!("ws://{}/", proxy.local_addr()),
        ClientOptions::api_key("app", "app-secret"),
    )
    .expect("url");
    let mut messages = timeout(LIMIT, subscriber.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("subscribes");
    let publisher =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let news = publisher.channel("news").expect("name");
    for n in 0..10 {
        timeout(LIMIT, news.publish("n", format!("m{n}")))
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    assert_eq!(proxy.cut_all(), 1);
    for n in 10..20 {
        timeout(LIMIT, news.publish("n", format!("m{n}")))
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    let mut received = 0;
    while received < 20 {
        match timeout(LIMIT, messages.next()).await.expect("in time") {
            Some(ChannelEvent::Message(_)) => received += 1,
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
    // A failed authentication.
    let intruder = Client::connect(&url, ClientOptions::api_key("app", "wrong")).expect("url");
    assert!(
        timeout(LIMIT, intruder.connected())
            .await
            .expect("in time")
            .is_err()
    );
    // A slow consumer: attaches, then never reads while 200 KiB are published.
    let (mut raw, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connects");
    let connect = ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::ApiKey {
            name: "app".into(),
            secret: "app-secret".into(),
        },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    };
    let attach = ClientFrame::Attach {
        channel: wire::ChannelName::new("news").expect("name"),
        from: None,
    };
    for frame in [connect, attach] {
        let bytes = wire::encode(&frame, &Limits::PROTOCOL_MAX).expect("encodes");
        raw.send(Message::Binary(bytes)).await.expect("sends");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Until the hub drops it (the kernel's socket buffers take some megabytes first).
    let mut big = 0u32;
    while server
        .service()
        .stats()
        .await
        .expect("the hub runs")
        .totals
        .slow_consumers
        == 0
    {
        assert!(big < 1_000, "never dropped as a slow consumer");
        timeout(LIMIT, news.publish("big", vec![b'x'; 60 * 1024]))
            .await
            .expect("in time")
            .expect("acknowledged");
        big += 1;
    }
    let published = f64::from(20 + big);
    // The subscriber reads what follows.
    let mut received = 0;
    while received < big {
        match timeout(LIMIT, messages.next()).await.expect("in time") {
            Some(ChannelEvent::Message(_)) => received += 1,
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }

    let text = get(address, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{text}"
    );
    // Gauges now: the subscriber and the publisher (the raw client was dropped as slow,
    // the intruder refused).
    assert_eq!(sample(&text, "tether_connections"), 2.0);
    assert!(sample(&text, "tether_sessions") >= 2.0);
    assert_eq!(sample(&text, "tether_channels"), 1.0);
    assert_eq!(sample(&text, "tether_messages_stored_total"), published);
    // Every one to the subscriber, and what the slow one got before it was dropped.
    assert!(sample(&text, "tether_messages_delivered_total") > published);
    assert_eq!(
        sample(&text, r#"tether_publishes_total{outcome="acknowledged"}"#),
        published
    );
    assert_eq!(
        sample(&text, r#"tether_publishes_total{outcome="refused"}"#),
        0.0
    );
    assert_eq!(sample(&text, "tether_publish_ack_seconds_count"), published);
    assert_eq!(
        sample(&text, r#"tether_publish_ack_seconds_bucket{le="+Inf"}"#),
        published
    );
    assert!(sample(&text, "tether_received_bytes_total") > f64::from(big) * 60.0 * 1024.0);
    assert!(sample(&text, "tether_sent_bytes_total") > f64::from(big) * 60.0 * 1024.0);
    assert_eq!(sample(&text, "tether_slow_consumers_total"), 1.0);
    assert_eq!(
        sample(&text, r#"tether_resumes_total{outcome="resumed"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"tether_auth_failures_total{code="invalid_credentials"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, r#"tether_disconnects_total{code="slow_consumer"}"#),
        1.0
    );
    // One sync per batch at least: every publish went through the store.
    assert!(sample(&text, "tether_store_sync_seconds_count") >= 1.0);
    assert!(sample(&text, "tether_store_sync_seconds_sum") > 0.0);
    assert_eq!(sample(&text, "tether_store_healthy"), 1.0);

    subscriber.close().await;
    publisher.close().await;
    server.shutdown().await;
}
