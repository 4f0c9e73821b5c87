//! The server-side HTTP API (issue 19, item 2): an HTTP publish reaches a WebSocket
//! subscriber once; a retried publish with the same message ids is stored once; history and
//! channels answer; the key in the header decides, with its capabilities.

#![cfg(feature = "axum")]

use std::time::Duration;

use futures_util::StreamExt;
use tether_tokio::{
    ApiKey, Capabilities, ChannelEvent, Client, ClientOptions, HubConfig, Operation, Server,
    ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request; the status and the JSON body.
async fn call(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let key = key
        .map(|k| format!("X-Tether-Key: {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().expect("a status");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
    // Bodies come whole or chunked; take the JSON object in it.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn an_http_publish_reaches_a_subscriber_once_and_a_retry_is_stored_once() {
    let mut hub = HubConfig::default();
    hub.keys = vec![
        ApiKey {
            name: "app".into(),
            secret: "app-secret".into(),
            capabilities: Capabilities::all(),
        },
        ApiKey {
            name: "reader".into(),
            secret: "reader-secret".into(),
            capabilities: Capabilities::default().with("*", &[Operation::History]),
        },
    ];
    let keys = hub.keys.clone();
    let server = Server::bind("127.0.0.1:0", ServerConfig::new(hub))
        .await
        .expect("binds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let api = listener.local_addr().expect("an address");
    let router = tether_tokio::axum::api_routes(server.service().clone(), keys);
    let limits = tether_tokio::axum::HttpLimits {
        max_connections: 8,
        header_timeout: Duration::from_millis(300),
        connection_lifetime: Duration::from_secs(10),
    };
    let serving = tokio::spawn(tether_tokio::axum::serve_bounded(
        listener,
        router,
        limits,
        std::future::pending(),
    ));
    // A connection that never sends its request is closed after the header timeout.
    let mut idle = tokio::net::TcpStream::connect(api).await.expect("connects");
    let mut sink = Vec::new();
    timeout(Duration::from_secs(3), idle.read_to_end(&mut sink))
        .await
        .expect("an idle connection is closed by the server")
        .ok();

    let url = format!("ws://{}/", server.local_addr());
    let subscriber =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let mut messages = timeout(LIMIT, subscriber.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("subscribes");

    let body = r#"{"channel":"news","publisher":"backend","messages":[{"id":"order-1","name":"created","data":"hello"},{"id":"order-2","data":"/wAB","encoding":"base64"}]}"#;
    let (status, answer) = call(api, "POST", "/api/publish", Some("app:app-secret"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messages"][0]["id"], "order-1");
    assert_eq!(answer["messages"][0]["position"]["serial"], 1);
    assert_eq!(answer["messages"][1]["position"]["serial"], 2);
    // The same request again (a client retrying after a timeout): stored once.
    let (status, again) = call(api, "POST", "/api/publish", Some("app:app-secret"), body).await;
    assert_eq!(status, 200, "{again}");
    assert!(again["messages"][0]["position"].is_null(), "{again}");
    assert!(again["messages"][1]["position"].is_null(), "{again}");
    let third = r#"{"channel":"news","messages":[{"id":"order-3","data":"last"}]}"#;
    let (status, _) = call(api, "POST", "/api/publish", Some("app:app-secret"), third).await;
    assert_eq!(status, 200);

    let mut received = Vec::new();
    while received.len() < 3 {
        match timeout(LIMIT, messages.next()).await.expect("in time") {
            Some(ChannelEvent::Message(m)) => received.push((
                m.message.id.as_str().to_owned(),
                m.publisher.as_str().to_owned(),
                m.message.data.to_vec(),
            )),
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
    assert_eq!(
        received,
        [
            ("order-1".into(), "backend".into(), b"hello".to_vec()),
            ("order-2".into(), "backend".into(), vec![0xff, 0, 1]),
            ("order-3".into(), "server".into(), b"last".to_vec()),
        ]
    );
    // Nothing more arrives: the retry was not delivered.
    assert!(
        timeout(Duration::from_millis(300), messages.next())
            .await
            .is_err(),
        "a fourth message"
    );

    // History with a reader key; the store holds each message once.
    let (status, page) = call(
        api,
        "GET",
        "/api/history?channel=news&direction=forwards&limit=2",
        Some("reader:reader-secret"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["order-1", "order-2"]);
    assert_eq!(page["messages"][1]["encoding"], "base64");
    assert_eq!(page["messages"][1]["data"], "/wAB");
    let next = &page["next"];
    let path = format!(
        "/api/history?channel=news&direction=forwards&limit=2&start={}",
        next["start"].as_str().expect("a next start")
    );
    let (_, rest) = call(api, "GET", &path, Some("reader:reader-secret"), "").await;
    assert_eq!(rest["messages"][0]["id"], "order-3", "{rest}");
    assert!(rest["next"].is_null(), "{rest}");

    // Channels.
    let (status, channels) = call(api, "GET", "/api/channels", Some("app:app-secret"), "").await;
    assert_eq!(status, 200);
    assert_eq!(channels["channels"][0]["channel"], "news");
    assert_eq!(channels["channels"][0]["position"]["serial"], 3);
    assert_eq!(channels["channels"][0]["subscribers"], 1);

    // Refusals, each with its code.
    let (status, error) = call(api, "POST", "/api/publish", None, third).await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, error) = call(api, "POST", "/api/publish", Some("app:wrong"), third).await;
    assert_eq!(
        (status, error["error"]["code"].as_u64()),
        (401, Some(40101))
    );
    let (status, error) = call(
        api,
        "POST",
        "/api/publish",
        Some("reader:reader-secret"),
        third,
    )
    .await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, error) = call(
        api,
        "POST",
        "/api/publish",
        Some("app:app-secret"),
        "{not json",
    )
    .await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (400, Some("bad_request"))
    );
    let bad = r#"{"channel":"","messages":[{"data":"x"}]}"#;
    let (status, error) = call(api, "POST", "/api/publish", Some("app:app-secret"), bad).await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (400, Some("invalid_channel_name"))
    );
    let (status, error) = call(
        api,
        "GET",
        "/api/history?channel=news&limit=0",
        Some("app:app-secret"),
        "",
    )
    .await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (400, Some("invalid_history_query"))
    );

    // The whole publish counts against the frame limit, as a client's does.
    let big = "x".repeat(9_000);
    let many: Vec<String> = (0..10)
        .map(|n| format!(r#"{{"id":"big-{n}","data":"{big}"}}"#))
        .collect();
    let body = format!(r#"{{"channel":"news","messages":[{}]}}"#, many.join(","));
    let (status, error) = call(api, "POST", "/api/publish", Some("app:app-secret"), &body).await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (413, Some("frame_too_large"))
    );
    // Unknown routes and methods answer JSON errors too.
    let (status, error) = call(api, "GET", "/api/nothing", Some("app:app-secret"), "").await;
    assert_eq!(
        (status, error["error"]["name"].as_str()),
        (404, Some("not_found"))
    );
    let (status, error) = call(api, "GET", "/api/publish", Some("app:app-secret"), "").await;
    assert_eq!(status, 405, "{error}");
    assert_eq!(error["error"]["name"], "bad_request");
    subscriber.close().await;
    server.shutdown().await;
    serving.abort();
}
