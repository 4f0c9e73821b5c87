//! A small chat on tokio: an embedded server, a token service standing in for the
//! application's backend, and two users. Alice talks first; Bob joins later, reads what he
//! missed from history, then follows the live channel without gap or duplicate.
//!
//! ```sh
//! cargo run -p tether-tokio --example chat
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tether_tokio::{
    ApiKey, Capabilities, ChannelEvent, Claims, Client, ClientOptions, Continuity, HistoryQuery,
    HubConfig, Operation, Server, ServerConfig, mint_token,
};

/// The key the backend signs tokens with; clients never see its secret.
fn signing_key() -> ApiKey {
    ApiKey {
        name: "chat-backend".into(),
        secret: "a long random secret kept by the backend".into(),
        capabilities: Capabilities::all(),
    }
}

/// What the application's backend does when a signed-in user asks for a token: a
/// 10-minute token for their own id, allowed to talk in `chat:*` rooms only.
fn token_for(user: &str) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let rooms = Capabilities::default().with(
        "chat:*",
        &[Operation::Subscribe, Operation::Publish, Operation::History],
    );
    let claims = Claims::new(user, rooms, now, Duration::from_secs(600));
    mint_token(&signing_key(), &claims).map_err(|e| e.to_string())
}

/// A client for `user` that asks the backend for tokens whenever it needs one (first
/// connect, renewal before expiry).
fn connect(url: &str, user: &'static str) -> Result<Client, tether_tokio::Error> {
    let options = ClientOptions::token_provider(move || async move { token_for(user) });
    Client::connect(url, options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: in a real deployment `tether serve`, or embedded like this.
    let mut hub = HubConfig::default();
    hub.keys = vec![signing_key()];
    let server = Server::bind("127.0.0.1:0", ServerConfig::new(hub)).await?;
    let url = format!("ws://{}/", server.local_addr());

    let alice = connect(&url, "alice")?;
    let room = alice.channel("chat:lobby")?;
    for line in ["hi, anyone here?", "I'll wait", "…still here"] {
        room.publish("text", line).await?; // resolves once the server acknowledged it
    }

    // Bob joins: first the subscription (so nothing published from now on is missed),
    // then the history of what was said before he joined.
    let bob = connect(&url, "bob")?;
    let lobby = bob.channel("chat:lobby")?;
    let mut live = lobby.subscribe().await?;
    let joined_at = match live.next().await {
        Some(ChannelEvent::Attached {
            position,
            continuity: Continuity::Fresh,
        }) => position,
        other => return Err(format!("expected a fresh attach, got {other:?}").into()),
    };
    let earlier = lobby.history(HistoryQuery::default()).await?;
    println!("bob joins; before him (newest first):");
    for message in earlier.messages.iter().filter(|m| m.position <= joined_at) {
        println!(
            "  [{}] {}: {}",
            message.position,
            message.publisher.as_str(),
            String::from_utf8_lossy(&message.message.data)
        );
    }

    lobby.publish("text", "hello alice!").await?;
    room.publish("text", "hey bob 👋").await?;
    println!("live:");
    let mut seen = 0;
    while seen < 2 {
        let next = tokio::time::timeout(Duration::from_secs(5), live.next()).await?;
        match next {
            Some(ChannelEvent::Message(message)) => {
                seen += 1;
                println!(
                    "  [{}] {}: {}",
                    message.position,
                    message.publisher.as_str(),
                    String::from_utf8_lossy(&message.message.data)
                );
            }
            Some(ChannelEvent::Discontinuity { .. }) => println!("  (a gap: read history)"),
            Some(ChannelEvent::Failed(error)) => return Err(error.to_string().into()),
            Some(_) => {}
            None => break,
        }
    }
    alice.close().await;
    bob.close().await;
    server.shutdown().await;
    Ok(())
}
