//! The HTTP binding on the server's own port (`docs/protocol.md` §2.5), for clients whose
//! WebSocket upgrade is blocked: a `POST` opens a transport (its body the first frames, its
//! answer the first down response and the transport's id), `GET`s carry the hub's frames
//! down (streamed, or polled through proxies that buffer), `POST`s carry the client's
//! frames up in order. One hub connection per transport, as a WebSocket is.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt, Stream, StreamExt};
use tether_core::embed::{Outbound, WriteBatch};
use tether_core::server::{ConnectionId, TransportViolation};
use tether_core::wire::http::{self as binding, Mark};

use super::connection::Queue;
use super::http::{Head, HttpConn};
use super::{Handshaking, Input, after, within};
use crate::runtime::Runtime;

/// How long a transport may go without a down request before it is closed.
pub(crate) const DOWN_GAP: Duration = Duration::from_secs(10);
/// The longest a streaming down response stays open; then it ends (`End`) and the client
/// asks for the next.
const STREAM_LIFETIME: Duration = Duration::from_secs(60);
/// The longest a polled down response waits for a frame; then it ends empty.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// Sockets one transport may use at once (a client needs two: down and up, and a third
/// while it replaces one); beyond, a request is answered `429` and its socket closed.
pub(crate) const MAX_SOCKETS_PER_TRANSPORT: usize = 4;

/// The transports open now, by id. At most one per hub connection.
#[derive(Default)]
pub(crate) struct Links {
    map: Mutex<HashMap<String, Arc<Link>>>,
}

impl Links {
    fn get(&self, id: &str) -> Option<Arc<Link>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn insert(&self, id: String, link: Arc<Link>) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, link);
    }

    fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// One transport of the HTTP binding.
struct Link {
    id: String,
    connection: ConnectionId,
    /// The hub's frames for this connection (see [`Queue`]): bounded in bytes by the hub.
    frames: flume::Receiver<Outbound>,
    /// Taken by the down response being written; a new one waits for it.
    down: Arc<tokio::sync::Mutex<()>>,
    /// Bumped by each new down request: the one writing ends when it changes.
    generation: AtomicU64,
    superseded: event_listener::Event,
    /// Taken by the up request being handled (one at a time), with the next sequence number.
    up: tokio::sync::Mutex<u64>,
    /// When a down response last ended (or the transport opened), in ms since `opened`.
    idle_since_ms: AtomicU64,
    /// Whether a down response is being written.
    downing: AtomicBool,
    opened: Instant,
    /// Set once the hub closed it (its last frames queued) or it was given up.
    closed: AtomicBool,
    /// Sockets serving it now (see [`Bound`]).
    sockets: std::sync::atomic::AtomicUsize,
}

/// A socket of the server's own port that serves one transport: counted against
/// [`MAX_SOCKETS_PER_TRANSPORT`] while it lives.
pub(crate) struct Bound(Arc<Link>);

impl Drop for Bound {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Link {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_since_ms.store(ms, Ordering::Relaxed);
    }
}

/// What serving HTTP binding requests needs.
pub(crate) struct Binding<R> {
    pub(crate) runtime: R,
    pub(crate) inputs: tokio::sync::mpsc::Sender<Input>,
    pub(crate) links: Arc<Links>,
    pub(crate) max_frame: usize,
    pub(crate) close_timeout: Duration,
}

/// A request of the HTTP binding (§2.5), read by whichever HTTP server received it.
#[derive(Clone, Debug, Default)]
pub struct BindingRequest {
    /// `GET` or `POST` (anything else is `405`).
    pub method: String,
    /// `X-Tether-Transport`, if given.
    pub transport: Option<String>,
    /// `X-Tether-Seq`, as given.
    pub seq: Option<String>,
    /// `X-Tether-Mode`, as given.
    pub mode: Option<String>,
}

/// The answer to a [`BindingRequest`]: a status, headers, and a body.
pub struct BindingAnswer {
    /// The HTTP status code.
    pub status: u16,
    /// Headers beyond those every answer of the binding has ([`BINDING_HEADERS`]).
    pub headers: Vec<(&'static str, String)>,
    /// The body: nothing, or a down body whose chunks come as the hub sends frames (ended
    /// by the `end` mark).
    pub body: Option<DownBody>,
    /// Whether the socket should close after the answer (the request was refused in a way
    /// that leaves the connection's state unknown).
    pub close: bool,
    /// The transport the answer's body belongs to (for the own port's teardown).
    link: Option<Arc<Link>>,
}

/// The headers every answer of the binding carries (CORS: no cookies are used, so any
/// origin may call).
pub const BINDING_HEADERS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "X-Tether-Transport"),
    ("cache-control", "no-cache, no-store"),
];

/// The headers of the answer to a CORS preflight (`OPTIONS`), status `204`.
pub const PREFLIGHT_HEADERS: [(&str, &str); 6] = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "X-Tether-Transport"),
    ("cache-control", "no-cache, no-store"),
    ("access-control-allow-methods", "GET, POST"),
    (
        "access-control-allow-headers",
        "Content-Type, X-Tether-Transport, X-Tether-Seq, X-Tether-Mode",
    ),
    ("access-control-max-age", "600"),
];

/// A down body: chunks of items, in order, the last one holding the `end` mark. Each
/// chunk's frames are reported written to the hub when the next chunk is asked for (the
/// HTTP server took the previous one).
pub type DownBody = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// `503`: the server takes no more transports now.
pub(crate) fn unavailable() -> BindingAnswer {
    BindingAnswer::status(503, true)
}

impl BindingAnswer {
    fn status(status: u16, close: bool) -> BindingAnswer {
        BindingAnswer {
            status,
            headers: Vec::new(),
            body: None,
            close,
            link: None,
        }
    }
}

/// How a down response ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Open until superseded, closed, or its lifetime passes.
    Stream,
    /// Ends after the first frames written (or after [`POLL_WAIT`] with none).
    Poll,
}

impl<R: Runtime> Binding<R> {
    /// The largest up body taken: a few frames.
    pub(crate) fn max_body(&self) -> usize {
        4 * (self.max_frame + 10)
    }

    /// Answers one request of the binding whose body (`Content-Length` bytes, at most
    /// [`max_body`](Self::max_body)) was read. `handshaking` is the socket's slot among
    /// handshakes under way: it goes with a new transport (until the hub accepts its
    /// `connect`).
    pub(crate) async fn answer(
        &self,
        request: BindingRequest,
        body: Bytes,
        handshaking: Option<Handshaking>,
    ) -> BindingAnswer {
        match (request.method.as_str(), request.transport.as_deref()) {
            ("POST", None) => self.open(body, handshaking).await,
            ("POST", Some(id)) => {
                let seq = request.seq.as_deref().and_then(|s| s.trim().parse().ok());
                self.up(id, seq, body).await
            }
            ("GET", Some(id)) => {
                let Some(link) = self.links.get(id) else {
                    return BindingAnswer::status(404, true);
                };
                let mode = match request.mode.as_deref().map(str::trim) {
                    Some("poll") => Mode::Poll,
                    None | Some("stream") => Mode::Stream,
                    Some(_) => {
                        // A bad header: the transport is unusable (§2.5).
                        self.give_up(&link).await;
                        return BindingAnswer::status(400, true);
                    }
                };
                self.down(link, mode, None)
            }
            ("GET", None) => BindingAnswer::status(400, true),
            _ => BindingAnswer::status(405, true),
        }
    }

    /// The body of a request over the limit: the transport it names (if any) is told by
    /// the hub (`error` `frame_too_large`, then closed); answered `413`.
    pub(crate) async fn too_large(&self, transport: Option<&str>, size: usize) -> BindingAnswer {
        if let Some(link) = transport.and_then(|id| self.links.get(id)) {
            let violation = TransportViolation::MessageTooLarge { size };
            let _ = self
                .inputs
                .send(Input::Violation(link.connection, violation))
                .await;
        }
        BindingAnswer::status(413, true)
    }

    /// `POST` without a transport: opens one with the body's frames.
    async fn open(&self, body: Bytes, handshaking: Option<Handshaking>) -> BindingAnswer {
        let Ok(frames) = binding::split_frames(&body, self.max_frame) else {
            return BindingAnswer::status(400, true);
        };
        let Some(handshaking) = handshaking else {
            return BindingAnswer::status(400, true);
        };
        let (writer, outbound) = flume::unbounded();
        let (hangup, hung_up) = oneshot::channel::<()>();
        let (reply, connection) = oneshot::channel();
        let accepted = self
            .inputs
            .send(Input::Accept {
                writer: Queue::new(writer, hangup, handshaking),
                reply,
            })
            .await;
        let Ok(connection) = (match accepted {
            Ok(()) => connection.await,
            Err(_) => return BindingAnswer::status(503, true),
        }) else {
            return BindingAnswer::status(503, true);
        };
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            let _ = self.inputs.send(Input::Closed(connection)).await;
            return BindingAnswer::status(503, true);
        }
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        let link = Arc::new(Link {
            id: id.clone(),
            connection,
            frames: outbound,
            down: Arc::new(tokio::sync::Mutex::new(())),
            generation: AtomicU64::new(0),
            superseded: event_listener::Event::new(),
            up: tokio::sync::Mutex::new(0),
            idle_since_ms: AtomicU64::new(0),
            downing: AtomicBool::new(false),
            opened: Instant::now(),
            closed: AtomicBool::new(false),
            sockets: std::sync::atomic::AtomicUsize::new(0),
        });
        self.links.insert(id.clone(), link.clone());
        tracing::debug!(connection = connection.0, "HTTP binding transport opened");
        self.runtime.spawn(supervise(
            self.runtime.clone(),
            link.clone(),
            self.links.clone(),
            self.inputs.clone(),
            hung_up,
            self.close_timeout,
        ));
        for frame in frames {
            if self
                .inputs
                .send(Input::Bytes(connection, frame))
                .await
                .is_err()
            {
                return BindingAnswer::status(503, true);
            }
        }
        // The first down response is polled: it ends with the hub's first answer, so a
        // client behind a buffering proxy still learns the transport's id.
        self.down(link, Mode::Poll, Some(id))
    }

    /// `POST` with a transport: the client's next frames, in order.
    async fn up(&self, id: &str, seq: Option<u64>, body: Bytes) -> BindingAnswer {
        let Some(link) = self
            .links
            .get(id)
            .filter(|l| !l.closed.load(Ordering::Relaxed))
        else {
            return BindingAnswer::status(404, true);
        };
        let Some(seq) = seq else {
            // A missing or bad sequence number: the transport is unusable (§2.5).
            self.give_up(&link).await;
            return BindingAnswer::status(400, true);
        };
        // One up request at a time, in sequence: a second one meanwhile is refused.
        let Ok(mut expected) = link.up.try_lock() else {
            return BindingAnswer::status(409, false);
        };
        if seq != *expected {
            drop(expected);
            self.give_up(&link).await;
            return BindingAnswer::status(409, true);
        }
        *expected += 1;
        let Ok(frames) = binding::split_frames(&body, self.max_frame) else {
            drop(expected);
            self.give_up(&link).await;
            return BindingAnswer::status(400, true);
        };
        for frame in frames {
            if self
                .inputs
                .send(Input::Bytes(link.connection, frame))
                .await
                .is_err()
            {
                return BindingAnswer::status(503, true);
            }
        }
        BindingAnswer::status(204, false)
    }

    /// A down response: ends the one being written, then carries the hub's frames as they
    /// come, until its mode ends it.
    fn down(&self, link: Arc<Link>, mode: Mode, opened: Option<String>) -> BindingAnswer {
        let generation = link.generation.fetch_add(1, Ordering::SeqCst) + 1;
        link.superseded.notify(usize::MAX);
        let mut headers = vec![
            ("content-type", binding::CONTENT_TYPE.to_owned()),
            ("x-accel-buffering", "no".to_owned()),
        ];
        if let Some(id) = opened {
            headers.push(("x-tether-transport", id));
        }
        let answer_link = link.clone();
        let state = DownState {
            runtime: self.runtime.clone(),
            inputs: self.inputs.clone(),
            links: self.links.clone(),
            link,
            generation,
            mode,
            phase: Phase::Start,
            guard: None,
            written: 0,
            ends: after(match mode {
                Mode::Stream => STREAM_LIFETIME,
                Mode::Poll => POLL_WAIT,
            }),
        };
        BindingAnswer {
            status: 200,
            headers,
            body: Some(Box::pin(futures_util::stream::unfold(
                state,
                DownState::next,
            ))),
            close: false,
            link: Some(answer_link),
        }
    }

    /// Closes a transport the client broke (a skipped sequence number, bad framing).
    async fn give_up(&self, link: &Link) {
        if !link.closed.swap(true, Ordering::Relaxed) {
            self.links.remove(&link.id);
            let _ = self.inputs.send(Input::Closed(link.connection)).await;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Running,
    Ending,
    Done,
}

/// Where a down body stands (see [`Binding::down`]).
struct DownState<R: Runtime> {
    runtime: R,
    inputs: tokio::sync::mpsc::Sender<Input>,
    links: Arc<Links>,
    link: Arc<Link>,
    generation: u64,
    mode: Mode,
    phase: Phase,
    /// Held while this body is the link's current one; released when it ends or is dropped.
    guard: Option<DownGuard>,
    /// Bytes of frames in the chunk handed out last, reported when the next is asked for.
    written: usize,
    ends: Instant,
}

/// The link's down lock, held by one body; marks the link idle from when it is dropped.
struct DownGuard {
    link: Arc<Link>,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for DownGuard {
    fn drop(&mut self) {
        self.link.touch();
        self.link.downing.store(false, Ordering::Relaxed);
    }
}

impl<R: Runtime> Drop for DownState<R> {
    /// A body dropped after handing out a chunk (its socket failed, it was torn down, its
    /// report was cut short) still reports that chunk's frames as gone, so the hub's count of
    /// the connection's pending bytes does not keep them for good (which would stop its
    /// replays): at once when the hub's queue has room, else from a task of its own.
    fn drop(&mut self) {
        if self.written == 0 {
            return;
        }
        let report = Input::Written(self.link.connection, std::mem::take(&mut self.written));
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(report)) =
            self.inputs.try_send(report)
        {
            let inputs = self.inputs.clone();
            self.runtime.spawn(async move {
                let _ = inputs.send(report).await;
            });
        }
    }
}

impl<R: Runtime> DownState<R> {
    /// The next chunk of the body, or `None` after the `end` mark.
    async fn next(mut self) -> Option<(Bytes, Self)> {
        loop {
            if self.written > 0 {
                // Taken only once sent: a body dropped while this waits reports it itself.
                let _ = self
                    .inputs
                    .send(Input::Written(self.link.connection, self.written))
                    .await;
                self.written = 0;
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    let lock = self.link.down.clone().lock_owned().await;
                    self.link.downing.store(true, Ordering::Relaxed);
                    self.guard = Some(DownGuard {
                        link: self.link.clone(),
                        _lock: lock,
                    });
                    let current = self.link.generation.load(Ordering::SeqCst) == self.generation;
                    self.phase = if current {
                        Phase::Running
                    } else {
                        Phase::Ending
                    };
                    if self.mode == Mode::Stream {
                        return Some((Bytes::from_static(Mark::Open.bytes()), self));
                    }
                }
                Phase::Running => {
                    let link = self.link.clone();
                    let generation = self.generation;
                    let frames = async { link.frames.recv_async().await.ok() };
                    let superseded = async {
                        let listener = link.superseded.listen();
                        if link.generation.load(Ordering::SeqCst) == generation
                            && !link.closed.load(Ordering::Relaxed)
                        {
                            listener.await;
                        }
                        None
                    };
                    let first = if link.closed.load(Ordering::Relaxed) {
                        None
                    } else {
                        within(&self.runtime, self.ends, frames.or(superseded))
                            .await
                            .flatten()
                    };
                    let Some(first) = first else {
                        self.phase = Phase::Ending;
                        continue;
                    };
                    let batch = WriteBatch::take(first, || link.frames.try_recv().ok());
                    let mut chunk = BytesMut::new();
                    for frame in &batch.frames {
                        binding::put_frame(&mut chunk, frame);
                    }
                    self.written = batch.written;
                    if batch.close.is_some() {
                        link.closed.store(true, Ordering::Relaxed);
                        self.phase = Phase::Ending;
                    }
                    if self.mode == Mode::Poll {
                        self.phase = Phase::Ending;
                    }
                    if !chunk.is_empty() {
                        return Some((chunk.freeze(), self));
                    }
                }
                Phase::Ending => {
                    self.phase = Phase::Done;
                    self.guard = None;
                    if self.link.closed.load(Ordering::Relaxed) {
                        self.links.remove(&self.link.id);
                    }
                    return Some((Bytes::from_static(Mark::End.bytes()), self));
                }
            }
        }
    }
}

/// Serves one request of the binding on a socket of the server's own port (its head read,
/// its body to be read by `deadline`); whether the socket may take another. A socket serves
/// one transport at most (`bound`), and a transport has at most
/// [`MAX_SOCKETS_PER_TRANSPORT`] sockets; one that served no live transport is not kept.
pub(crate) async fn serve<R, S>(
    binding: &Binding<R>,
    conn: &mut HttpConn<S>,
    head: Head,
    deadline: Instant,
    handshaking: &mut Option<Handshaking>,
    bound: &mut Option<Bound>,
) -> bool
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let refuse = |status| BindingAnswer::status(status, true);
    if head.malformed {
        return write_answer(conn.stream(), refuse(400), true).await;
    }
    let request = BindingRequest {
        method: head.method.clone(),
        transport: head.transport.clone(),
        seq: head.seq.clone(),
        mode: head.mode.clone(),
    };
    if let Some(id) = &request.transport {
        // A request for a transport is not a handshake: the socket's slot is given back.
        handshaking.take();
        match (bound.as_ref(), binding.links.get(id)) {
            (Some(Bound(link)), _) if &link.id == id => {}
            // One socket, one transport.
            (Some(_), _) => return write_answer(conn.stream(), refuse(400), true).await,
            (None, None) => return write_answer(conn.stream(), refuse(404), true).await,
            (None, Some(link)) => {
                if link.sockets.fetch_add(1, Ordering::Relaxed) >= MAX_SOCKETS_PER_TRANSPORT {
                    link.sockets.fetch_sub(1, Ordering::Relaxed);
                    return write_answer(conn.stream(), refuse(429), true).await;
                }
                *bound = Some(Bound(link));
            }
        }
    } else if bound.is_some() {
        return write_answer(conn.stream(), refuse(400), true).await;
    }
    let body = match head.content_length {
        _ if request.method == "GET" => Bytes::new(),
        None => return write_answer(conn.stream(), refuse(411), true).await,
        Some(length) if length > binding.max_body() => {
            let answer = binding.too_large(head.transport.as_deref(), length).await;
            return write_answer(conn.stream(), answer, true).await;
        }
        // The body within the deadline of its head: a client cannot hold the socket (and
        // its handshake slot) by sending it slowly.
        Some(length) => match within(&binding.runtime, deadline, conn.read_body(length)).await {
            Some(Ok(body)) => body,
            _ => return false,
        },
    };
    let slot = handshaking.take();
    let answer = binding.answer(request, body, slot).await;
    // Once the transport is over, its socket has the close timeout to send what is left: a
    // client that does not read its down stream cannot hold the socket longer.
    let teardown = {
        let link = answer.link.clone();
        let runtime = binding.runtime.clone();
        let close_timeout = binding.close_timeout;
        async move {
            let Some(link) = link else {
                return std::future::pending::<bool>().await;
            };
            loop {
                let listener = link.superseded.listen();
                if link.closed.load(Ordering::Relaxed) {
                    break;
                }
                listener.await;
            }
            let mut timer = runtime.timer(after(close_timeout));
            (&mut timer).await;
            false
        }
    };
    write_answer(conn.stream(), answer, head.close)
        .or(teardown)
        .await
}

/// Writes `answer` (its body chunked); whether the socket may take another request.
async fn write_answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mut answer: BindingAnswer,
    close: bool,
) -> bool {
    let close = close || answer.close;
    let reason = match answer.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        429 => "Too Many Requests",
        413 => "Content Too Large",
        _ => "Service Unavailable",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (name, value) in BINDING_HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    let Some(mut body) = answer.body.take() else {
        head.push_str("content-length: 0\r\n\r\n");
        return stream.write_all(head.as_bytes()).await.is_ok()
            && stream.flush().await.is_ok()
            && !close;
    };
    head.push_str("transfer-encoding: chunked\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    while let Some(chunk) = body.next().await {
        if !write_chunk(stream, &chunk).await {
            return false;
        }
    }
    stream.write_all(b"0\r\n\r\n").await.is_ok() && stream.flush().await.is_ok() && !close
}

/// Writes `bytes` as one chunk and flushes.
async fn write_chunk<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> bool {
    let size = format!("{:x}\r\n", bytes.len());
    stream.write_all(size.as_bytes()).await.is_ok()
        && stream.write_all(bytes).await.is_ok()
        && stream.write_all(b"\r\n").await.is_ok()
        && stream.flush().await.is_ok()
}

/// The answer to a CORS preflight, on the server's own port.
pub(crate) async fn preflight<S: AsyncWrite + Unpin>(stream: &mut S) -> bool {
    let mut head = "HTTP/1.1 204 No Content\r\n".to_owned();
    for (name, value) in PREFLIGHT_HEADERS {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("content-length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).await.is_ok() && stream.flush().await.is_ok()
}

/// Closes a transport for the hub once it is over: the hub forgot it (after the close
/// timeout, for its last frames to be fetched), the hub's close was sent, or no down request
/// came for [`DOWN_GAP`].
async fn supervise<R: Runtime>(
    runtime: R,
    link: Arc<Link>,
    links: Arc<Links>,
    inputs: tokio::sync::mpsc::Sender<Input>,
    hung_up: oneshot::Receiver<()>,
    close_timeout: Duration,
) {
    let forgotten = async {
        let _ = hung_up.await;
        let mut timer = runtime.timer(after(close_timeout));
        (&mut timer).await;
    };
    let idle = async {
        loop {
            let mut timer = runtime.timer(after(Duration::from_millis(500)));
            (&mut timer).await;
            if link.closed.load(Ordering::Relaxed) {
                return;
            }
            let since = Duration::from_millis(link.idle_since_ms.load(Ordering::Relaxed));
            if !link.downing.load(Ordering::Relaxed) && link.opened.elapsed() > since + DOWN_GAP {
                tracing::debug!(connection = link.connection.0, "no down request: closed");
                return;
            }
        }
    };
    forgotten.or(idle).await;
    link.closed.store(true, Ordering::Relaxed);
    link.generation.fetch_add(1, Ordering::SeqCst);
    link.superseded.notify(usize::MAX);
    links.remove(&link.id);
    let _ = inputs.send(Input::Closed(link.connection)).await;
}
