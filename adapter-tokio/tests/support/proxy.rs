//! Loopback proxies in front of a tether server, as corporate networks put them: one that
//! refuses WebSocket upgrades (403) and passes plain HTTP through, optionally buffering
//! each response whole before passing it on; it can start allowing upgrades, and cut every
//! connection through it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub address: SocketAddr,
    /// Whether WebSocket upgrades go through (default: refused with 403).
    pub allow_upgrades: Arc<AtomicBool>,
    /// Upgrades refused, and let through.
    pub refused: Arc<AtomicUsize>,
    pub upgraded: Arc<AtomicUsize>,
    /// Plain HTTP requests passed through (counted per connection's first request).
    pub plain: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy to `upstream`; `buffering` holds each HTTP response until it is complete.
    pub async fn start(upstream: SocketAddr, buffering: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("an address");
        let allow_upgrades = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let upgraded = Arc::new(AtomicUsize::new(0));
        let plain = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let task = {
            let allow = allow_upgrades.clone();
            let (refused, upgraded, plain) = (refused.clone(), upgraded.clone(), plain.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let allow = allow.clone();
                    let (refused, upgraded, plain) =
                        (refused.clone(), upgraded.clone(), plain.clone());
                    let mut cuts = cuts.clone();
                    cuts.mark_unchanged();
                    tokio::spawn(async move {
                        let serve = serve(
                            client, upstream, buffering, &allow, &refused, &upgraded, &plain,
                        );
                        tokio::select! {
                            _ = serve => {}
                            _ = cuts.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            address,
            allow_upgrades,
            refused,
            upgraded,
            plain,
            cut,
            task,
        }
    }

    /// Closes every connection through the proxy now (the next ones go through).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

/// Reads up to the end of a request or response head; `None` if the peer closed first.
async fn head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || buffer.len() > 64 * 1024 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    buffering: bool,
    allow: &AtomicBool,
    refused: &AtomicUsize,
    upgraded: &AtomicUsize,
    plain: &AtomicUsize,
) {
    let mut buffer = Vec::new();
    let Some(end) = head(&mut client, &mut buffer).await else {
        return;
    };
    let text = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let upgrade = header(&text, "upgrade").is_some_and(|v| v.contains("websocket"));
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if upgrade {
        if !allow.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            let _ = client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        upgraded.fetch_add(1, Ordering::SeqCst);
        if server.write_all(&buffer).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    plain.fetch_add(1, Ordering::SeqCst);
    if !buffering {
        if server.write_all(&buffer).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    // Buffering: one request at a time; each response is read whole (by its length, or
    // its chunks to the last) before any of it is passed on.
    let mut end = end;
    loop {
        let text = text_of(&buffer, end);
        if header(&text, "upgrade").is_some() {
            return;
        }
        let length: usize = header(&text, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < end + length {
            let mut chunk = [0u8; 4096];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        if server.write_all(&buffer[..end + length]).await.is_err() {
            return;
        }
        buffer.drain(..end + length);
        let Some(response) = whole_response(&mut server).await else {
            return;
        };
        if client.write_all(&response).await.is_err() {
            return;
        }
        let Some(next) = head(&mut client, &mut buffer).await else {
            return;
        };
        end = next;
    }
}

fn text_of(buffer: &[u8], end: usize) -> String {
    String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase()
}

/// Reads from `server` into `response` until it holds at least `want` bytes.
async fn fill(server: &mut TcpStream, response: &mut Vec<u8>, want: usize) -> Option<()> {
    while response.len() < want {
        let mut chunk = [0u8; 4096];
        let read = server.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..read]);
    }
    Some(())
}

/// Reads one whole HTTP response from `server`: its head and its body (by length, or its
/// chunks up to the last one).
async fn whole_response(server: &mut TcpStream) -> Option<Vec<u8>> {
    let mut response = Vec::new();
    let end = head(server, &mut response).await?;
    let text = text_of(&response, end);
    if let Some(length) = header(&text, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        fill(server, &mut response, end + length).await?;
        return Some(response);
    }
    // Chunked: a size line, that many bytes and CRLF, until the size 0 and its CRLF.
    let mut at = end;
    loop {
        let line_end = loop {
            if let Some(position) = response[at..].windows(2).position(|w| w == b"\r\n") {
                break at + position;
            }
            let have = response.len();
            fill(server, &mut response, have + 1).await?;
        };
        let size = usize::from_str_radix(
            std::str::from_utf8(&response[at..line_end]).ok()?.trim(),
            16,
        )
        .ok()?;
        at = line_end + 2 + size + 2;
        fill(server, &mut response, at).await?;
        if size == 0 {
            return Some(response);
        }
    }
}
