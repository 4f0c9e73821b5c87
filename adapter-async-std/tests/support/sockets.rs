//! What a test can see of a server's sockets from outside, by plain blocking sockets and
//! Linux's `/proc/net/tcp`: shared by `tests/sockets.rs` and `examples/abuse.rs`.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Waits up to `limit` for the server to end `socket` (EOF or reset); returns how long it
/// took, or `None` if the socket is still open then.
pub fn ended_within(socket: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 4096];
    while start.elapsed() < limit {
        match socket.read(&mut buffer) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// Server-side sockets on `port` still ESTABLISHED to the peer port `peer`.
pub fn established(port: u16, peer: u16) -> usize {
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    f.len() > 3
                        && port_of(f[1]) == Some(port)
                        && port_of(f[2]) == Some(peer)
                        && f[3] == "01"
                })
                .count()
        })
        .sum()
}

/// Waits up to `limit` until the server's side of the connection from `peer` to `port` is
/// no longer ESTABLISHED; returns how long it took, or `None` if it still is.
pub fn gone_within(port: u16, peer: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    // Gone only when two reads 20 ms apart agree: /proc/net/tcp can skip a line while
    // other sockets open and close.
    let gone = || {
        established(port, peer) == 0 && {
            std::thread::sleep(Duration::from_millis(20));
            established(port, peer) == 0
        }
    };
    while !gone() {
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(start.elapsed())
}
