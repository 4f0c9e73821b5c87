//! The HTTP request that opens a connection, read before the WebSocket layer sees it, so
//! that a request that is not a WebSocket upgrade gets an HTTP answer (400 or 426) instead
//! of a silent close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tether_core::wire::http::{MODE_HEADER, SEQ_HEADER, TRANSPORT_HEADER};

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
    /// A request of the HTTP binding (§2.5).
    Binding(Head),
    /// A CORS preflight (`OPTIONS`).
    Preflight,
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

/// What the HTTP binding needs of a request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: String,
    /// `X-Tether-Transport`.
    pub(crate) transport: Option<String>,
    /// `X-Tether-Seq`, as given.
    pub(crate) seq: Option<String>,
    /// `X-Tether-Mode`.
    pub(crate) mode: Option<String>,
    /// `Content-Length`, if given and valid (a chunked request body is not taken).
    pub(crate) content_length: Option<usize>,
    /// The client asked to close the socket after this request (`Connection: close`, or
    /// HTTP/1.0).
    pub(crate) close: bool,
    /// A repeated binding header or `Content-Length`, or a chunked body: refused (`400`).
    pub(crate) malformed: bool,
}

/// An HTTP/1.1 socket read one request at a time (keep-alive), the bytes read ahead kept.
pub(crate) struct HttpConn<S> {
    stream: S,
    /// Bytes read and not yet consumed (a head, a body, the next request).
    buffer: Vec<u8>,
}

impl<S: AsyncRead + Unpin> HttpConn<S> {
    pub(crate) fn new(stream: S) -> HttpConn<S> {
        HttpConn {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The socket (to answer on).
    pub(crate) fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads the next request head: what it asks for, or `None` when the peer closed
    /// between requests. A head that is not the binding's stays in the buffer (the
    /// WebSocket layer reads it again: [`into_replayed`](Self::into_replayed)).
    pub(crate) async fn next_request(&mut self) -> io::Result<Option<Request>> {
        let mut chunk = [0u8; 1024];
        loop {
            if !self.buffer.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&self.buffer) {
                    Ok(httparse::Status::Complete(length)) => {
                        let request = classify(&parsed);
                        if matches!(request, Request::Binding(_) | Request::Preflight) {
                            self.buffer.drain(..length);
                        }
                        return Ok(Some(request));
                    }
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => {
                        return Ok(Some(Request::Refused(
                            "431 Request Header Fields Too Large",
                        )));
                    }
                    Err(_) => return Ok(Some(Request::Refused("400 Bad Request"))),
                }
            }
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended inside the request",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Reads a body of `length` bytes.
    pub(crate) async fn read_body(&mut self, length: usize) -> io::Result<bytes::Bytes> {
        let mut body = Vec::with_capacity(length);
        let buffered = length.min(self.buffer.len());
        body.extend(self.buffer.drain(..buffered));
        let mut chunk = [0u8; 4096];
        while body.len() < length {
            let want = (length - body.len()).min(chunk.len());
            let read = self.stream.read(&mut chunk[..want]).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended inside the body",
                ));
            }
            body.extend_from_slice(&chunk[..read]);
        }
        Ok(body.into())
    }

    /// The socket with what was read ahead put back in front (for the WebSocket layer).
    pub(crate) fn into_replayed(self) -> Replayed<S> {
        Replayed {
            head: self.buffer,
            at: 0,
            stream: self.stream,
        }
    }
}

fn classify(request: &httparse::Request<'_, '_>) -> Request {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
    };
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
    let binding = |method: &str| {
        let repeated = |name: &str| {
            request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .count()
                > 1
        };
        let malformed = [TRANSPORT_HEADER, SEQ_HEADER, MODE_HEADER, "content-length"]
            .iter()
            .any(|name| repeated(name))
            || has("transfer-encoding", "chunked");
        Request::Binding(Head {
            malformed,
            method: method.to_owned(),
            transport: header(TRANSPORT_HEADER).map(str::to_owned),
            seq: header(SEQ_HEADER).map(str::to_owned),
            mode: header(MODE_HEADER).map(|v| v.trim().to_owned()),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            close: has("connection", "close") || request.version == Some(0),
        })
    };
    match request.method {
        Some("OPTIONS") => return Request::Preflight,
        Some("POST") => return binding("POST"),
        Some("GET") => {}
        _ => return Request::Refused("405 Method Not Allowed"),
    }
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        if header(TRANSPORT_HEADER).is_some() {
            return binding("GET");
        }
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
