//! One connection's task: the WebSocket upgrade, then reading frames for the hub and
//! writing the hub's frames, until either side ends it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use futures_util::SinkExt;
use tether_core::embed::{Outbound, WriteBatch, Writer, close_code};
use tether_core::server::TransportViolation;

use super::observe::{Observer, response};
use super::{Handshaking, Input, after, fallback, http, within};
use crate::runtime::Runtime;
use crate::tls::websocket_config;

/// The queue of one connection's writer. Unbounded as a channel, bounded in bytes by the
/// hub: every frame it queues counts against the connection's pending-bytes limit until
/// the writer reports it written, and past the limit the hub closes the connection instead
/// of queueing more (its last frame only).
pub(crate) struct Queue {
    frames: flume::Sender<Outbound>,
    /// Dropped with the queue, when the hub forgets the connection: the connection task
    /// then has the close timeout to finish.
    _hangup: oneshot::Sender<()>,
    /// The connection counts as a handshake under way until the hub accepted its
    /// `connect`: what an unauthenticated client can make the server hold (a partial frame
    /// of up to the frame limit each) is bounded by the cap on handshakes.
    handshaking: Option<Handshaking>,
}

impl Queue {
    /// The writer of a new connection: its frames go to `frames`; `hangup` is dropped when
    /// the hub forgets it; `handshaking` is released once the hub accepts its `connect`.
    pub(crate) fn new(
        frames: flume::Sender<Outbound>,
        hangup: oneshot::Sender<()>,
        handshaking: Handshaking,
    ) -> Queue {
        Queue {
            frames,
            _hangup: hangup,
            handshaking: Some(handshaking),
        }
    }
}

impl Writer for Queue {
    fn send(&self, outbound: Outbound) {
        let _ = self.frames.send(outbound);
    }

    fn established(&mut self) {
        self.handshaking = None;
    }
}

/// How the reading side ended, when something is left to send.
enum Ending {
    /// The peer sent its close: answer it.
    PeerClosed,
    /// The WebSocket layer refused what the peer sent: close with this code.
    Refused(CloseCode),
    /// The hub closed it and our close frame is sent: wait for the peer's.
    WeClosed,
}

/// What to do about an error of the WebSocket layer while reading.
enum Refusal {
    /// The hub answers it (a message over the limit).
    Hub(TransportViolation),
    /// The WebSocket layer closes with this code.
    Close(CloseCode),
    /// The connection is gone (I/O error, already closed).
    Gone,
}

fn refusal(error: async_tungstenite::tungstenite::Error) -> Refusal {
    use async_tungstenite::tungstenite::Error;
    use async_tungstenite::tungstenite::error::CapacityError;
    match error {
        Error::Capacity(CapacityError::MessageTooLong { size, .. }) => {
            Refusal::Hub(TransportViolation::MessageTooLarge { size })
        }
        Error::Capacity(_) => Refusal::Close(CloseCode::Size),
        Error::Protocol(_) => Refusal::Close(CloseCode::Protocol),
        Error::Utf8(_) => Refusal::Close(CloseCode::Invalid),
        _ => Refusal::Gone,
    }
}

/// A socket just accepted, with what serving it needs.
pub(crate) struct Accepted<R> {
    pub(crate) runtime: R,
    pub(crate) peer: SocketAddr,
    pub(crate) inputs: tokio::sync::mpsc::Sender<Input>,
    pub(crate) max_frame: usize,
    /// The handshake must be done by then.
    pub(crate) deadline: Instant,
    pub(crate) close_timeout: Duration,
    pub(crate) handshaking: Handshaking,
    /// For the operator's endpoints.
    pub(crate) observer: Observer,
    /// The HTTP binding's transports.
    pub(crate) links: std::sync::Arc<fallback::Links>,
}

impl<R: Runtime> Accepted<R> {
    /// Serves `stream` (plain TCP or TLS) until the peer or the hub ends it.
    pub(crate) async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Accepted {
            runtime,
            peer,
            inputs,
            max_frame,
            deadline,
            close_timeout,
            handshaking,
            observer,
            links,
        } = self;
        let binding = fallback::Binding {
            runtime: runtime.clone(),
            inputs: inputs.clone(),
            links,
            max_frame,
            close_timeout,
        };
        // Boxed: the handshake's state is large and needed only once; inline, it would size
        // the connection task's allocation for the connection's whole life.
        // A request that is not a WebSocket upgrade is answered over HTTP (400, 426, …);
        // requests of the HTTP binding (§2.5) are served one after another (keep-alive),
        // each head within the handshake timeout.
        let mut handshaking = Some(handshaking);
        // The transport this socket serves, if it served the HTTP binding.
        let mut bound: Option<fallback::Bound> = None;
        let mut conn = http::HttpConn::new(stream);
        let mut deadline = deadline;
        let ws = loop {
            let request = match within(&runtime, deadline, conn.next_request()).await {
                Some(Ok(Some(request))) => request,
                Some(Ok(None)) => return,
                Some(Err(error)) => {
                    tracing::debug!(%peer, %error, "request failed");
                    return;
                }
                None => {
                    tracing::debug!(%peer, "request timed out");
                    return;
                }
            };
            match request {
                http::Request::Refused(status) => {
                    http::refuse(conn.stream(), status).await;
                    tracing::debug!(%peer, "not a WebSocket upgrade: answered {status}");
                    return;
                }
                http::Request::Endpoint(endpoint) => {
                    let answer = endpoint_answer(&observer, endpoint).await;
                    let _ = conn.stream().write_all(answer.as_bytes()).await;
                    let _ = conn.stream().close().await;
                    return;
                }
                http::Request::Preflight => {
                    // Answered, then closed: a preflight does not keep a socket (nor its
                    // handshake slot).
                    fallback::preflight(conn.stream()).await;
                    let _ = conn.stream().close().await;
                    return;
                }
                http::Request::Binding(head) => {
                    let served = fallback::serve(
                        &binding,
                        &mut conn,
                        head,
                        deadline,
                        &mut handshaking,
                        &mut bound,
                    )
                    .await;
                    if !served {
                        let _ = conn.stream().close().await;
                        return;
                    }
                }
                http::Request::Upgrade => {
                    let Some(slot) = handshaking.take() else {
                        // Binding requests on this socket gave its handshake slot away.
                        http::refuse(conn.stream(), "400 Bad Request").await;
                        return;
                    };
                    let upgrade = Box::pin(async_tungstenite::accept_async_with_config(
                        conn.into_replayed(),
                        Some(websocket_config(max_frame)),
                    ));
                    match within(&runtime, deadline, upgrade).await {
                        Some(Ok(ws)) => break (ws, slot),
                        Some(Err(error)) => {
                            tracing::debug!(%peer, %error, "websocket handshake failed");
                        }
                        None => tracing::debug!(%peer, "websocket handshake timed out"),
                    }
                    return;
                }
            }
            deadline = after(binding.close_timeout.max(std::time::Duration::from_secs(5)));
        };
        let (ws, handshaking) = ws;
        run(runtime, ws, peer, inputs, close_timeout, handshaking).await;
    }
}

/// The answer to an operator's endpoint.
async fn endpoint_answer(observer: &Observer, endpoint: http::Endpoint) -> String {
    match endpoint {
        http::Endpoint::Health => match observer.stats().await {
            Some(_) => response("200 OK", "text/plain; charset=utf-8", "ok\n"),
            None => response(
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                "the hub has stopped\n",
            ),
        },
        http::Endpoint::Ready => match observer.ready().await {
            Ok(()) => response("200 OK", "text/plain; charset=utf-8", "ready\n"),
            Err(why) => response(
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                &format!("not ready: {why}\n"),
            ),
        },
        http::Endpoint::Metrics => match observer.metrics().await {
            Some(text) => response(
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &text,
            ),
            None => response(
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                "the hub has stopped\n",
            ),
        },
    }
}

impl<R: Runtime> Accepted<R> {
    /// Serves `stream`, a socket whose WebSocket upgrade was answered elsewhere, until the
    /// peer or the hub ends it.
    pub(crate) async fn serve_upgraded<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = async_tungstenite::WebSocketStream::from_raw_socket(
            stream,
            async_tungstenite::tungstenite::protocol::Role::Server,
            Some(websocket_config(self.max_frame)),
        )
        .await;
        run(
            self.runtime,
            ws,
            self.peer,
            self.inputs,
            self.close_timeout,
            self.handshaking,
        )
        .await;
    }
}

/// Moves frames between an open WebSocket and the hub until either ends the connection.
async fn run<R: Runtime, S>(
    runtime: R,
    ws: async_tungstenite::WebSocketStream<S>,
    peer: SocketAddr,
    inputs: tokio::sync::mpsc::Sender<Input>,
    close_timeout: Duration,
    handshaking: Handshaking,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = futures_util::StreamExt::split(ws);
    // Unbounded as a channel, bounded in bytes by the hub (see `Queue`): every frame queued
    // counts against the connection's `max_pending_bytes` until reported written, and past
    // it the hub closes the connection instead of queueing more. A growable ring buffer
    // (flume): no allocation per frame — with 1,000 subscribers a message is 1,000 frames —
    // and nothing reserved for an idle connection (tokio's unbounded channel reserves a
    // 32-slot block: +1.3 KiB per connection).
    let (writer, outbound) = flume::unbounded();
    let (hangup, hung_up) = oneshot::channel::<()>();
    let (reply, id) = oneshot::channel();
    if inputs
        .send(Input::Accept {
            writer: Queue {
                frames: writer,
                _hangup: hangup,
                handshaking: Some(handshaking),
            },
            reply,
        })
        .await
        .is_err()
    {
        return;
    }
    let Ok(connection) = id.await else {
        return;
    };
    tracing::debug!(%peer, connection = connection.0, "connection accepted");
    // Frames from the hub, in order: what is queued goes out with one flush and is reported
    // to the hub in one input, so it can pace replays and spot slow consumers.
    let writing = async {
        while let Ok(first) = outbound.recv_async().await {
            let batch = WriteBatch::take(first, || outbound.try_recv().ok());
            for frame in batch.frames {
                if sink.feed(Message::Binary(frame)).await.is_err() {
                    return None;
                }
            }
            if sink.flush().await.is_err()
                || (batch.written > 0
                    && inputs
                        .send(Input::Written(connection, batch.written))
                        .await
                        .is_err())
            {
                return None;
            }
            if let Some(reason) = batch.close {
                let frame = CloseFrame {
                    code: CloseCode::from(close_code(&reason)),
                    reason: reason.code.name().into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return Some(Ending::WeClosed);
            }
        }
        let _ = sink.close().await;
        None
    };
    // Every binary message is one frame for the hub. What the WebSocket layer refuses is
    // still answered: a message over the frame limit or a text message goes to the hub as a
    // violation (it answers `error` and closes, §2.2); a WebSocket protocol violation or bad
    // UTF-8 ends the connection with the WebSocket close code for it (1002, 1007).
    let reading = async {
        loop {
            let input = match source.next().await {
                Some(Ok(Message::Binary(bytes))) => Input::Bytes(connection, bytes),
                Some(Ok(Message::Text(_))) => {
                    Input::Violation(connection, TransportViolation::TextMessage)
                }
                // The WebSocket layer queued its reply; it is sent below.
                Some(Ok(Message::Close(_))) => return Some(Ending::PeerClosed),
                None => return None,
                Some(Ok(_)) => continue,
                Some(Err(error)) => match refusal(error) {
                    Refusal::Hub(violation) => Input::Violation(connection, violation),
                    Refusal::Close(code) => return Some(Ending::Refused(code)),
                    Refusal::Gone => return None,
                },
            };
            let violation = matches!(input, Input::Violation(..));
            if inputs.send(input).await.is_err() {
                return None;
            }
            if violation {
                // Nothing more is read: the hub's answer and close follow on the writer.
                std::future::pending::<()>().await;
            }
        }
    };
    // Once the hub forgot the connection, the socket has the close timeout to send what
    // was queued and its close: a peer that does not read cannot hold it longer.
    let teardown = async {
        let _ = hung_up.await;
        let mut timer = runtime.timer(after(close_timeout));
        (&mut timer).await;
        tracing::debug!(%peer, connection = connection.0, "close timed out: socket dropped");
        None
    };
    // Whichever ends first ends the connection: the peer went away, the hub closed it, the
    // close timed out, or the WebSocket layer refused what the peer sent.
    let ending = writing.or(reading).or(teardown).await;
    // Within the close timeout: answer the peer's close (RFC 6455 §5.5.1), or close with the
    // code for what the WebSocket layer refused.
    let close = async {
        match ending {
            Some(Ending::PeerClosed) => {
                let _ = sink.close().await;
            }
            Some(Ending::WeClosed) => {
                // Wait for the peer's close before dropping the socket (RFC 6455 §7.1.1):
                // closing with its bytes unread would reset the connection, and a reset can
                // discard the last frames before the peer reads them.
                while let Some(Ok(message)) = source.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            }
            Some(Ending::Refused(code)) => {
                let frame = CloseFrame {
                    code,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
            None => {}
        }
    };
    let _ = within(&runtime, after(close_timeout), close).await;
    let _ = inputs.send(Input::Closed(connection)).await;
}
