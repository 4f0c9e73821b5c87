//! tether inside an axum application (issue 19): the example app serves its own routes and
//! tether on one port; a tether client connects on its route, subscribes, publishes with
//! ACK and receives once; other requests on the route get HTTP answers; shutdown tells the
//! clients.

#![cfg(feature = "axum")]

use std::net::SocketAddr;

use futures_util::StreamExt;
use tether_tokio::tether_core::ErrorCode;
use tether_tokio::{ChannelEvent, Client, ClientOptions};
use tokio::time::timeout;

mod support;
use support::{LIMIT, http};

#[allow(dead_code)]
#[path = "../examples/axum_app.rs"]
mod example;

#[tokio::test]
async fn the_example_app_serves_its_routes_and_tether_on_one_port() {
    let service = example::service("app-secret".into()).expect("starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("an address");
    let app = example::app(service.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    // The application's own routes.
    let page = http(
        address,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("the application's own page"), "{page}");
    let api = http(
        address,
        "GET /api/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(api.contains("hello from the application's API"), "{api}");
    // The operator's routes.
    let health = http(
        address,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http(
        address,
        "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = http(
        address,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(metrics.contains("tether_connections 0"), "{metrics}");
    // tether's route answers what is not a WebSocket upgrade over HTTP.
    let plain = http(
        address,
        "GET /realtime HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    let post = http(
        address,
        "POST /realtime HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    // A POST is the HTTP binding's (§2.5): an open without frames is refused.
    assert!(post.starts_with("HTTP/1.1 400"), "{post}");
    let put = http(
        address,
        "PUT /realtime HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(put.starts_with("HTTP/1.1 405"), "{put}");
    let old = http(
        address,
        "GET /realtime HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 400"), "{old}");

    // tether on the application's port.
    let url = format!("ws://{address}/realtime");
    let subscriber =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut messages = timeout(LIMIT, subscriber.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("subscribes");
    let publisher =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let news = publisher.channel("news").expect("name");
    for n in 0..3 {
        timeout(LIMIT, news.publish("n", format!("m{n}")))
            .await
            .expect("in time")
            .expect("acknowledged");
    }
    let mut received = Vec::new();
    while received.len() < 3 {
        match timeout(LIMIT, messages.next()).await.expect("in time") {
            Some(ChannelEvent::Message(message)) => received.push(message.message.data.clone()),
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
    assert_eq!(received, ["m0", "m1", "m2"].map(bytes::Bytes::from));
    // Behind a proxy that refuses WebSocket upgrades: the same route serves the HTTP
    // binding, and the client falls back to it.
    let proxy = support::proxy::Proxy::start(address, false).await;
    let behind = Client::connect(
        &format!("ws://{}/realtime", proxy.address),
        ClientOptions::api_key("app", "app-secret"),
    )
    .expect("url");
    let behind_news = behind.channel("news").expect("name");
    let mut behind_messages = timeout(LIMIT, behind_news.subscribe())
        .await
        .expect("in time")
        .expect("subscribes over the HTTP binding");
    timeout(LIMIT, behind_news.publish("n", "through the proxy"))
        .await
        .expect("in time")
        .expect("acknowledged");
    let through = loop {
        match timeout(LIMIT, behind_messages.next())
            .await
            .expect("in time")
        {
            Some(ChannelEvent::Message(message)) => break message.message.data.clone(),
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    };
    assert_eq!(&through[..], b"through the proxy");
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(proxy.upgraded.load(std::sync::atomic::Ordering::SeqCst), 0);
    behind.close().await;
    // A wrong secret is refused by the hub, as on tether's own listener.
    let intruder = Client::connect(&url, ClientOptions::api_key("app", "wrong")).expect("url");
    let refused = timeout(LIMIT, intruder.connected()).await.expect("in time");
    assert_eq!(
        refused.expect_err("refused").code(),
        ErrorCode::InvalidCredentials
    );

    // Shutdown: the subscriber is told the server is shutting down.
    let mut changes = subscriber.state_changes();
    timeout(LIMIT, service.shutdown())
        .await
        .expect("shuts down in time");
    let told = timeout(LIMIT, async {
        loop {
            let change = changes
                .next()
                .await
                .expect("a change before the stream ends");
            if let Some(reason) = change.reason {
                return reason.code;
            }
        }
    })
    .await
    .expect("in time");
    assert_eq!(told, ErrorCode::ServerShuttingDown);
    let ready = http(
        address,
        "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    subscriber.close().await;
    publisher.close().await;
    serving.abort();
}
