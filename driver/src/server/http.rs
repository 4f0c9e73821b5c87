//! The HTTP request that opens a connection, read before the WebSocket layer sees it, so
//! that a request that is not a WebSocket upgrade gets an HTTP answer (400 or 426) instead
//! of a silent close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head read (request line and headers).
const MAX_HEAD: usize = 8 * 1024;

/// The most headers a request may have.
const MAX_HEADERS: usize = 32;

/// What the request head asks for.
pub(crate) enum Request {
    /// A WebSocket upgrade: hand the stream, head included, to the WebSocket layer.
    Upgrade,
    /// Not an upgrade; answered with this status, then closed.
    Refused(&'static str),
    /// A plain `GET` of an operator's endpoint; answered, then closed.
    Endpoint(Endpoint),
}

/// The operator's endpoints on the server's own port (plain `GET`, no upgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/metrics`: Prometheus text.
    Metrics,
    /// `/health`: alive (the process answers).
    Health,
    /// `/ready`: serving, the hub answering, the store taking writes.
    Ready,
}

/// Reads the request head from `stream`; returns what it asks for and the stream with the
/// bytes read put back in front.
pub(crate) async fn read_request<S>(mut stream: S) -> io::Result<(Request, Replayed<S>)>
where
    S: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let request = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside the request",
            ));
        }
        head.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => break classify(&parsed),
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                break Request::Refused("431 Request Header Fields Too Large");
            }
            Err(_) => break Request::Refused("400 Bad Request"),
        }
    };
    Ok((
        request,
        Replayed {
            head,
            at: 0,
            stream,
        },
    ))
}

fn classify(request: &httparse::Request<'_, '_>) -> Request {
    let has = |name: &str, token: &str| {
        request.headers.iter().any(|header| {
            header.name.eq_ignore_ascii_case(name)
                && std::str::from_utf8(header.value).is_ok_and(|value| {
                    value
                        .split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
        })
    };
    if request.method != Some("GET") {
        return Request::Refused("405 Method Not Allowed");
    }
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        let path = request.path.unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path);
        return match path {
            "/metrics" => Request::Endpoint(Endpoint::Metrics),
            "/health" => Request::Endpoint(Endpoint::Health),
            "/ready" => Request::Endpoint(Endpoint::Ready),
            _ => Request::Refused("426 Upgrade Required"),
        };
    }
    Request::Upgrade
}

/// Answers a refused request with `status` and no body, then closes the stream.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: &str) {
    let upgrade = if status.starts_with("426") {
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    } else {
        "Connection: close\r\n"
    };
    let answer = format!("HTTP/1.1 {status}\r\n{upgrade}Content-Length: 0\r\n\r\n");
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.close().await;
}

/// A stream whose first bytes are those already read from it.
pub(crate) struct Replayed<S> {
    head: Vec<u8>,
    at: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.head.len() {
            let count = buffer.len().min(self.head.len() - self.at);
            buffer[..count].copy_from_slice(&self.head[self.at..self.at + count]);
            self.at += count;
            if self.at == self.head.len() {
                // Replayed: free it, this wrapper lives as long as the connection.
                self.head = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(count));
        }
        Pin::new(&mut self.stream).poll_read(cx, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
