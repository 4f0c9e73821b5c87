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
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

mod support;
use support::{LIMIT, call};

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

/// `POST /api/disconnect` (§7.8): with `reconnect` the client is disconnected with
/// `disconnected_by_server` and resumes with nothing lost or repeated; without, it goes
/// Failed with that code and does not come back; a key without every operation on `*` is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_over_http_makes_a_client_resume_or_stop() {
    let mut hub = HubConfig::default();
    let all = |name: &str| ApiKey {
        name: name.into(),
        secret: format!("{name}-secret"),
        capabilities: Capabilities::all(),
    };
    hub.keys = vec![
        all("app"),
        all("alice"),
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
    let serving = tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("ws://{}/", server.local_addr());
    let alice =
        Client::connect(&url, ClientOptions::api_key("alice", "alice-secret")).expect("url");
    let mut messages = timeout(LIMIT, alice.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("subscribes");
    let publisher =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let news = publisher.channel("news").expect("name");
    news.publish("n", "0").await.expect("acknowledged");

    // Two keys in two headers: refused (not the first taken), and counted as an
    // authentication failure.
    let twice = "POST /api/disconnect HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tether-Key: app:app-secret\r\nX-Tether-Key: reader:reader-secret\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(support::status(&support::http(api, twice).await), 401);
    let metrics = server.service().metrics().await.expect("running");
    assert!(
        metrics.contains(r#"tether_auth_failures_total{code="invalid_credentials"} 1"#),
        "{metrics}"
    );
    let body = r#"{"client_id":"alice","reconnect":true}"#;
    let (status, answer) = call(
        api,
        "POST",
        "/api/disconnect",
        Some("reader:reader-secret"),
        body,
    )
    .await;
    assert_eq!(
        (status, &answer["error"]["name"]),
        (403, &serde_json::json!("forbidden"))
    );
    let mut changes = alice.state_changes();
    let (status, answer) = call(api, "POST", "/api/disconnect", Some("app:app-secret"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({"connections": 1, "sessions": 0}));
    let reason = timeout(LIMIT, async {
        loop {
            if let Some(reason) = changes.next().await.expect("a change").reason {
                return reason.code;
            }
        }
    })
    .await
    .expect("in time");
    assert_eq!(reason, tether_tokio::ErrorCode::DisconnectedByServer);
    news.publish("n", "1").await.expect("acknowledged");
    timeout(LIMIT, alice.connected())
        .await
        .expect("in time")
        .expect("reconnects");
    let received = support::texts(&mut messages, 2).await;
    assert_eq!(received, ["0", "1"]);

    // Without reconnect: Failed, with the code, and it stays so.
    let body = r#"{"client_id":"alice"}"#;
    let (status, answer) = call(api, "POST", "/api/disconnect", Some("app:app-secret"), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({"connections": 1, "sessions": 1}));
    timeout(LIMIT, async {
        while *alice.state().borrow() != tether_tokio::ConnectionState::Failed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("goes Failed");
    assert_eq!(
        alice.last_error().map(|e| e.code),
        Some(tether_tokio::ErrorCode::DisconnectedByServer)
    );
    let (status, answer) = call(
        api,
        "POST",
        "/api/disconnect",
        Some("app:app-secret"),
        r#"{"client_id":""}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // A JSON array is not taken for the object's fields.
    let (status, answer) = call(
        api,
        "POST",
        "/api/disconnect",
        Some("app:app-secret"),
        r#"["alice", false]"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    publisher.close().await;
    server.shutdown().await;
    serving.abort();
}
