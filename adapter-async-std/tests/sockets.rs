//! Sockets outside the hub's life of a connection, on every server (tokio, async-std,
//! smol): a handshake has a deadline, only so many may be under way, and a connection the
//! hub closed is torn down within the close timeout whether or not its peer reads (issue 13,
//! defects 2 and 3). The clients are plain blocking sockets, so nothing here depends on a
//! client runtime.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::hub_config;
use support::sockets::{ended_within, established, gone_within};
use tether_core::embed::{ServerOptions, SocketLimits};
use tether_core::server::HubConfig;
use tether_core::wire::{self, ClientFrame, Credentials, Limits, PROTOCOL_VERSION, ServerFrame};

/// The server under test.
#[derive(Clone, Copy, Debug)]
enum Server {
    Tokio,
    AsyncStd,
    Smol,
}

const SERVERS: [Server; 3] = [Server::Tokio, Server::AsyncStd, Server::Smol];

impl Server {
    /// Runs `test` (blocking code) against this server, bound on loopback.
    fn with(self, hub: HubConfig, sockets: SocketLimits, test: impl FnOnce(SocketAddr)) {
        match self {
            Server::Tokio => {
                let runtime = support::tokio_runtime();
                let mut config = tether_tokio::ServerConfig::new(hub);
                config.sockets = sockets;
                let server = runtime
                    .block_on(tether_tokio::Server::bind("127.0.0.1:0", config))
                    .expect("binds");
                test(server.local_addr());
                runtime.block_on(server.shutdown());
            }
            Server::AsyncStd | Server::Smol => {
                let spawner = match self {
                    Server::Smol => {
                        tether_async_std::Spawner::new(|task| smol::spawn(task).detach())
                    }
                    _ => tether_async_std::Spawner::async_std(),
                };
                let mut config: ServerOptions<tether_async_std::ServerTransport> =
                    tether_async_std::ServerConfig::new(hub);
                config.sockets = sockets;
                config.transport.spawner = spawner;
                let server = async_std::task::block_on(tether_async_std::Server::bind(
                    "127.0.0.1:0",
                    config,
                ))
                .expect("binds");
                test(server.local_addr());
                async_std::task::block_on(server.shutdown());
            }
        }
    }
}

fn limits(handshake: Duration, pending: usize, close: Duration) -> SocketLimits {
    let mut limits = SocketLimits::default();
    limits.handshake_timeout = handshake;
    limits.max_pending_handshakes = pending;
    limits.close_timeout = close;
    limits
}

/// Issue 13, defect 2: a socket that never finished the upgrade (silent, or one byte at a
/// time) was held forever.
#[test]
fn a_socket_that_never_finishes_its_handshake_is_closed_after_the_deadline() {
    for server in SERVERS {
        let sockets = limits(Duration::from_millis(300), 512, Duration::from_secs(5));
        server.with(hub_config(), sockets, |address| {
            let mut silent = TcpStream::connect(address).expect("connects");
            let mut slowloris = TcpStream::connect(address).expect("connects");
            let start = Instant::now();
            for byte in b"GET / HTTP/1.1\r\n" {
                if start.elapsed() > Duration::from_millis(600) {
                    break;
                }
                if slowloris.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let silent_end = ended_within(&mut silent, Duration::from_secs(5));
            let slow_end = ended_within(&mut slowloris, Duration::from_secs(5));
            assert!(
                silent_end.is_some(),
                "{server:?}: a silent socket stayed open"
            );
            assert!(
                slow_end.is_some(),
                "{server:?}: a slowloris socket stayed open"
            );
        });
    }
}

/// Issue 13, defect 2: nothing capped the sockets waiting for their upgrade.
#[test]
fn handshakes_beyond_the_cap_are_closed_at_once() {
    for server in SERVERS {
        let sockets = limits(Duration::from_secs(30), 2, Duration::from_secs(5));
        server.with(hub_config(), sockets, |address| {
            let mut first = TcpStream::connect(address).expect("connects");
            let mut second = TcpStream::connect(address).expect("connects");
            std::thread::sleep(Duration::from_millis(200));
            let mut third = TcpStream::connect(address).expect("connects");
            let ended = ended_within(&mut third, Duration::from_secs(5));
            assert!(
                ended.is_some(),
                "{server:?}: a third handshake was admitted"
            );
            for waiting in [&mut first, &mut second] {
                assert!(
                    ended_within(waiting, Duration::from_millis(200)).is_none(),
                    "{server:?}: a handshake within the cap was closed early"
                );
            }
        });
    }
}

/// A raw WebSocket client: connects with the `app` key and attaches `channel`, then is
/// left to the test (which never reads it again).
fn raw_subscriber(address: SocketAddr, channel: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(address).expect("connects");
    let (mut ws, _) = tungstenite::client(format!("ws://{address}/"), stream).expect("upgrades");
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, frame: &ClientFrame| {
        let bytes = wire::encode(frame, &Limits::DEFAULT).expect("encodes");
        ws.send(tungstenite::Message::Binary(bytes)).expect("sends");
    };
    let receive = |ws: &mut tungstenite::WebSocket<TcpStream>| loop {
        if let tungstenite::Message::Binary(bytes) = ws.read().expect("reads") {
            return wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX).expect("decodes");
        }
    };
    send(
        &mut ws,
        &ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials: Credentials::ApiKey {
                name: "app".into(),
                secret: "app-secret".into(),
            },
            client_id: Some(tether_core::wire::ClientId::new("never-reads").expect("id")),
            resume: None,
            heartbeat_interval_ms: None,
            options: None,
        },
    );
    assert!(matches!(receive(&mut ws), ServerFrame::Connected { .. }));
    send(
        &mut ws,
        &ClientFrame::Attach {
            channel: tether_core::wire::ChannelName::new(channel).expect("name"),
            from: None,
        },
    );
    assert!(matches!(receive(&mut ws), ServerFrame::Attached { .. }));
    ws
}

/// Issue 13, defect 3: after `disconnect` `slow_consumer`, the server socket of a peer that
/// stopped reading stayed ESTABLISHED (300 s and more): the writer blocked in flush and the
/// connection task waited for it.
#[test]
fn a_closed_connection_whose_peer_never_reads_is_torn_down_within_the_close_timeout() {
    for server in SERVERS {
        let sockets = limits(Duration::from_secs(5), 512, Duration::from_millis(500));
        server.with(hub_config(), sockets, |address| {
            let subscriber = raw_subscriber(address, "flood");
            let peer = subscriber.get_ref().local_addr().expect("address").port();
            // /proc/net/tcp can skip a line while other tests open and close sockets: look
            // again for a moment before concluding the connection is not there.
            let seen = (0..50).any(|_| {
                established(address.port(), peer) == 1 || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            });
            assert!(
                seen,
                "{server:?}: the subscriber's connection is established"
            );
            // 12 MB for a subscriber that never reads: more than the kernel buffers hold,
            // so the server's writer blocks and the hub's pending bytes pass the limit.
            let publisher = std::thread::spawn(move || {
                async_std::task::block_on(async move {
                    let client = tether_async_std::Client::connect(
                        &format!("ws://{address}/"),
                        tether_async_std::ClientOptions::api_key("app", "app-secret"),
                    )
                    .expect("url");
                    let channel = client.channel("flood").expect("name");
                    let payload = vec![b'f'; 60_000];
                    for _ in 0..200 {
                        support::within("publish", channel.publish("f", payload.clone()))
                            .await
                            .expect("acknowledged");
                    }
                    client.close().await;
                });
            });
            publisher.join().expect("publisher");
            assert!(
                gone_within(address.port(), peer, Duration::from_secs(10)).is_some(),
                "{server:?}: the socket of a closed, non-reading peer is still open"
            );
            drop(subscriber);
        });
    }
}

/// The `error` frame and the close code a raw client gets after `send`ing `message`.
fn answer_to(
    ws: &mut tungstenite::WebSocket<TcpStream>,
    message: tungstenite::Message,
) -> (Option<tether_core::ErrorCode>, Option<u16>) {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    ws.send(message).expect("sends");
    let mut code = None;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(bytes)) => {
                if let Ok(ServerFrame::Error { error }) =
                    wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX)
                {
                    code = Some(error.code);
                }
            }
            Ok(tungstenite::Message::Close(frame)) => {
                return (code, frame.map(|f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(_) => return (code, None),
        }
    }
}

/// Issue 13, defect 7: a 65,537-byte message (hub limit 65,536) reset the TCP connection:
/// the WebSocket layer refused it before the hub saw it. §2.2: `error` 41300, then a close.
#[test]
fn a_message_over_the_frame_limit_gets_frame_too_large_then_a_close() {
    for server in SERVERS {
        let sockets = SocketLimits::default();
        server.with(hub_config(), sockets, |address| {
            let mut ws = raw_subscriber(address, "big");
            let message = tungstenite::Message::Binary(vec![0u8; 65_537].into());
            let (error, close) = answer_to(&mut ws, message);
            let code = tether_core::ErrorCode::FrameTooLarge;
            assert_eq!(error, Some(code), "{server:?}");
            assert_eq!(close, Some(code.close_code()), "{server:?}");
        });
    }
}

/// Issue 13, defect 7 (same class): a text message is refused with a stable code.
#[test]
fn a_text_message_is_refused_with_a_code_then_a_close() {
    for server in SERVERS {
        server.with(hub_config(), SocketLimits::default(), |address| {
            let mut ws = raw_subscriber(address, "text");
            let (error, close) = answer_to(&mut ws, tungstenite::Message::text("hello"));
            let code = tether_core::ErrorCode::MalformedFrame;
            assert_eq!(error, Some(code), "{server:?}");
            assert_eq!(close, Some(code.close_code()), "{server:?}");
        });
    }
}

/// Issue 13, defect 7 (same class): a WebSocket protocol violation (here a frame with an
/// RSV bit set) gets close 1002.
#[test]
fn a_websocket_protocol_violation_gets_close_1002() {
    for server in SERVERS {
        server.with(hub_config(), SocketLimits::default(), |address| {
            let ws = raw_subscriber(address, "rsv");
            let mut stream = ws.into_inner();
            // FIN + RSV1 + binary opcode, masked, 1-byte payload.
            stream
                .write_all(&[0xC2, 0x81, 1, 2, 3, 4, 0xAA])
                .expect("writes");
            let mut ws = tungstenite::WebSocket::from_raw_socket(
                stream,
                tungstenite::protocol::Role::Client,
                None,
            );
            ws.get_mut()
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let close = loop {
                match ws.read() {
                    Ok(tungstenite::Message::Close(frame)) => {
                        break frame.map(|f| u16::from(f.code));
                    }
                    Ok(_) => {}
                    Err(_) => break None,
                }
            };
            assert_eq!(close, Some(1002), "{server:?}");
        });
    }
}

/// The HTTP status line the server answers `request` with, or `None` for a silent close.
fn http_answer(address: SocketAddr, request: &[u8]) -> Option<String> {
    let mut socket = TcpStream::connect(address).expect("connects");
    socket.write_all(request).expect("writes");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

/// Issue 13, defect 7 (same class): a plain HTTP request, or garbage, was closed without a
/// word; it gets an HTTP status now.
#[test]
fn a_request_that_is_not_an_upgrade_gets_an_http_status() {
    for server in SERVERS {
        server.with(hub_config(), SocketLimits::default(), |address| {
            let plain = http_answer(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(
                plain.as_deref(),
                Some("HTTP/1.1 426 Upgrade Required"),
                "{server:?}"
            );
            let garbage = http_answer(address, b"\x16\x03\x01 not http at all\r\n\r\n");
            assert_eq!(
                garbage.as_deref(),
                Some("HTTP/1.1 400 Bad Request"),
                "{server:?}"
            );
        });
    }
}

/// A client's close is answered with the server's (RFC 6455 §5.5.1), not a dropped socket.
#[test]
fn a_clients_close_is_answered() {
    for server in SERVERS {
        server.with(hub_config(), SocketLimits::default(), |address| {
            let mut ws = raw_subscriber(address, "closer");
            ws.get_mut()
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            ws.close(None).expect("sends the close");
            let ended = loop {
                match ws.read() {
                    Ok(_) => {}
                    Err(error) => break error,
                }
            };
            assert!(
                matches!(ended, tungstenite::Error::ConnectionClosed),
                "{server:?}: {ended:?}"
            );
        });
    }
}

/// Found by a helper: `--handshake-timeout 18446744073709551615` overflowed the instant in
/// the accept loop, which panicked and never accepted again.
#[test]
fn a_huge_timeout_neither_panics_nor_stops_the_accept_loop() {
    for server in SERVERS {
        let sockets = limits(Duration::MAX, 512, Duration::MAX);
        server.with(hub_config(), sockets, |address| {
            for round in 0..2 {
                let mut ws = raw_subscriber(address, &format!("huge-{round}"));
                let _ = ws.close(None);
            }
        });
    }
}

/// Found by a helper: upgraded connections that never sent `connect` were outside the
/// handshake cap, each holding up to a frame's worth of partial message (500 of them:
/// +40 MB). They count as handshakes until the hub accepts their `connect`.
#[test]
fn upgraded_connections_count_as_handshakes_until_their_connect_is_accepted() {
    for server in SERVERS {
        let sockets = limits(Duration::from_secs(30), 2, Duration::from_secs(5));
        server.with(hub_config(), sockets, |address| {
            let upgrade = || {
                let stream = TcpStream::connect(address).expect("connects");
                tungstenite::client(format!("ws://{address}/"), stream)
                    .expect("upgrades")
                    .0
            };
            let silent = [upgrade(), upgrade()];
            std::thread::sleep(Duration::from_millis(200));
            let mut third = TcpStream::connect(address).expect("connects");
            assert!(
                ended_within(&mut third, Duration::from_secs(5)).is_some(),
                "{server:?}: a third unauthenticated connection was admitted"
            );
            drop(silent);
            std::thread::sleep(Duration::from_millis(200));
            // Authenticated connections do not count: two sessions, then a third.
            let sessions: Vec<_> = (0..3)
                .map(|n| raw_subscriber(address, &format!("ok-{n}")))
                .collect();
            assert_eq!(sessions.len(), 3);
        });
    }
}
