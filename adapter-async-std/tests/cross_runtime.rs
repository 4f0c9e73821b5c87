//! Cross-runtime: this adapter's client against the tokio server, and the tokio client
//! against this adapter's server — the same protocol, whatever runs each end.

mod support;

use std::time::Duration;

use futures_lite::StreamExt;
use support::{hub_config, url, within};
use tether_async_std::Spawner;
use tether_core::ErrorCode;

on_both_runtimes!(this_client_against_the_tokio_server);

/// The payloads `m0`, `m1`, … of `count` messages.
fn expected(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("m{n}")).collect()
}

async fn this_client_against_the_tokio_server(spawner: Spawner) {
    let tokio = support::tokio_runtime();
    let server = tokio
        .block_on(tether_tokio::Server::bind(
            "127.0.0.1:0",
            tether_tokio::ServerConfig::new(hub_config()),
        ))
        .expect("binds");
    let address = url(server.local_addr());
    let mut options = tether_async_std::ClientOptions::api_key("app", "app-secret");
    options.transport.spawner = spawner.clone();
    let subscriber = tether_async_std::Client::connect(&address, options.clone()).expect("url");
    let publisher = tether_async_std::Client::connect(&address, options).expect("url");
    let mut events = within(
        "subscribe",
        subscriber.channel("x").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let channel = publisher.channel("x").expect("name");
    for payload in expected(20) {
        within("publish", channel.publish("n", payload))
            .await
            .expect("acknowledged");
    }
    let mut received = Vec::new();
    while received.len() < 20 {
        if let Some(tether_async_std::ChannelEvent::Message(m)) =
            within("next", events.next()).await
        {
            received.push(String::from_utf8_lossy(&m.message.data).into_owned());
        }
    }
    assert_eq!(received, expected(20));
    let mut limited = tether_async_std::ClientOptions::api_key("limited", "limited-secret");
    limited.transport.spawner = spawner;
    let limited = tether_async_std::Client::connect(&address, limited).expect("url");
    let refused = within(
        "publish",
        limited
            .channel("private:x")
            .expect("name")
            .publish("n", "x"),
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    tokio.block_on(server.shutdown());
    tokio.shutdown_background();
}

/// The tokio client on tokio; this adapter's server on async-std (`#[tokio::test]` drives
/// only the client side).
#[tokio::test]
async fn the_tokio_client_against_this_server_on_async_std() {
    tokio_client_against(Spawner::async_std()).await;
}

/// The same against this adapter's server on smol's executor.
#[tokio::test]
async fn the_tokio_client_against_this_server_on_smol() {
    tokio_client_against(Spawner::new(|task| smol::spawn(task).detach())).await;
}

async fn tokio_client_against(spawner: Spawner) {
    let mut config = tether_async_std::ServerConfig::new(hub_config());
    config.transport.spawner = spawner;
    // Binding is runtime-neutral (async-io), so it can be awaited from tokio.
    let server = tether_async_std::Server::bind("127.0.0.1:0", config)
        .await
        .expect("binds");
    let address = url(server.local_addr());
    let options = tether_tokio::ClientOptions::api_key("app", "app-secret");
    let subscriber = tether_tokio::Client::connect(&address, options.clone()).expect("url");
    let publisher = tether_tokio::Client::connect(&address, options).expect("url");
    let limit = Duration::from_secs(20);
    let mut events =
        tokio::time::timeout(limit, subscriber.channel("x").expect("name").subscribe())
            .await
            .expect("in time")
            .expect("attached");
    let channel = publisher.channel("x").expect("name");
    for payload in expected(20) {
        tokio::time::timeout(limit, channel.publish("n", payload))
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    let mut received = Vec::new();
    while received.len() < 20 {
        if let Some(tether_tokio::ChannelEvent::Message(m)) =
            tokio::time::timeout(limit, events.next())
                .await
                .expect("in time")
        {
            received.push(String::from_utf8_lossy(&m.message.data).into_owned());
        }
    }
    assert_eq!(received, expected(20));
    let limited = tether_tokio::Client::connect(
        &address,
        tether_tokio::ClientOptions::api_key("limited", "limited-secret"),
    )
    .expect("url");
    let refused = tokio::time::timeout(
        limit,
        limited
            .channel("private:x")
            .expect("name")
            .publish("n", "x"),
    )
    .await
    .expect("in time")
    .expect_err("refused");
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    server.shutdown().await;
}
