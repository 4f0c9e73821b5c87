//! The HTTP fallback client on async-std and smol (issue 15, `docs/protocol.md` §2.5,
//! §6.10): behind a proxy that refuses WebSocket upgrades, the client uses the HTTP binding,
//! subscribes, publishes with ACK and resumes after the proxy cuts it, nothing lost or
//! repeated.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::StreamExt;
use support::{hub_config, url, within};
use tether_async_std::Spawner;

on_both_runtimes!(the_fallback_client_resumes_through_a_proxy_refusing_websocket);

/// A blocking loopback proxy: WebSocket upgrades get `403`, anything else is piped to
/// `upstream`; `cut` shuts every piped socket.
struct Proxy {
    address: SocketAddr,
    refused: Arc<AtomicUsize>,
    piped: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("an address");
        let refused = Arc::new(AtomicUsize::new(0));
        let piped: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (counted, kept) = (refused.clone(), piped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let (counted, kept) = (counted.clone(), kept.clone());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if text.contains("upgrade: websocket") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let _ = client.write_all(
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    if server.write_all(&head).is_err() {
                        return;
                    }
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        kept.lock().expect("lock").extend([a, b]);
                    }
                    let (mut client_in, mut server_out) = (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    );
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut client_in, &mut server_out);
                        let _ = server_out.shutdown(Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(Shutdown::Write);
                });
            }
        });
        Proxy {
            address,
            refused,
            piped,
        }
    }

    fn cut(&self) {
        for socket in self.piped.lock().expect("lock").drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

async fn the_fallback_client_resumes_through_a_proxy_refusing_websocket(spawner: Spawner) {
    let mut config = tether_async_std::ServerConfig::new(hub_config());
    config.transport.spawner = spawner.clone();
    let server = tether_async_std::Server::bind("127.0.0.1:0", config)
        .await
        .expect("binds");
    let proxy = Proxy::start(server.local_addr());
    let mut options = tether_async_std::ClientOptions::api_key("app", "app-secret");
    options.transport.spawner = spawner;
    let subscriber =
        tether_async_std::Client::connect(&url(proxy.address), options.clone()).expect("url");
    let publisher = tether_async_std::Client::connect(&url(proxy.address), options).expect("url");
    let mut events = within(
        "subscribe",
        subscriber.channel("x").expect("name").subscribe(),
    )
    .await
    .expect("attached");
    let channel = publisher.channel("x").expect("name");
    for n in 0..20 {
        within("publish", channel.publish("n", format!("m{n}")))
            .await
            .expect("acknowledged");
    }
    proxy.cut();
    for n in 20..40 {
        within("publish", channel.publish("n", format!("m{n}")))
            .await
            .expect("acknowledged");
    }
    let mut received = Vec::new();
    while received.len() < 40 {
        match within("next", events.next()).await {
            Some(tether_async_std::ChannelEvent::Message(m)) => {
                received.push(String::from_utf8_lossy(&m.message.data).into_owned());
            }
            Some(tether_async_std::ChannelEvent::Discontinuity { .. }) => {
                panic!("a discontinuity")
            }
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
    let expected: Vec<String> = (0..40).map(|n| format!("m{n}")).collect();
    assert_eq!(received, expected);
    assert!(
        proxy.refused.load(Ordering::SeqCst) >= 2,
        "WebSocket was tried first"
    );
    subscriber.close().await;
    publisher.close().await;
    server.shutdown().await;
}
