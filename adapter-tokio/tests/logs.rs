//! Logs never contain tokens or secrets, even at the most verbose level.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, mint_token};
use tether_tokio::{Client, ClientOptions, Credentials, Server, ServerConfig};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_at_trace_level_never_contain_tokens_or_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tungstenite logs through `log`: forward those records too, as applications do.
    let _ = tracing_log::LogTracer::init();

    let key = ApiKey {
        name: "app".into(),
        secret: "very-secret-key-material".into(),
        capabilities: Capabilities::all(),
    };
    let server = Server::bind(
        "127.0.0.1:0",
        ServerConfig::new({
            let mut config = HubConfig::default();
            config.keys = vec![key.clone()];
            config
        }),
    )
    .await
    .expect("binds");
    let url = format!("ws://{}/", server.local_addr());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let token = mint_token(
        &key,
        &Claims {
            sub: "alice".into(),
            exp: now + 60,
            iat: now,
            nbf: None,
            aud: None,
            iss: None,
            cap: Capabilities::all(),
        },
    )
    .expect("signs");
    let good =
        Client::connect(&url, ClientOptions::new(Credentials::Token(token.clone()))).expect("url");
    tokio::time::timeout(Duration::from_secs(10), good.connected())
        .await
        .expect("in time")
        .expect("connected");
    let keyed = Client::connect(
        &url,
        ClientOptions::api_key("app", "very-secret-key-material"),
    )
    .expect("url");
    tokio::time::timeout(Duration::from_secs(10), keyed.connected())
        .await
        .expect("in time")
        .expect("connected");
    let wrong =
        Client::connect(&url, ClientOptions::api_key("app", "wrong-secret-attempt")).expect("url");
    let _ = tokio::time::timeout(Duration::from_secs(10), wrong.connected()).await;
    // A raw client, to learn a resume secret the hub hands out (the adapters never show it):
    // the server side of this connection is logged here too.
    let raw_url = url.clone();
    let resume_secret = tokio::task::spawn_blocking(move || {
        use tether_core::wire::{self, ClientFrame, Credentials, Limits, ServerFrame};
        let (mut ws, _) = tungstenite::connect(raw_url.as_str()).expect("upgrades");
        let connect = ClientFrame::Connect {
            version: wire::PROTOCOL_VERSION,
            credentials: Credentials::ApiKey {
                name: "app".into(),
                secret: "very-secret-key-material".into(),
            },
            client_id: None,
            resume: None,
            heartbeat_interval_ms: None,
            options: None,
        };
        let bytes = wire::encode(&connect, &Limits::DEFAULT).expect("encodes");
        ws.send(tungstenite::Message::Binary(bytes)).expect("sends");
        loop {
            if let tungstenite::Message::Binary(bytes) = ws.read().expect("reads") {
                if let Ok(ServerFrame::Connected { session, .. }) =
                    wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX)
                {
                    let _ = ws.close(None);
                    return session.secret.0;
                }
            }
        }
    })
    .await
    .expect("the raw client ran");
    good.close().await;
    keyed.close().await;
    server.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("utf-8");
    assert!(
        logs.contains("client connected"),
        "the logs were captured: {logs}"
    );
    assert!(
        logs.contains("tungstenite"),
        "tungstenite's own records were captured: {logs}"
    );
    let signature = token.rsplit('.').next().expect("a JWT has a signature");
    let hex = |text: &str| text.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let secret_hex: String = resume_secret.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !logs.contains(&secret_hex),
        "a resume secret appeared in the logs, hex-encoded"
    );
    // As a byte string's Debug shows it (tungstenite's "Sending frame: {frame:?}").
    let escaped = format!("{:?}", bytes::Bytes::copy_from_slice(&resume_secret));
    let escaped = escaped.trim_start_matches("b\"").trim_end_matches('"');
    assert!(
        !logs.contains(escaped),
        "a resume secret appeared in the logs, escaped"
    );
    for secret in [
        token.as_str(),
        signature,
        "very-secret-key-material",
        "wrong-secret-attempt",
    ] {
        assert!(!logs.contains(secret), "a secret appeared in the logs");
        assert!(
            !logs.contains(&hex(secret)),
            "a secret appeared in the logs, hex-encoded"
        );
    }
}
