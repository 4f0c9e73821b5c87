//! Token revocation (issue 19, item 6; `docs/protocol.md` §8): a subscriber whose token is
//! revoked through the HTTP API is disconnected with `token_revoked` within a second, its
//! client gets a new token and resumes with nothing lost or repeated, and the old token is
//! refused afterwards — also after a restart on the same store.

#![cfg(feature = "axum")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tether_tokio::{
    ApiKey, Capabilities, Claims, Client, ClientOptions, ErrorCode, HubConfig, Server,
    ServerConfig, mint_token,
};
use tokio::time::timeout;

mod support;
use support::{LIMIT, call};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

fn token(issued_at: u64) -> String {
    let claims = Claims::new(
        "alice",
        Capabilities::all(),
        issued_at,
        Duration::from_secs(600),
    );
    mint_token(&key(), &claims).expect("signs")
}

/// Connects with `token` over a raw WebSocket; the error code of the hub's answer.
async fn refusal(url: &str, token: &str) -> Option<ErrorCode> {
    use futures_util::SinkExt;
    use tether_tokio::tether_core::wire::{self, ClientFrame, Credentials, Limits, ServerFrame};
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let connect = ClientFrame::Connect {
        version: wire::PROTOCOL_VERSION,
        credentials: Credentials::Token {
            token: token.to_owned(),
        },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    };
    let bytes = wire::encode(&connect, &Limits::PROTOCOL_MAX).expect("encodes");
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(bytes))
        .await
        .expect("sends");
    while let Some(Ok(message)) = timeout(LIMIT, ws.next()).await.expect("in time") {
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message {
            return match wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX) {
                Ok(ServerFrame::Disconnect { error } | ServerFrame::Error { error }) => {
                    Some(error.code)
                }
                _ => None,
            };
        }
    }
    None
}

async fn start(
    dir: &std::path::Path,
) -> (Server, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let mut hub = HubConfig::default();
    hub.keys = vec![key()];
    let mut config = ServerConfig::new(hub);
    let engine =
        tether_engine::Engine::open(dir, tether_engine::EngineConfig::for_hub(&config.hub))
            .expect("opens the store");
    config.store = Some(Arc::new(engine));
    let server = Server::bind("127.0.0.1:0", config).await.expect("binds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let api = listener.local_addr().expect("an address");
    let router = tether_tokio::axum::api_routes(server.service().clone(), vec![key()]);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (server, api, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_subscriber_is_disconnected_renews_and_resumes_with_no_loss() {
    let dir = tempfile::tempdir().expect("a directory");
    let (server, api, api_task) = start(dir.path()).await;
    let url = format!("ws://{}/", server.local_addr());
    // The first token was issued a minute ago; later ones now.
    let old_token = token(now_secs() - 60);
    let asked = Arc::new(AtomicU64::new(0));
    let provider = {
        let asked = asked.clone();
        let old_token = old_token.clone();
        ClientOptions::token_provider(move || {
            let token = if asked.fetch_add(1, Ordering::SeqCst) == 0 {
                old_token.clone()
            } else {
                token(now_secs())
            };
            async move { Ok(token) }
        })
    };
    let subscriber = Client::connect(&url, provider).expect("url");
    let mut events = timeout(LIMIT, subscriber.channel("news").expect("name").subscribe())
        .await
        .expect("in time")
        .expect("subscribes");
    let publisher =
        Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
    let news = publisher.channel("news").expect("name");
    for n in 0..10 {
        news.publish("n", format!("{n}"))
            .await
            .expect("acknowledged");
    }
    let mut changes = subscriber.state_changes();

    let revoked_at = Instant::now();
    let (status, answer) = call(
        api,
        "POST",
        "/api/revoke",
        Some("app:app-secret"),
        r#"{"client_id":"alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disconnected"], 1, "{answer}");
    // Disconnected with token_revoked within a second.
    let reason = timeout(Duration::from_secs(1), async {
        loop {
            let change = changes.next().await.expect("a change");
            if let Some(reason) = change.reason {
                return reason.code;
            }
        }
    })
    .await
    .expect("within a second of the revocation");
    assert_eq!(reason, ErrorCode::TokenRevoked);
    eprintln!(
        "disconnected {:?} after the revocation",
        revoked_at.elapsed()
    );
    // Published while it renews: nothing lost, nothing twice.
    for n in 10..20 {
        news.publish("n", format!("{n}"))
            .await
            .expect("acknowledged");
    }
    timeout(LIMIT, subscriber.connected())
        .await
        .expect("in time")
        .expect("connected again with a new token");
    assert!(
        asked.load(Ordering::SeqCst) >= 2,
        "a new token was asked for"
    );
    let received = support::texts(&mut events, 20).await;
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(received, expected);

    // The old token is refused afterwards; a new one is not.
    assert_eq!(
        refusal(&url, &old_token).await,
        Some(ErrorCode::TokenRevoked)
    );
    assert_eq!(refusal(&url, &token(now_secs())).await, None);
    subscriber.close().await;
    publisher.close().await;
    server.shutdown().await;
    api_task.abort();

    // And after a restart on the same store.
    let (server, _api, api_task) = start(dir.path()).await;
    let url = format!("ws://{}/", server.local_addr());
    assert_eq!(
        refusal(&url, &old_token).await,
        Some(ErrorCode::TokenRevoked)
    );
    assert_eq!(refusal(&url, &token(now_secs())).await, None);
    server.shutdown().await;
    api_task.abort();
}
