//! The ceiling: a raw tokio-tungstenite broadcast server and clients with the same WebSocket
//! settings and no protocol (no auth, no ACK, no order or resume bookkeeping).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{
    Measure, free_port, histogram, nanos_since, payload, per_connection, percentiles, rss,
    spawn_self, stamp_of, wait_for_port,
};

const MAX_FRAME: usize = 64 * 1024;

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

/// Accepts WebSocket connections; every binary message from one goes to all others.
pub async fn serve_on(listener: TcpListener) {
    let peers: Peers = Arc::default();
    let ids = AtomicU64::new(0);
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let peers = peers.clone();
        tokio::spawn(async move {
            let config = tether_tokio::websocket_config(MAX_FRAME);
            // Boxed like the tether server's handshake, so the connection task is sized by
            // what it keeps, not by the handshake it did once.
            let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
            let Ok(ws) = Box::pin(handshake).await else {
                return;
            };
            let (mut sink, mut source) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel();
            peers.lock().expect("peers").insert(id, tx);
            // The same writer strategy as tether's server: what is queued goes out with
            // one flush.
            let writer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    let mut next = Some(message);
                    let mut frames = 0;
                    while let Some(message) = next.take() {
                        if sink.feed(message).await.is_err() {
                            return;
                        }
                        frames += 1;
                        if frames < 64 {
                            next = rx.try_recv().ok();
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(message)) = source.next().await {
                if let Message::Binary(bytes) = message {
                    for (peer, tx) in peers.lock().expect("peers").iter() {
                        if *peer != id {
                            let _ = tx.send(Message::Binary(bytes.clone()));
                        }
                    }
                }
            }
            peers.lock().expect("peers").remove(&id);
            writer.abort();
        });
    }
}

/// The child process of the memory scenario.
pub async fn serve(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("binds");
    serve_on(listener).await;
}

async fn start() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("ws://{}/", listener.local_addr().expect("address"));
    (url, tokio::spawn(serve_on(listener)))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Ws {
    let config = tether_tokio::websocket_config(MAX_FRAME);
    for _ in 0..50 {
        if let Ok((ws, _)) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
        {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not connect to {url}");
}

/// a. One publisher, `subscribers` subscribers, `messages` messages: deliveries per second.
pub async fn fan_out(subscribers: usize, messages: usize) -> Measure {
    let (url, server) = start().await;
    let mut readers = Vec::new();
    for _ in 0..subscribers {
        let mut ws = connect(&url).await;
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match ws.next().await {
                    Some(Ok(Message::Binary(_))) => seen += 1,
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }));
    }
    // Let the server register every subscriber before the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut publisher = connect(&url).await;
    let started = Instant::now();
    for n in 0..messages {
        publisher
            .feed(Message::Binary(payload(n as u64)))
            .await
            .expect("sent");
    }
    publisher.flush().await.expect("flushed");
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(120), reader)
            .await
            .expect("every subscriber got every message")
            .expect("reader");
    }
    let elapsed = started.elapsed();
    server.abort();
    Measure::Rate((subscribers * messages) as f64 / elapsed.as_secs_f64())
}

/// c. One publisher at `rate` messages/s for `count` messages, one subscriber.
pub async fn latency(rate: u64, count: usize) -> Measure {
    let (url, server) = start().await;
    let mut subscriber = connect(&url).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut publisher = connect(&url).await;
    let base = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut h = histogram();
        let mut seen = 0;
        while seen < count {
            if let Some(Ok(Message::Binary(data))) = subscriber.next().await {
                let micros = nanos_since(base).saturating_sub(stamp_of(&data)) / 1000;
                h.saturating_record(micros.max(1));
                seen += 1;
            }
        }
        h
    });
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for _ in 0..count {
        ticks.tick().await;
        publisher
            .send(Message::Binary(payload(nanos_since(base))))
            .await
            .expect("sent");
    }
    let h = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("all delivered")
        .expect("receiver");
    server.abort();
    percentiles(&h)
}

/// d. The server's memory per idle connection with `count` open WebSockets.
pub async fn idle_memory(count: usize) -> Measure {
    let port = free_port();
    let child = spawn_self("serve-raw", port).expect("spawns the server");
    assert!(wait_for_port(port).await, "the server listens");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(child.0.id()).expect("rss");
    let url = format!("ws://127.0.0.1:{port}/");
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(connect(&url).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss(child.0.id()).expect("rss");
    drop(sockets);
    drop(child);
    per_connection(before, after, count)
}
