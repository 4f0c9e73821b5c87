//! The abuse suite: every attack of issue 13 and the brief's list against real servers of
//! both adapters (tokio, async-std) on loopback, with a well-behaved subscriber and publisher
//! running alongside. For each attack it prints one line — the code the attacker got (or
//! how it was closed), what the guard lost so far, and the server's peak RSS — and at the end
//! `N passed, M failed`; it exits non-zero if any attack was not answered as specified, if
//! the guard lost, duplicated or reordered a message, or if the RSS passed idle + 64 MB.
//!
//! `cargo run --release -p tether-async-std --example abuse` (about a minute; every loop is
//! bounded in count and time; loopback only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::StreamExt;
use tether_async_std::{ChannelEvent, Client, ClientOptions};
use tether_core::ErrorCode;
use tether_core::embed::{DeliveryAudit, SocketLimits, unix_ms};
use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, mint_token};
use tether_core::wire::ProtocolVersion;
use tether_core::wire::{
    self, ChannelName, ClientFrame, ClientId, Credentials, Limits, Message, MessageId,
    PROTOCOL_VERSION, ServerFrame,
};
use tungstenite::Message as Ws;

#[path = "../tests/support/sockets.rs"]
mod sockets_seen;
use sockets_seen::{ended_within, gone_within};

/// The RSS a server may grow by under attack.
const RSS_BOUND: u64 = 64 * 1024 * 1024;
/// Every wait of an attack is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }
}

fn sockets() -> SocketLimits {
    let mut limits = SocketLimits::default();
    limits.handshake_timeout = Duration::from_secs(2);
    limits.max_pending_handshakes = 512;
    limits.close_timeout = Duration::from_secs(1);
    limits
}

/// The server under attack, in this process.
enum Server {
    Tokio(tokio::runtime::Runtime, tether_tokio::Server),
    AsyncStd(tether_async_std::Server),
}

impl Server {
    fn start(tokio: bool) -> Server {
        let hub = {
            let mut config = HubConfig::default();
            config.keys = vec![key()];
            config
        };
        if tokio {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut config = tether_tokio::ServerConfig::new(hub);
            config.sockets = sockets();
            let server = runtime
                .block_on(tether_tokio::Server::bind("127.0.0.1:0", config))
                .expect("binds");
            Server::Tokio(runtime, server)
        } else {
            let mut config = tether_async_std::ServerConfig::new(hub);
            config.sockets = sockets();
            let server =
                async_std::task::block_on(tether_async_std::Server::bind("127.0.0.1:0", config))
                    .expect("binds");
            Server::AsyncStd(server)
        }
    }

    fn address(&self) -> SocketAddr {
        match self {
            Server::Tokio(_, server) => server.local_addr(),
            Server::AsyncStd(server) => server.local_addr(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Server::Tokio(..) => "tokio",
            Server::AsyncStd(_) => "async-std",
        }
    }

    fn stop(self) {
        match self {
            Server::Tokio(runtime, server) => runtime.block_on(server.shutdown()),
            Server::AsyncStd(server) => async_std::task::block_on(server.shutdown()),
        }
    }
}

/// This process's resident set size, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Samples the RSS every 20 ms and keeps the peak, until dropped.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start() -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { peak, stop }
    }

    fn take_peak(&self) -> u64 {
        self.peak.swap(rss(), Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A well-behaved subscriber and publisher on `guard`, running on async-std's executor.
struct Guard {
    received: Arc<Mutex<Vec<(usize, usize)>>>,
    acked: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
    discontinuities: Arc<AtomicU64>,
}

impl Guard {
    fn start(address: SocketAddr) -> Guard {
        let url = format!("ws://{address}/");
        let guard = Guard {
            received: Arc::default(),
            acked: Arc::default(),
            stop: Arc::default(),
            discontinuities: Arc::default(),
        };
        let subscriber =
            Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
        let mut events = async_std::task::block_on(async {
            subscriber.channel("guard").expect("name").subscribe().await
        })
        .expect("the guard subscribes");
        let (received, discontinuities) = (guard.received.clone(), guard.discontinuities.clone());
        async_std::task::spawn(async move {
            let _keep = subscriber;
            while let Some(event) = events.next().await {
                match event {
                    ChannelEvent::Message(m) => {
                        if let Some(label) = DeliveryAudit::parse_label(&m.message.data) {
                            received.lock().expect("not poisoned").push(label);
                        }
                    }
                    ChannelEvent::Discontinuity { .. } => {
                        discontinuities.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        let publisher =
            Client::connect(&url, ClientOptions::api_key("app", "app-secret")).expect("url");
        let (acked, stop) = (guard.acked.clone(), guard.stop.clone());
        async_std::task::spawn(async move {
            let channel = publisher.channel("guard").expect("name");
            // At most 10 minutes of publishing, one message every 10 ms.
            for sequence in 0..60_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if channel
                    .publish("g", DeliveryAudit::label(0, sequence))
                    .await
                    .is_ok()
                {
                    acked.lock().expect("not poisoned").push(sequence);
                }
                async_io::Timer::after(Duration::from_millis(10)).await;
            }
            publisher.close().await;
        });
        guard
    }

    /// Lost, duplicated, reordered so far (waits up to [`WAIT`] for the subscriber to catch
    /// up with what was acknowledged).
    fn audit(&self) -> (usize, usize, usize) {
        let start = Instant::now();
        loop {
            let acked = self.acked.lock().expect("not poisoned").clone();
            let received = self.received.lock().expect("not poisoned").clone();
            let mut audit = DeliveryAudit::new();
            for sequence in &acked {
                audit.acked(0, *sequence);
            }
            audit.subscriber(received);
            let report = audit.report();
            if report.lost == 0 || start.elapsed() > WAIT {
                return (report.lost, report.duplicated, report.reordered);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A raw WebSocket client speaking tether frames by hand.
struct Raw(tungstenite::WebSocket<TcpStream>);

impl Raw {
    fn open(address: SocketAddr) -> Raw {
        let stream = TcpStream::connect(address).expect("connects");
        let (ws, _) = tungstenite::client(format!("ws://{address}/"), stream).expect("upgrades");
        ws.get_ref().set_read_timeout(Some(WAIT)).expect("timeout");
        Raw(ws)
    }

    /// Opens and connects with the `app` key as `client_id`.
    fn connected(address: SocketAddr, client_id: &str) -> Raw {
        let mut raw = Raw::open(address);
        raw.send(&connect(
            Credentials::ApiKey {
                name: "app".into(),
                secret: "app-secret".into(),
            },
            client_id,
        ));
        match raw.next() {
            Some(ServerFrame::Connected { .. }) => raw,
            other => panic!("expected connected, got {other:?}"),
        }
    }

    fn send(&mut self, frame: &ClientFrame) -> bool {
        let bytes = wire::encode(frame, &Limits::PROTOCOL_MAX).expect("encodes");
        self.0.send(Ws::Binary(bytes)).is_ok()
    }

    fn send_raw(&mut self, message: Ws) -> bool {
        self.0.send(message).is_ok()
    }

    /// The next tether frame, or `None` once closed.
    fn next(&mut self) -> Option<ServerFrame> {
        loop {
            match self.0.read() {
                Ok(Ws::Binary(bytes)) => {
                    return wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX).ok();
                }
                Ok(Ws::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the server closes: the first error or disconnect code, and the WebSocket
    /// close code.
    fn outcome(&mut self) -> (Option<ErrorCode>, Option<u16>) {
        let mut code = None;
        let start = Instant::now();
        while start.elapsed() < WAIT {
            match self.0.read() {
                Ok(Ws::Binary(bytes)) => {
                    match wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX) {
                        Ok(ServerFrame::Error { error } | ServerFrame::Disconnect { error }) => {
                            code = code.or(Some(error.code));
                        }
                        Ok(
                            ServerFrame::Nack { error, .. }
                            | ServerFrame::Detached {
                                error: Some(error), ..
                            },
                        ) => code = code.or(Some(error.code)),
                        _ => {}
                    }
                }
                Ok(Ws::Close(frame)) => return (code, frame.map(|f| u16::from(f.code))),
                Ok(_) => {}
                Err(_) => return (code, None),
            }
        }
        (code, None)
    }
}

fn connect(credentials: Credentials, client_id: &str) -> ClientFrame {
    ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials,
        client_id: Some(ClientId::new(client_id).expect("id")),
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    }
}

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).expect("name")
}

/// What an attack saw, and whether that is what the spec says.
struct Seen {
    what: String,
    ok: bool,
}

fn expect_code(got: (Option<ErrorCode>, Option<u16>), want: ErrorCode) -> Seen {
    let (code, close) = got;
    Seen {
        what: format!(
            "code {} close {}",
            code.map_or("none".into(), |c| c.as_u32().to_string()),
            close.map_or("none".into(), |c| c.to_string())
        ),
        ok: code == Some(want),
    }
}

fn token(claims: &Claims, signing: &ApiKey) -> String {
    mint_token(signing, claims).expect("signs")
}

fn now_s() -> u64 {
    unix_ms(SystemTime::now()) / 1000
}

type Attack = fn(SocketAddr) -> Seen;

/// The attacks, by name.
const ATTACKS: &[(&str, Attack)] = &[
    ("history flood, never reading (13.1)", history_flood),
    ("pong flood, never reading (13.1)", ping_flood),
    ("200 silent sockets (13.2)", silent_sockets),
    ("slowloris (13.2)", slowloris),
    ("garbage before the upgrade (13.7)", garbage),
    ("plain HTTP request (13.7)", plain_http),
    (
        "non-reading subscriber under a flood (13.3)",
        non_reading_subscriber,
    ),
    ("attach/detach flood of new names (13.4)", channel_churn),
    ("10,000 attaches (13.4)", many_attaches),
    ("20,000 token renewals (13.6)", renewals),
    ("65,537-byte message (13.7)", oversized),
    ("2^60-byte frame header (13.7)", huge_header),
    ("fragmented flood (13.7)", fragmented),
    ("text message (13.7)", text),
    ("reserved bits set (13.7)", reserved_bits),
    ("version 99", version_99),
    ("garbage token (13.8)", bad_token),
    ("alg none token (13.8)", alg_none),
    ("token of an unknown key (13.8)", unknown_kid),
    ("expired token (13.8)", expired),
    ("publish claiming 2^32 messages (13.9)", count_2_32),
    ("publish of no message (13.9)", empty_publish),
    (
        "HTTP binding: up request for an unknown transport",
        http_unknown_transport,
    ),
    ("HTTP binding: up requests out of order", http_out_of_order),
    ("HTTP binding: oversized up body", http_oversized),
    ("HTTP binding: up body without a length", http_no_length),
    ("HTTP binding: a down stream never read", http_never_read),
    (
        "HTTP binding: bodies sent slowly, preflights, idle sockets",
        http_held_sockets,
    ),
];

fn history_flood(address: SocketAddr) -> Seen {
    let mut publisher = Raw::connected(address, "hist-pub");
    for n in 0..20u64 {
        publisher.send(&ClientFrame::Publish {
            serial: n,
            channel: channel("hist"),
            messages: vec![Message {
                id: MessageId::new(format!("h{n}")).expect("id"),
                name: "h".into(),
                data: vec![b'h'; 60_000].into(),
            }],
        });
        publisher.next();
    }
    let mut attacker = Raw::connected(address, "hist-attacker");
    let query = tether_core::wire::HistoryQuery {
        start: None,
        end: None,
        direction: tether_core::wire::Direction::Backwards,
        limit: 1,
    };
    for request_id in 0..20_000 {
        let frame = ClientFrame::HistoryRequest {
            request_id,
            channel: channel("hist"),
            query,
        };
        if !attacker.send(&frame) {
            break;
        }
    }
    torn_down(address, &attacker)
}

fn ping_flood(address: SocketAddr) -> Seen {
    // 2 million pings (at most 15 s of sending), flushed in batches: their pongs are more
    // than the kernel's socket buffers hold, so they queue on the server.
    let mut attacker = Raw::connected(address, "pinger");
    let start = Instant::now();
    for id in 0..2_000_000u64 {
        let bytes =
            wire::encode(&ClientFrame::Ping { id }, &Limits::PROTOCOL_MAX).expect("encodes");
        let flush = id % 1000 == 999;
        let sent =
            attacker.0.write(Ws::Binary(bytes)).is_ok() && (!flush || attacker.0.flush().is_ok());
        if !sent || start.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    torn_down(address, &attacker)
}

/// A client that never reads cannot see its `slow_consumer`: what it gets is its socket
/// closed by the server within the close timeout.
fn torn_down(address: SocketAddr, attacker: &Raw) -> Seen {
    let peer = attacker.0.get_ref().local_addr().expect("address").port();
    let gone = gone_within(address.port(), peer, WAIT);
    Seen {
        what: gone.map_or("socket still open".into(), |after| {
            format!("socket gone after {:.1} s", after.as_secs_f32())
        }),
        ok: gone.is_some(),
    }
}

fn silent_sockets(address: SocketAddr) -> Seen {
    let mut silent: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(address).ok())
        .collect();
    let deadline = sockets().handshake_timeout + Duration::from_secs(2);
    let start = Instant::now();
    let closed = silent
        .iter_mut()
        .map(|s| {
            let left = deadline.saturating_sub(start.elapsed());
            ended_within(s, left.max(Duration::from_millis(100))).is_some()
        })
        .filter(|ended| *ended)
        .count();
    Seen {
        what: format!("{closed} of 200 closed"),
        ok: closed == 200,
    }
}

fn slowloris(address: SocketAddr) -> Seen {
    let mut socket = TcpStream::connect(address).expect("connects");
    let start = Instant::now();
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" {
        if socket.write_all(&[*byte]).is_err() || start.elapsed() > Duration::from_secs(4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = ended_within(&mut socket, Duration::from_secs(2)).is_some();
    Seen {
        what: format!(
            "{} after {:.1} s",
            if closed { "closed" } else { "open" },
            start.elapsed().as_secs_f32()
        ),
        ok: closed && start.elapsed() < sockets().handshake_timeout + Duration::from_secs(3),
    }
}

fn http_status(address: SocketAddr, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(address).expect("connects");
    let _ = socket.write_all(request);
    let _ = socket.set_read_timeout(Some(WAIT));
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn garbage(address: SocketAddr) -> Seen {
    let status = http_status(address, b"\x00\x01\x02garbage\r\n\r\n");
    Seen {
        ok: status.contains(" 400 "),
        what: status,
    }
}

fn plain_http(address: SocketAddr) -> Seen {
    let status = http_status(address, b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n");
    Seen {
        ok: status.contains(" 426 "),
        what: status,
    }
}

fn non_reading_subscriber(address: SocketAddr) -> Seen {
    let mut subscriber = Raw::connected(address, "never-reads");
    subscriber.send(&ClientFrame::Attach {
        channel: channel("flood"),
        from: None,
    });
    subscriber.next();
    let mut publisher = Raw::connected(address, "flooder");
    for n in 0..200u64 {
        publisher.send(&ClientFrame::Publish {
            serial: n,
            channel: channel("flood"),
            messages: vec![Message {
                id: MessageId::new(format!("f{n}")).expect("id"),
                name: "f".into(),
                data: vec![b'f'; 60_000].into(),
            }],
        });
        publisher.next();
    }
    torn_down(address, &subscriber)
}

fn channel_churn(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "churner");
    let mut refused = None;
    for i in 0..10_000 {
        let name = channel(&format!("x:{i}"));
        attacker.send(&ClientFrame::Attach {
            channel: name.clone(),
            from: None,
        });
        match attacker.next() {
            Some(ServerFrame::Attached { .. }) => {}
            Some(ServerFrame::Detached {
                error: Some(error), ..
            }) => {
                refused = Some(error.code);
                break;
            }
            _ => break,
        }
        attacker.send(&ClientFrame::Detach { channel: name });
        attacker.next();
    }
    // Another client can still create a channel.
    let mut other = Raw::connected(address, "other");
    other.send(&ClientFrame::Attach {
        channel: channel("fresh"),
        from: None,
    });
    let other_ok = matches!(other.next(), Some(ServerFrame::Attached { .. }));
    Seen {
        what: format!(
            "attacker {}, another client {}",
            refused.map_or("never refused".into(), |c| c.as_u32().to_string()),
            if other_ok { "attached" } else { "refused" }
        ),
        ok: refused == Some(ErrorCode::LimitExceeded) && other_ok,
    }
}

fn many_attaches(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "attacher");
    let mut refused = None;
    for i in 0..10_000 {
        attacker.send(&ClientFrame::Attach {
            channel: channel(&format!("a:{}", i % 150)),
            from: None,
        });
        if let Some(ServerFrame::Detached {
            error: Some(error), ..
        }) = attacker.next()
        {
            refused = Some(error.code);
            break;
        }
    }
    expect_code((refused, None), ErrorCode::TooManyChannels)
}

fn renewals(address: SocketAddr) -> Seen {
    let year = Duration::from_secs(365 * 24 * 3600);
    let claims = Claims::new("renewer", Capabilities::all(), now_s(), year);
    let mut client = Raw::open(address);
    client.send(&ClientFrame::Connect {
        version: PROTOCOL_VERSION,
        credentials: Credentials::Token {
            token: token(&claims, &key()),
        },
        client_id: None,
        resume: None,
        heartbeat_interval_ms: None,
        options: None,
    });
    client.next();
    let renewed = token(&claims, &key());
    let mut authed = 0;
    for _ in 0..20_000 {
        client.send(&ClientFrame::Auth {
            token: renewed.clone(),
        });
        if let Some(ServerFrame::Authed { error: None, .. }) = client.next() {
            authed += 1;
        }
    }
    Seen {
        what: format!("{authed} of 20000 renewals answered"),
        ok: authed == 20_000,
    }
}

fn oversized(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "big");
    attacker.send_raw(Ws::Binary(vec![0u8; 65_537].into()));
    expect_code(attacker.outcome(), ErrorCode::FrameTooLarge)
}

/// Writes raw bytes on the socket under a connected raw client, then reads the outcome.
fn raw_bytes_outcome(
    address: SocketAddr,
    who: &str,
    bytes: &[u8],
) -> (Option<ErrorCode>, Option<u16>) {
    let raw = Raw::connected(address, who);
    let mut stream = raw.0.into_inner();
    let _ = stream.write_all(bytes);
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let _ = ws.get_mut().set_read_timeout(Some(WAIT));
    Raw(ws).outcome()
}

fn huge_header(address: SocketAddr) -> Seen {
    // FIN + binary, masked, 64-bit length 2^60, a mask, then nothing.
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(1u64 << 60).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    expect_code(
        raw_bytes_outcome(address, "huge", &frame),
        ErrorCode::FrameTooLarge,
    )
}

fn fragmented(address: SocketAddr) -> Seen {
    // A binary message in 1,000 fragments of 100 bytes: 100 KB, over the 64 KiB limit.
    let mut bytes = Vec::new();
    for n in 0..1000 {
        let opcode = if n == 0 { 0x02 } else { 0x00 };
        let fin = if n == 999 { 0x80 } else { 0x00 };
        bytes.extend_from_slice(&[fin | opcode, 0x80 | 100, 0, 0, 0, 0]);
        bytes.extend_from_slice(&[7u8; 100]);
    }
    expect_code(
        raw_bytes_outcome(address, "fragments", &bytes),
        ErrorCode::FrameTooLarge,
    )
}

fn text(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "texter");
    attacker.send_raw(Ws::text("hello"));
    expect_code(attacker.outcome(), ErrorCode::MalformedFrame)
}

fn reserved_bits(address: SocketAddr) -> Seen {
    let (code, close) = raw_bytes_outcome(address, "rsv", &[0xC2, 0x81, 1, 2, 3, 4, 0xAA]);
    Seen {
        what: format!("close {}", close.map_or("none".into(), |c| c.to_string())),
        ok: close == Some(1002) && code.is_none(),
    }
}

fn version_99(address: SocketAddr) -> Seen {
    let mut attacker = Raw::open(address);
    let mut frame = connect(
        Credentials::ApiKey {
            name: "app".into(),
            secret: "app-secret".into(),
        },
        "future",
    );
    if let ClientFrame::Connect { version, .. } = &mut frame {
        *version = ProtocolVersion {
            major: 99,
            minor: 0,
        };
    }
    attacker.send(&frame);
    expect_code(attacker.outcome(), ErrorCode::UnsupportedVersion)
}

fn token_outcome(token: String) -> impl FnOnce(SocketAddr) -> (Option<ErrorCode>, Option<u16>) {
    move |address| {
        let mut attacker = Raw::open(address);
        attacker.send(&ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials: Credentials::Token { token },
            client_id: None,
            resume: None,
            heartbeat_interval_ms: None,
            options: None,
        });
        attacker.outcome()
    }
}

fn bad_token(address: SocketAddr) -> Seen {
    expect_code(
        token_outcome("not.a.jwt".into())(address),
        ErrorCode::TokenInvalid,
    )
}

fn alg_none(address: SocketAddr) -> Seen {
    // {"alg":"none","kid":"app"} . {"sub":"x","exp":9999999999} . (no signature)
    let token = "eyJhbGciOiJub25lIiwia2lkIjoiYXBwIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    expect_code(
        token_outcome(token.into())(address),
        ErrorCode::TokenInvalid,
    )
}

fn unknown_kid(address: SocketAddr) -> Seen {
    let stranger = ApiKey {
        name: "stranger".into(),
        secret: "stranger-secret".into(),
        capabilities: Capabilities::all(),
    };
    let claims = Claims::new("x", Capabilities::all(), now_s(), Duration::from_secs(60));
    expect_code(
        token_outcome(token(&claims, &stranger))(address),
        ErrorCode::TokenKeyUnknown,
    )
}

fn expired(address: SocketAddr) -> Seen {
    let claims = Claims::new(
        "x",
        Capabilities::all(),
        now_s() - 3600,
        Duration::from_secs(60),
    );
    expect_code(
        token_outcome(token(&claims, &key()))(address),
        ErrorCode::TokenExpired,
    )
}

fn count_2_32(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "counter");
    let empty = ClientFrame::Publish {
        serial: 0,
        channel: channel("news"),
        messages: vec![],
    };
    let mut bytes = wire::encode(&empty, &Limits::PROTOCOL_MAX)
        .expect("encodes")
        .to_vec();
    bytes.pop(); // the count 0, replaced by 2^32 as a varint
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10]);
    attacker.send_raw(Ws::Binary(bytes.into()));
    expect_code(attacker.outcome(), ErrorCode::TooManyMessages)
}

fn empty_publish(address: SocketAddr) -> Seen {
    let mut attacker = Raw::connected(address, "empty");
    attacker.send(&ClientFrame::Publish {
        serial: 0,
        channel: channel("news"),
        messages: vec![],
    });
    let code = match attacker.next() {
        Some(ServerFrame::Nack { error, .. }) => Some(error.code),
        _ => None,
    };
    expect_code((code, None), ErrorCode::InvalidMessage)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    for tokio in [true, false] {
        let server = Server::start(tokio);
        let address = server.address();
        let guard = Guard::start(address);
        std::thread::sleep(Duration::from_millis(300));
        let watch = RssWatch::start();
        let idle = rss();
        for (name, attack) in ATTACKS {
            let seen = attack(address);
            let peak = watch.take_peak();
            let (lost, duplicated, reordered) = guard.audit();
            let rss_ok = peak <= idle + RSS_BOUND;
            let ok = seen.ok && rss_ok && lost + duplicated + reordered == 0;
            println!(
                "{} {:<9} {:<46} {:<34} guard lost {lost} dup {duplicated} reordered {reordered}  peak RSS +{} MB",
                if ok { "ok  " } else { "FAIL" },
                server.name(),
                name,
                seen.what,
                peak.saturating_sub(idle) / (1024 * 1024),
            );
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
        guard.stop();
        let discontinuities = guard.discontinuities.load(Ordering::Relaxed);
        if discontinuities > 0 {
            println!(
                "FAIL {:<9} the guard saw {discontinuities} discontinuities",
                server.name()
            );
            failed += 1;
        }
        server.stop();
    }
    println!("(abuse suite in {:.0} s)", started.elapsed().as_secs_f32());
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One HTTP/1.1 request on a fresh socket (`Connection: close`): the whole answer.
fn http_exchange(address: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(address).expect("connects");
    let _ = socket.write_all(head.as_bytes());
    let _ = socket.write_all(body);
    let _ = socket.set_read_timeout(Some(WAIT));
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    answer
}

fn status_line(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// An up body holding `frames`.
fn up_body(frames: &[ClientFrame]) -> Vec<u8> {
    let mut body = bytes::BytesMut::new();
    for frame in frames {
        let encoded = wire::encode(frame, &Limits::PROTOCOL_MAX).expect("encodes");
        tether_core::wire::http::put_frame(&mut body, &encoded);
    }
    body.to_vec()
}

/// Opens an HTTP binding transport connected as `client_id`: its id.
fn http_open(address: SocketAddr, client_id: &str) -> Option<String> {
    let body = up_body(&[connect(
        Credentials::ApiKey {
            name: "app".into(),
            secret: "app-secret".into(),
        },
        client_id,
    )]);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = http_exchange(address, &head, &body);
    let text = String::from_utf8_lossy(&answer);
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-tether-transport")
            .then(|| value.trim().to_owned())
    })
}

fn http_up(address: SocketAddr, transport: &str, seq: u64, body: &[u8]) -> String {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tether-Transport: {transport}\r\nX-Tether-Seq: {seq}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    status_line(&http_exchange(address, &head, body))
}

fn http_unknown_transport(address: SocketAddr) -> Seen {
    let body = up_body(&[ClientFrame::Heartbeat]);
    let status = http_up(address, "AAAAAAAAAAAAAAAAAAAAAA", 0, &body);
    Seen {
        ok: status.contains(" 404 "),
        what: status,
    }
}

fn http_out_of_order(address: SocketAddr) -> Seen {
    let Some(transport) = http_open(address, "http-skipper") else {
        return Seen {
            what: "no transport opened".into(),
            ok: false,
        };
    };
    let body = up_body(&[ClientFrame::Heartbeat]);
    let skipped = http_up(address, &transport, 5, &body);
    // The transport is closed: the next request for it is unknown.
    let after = http_up(address, &transport, 0, &body);
    Seen {
        ok: skipped.contains(" 409 ") && after.contains(" 404 "),
        what: format!("{skipped}, then {after}"),
    }
}

fn http_oversized(address: SocketAddr) -> Seen {
    let Some(transport) = http_open(address, "http-oversized") else {
        return Seen {
            what: "no transport opened".into(),
            ok: false,
        };
    };
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tether-Transport: {transport}\r\nX-Tether-Seq: 0\r\nContent-Length: 1073741824\r\n\r\n"
    );
    let status = status_line(&http_exchange(address, &head, &[]));
    Seen {
        ok: status.contains(" 413 "),
        what: status,
    }
}

fn http_no_length(address: SocketAddr) -> Seen {
    let head =
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunked = status_line(&http_exchange(address, head, b"5\r\nhello\r\n0\r\n\r\n"));
    let head = "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let missing = status_line(&http_exchange(address, head, b""));
    Seen {
        ok: chunked.contains(" 400 ") && missing.contains(" 411 "),
        what: format!("chunked: {chunked}; no length: {missing}"),
    }
}

/// A transport that attaches to a flooded channel and opens a stream it never reads: the
/// hub's pending-bytes limit ends it (slow consumer); the server holds no more than that.
fn http_never_read(address: SocketAddr) -> Seen {
    let Some(transport) = http_open(address, "http-never-reads") else {
        return Seen {
            what: "no transport opened".into(),
            ok: false,
        };
    };
    let attach = up_body(&[ClientFrame::Attach {
        channel: channel("http-flood"),
        from: None,
    }]);
    let attached = http_up(address, &transport, 0, &attach);
    let mut stream = TcpStream::connect(address).expect("connects");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Tether-Transport: {transport}\r\nX-Tether-Mode: stream\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
    let mut publisher = Raw::connected(address, "http-flooder");
    for n in 0..200u64 {
        publisher.send(&ClientFrame::Publish {
            serial: n,
            channel: channel("http-flood"),
            messages: vec![Message {
                id: MessageId::new(format!("hf{n}")).expect("id"),
                name: "f".into(),
                data: vec![b'f'; 60_000].into(),
            }],
        });
        publisher.next();
    }
    // Ended by the hub: the next request for the transport is unknown.
    let start = Instant::now();
    let body = up_body(&[ClientFrame::Heartbeat]);
    let mut status = String::new();
    while start.elapsed() < WAIT {
        status = http_up(address, &transport, 1, &body);
        if status.contains(" 404 ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the server lets the never-read socket go (within the close timeout), not only the
    // transport.
    let peer = stream.local_addr().expect("an address").port();
    let gone = gone_within(address.port(), peer, WAIT);
    drop(stream);
    Seen {
        ok: attached.contains(" 204 ") && status.contains(" 404 ") && gone.is_some(),
        what: format!(
            "attach {attached}; after the flood {status}; socket {}",
            gone.map_or("still held".into(), |after| format!(
                "released after {:.1} s",
                after.as_secs_f32()
            ))
        ),
    }
}

/// Sockets that try to stay: a body never sent (its slot among handshakes), a preflight
/// (answered, then closed), keep-alive requests for one transport from many sockets (at most
/// four each).
fn http_held_sockets(address: SocketAddr) -> Seen {
    let deadline = sockets().handshake_timeout + Duration::from_secs(2);
    let mut slow = TcpStream::connect(address).expect("connects");
    let _ = slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
    let body_cut = ended_within(&mut slow, deadline).is_some();
    let mut preflight = TcpStream::connect(address).expect("connects");
    let _ = preflight.write_all(b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = preflight.set_read_timeout(Some(WAIT));
    let mut answer = Vec::new();
    let _ = preflight.read_to_end(&mut answer);
    let preflight_closed = status_line(&answer).contains(" 204 ");
    let Some(transport) = http_open(address, "http-many-sockets") else {
        return Seen {
            what: "no transport opened".into(),
            ok: false,
        };
    };
    let mut statuses = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..6 {
        let mut socket = TcpStream::connect(address).expect("connects");
        let head = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Tether-Transport: {transport}\r\nX-Tether-Mode: poll\r\n\r\n"
        );
        let _ = socket.write_all(head.as_bytes());
        let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
        let mut first = [0u8; 12];
        let _ = socket.read(&mut first);
        statuses.push(String::from_utf8_lossy(&first[9..12]).into_owned());
        kept.push(socket);
    }
    let refused = statuses.iter().filter(|s| *s == "429").count();
    Seen {
        ok: body_cut && preflight_closed && refused == 2,
        what: format!(
            "slow body cut: {body_cut}; preflight answered and closed: {preflight_closed}; 6 sockets for one transport: {}",
            statuses.join(" ")
        ),
    }
}
