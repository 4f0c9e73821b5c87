//! End-to-end over loopback: real WebSocket clients and server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_core::ErrorCode;
use tether_core::embed::DeliveryAudit;
use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, Operation, mint_token};
use tether_core::wire::Continuity;
use tether_tokio::demo::{self, DemoOptions};
use tether_tokio::{ChannelEvent, Client, ClientOptions, Credentials, Server, ServerConfig};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(20);

fn key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

fn limited_key() -> ApiKey {
    ApiKey {
        name: "limited".into(),
        secret: "limited-secret".into(),
        capabilities: Capabilities::default()
            .with("public:*", &[Operation::Subscribe, Operation::Publish]),
    }
}

async fn server(change: impl FnOnce(&mut HubConfig)) -> Server {
    let mut hub = {
        let mut config = HubConfig::default();
        config.keys = vec![key(), limited_key()];
        config
    };
    change(&mut hub);
    Server::bind("127.0.0.1:0", ServerConfig::new(hub))
        .await
        .expect("binds")
}

fn url(server: &Server) -> String {
    format!("ws://{}/", server.local_addr())
}

fn token(sub: &str, lifetime: Duration, signing: &ApiKey) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    mint_token(
        signing,
        &Claims::new(sub, Capabilities::all(), now, lifetime),
    )
    .expect("signs")
}

#[tokio::test]
async fn pub_sub_over_loopback_with_acknowledged_publishes() {
    let server = server(|_| {}).await;
    let subscriber =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let publisher =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut events = timeout(LIMIT, subscriber.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached");
    let news = publisher.channel("news").expect("name");
    for n in 0..10 {
        timeout(LIMIT, news.publish("n", format!("m{n}")))
            .await
            .expect("in time")
            .expect("acked");
    }
    let mut received = Vec::new();
    while received.len() < 10 {
        match timeout(LIMIT, events.next()).await.expect("in time") {
            Some(ChannelEvent::Message(message)) => {
                received.push(String::from_utf8_lossy(&message.message.data).into_owned());
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    assert_eq!(
        received,
        (0..10).map(|n| format!("m{n}")).collect::<Vec<_>>()
    );
    let rtt = timeout(LIMIT, publisher.ping())
        .await
        .expect("in time")
        .expect("pong");
    assert!(rtt < Duration::from_secs(5));
    subscriber.close().await;
    publisher.close().await;
    server.shutdown().await;
}

/// Regression: the server's hub task handles queued inputs in bursts, and once took one
/// input past the end of a burst and dropped it — a publish frame lost that way made the
/// hub see a skipped serial and fail the publisher's connection. Several clients flooding
/// one hub on one thread queue far more inputs than one burst.
#[tokio::test(flavor = "current_thread")]
async fn publish_floods_from_several_clients_are_all_acknowledged_and_delivered() {
    const PUBLISHERS: usize = 6;
    const EACH: usize = 1000;
    let server = server(|hub| hub.retention_count = PUBLISHERS * EACH).await;
    let options = || ClientOptions::api_key("app", "app-secret");
    let subscriber = Client::connect(&url(&server), options()).expect("url");
    let mut events = timeout(
        LIMIT,
        subscriber.channel("flood").expect("name").subscribe(),
    )
    .await
    .expect("in time")
    .expect("attached");
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let client = Client::connect(&url(&server), options()).expect("url");
        timeout(LIMIT, client.connected())
            .await
            .expect("in time")
            .expect("connected");
        publishers.push(client);
    }
    // Every publish queued at once, on every client, before any is awaited.
    let mut publishes = Vec::new();
    for (publisher, client) in publishers.iter().enumerate() {
        let channel = client.channel("flood").expect("name");
        publishes
            .extend((0..EACH).map(|n| channel.publish("m", DeliveryAudit::label(publisher, n))));
    }
    let results = timeout(LIMIT * 3, futures_util::future::join_all(publishes))
        .await
        .expect("in time");
    let mut audit = DeliveryAudit::new();
    for (index, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "publish {index} refused: {result:?}");
        audit.acked(index / EACH, index % EACH);
    }
    for client in &publishers {
        assert_eq!(client.stats().connects.load(Ordering::Relaxed), 1);
    }
    let mut received = Vec::new();
    while received.len() < PUBLISHERS * EACH {
        match timeout(LIMIT, events.next()).await.expect("in time") {
            Some(ChannelEvent::Message(m)) => {
                received.extend(DeliveryAudit::parse_label(&m.message.data));
            }
            Some(ChannelEvent::Discontinuity { .. }) => panic!("continuity lost"),
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    audit.subscriber(received);
    let report = audit.report();
    assert_eq!(report.acked, PUBLISHERS * EACH);
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_publish_to_a_forbidden_channel_fails_with_its_code() {
    let server = server(|_| {}).await;
    let client = Client::connect(
        &url(&server),
        ClientOptions::api_key("limited", "limited-secret"),
    )
    .expect("url");
    let allowed = client.channel("public:news").expect("name");
    timeout(LIMIT, allowed.publish("n", "ok"))
        .await
        .expect("in time")
        .expect("allowed");
    let error = timeout(
        LIMIT,
        client.channel("private").expect("name").publish("n", "no"),
    )
    .await
    .expect("in time")
    .expect_err("forbidden");
    assert_eq!(error.code(), ErrorCode::Forbidden);
    let error = timeout(LIMIT, client.channel("private").expect("name").subscribe())
        .await
        .expect("in time")
        .err()
        .expect("refused");
    assert_eq!(error.code(), ErrorCode::Forbidden);
    // The connection stays usable.
    timeout(LIMIT, allowed.publish("n", "still ok"))
        .await
        .expect("in time")
        .expect("allowed");
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_is_renewed_in_band_while_streaming_without_reconnecting() {
    let server = server(|_| {}).await;
    let signing = key();
    let options = ClientOptions::token_provider(move || {
        let token = token("alice", Duration::from_secs(4), &signing);
        async move { Ok(token) }
    });
    let client = Client::connect(&url(&server), options).expect("url");
    let publisher =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut events = timeout(LIMIT, client.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached");
    let news = publisher.channel("news").expect("name");
    let mut received = 0;
    for n in 0..30 {
        timeout(LIMIT, news.publish("n", format!("{n}")))
            .await
            .expect("in time")
            .expect("acked");
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(Some(event)) = timeout(Duration::from_millis(1), events.next()).await {
            if matches!(event, ChannelEvent::Message(_)) {
                received += 1;
            }
        }
    }
    while received < 30 {
        if let Some(ChannelEvent::Message(_)) =
            timeout(LIMIT, events.next()).await.expect("in time")
        {
            received += 1;
        }
    }
    let stats = client.stats();
    assert!(
        stats.renewals.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "6 s with 4 s tokens"
    );
    assert_eq!(
        stats.connects.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "no reconnect"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_or_expired_token_is_refused_with_its_code() {
    let server = server(|_| {}).await;
    let mut forged = key();
    forged.secret = "guessed".into();
    let bad = Client::connect(
        &url(&server),
        ClientOptions::new(Credentials::Token(token(
            "mallory",
            Duration::from_secs(60),
            &forged,
        ))),
    )
    .expect("url");
    let error = timeout(LIMIT, bad.connected())
        .await
        .expect("in time")
        .expect_err("refused");
    assert_eq!(error.code(), ErrorCode::TokenInvalid);

    // A token that expired more than the leeway ago: the hub answers token_expired, and a
    // fixed token cannot be renewed, so the client fails with token_unavailable.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let stale = mint_token(
        &key(),
        &Claims {
            sub: "alice".into(),
            exp: now - 120,
            iat: now - 180,
            nbf: None,
            aud: None,
            iss: None,
            cap: Capabilities::all(),
        },
    )
    .expect("signs");
    let expired =
        Client::connect(&url(&server), ClientOptions::new(Credentials::Token(stale))).expect("url");
    let error = timeout(LIMIT, expired.connected())
        .await
        .expect("in time")
        .expect_err("refused");
    assert_eq!(error.code(), ErrorCode::TokenUnavailable, "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_and_malformed_frames_close_only_their_connection() {
    let server = server(|_| {}).await;
    let good =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    timeout(LIMIT, good.connected())
        .await
        .expect("in time")
        .expect("connected");
    for payload in [vec![0xffu8, 0x00, 0x13], vec![4u8; 70_000]] {
        let (mut raw, _) = tokio_tungstenite::connect_async(url(&server))
            .await
            .expect("connects");
        let _ = raw.send(Message::Binary(payload.into())).await;
        let closed = timeout(LIMIT, async {
            while let Some(message) = raw.next().await {
                if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                    return true;
                }
            }
            true
        })
        .await
        .expect("closed in time");
        assert!(closed);
    }
    let rtt = timeout(LIMIT, good.ping())
        .await
        .expect("in time")
        .expect("still served");
    assert!(rtt < Duration::from_secs(5));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_sends_no_first_frame_is_closed_after_the_deadline() {
    let server = server(|hub| hub.first_frame_timeout = Duration::from_millis(500)).await;
    let (mut raw, _) = tokio_tungstenite::connect_async(url(&server))
        .await
        .expect("connects");
    let started = tokio::time::Instant::now();
    let ended = timeout(LIMIT, async {
        while let Some(message) = raw.next().await {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "closed by the server");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_disconnected_while_others_keep_going() {
    let server = server(|hub| hub.max_pending_bytes = 256 * 1024).await;
    let reader =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut events = timeout(LIMIT, reader.channel("bulk").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached");
    // A raw subscriber that attaches and then never reads its socket.
    let (mut stalled, _) = tokio_tungstenite::connect_async(url(&server))
        .await
        .expect("connects");
    let frames = [
        tether_core::wire::ClientFrame::Connect {
            version: tether_core::wire::PROTOCOL_VERSION,
            credentials: tether_core::wire::Credentials::ApiKey {
                name: "app".into(),
                secret: "app-secret".into(),
            },
            client_id: None,
            resume: None,
            heartbeat_interval_ms: None,
            options: None,
        },
        tether_core::wire::ClientFrame::Attach {
            channel: tether_core::wire::ChannelName::new("bulk").expect("name"),
            from: None,
        },
    ];
    for frame in &frames {
        let bytes =
            tether_core::wire::encode(frame, &tether_core::wire::Limits::DEFAULT).expect("encodes");
        stalled.send(Message::Binary(bytes)).await.expect("sent");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let publisher =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let bulk = publisher.channel("bulk").expect("name");
    let payload = vec![7u8; 60 * 1024];
    let count = 150; // 9 MB: more than the socket buffers and the pending limit
    let mut received = 0;
    for _ in 0..count {
        timeout(LIMIT, bulk.publish("blob", payload.clone()))
            .await
            .expect("in time")
            .expect("acked");
        while let Ok(Some(event)) = timeout(Duration::from_millis(1), events.next()).await {
            if matches!(event, ChannelEvent::Message(_)) {
                received += 1;
            }
        }
    }
    while received < count {
        if let Some(ChannelEvent::Message(_)) =
            timeout(LIMIT, events.next()).await.expect("in time")
        {
            received += 1;
        }
    }
    // The stalled subscriber was disconnected: its socket ends once its buffers drain.
    let ended = timeout(LIMIT, async {
        while let Some(message) = stalled.next().await {
            if message.is_err() {
                break;
            }
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("ended in time");
    assert_eq!(
        ended,
        Some(ErrorCode::SlowConsumer.close_code()),
        "closed as a slow consumer (42902)"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn chaos_20000_messages_through_a_proxy_cutting_connections_keep_every_guarantee() {
    let report = timeout(
        Duration::from_secs(240),
        demo::run(DemoOptions {
            publishers: 10,
            subscribers: 10,
            messages: 2_000,
            interval: Duration::from_millis(2),
            cut_after: None,
            cut_every: Some((Duration::from_millis(50), Duration::from_millis(500))),
            // Connections live seconds at most here; keep the backoff short so the run ends.
            tune: |config| {
                config.stable_after = Duration::from_secs(1);
                config.backoff_cap = Duration::from_secs(2);
            },
            token_lifetime: Duration::from_secs(6),
            seed: 11,
            store: None,
            restart_after: None,
        }),
    )
    .await
    .expect("finished in time")
    .expect("ran");
    assert_eq!(
        report.acked,
        20_000,
        "every publish acknowledged: {:?}",
        report.failed.first()
    );
    assert!(report.cuts >= 20, "{} cuts", report.cuts);
    assert_eq!(report.lost, 0);
    assert_eq!(
        report.discontinuities, 0,
        "the server retains every message of the run"
    );
    assert_eq!(report.duplicated, 0);
    assert_eq!(report.reordered, 0);
    assert!(
        report.received.iter().all(|n| *n == 20_000),
        "{:?}",
        report.received
    );
}

/// Run by hand (60 s): `cargo test -p tether-tokio --release -- --ignored idle --nocapture`.
#[tokio::test]
#[ignore = "takes 60 s of real time; run by hand for the CPU check"]
async fn idle_client_wakes_only_for_heartbeats() {
    let server = server(|_| {}).await;
    let client =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    timeout(LIMIT, client.connected())
        .await
        .expect("in time")
        .expect("connected");
    let before = client
        .stats()
        .wakeups
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let wakeups = client
        .stats()
        .wakeups
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    println!("idle client woke {wakeups} times in 60 s");
    // With a 15 s interval: the client's own heartbeat deadlines and the hub's heartbeats
    // arriving — about 8 wake-ups a minute, never a busy loop.
    assert!(wakeups <= 12, "{wakeups} wake-ups in 60 s");
    server.shutdown().await;
}

#[tokio::test]
async fn wss_works_with_a_certificate_made_at_test_time() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let mut config = ServerConfig::new({
        let mut config = HubConfig::default();
        config.keys = vec![key()];
        config
    });
    config.transport.tls = Some(
        tether_tokio::tls_from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).expect("tls config"),
    );
    let server = Server::bind("127.0.0.1:0", config).await.expect("binds");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut options = ClientOptions::api_key("app", "app-secret");
    options.transport.tls = Some(std::sync::Arc::new(tls));
    let address = format!("wss://localhost:{}/", server.local_addr().port());
    let client = Client::connect(&address, options).expect("url");
    let mut events = timeout(LIMIT, client.channel("secure").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached over TLS");
    timeout(
        LIMIT,
        client
            .channel("secure")
            .expect("name")
            .publish("n", "encrypted"),
    )
    .await
    .expect("in time")
    .expect("acked");
    loop {
        match timeout(LIMIT, events.next()).await.expect("in time") {
            Some(ChannelEvent::Message(m)) => {
                assert_eq!(&m.message.data[..], b"encrypted");
                break;
            }
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
    // A plain ws:// client cannot talk to the TLS port.
    let plain = Client::connect(
        &format!("ws://127.0.0.1:{}/", server.local_addr().port()),
        ClientOptions::api_key("app", "app-secret"),
    )
    .expect("url");
    assert!(
        timeout(Duration::from_secs(2), plain.connected())
            .await
            .is_err(),
        "never connects"
    );
    server.shutdown().await;
}

/// Issue 14, defect 6: `Client::connect` outside a tokio runtime panicked ("there is no
/// reactor running"); it now fails with `internal` and says why.
#[test]
fn connecting_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let result = std::panic::catch_unwind(|| {
        Client::connect("ws://127.0.0.1:9/", ClientOptions::api_key("app", "secret"))
    });
    let error = match result {
        Ok(Err(error)) => error,
        Ok(Ok(_)) => panic!("a client started without a runtime"),
        Err(_) => panic!("connect panicked outside a runtime"),
    };
    assert_eq!(error.code(), ErrorCode::Internal);
    assert!(error.to_string().contains("tokio runtime"), "{error}");
}

/// Issue 14, defects 2 and 3, on tokio: `subscribe()` with a wrong key fails instead of
/// hanging, and a live subscription ends when the client closes.
#[tokio::test]
async fn a_wrong_key_fails_subscribe_and_close_ends_subscriptions() {
    let server = server(|_| {}).await;
    let wrong =
        Client::connect(&url(&server), ClientOptions::api_key("app", "wrong")).expect("url");
    let refused = timeout(LIMIT, wrong.channel("news").expect("name").subscribe())
        .await
        .expect("answered in time")
        .err()
        .expect("refused");
    assert_eq!(refused.code(), ErrorCode::ConnectionFailed);
    let client =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut events = timeout(LIMIT, client.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached");
    client.close().await;
    let mut last = None;
    while let Some(event) = timeout(LIMIT, events.next())
        .await
        .expect("the stream ends")
    {
        last = Some(event);
    }
    assert!(
        matches!(&last, Some(ChannelEvent::Failed(e)) if e.code == ErrorCode::ConnectionClosed),
        "{last:?}"
    );
    server.shutdown().await;
}

/// The first event of a new subscription: how the channel was attached for it.
async fn attached_continuity(events: &mut tether_tokio::Subscription) -> Continuity {
    match timeout(LIMIT, events.next()).await.expect("in time") {
        Some(ChannelEvent::Attached { continuity, .. }) => continuity,
        other => panic!("expected attached first, got {other:?}"),
    }
}

/// The payload of the next message of `events`, skipping other events.
async fn next_payload(events: &mut tether_tokio::Subscription) -> String {
    loop {
        match timeout(LIMIT, events.next()).await.expect("in time") {
            Some(ChannelEvent::Message(m)) => {
                return String::from_utf8_lossy(&m.message.data).into_owned();
            }
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
}

/// Issue 14, defect 5, on tokio: two subscriptions on one channel each get every message;
/// unsubscribing one keeps the channel for the other; unsubscribing or dropping the last
/// detaches it, so a later subscribe attaches again `fresh` (not `continuous` from the
/// client's own position, as an attach of a still-attached channel is answered).
#[tokio::test]
async fn unsubscribe_and_drop_detach_the_last_subscription_and_subscribing_again_works() {
    let server = server(|_| {}).await;
    let client =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let news = client.channel("news").expect("name");
    let mut first = timeout(LIMIT, news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    let mut second = timeout(LIMIT, news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    timeout(LIMIT, news.publish("n", "m0"))
        .await
        .expect("in time")
        .expect("ack");
    assert_eq!(next_payload(&mut first).await, "m0");
    assert_eq!(next_payload(&mut second).await, "m0");
    timeout(LIMIT, first.unsubscribe()).await.expect("in time");
    timeout(LIMIT, news.publish("n", "m1"))
        .await
        .expect("in time")
        .expect("ack");
    assert_eq!(next_payload(&mut second).await, "m1");

    timeout(LIMIT, second.unsubscribe()).await.expect("in time");
    let mut third = timeout(LIMIT, news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    assert_eq!(attached_continuity(&mut third).await, Continuity::Fresh);
    timeout(LIMIT, news.publish("n", "m2"))
        .await
        .expect("in time")
        .expect("ack");
    assert_eq!(next_payload(&mut third).await, "m2");

    drop(third);
    let mut fourth = timeout(LIMIT, news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    assert_eq!(attached_continuity(&mut fourth).await, Continuity::Fresh);
    timeout(LIMIT, news.publish("n", "m3"))
        .await
        .expect("in time")
        .expect("ack");
    assert_eq!(next_payload(&mut fourth).await, "m3");
    server.shutdown().await;
}

/// The next state change, within the limit.
async fn next_change(
    changes: &mut tether_tokio::StateChanges,
) -> tether_tokio::ConnectionStateChange {
    timeout(LIMIT, changes.next())
        .await
        .expect("a change in time")
        .expect("the stream goes on")
}

/// Issue 14: connection state as Ably or centrifuge users expect — a stream of changes with
/// the previous state and the reason; `last_error` cleared once Connected again; the stream
/// ends after Closed.
#[tokio::test]
async fn state_changes_stream_with_reasons_and_last_error_clears_on_connected() {
    use tether_tokio::ConnectionState::*;
    let server = server(|_| {}).await;
    let proxy = tether_tokio::proxy::Proxy::start(tether_tokio::proxy::ProxyConfig::new(
        server.local_addr(),
    ))
    .await
    .expect("proxy");
    let client = Client::connect(
        &format!("ws://{}/", proxy.local_addr()),
        ClientOptions::api_key("app", "app-secret"),
    )
    .expect("url");
    timeout(LIMIT, client.connected())
        .await
        .expect("in time")
        .expect("connected");
    let mut changes = client.state_changes();
    assert_eq!(proxy.cut_all(), 1);
    let lost = next_change(&mut changes).await;
    assert_eq!((lost.previous, lost.current), (Connected, Disconnected));
    let reason = lost.reason.expect("a reason");
    assert_eq!(reason.code, ErrorCode::TransportClosed, "{reason:?}");
    let again = next_change(&mut changes).await;
    assert_eq!((again.previous, again.current), (Disconnected, Connecting));
    let back = next_change(&mut changes).await;
    assert_eq!(
        (back.previous, back.current, back.reason),
        (Connecting, Connected, None)
    );
    assert_eq!(client.last_error(), None, "cleared on Connected");
    client.close().await;
    let closing = next_change(&mut changes).await;
    assert_eq!((closing.previous, closing.current), (Connected, Closing));
    let closed = next_change(&mut changes).await;
    assert_eq!((closed.previous, closed.current), (Closing, Closed));
    assert!(
        timeout(LIMIT, changes.next())
            .await
            .expect("ends in time")
            .is_none(),
        "the stream ends after Closed"
    );
    server.shutdown().await;
}

/// Issue 14, echo control: a client configured with `echo = false` gets the messages of
/// others on a channel it publishes to, never its own, and no discontinuity for the
/// positions its own messages took (the hub sends `own_message`). A default client on the
/// same channel gets everything.
#[tokio::test]
async fn a_client_without_echo_gets_others_messages_but_not_its_own() {
    let server = server(|_| {}).await;
    let mut options = ClientOptions::api_key("app", "app-secret");
    options.config.echo = false;
    let quiet = Client::connect(&url(&server), options).expect("url");
    let other =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let quiet_news = quiet.channel("news").expect("name");
    let other_news = other.channel("news").expect("name");
    let mut quiet_events = timeout(LIMIT, quiet_news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    let mut other_events = timeout(LIMIT, other_news.subscribe())
        .await
        .expect("in time")
        .expect("attached");
    for n in 0..3 {
        let mine = quiet_news.publish("n", format!("mine {n}"));
        timeout(LIMIT, mine).await.expect("in time").expect("ack");
        let theirs = other_news.publish("n", format!("theirs {n}"));
        timeout(LIMIT, theirs).await.expect("in time").expect("ack");
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match timeout(LIMIT, quiet_events.next()).await.expect("in time") {
            Some(ChannelEvent::Message(m)) => {
                seen.push(String::from_utf8_lossy(&m.message.data).into_owned())
            }
            Some(ChannelEvent::Discontinuity { .. }) => panic!("a discontinuity for own messages"),
            Some(_) => {}
            None => panic!("ended"),
        }
    }
    assert_eq!(seen, vec!["theirs 0", "theirs 1", "theirs 2"]);
    let mut everything = Vec::new();
    while everything.len() < 6 {
        if let Some(ChannelEvent::Message(m)) =
            timeout(LIMIT, other_events.next()).await.expect("in time")
        {
            everything.push(String::from_utf8_lossy(&m.message.data).into_owned());
        }
    }
    assert_eq!(everything[0], "mine 0");
    assert_eq!(quiet.stats().discontinuities.load(Ordering::Relaxed), 0);
    server.shutdown().await;
}

/// Issue 14, defect 4, end to end: a publish, history or subscribe naming a channel over the
/// hub's announced limit (300 bytes against 256) is refused as a value with
/// `channel_name_too_long`, and the client stays connected — a later publish is acknowledged.
#[tokio::test]
async fn a_channel_name_over_the_announced_limit_is_refused_and_the_client_stays_connected() {
    let server = server(|_| {}).await;
    let client =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    timeout(LIMIT, client.connected())
        .await
        .expect("in time")
        .expect("connected");
    let long = client
        .channel(&"x".repeat(300))
        .expect("within the protocol maximum");
    let refused = timeout(LIMIT, long.publish("n", "data"))
        .await
        .expect("in time");
    assert_eq!(
        refused.expect_err("refused").code(),
        ErrorCode::ChannelNameTooLong
    );
    let refused = timeout(LIMIT, long.subscribe()).await.expect("in time");
    assert_eq!(
        refused.err().expect("refused").code(),
        ErrorCode::ChannelNameTooLong
    );
    let refused = timeout(LIMIT, long.history(tether_tokio::HistoryQuery::default()))
        .await
        .expect("in time");
    assert_eq!(
        refused.expect_err("refused").code(),
        ErrorCode::ChannelNameTooLong
    );
    assert_eq!(
        *client.state().borrow(),
        tether_tokio::ConnectionState::Connected
    );
    let fine = client.channel("news").expect("name");
    timeout(LIMIT, fine.publish("n", "ok"))
        .await
        .expect("in time")
        .expect("acknowledged");
    server.shutdown().await;
}

/// Issue 20, defect 5, end to end: a token provider that cannot answer for a moment (its
/// first two calls fail) does not fail the client: it retries with backoff and connects; a
/// provider that refuses (`TokenError::Refused`) sends it to Failed with `token_unavailable`.
#[tokio::test]
async fn a_token_provider_failing_for_a_moment_is_retried_and_a_refusal_fails() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    let server = server(|_| {}).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let mut options = ClientOptions::token_provider(move || {
        let call = counted.fetch_add(1, Ordering::Relaxed);
        async move {
            if call < 2 {
                Err("auth service unreachable".to_owned())
            } else {
                Ok(token("carol", Duration::from_secs(600), &key()))
            }
        }
    });
    options.config.backoff_cap = Duration::from_millis(300);
    let client = Client::connect(&url(&server), options).expect("url");
    timeout(LIMIT, client.connected())
        .await
        .expect("in time")
        .expect("connected after retries");
    assert_eq!(calls.load(Ordering::Relaxed), 3);

    let refusing = ClientOptions::token_provider(tether_tokio::Refusable(|| async {
        Err::<String, _>(tether_tokio::TokenError::Refused("signed out".into()))
    }));
    let refused = Client::connect(&url(&server), refusing).expect("url");
    let outcome = timeout(LIMIT, refused.connected()).await.expect("in time");
    assert_eq!(
        outcome.expect_err("failed").code(),
        ErrorCode::TokenUnavailable
    );
    server.shutdown().await;
}

/// Issue 20, defect 7: a hub whose frame limit (256 KiB) is above the client's default
/// (64 KiB) had every default subscriber fail its transport on a 100 KiB message, resume, get
/// it replayed and fail again, forever. Clients adopt the announced limits (plus the delivery
/// overhead) once connected: the message arrives, once.
#[tokio::test]
async fn a_hub_frame_limit_above_the_client_default_does_not_wedge_subscribers() {
    let server = server(|hub| hub.limits.max_frame_size = 256 * 1024).await;
    let subscriber =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let publisher =
        Client::connect(&url(&server), ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut events = timeout(LIMIT, subscriber.channel("big").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("attached");
    timeout(LIMIT, publisher.connected())
        .await
        .expect("in time")
        .expect("connected");
    let payload = vec![7u8; 100 * 1024];
    let big = publisher.channel("big").expect("name");
    timeout(LIMIT, big.publish("blob", payload.clone()))
        .await
        .expect("in time")
        .expect("acknowledged");
    timeout(LIMIT, big.publish("after", "small"))
        .await
        .expect("in time")
        .expect("ack");
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Some(ChannelEvent::Message(m)) =
            timeout(LIMIT, events.next()).await.expect("in time")
        {
            got.push(m.message.data.len());
        }
    }
    assert_eq!(got, vec![payload.len(), 5]);
    assert_eq!(
        subscriber.stats().connects.load(Ordering::Relaxed),
        1,
        "no reconnect"
    );
    server.shutdown().await;
}
