//! End-to-end over loopback with this adapter's client and server, each scenario once on
//! async-std and once on smol.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::StreamExt;
use support::{LIMIT, server, sleep, token, url, within};
use tether_async_std::{ChannelEvent, Client, ClientOptions, Spawner, Subscription};
use tether_core::ErrorCode;
use tether_core::embed::DeliveryAudit;
use tether_tokio::proxy::{Proxy, ProxyConfig};

on_both_runtimes!(
    pub_sub_with_acknowledged_publishes,
    a_refused_publish_fails_with_its_code,
    a_token_is_renewed_in_band_without_reconnecting,
    a_cut_connection_resumes_without_loss_or_duplicate,
    publish_floods_from_several_clients_are_all_acknowledged_and_delivered,
    subscribing_with_a_wrong_key_fails_instead_of_hanging,
    a_subscription_ends_when_the_client_closes,
    several_subscribers_of_one_channel_each_get_every_message,
    unsubscribing_the_last_subscription_detaches_the_channel,
    state_changes_stream_with_reasons_and_last_error_clears_on_connected,
    a_channel_name_over_the_announced_limit_is_refused_and_the_client_stays_connected,
);

fn options(spawner: &Spawner, mut options: ClientOptions) -> ClientOptions {
    options.transport.spawner = spawner.clone();
    options
}

fn api_key(spawner: &Spawner) -> ClientOptions {
    options(spawner, ClientOptions::api_key("app", "app-secret"))
}

/// Reads messages until `count` arrived, returning their payloads; other events are kept
/// apart and returned too.
async fn messages(events: &mut Subscription, count: usize) -> (Vec<String>, Vec<ChannelEvent>) {
    let mut payloads = Vec::new();
    let mut others = Vec::new();
    while payloads.len() < count {
        match within("next event", events.next()).await {
            Some(ChannelEvent::Message(message)) => {
                payloads.push(String::from_utf8_lossy(&message.message.data).into_owned())
            }
            Some(other) => others.push(other),
            None => panic!("the subscription ended after {} messages", payloads.len()),
        }
    }
    (payloads, others)
}

async fn pub_sub_with_acknowledged_publishes(spawner: Spawner) {
    let server = server(&spawner).await;
    let subscriber = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let publisher = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let mut events = within(
        "subscribe",
        subscriber.channel("news").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let news = publisher.channel("news").expect("name");
    for n in 0..10 {
        within("publish", news.publish("n", format!("m{n}")))
            .await
            .expect("acknowledged");
    }
    let (payloads, _) = messages(&mut events, 10).await;
    let expected: Vec<String> = (0..10).map(|n| format!("m{n}")).collect();
    assert_eq!(payloads, expected, "each once, in order");
    let rtt = within("ping", publisher.ping()).await.expect("pong");
    assert!(rtt < LIMIT);
    let page = within(
        "history",
        news.history(tether_core::wire::HistoryQuery::default()),
    )
    .await
    .expect("history");
    assert_eq!(page.messages.len(), 10);
    within("close", publisher.close()).await;
    within("close", subscriber.close()).await;
    assert_eq!(
        publisher.state().get(),
        tether_core::client::ConnectionState::Closed
    );
    server.shutdown().await;
}

async fn a_refused_publish_fails_with_its_code(spawner: Spawner) {
    let server = server(&spawner).await;
    let client = Client::connect(
        &url(server.local_addr()),
        options(
            &spawner,
            ClientOptions::api_key("limited", "limited-secret"),
        ),
    )
    .expect("url");
    let refused = within(
        "publish",
        client.channel("private:x").expect("name").publish("n", "x"),
    )
    .await
    .expect_err("not allowed");
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    // The connection stays usable.
    within(
        "publish",
        client.channel("public:x").expect("name").publish("n", "x"),
    )
    .await
    .expect("allowed");
    let refused = within(
        "subscribe",
        client.channel("private:y").expect("name").subscribe(),
    )
    .await
    .err()
    .expect("not allowed");
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    server.shutdown().await;
}

async fn a_token_is_renewed_in_band_without_reconnecting(spawner: Spawner) {
    let server = server(&spawner).await;
    let provider = ClientOptions::token_provider(|| {
        let token = token("alice", Duration::from_secs(4));
        async move { Ok(token) }
    });
    let client =
        Client::connect(&url(server.local_addr()), options(&spawner, provider)).expect("url");
    let publisher = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let mut events = within(
        "subscribe",
        client.channel("news").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let news = publisher.channel("news").expect("name");
    // 6 s of streaming with 4 s tokens: at least two renewals on the same connection.
    for n in 0..30 {
        within("publish", news.publish("n", format!("{n}")))
            .await
            .expect("acknowledged");
        sleep(Duration::from_millis(200)).await;
    }
    let (payloads, _) = messages(&mut events, 30).await;
    assert_eq!(payloads.len(), 30);
    let stats = client.stats();
    assert!(
        stats.renewals.load(Ordering::Relaxed) >= 2,
        "6 s with 4 s tokens"
    );
    assert_eq!(stats.connects.load(Ordering::Relaxed), 1, "no reconnect");
    server.shutdown().await;
}

async fn a_cut_connection_resumes_without_loss_or_duplicate(spawner: Spawner) {
    let server = server(&spawner).await;
    // The proxy (tokio) cuts every connection 300–600 ms after it opened.
    let tokio = support::tokio_runtime();
    let mut proxy = ProxyConfig::new(server.local_addr());
    proxy.cut_after = Some((Duration::from_millis(300), Duration::from_millis(600)));
    let proxy = tokio.block_on(Proxy::start(proxy)).expect("proxy");
    let mut subscriber_options = api_key(&spawner);
    // Connections live under a second here: keep the backoff short so the test is quick.
    subscriber_options.config.backoff_cap = Duration::from_millis(500);
    let subscriber = Client::connect(&url(proxy.local_addr()), subscriber_options).expect("url");
    let publisher = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let mut events = within(
        "subscribe",
        subscriber.channel("feed").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let feed = publisher.channel("feed").expect("name");
    let mut audit = DeliveryAudit::new();
    for sequence in 0..100 {
        within(
            "publish",
            feed.publish("n", DeliveryAudit::label(0, sequence)),
        )
        .await
        .expect("acknowledged");
        audit.acked(0, sequence);
        sleep(Duration::from_millis(20)).await;
    }
    let (payloads, others) = messages(&mut events, 100).await;
    audit.subscriber(
        payloads
            .iter()
            .filter_map(|p| DeliveryAudit::parse_label(p.as_bytes()))
            .collect(),
    );
    let report = audit.report();
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    assert!(
        !others
            .iter()
            .any(|e| matches!(e, ChannelEvent::Discontinuity { .. })),
        "{others:?}"
    );
    // Nothing more than the 100 arrives.
    let extra = futures_lite::future::or(events.next(), async {
        sleep(Duration::from_millis(300)).await;
        None
    })
    .await;
    assert!(
        !matches!(extra, Some(ChannelEvent::Message(_))),
        "{extra:?}"
    );
    let stats = subscriber.stats();
    assert!(proxy.stats().cuts.load(Ordering::Relaxed) >= 2);
    assert!(stats.resumes.load(Ordering::Relaxed) >= 2);
    assert_eq!(stats.resume_failures.load(Ordering::Relaxed), 0);
    proxy.stop();
    tokio.shutdown_background();
    server.shutdown().await;
}

/// Several clients each queue 1,000 publishes at once: the hub task, which handles queued
/// inputs in bursts, must lose none of them (a lost publish frame is a skipped serial, and
/// the hub fails that connection).
async fn publish_floods_from_several_clients_are_all_acknowledged_and_delivered(spawner: Spawner) {
    const PUBLISHERS: usize = 6;
    const EACH: usize = 1000;
    let server = server(&spawner).await;
    let subscriber = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let mut events = within(
        "subscribe",
        subscriber.channel("flood").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let client = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
        within("connect", client.connected())
            .await
            .expect("connected");
        publishers.push(client);
    }
    let mut publishes = Vec::new();
    for (publisher, client) in publishers.iter().enumerate() {
        let channel = client.channel("flood").expect("name");
        publishes
            .extend((0..EACH).map(|n| channel.publish("m", DeliveryAudit::label(publisher, n))));
    }
    let results = within("publishes", futures_util::future::join_all(publishes)).await;
    let mut audit = DeliveryAudit::new();
    for (index, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "publish {index} refused: {result:?}");
        audit.acked(index / EACH, index % EACH);
    }
    for client in &publishers {
        assert_eq!(client.stats().connects.load(Ordering::Relaxed), 1);
    }
    let (payloads, others) = messages(&mut events, PUBLISHERS * EACH).await;
    audit.subscriber(
        payloads
            .iter()
            .filter_map(|p| DeliveryAudit::parse_label(p.as_bytes()))
            .collect(),
    );
    let report = audit.report();
    assert_eq!(report.acked, PUBLISHERS * EACH);
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    assert!(
        !others
            .iter()
            .any(|e| matches!(e, ChannelEvent::Discontinuity { .. })),
        "continuity lost: {others:?}"
    );
}

/// Issue 14, defect 2: `subscribe()` while the connection was failing (wrong key) never
/// resolved (`tether sub --key app:wrong` hung).
async fn subscribing_with_a_wrong_key_fails_instead_of_hanging(spawner: Spawner) {
    let server = server(&spawner).await;
    let client = Client::connect(
        &url(server.local_addr()),
        options(&spawner, ClientOptions::api_key("app", "wrong-secret")),
    )
    .expect("url");
    let refused = within(
        "subscribe",
        client.channel("news").expect("name").subscribe(),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.code(), ErrorCode::ConnectionFailed);
    // And again once Failed: an answer at once, not a hang.
    let again = within(
        "subscribe",
        client.channel("news").expect("name").subscribe(),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(again.code(), ErrorCode::ConnectionFailed);
    server.shutdown().await;
}

/// Issue 14, defect 3: a live subscription stayed silent forever after the client closed.
async fn a_subscription_ends_when_the_client_closes(spawner: Spawner) {
    let server = server(&spawner).await;
    let client = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let mut events = within(
        "subscribe",
        client.channel("news").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    within("close", client.close()).await;
    let mut last = None;
    while let Some(event) = within("the stream's end", events.next()).await {
        last = Some(event);
    }
    assert!(
        matches!(&last, Some(ChannelEvent::Failed(e)) if e.code == ErrorCode::ConnectionClosed),
        "{last:?}"
    );
    server.shutdown().await;
}

/// Issue 14, defect 1: a second `subscribe()` on an attached channel — two subscribers at
/// once, or again after dropping the first — never resolved.
async fn several_subscribers_of_one_channel_each_get_every_message(spawner: Spawner) {
    let server = server(&spawner).await;
    let client = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let news = client.channel("news").expect("name");
    let first = within("subscribe", news.subscribe())
        .await
        .expect("attached");
    drop(first);
    let mut second = within("subscribe again", news.subscribe())
        .await
        .expect("attached again");
    let mut third = within("a second subscriber", news.subscribe())
        .await
        .expect("attached too");
    for n in 0..3 {
        within("publish", news.publish("n", format!("m{n}")))
            .await
            .expect("acknowledged");
    }
    for events in [&mut second, &mut third] {
        let (payloads, _) = messages(events, 3).await;
        assert_eq!(payloads, vec!["m0", "m1", "m2"]);
    }
    server.shutdown().await;
}

/// The first event of a new subscription: how the channel was attached for it.
async fn attached_continuity(events: &mut Subscription) -> tether_core::wire::Continuity {
    match within("attached event", events.next()).await {
        Some(ChannelEvent::Attached { continuity, .. }) => continuity,
        other => panic!("expected attached first, got {other:?}"),
    }
}

/// Issue 14, defect 5: the adapters had no unsubscribe. Unsubscribing one of two
/// subscriptions keeps the channel attached for the other; unsubscribing (or dropping) the
/// last detaches it, so a later subscribe attaches again `fresh` — without the detach it
/// would be answered from the client's own position (`continuous`).
async fn unsubscribing_the_last_subscription_detaches_the_channel(spawner: Spawner) {
    use tether_core::wire::Continuity;
    let server = server(&spawner).await;
    let client = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    let news = client.channel("news").expect("name");
    let first = within("subscribe", news.subscribe())
        .await
        .expect("attached");
    let mut second = within("subscribe", news.subscribe())
        .await
        .expect("attached");
    within("unsubscribe one of two", first.unsubscribe()).await;
    within("publish", news.publish("n", "m0"))
        .await
        .expect("ack");
    let (payloads, _) = messages(&mut second, 1).await;
    assert_eq!(
        payloads,
        vec!["m0"],
        "the other subscription still gets messages"
    );

    within("unsubscribe the last", second.unsubscribe()).await;
    let mut third = within("subscribe again", news.subscribe())
        .await
        .expect("attached");
    assert_eq!(attached_continuity(&mut third).await, Continuity::Fresh);
    within("publish", news.publish("n", "m1"))
        .await
        .expect("ack");
    let (payloads, _) = messages(&mut third, 1).await;
    assert_eq!(payloads, vec!["m1"]);

    drop(third);
    let mut fourth = within("subscribe after a drop", news.subscribe())
        .await
        .expect("attached");
    assert_eq!(attached_continuity(&mut fourth).await, Continuity::Fresh);
    within("publish", news.publish("n", "m2"))
        .await
        .expect("ack");
    let (payloads, _) = messages(&mut fourth, 1).await;
    assert_eq!(payloads, vec!["m2"]);
    server.shutdown().await;
}

/// Issue 14: a stream of state changes with the previous state and the reason;
/// `last_error` cleared once Connected again; the stream ends after Closed.
async fn state_changes_stream_with_reasons_and_last_error_clears_on_connected(spawner: Spawner) {
    use tether_async_std::ConnectionState::*;
    let server = server(&spawner).await;
    let tokio = support::tokio_runtime();
    let proxy = tokio
        .block_on(Proxy::start(ProxyConfig::new(server.local_addr())))
        .expect("proxy");
    let client = Client::connect(&url(proxy.local_addr()), api_key(&spawner)).expect("url");
    within("connect", client.connected())
        .await
        .expect("connected");
    let mut changes = client.state_changes();
    assert_eq!(proxy.cut_all(), 1);
    let mut next = async || within("a change", changes.next()).await.expect("goes on");
    let lost = next().await;
    assert_eq!((lost.previous, lost.current), (Connected, Disconnected));
    assert_eq!(
        lost.reason.expect("a reason").code,
        ErrorCode::TransportClosed
    );
    let again = next().await;
    assert_eq!((again.previous, again.current), (Disconnected, Connecting));
    let back = next().await;
    assert_eq!(
        (back.previous, back.current, back.reason),
        (Connecting, Connected, None)
    );
    assert_eq!(client.last_error(), None, "cleared on Connected");
    client.close().await;
    let closing = next().await;
    assert_eq!((closing.previous, closing.current), (Connected, Closing));
    let closed = next().await;
    assert_eq!((closed.previous, closed.current), (Closing, Closed));
    assert!(
        within("end", changes.next()).await.is_none(),
        "ends after Closed"
    );
    server.shutdown().await;
}

/// Issue 14, defect 4, end to end: calls naming a channel over the hub's announced limit are
/// refused as values (`channel_name_too_long`); the client stays connected.
async fn a_channel_name_over_the_announced_limit_is_refused_and_the_client_stays_connected(
    spawner: Spawner,
) {
    let server = server(&spawner).await;
    let client = Client::connect(&url(server.local_addr()), api_key(&spawner)).expect("url");
    within("connect", client.connected())
        .await
        .expect("connected");
    let long = client
        .channel(&"x".repeat(300))
        .expect("within the protocol maximum");
    let refused = within("publish", long.publish("n", "data")).await;
    assert_eq!(
        refused.expect_err("refused").code(),
        ErrorCode::ChannelNameTooLong
    );
    let refused = within("subscribe", long.subscribe()).await;
    assert_eq!(
        refused.err().expect("refused").code(),
        ErrorCode::ChannelNameTooLong
    );
    assert_eq!(
        client.state().get(),
        tether_async_std::ConnectionState::Connected
    );
    let fine = client.channel("news").expect("name");
    within("publish", fine.publish("n", "ok"))
        .await
        .expect("acknowledged");
    server.shutdown().await;
}
