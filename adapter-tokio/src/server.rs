//! The tokio WebSocket server: one task drives the hub, one task per connection moves bytes.
//!
//! Glue only: every decision (auth, limits, heartbeats, slow consumers, …) is the hub's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tether_core::embed::{
    self, Connections, Flow, INPUT_BATCH, Outbound, ServerInput, TransportLimits, WriteBatch,
    Writer, close_code, handle_batch,
};
use tether_core::server::{Hub, HubEvent, Severity};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::client::Tokio;
use crate::clock::{Origin, fresh_seed};

/// How to run a [`Server`]: the hub's configuration, a seed, and [`ServerTransport`].
pub type ServerConfig = embed::ServerOptions<ServerTransport>;

/// The tokio server's own options.
#[derive(Clone, Debug, Default)]
pub struct ServerTransport {
    /// TLS for `wss://` (see [`tls_from_pem`]); `None` serves plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A TLS configuration from a PEM certificate chain and a PEM private key.
pub fn tls_from_pem(
    certificate_chain: &[u8],
    private_key: &[u8],
) -> io::Result<Arc<rustls::ServerConfig>> {
    let chain =
        rustls_pemfile::certs(&mut &certificate_chain[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &private_key[..])?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no private key in the PEM"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// The WebSocket settings this adapter uses for frames of at most `max_frame_size` bytes
/// (see [`TransportLimits`]): one frame per message, no message larger than a frame, a small
/// read buffer and a bounded write buffer. Public so benchmarks can give a raw WebSocket
/// baseline the same settings.
pub fn websocket_config(max_frame_size: usize) -> WebSocketConfig {
    let limits = TransportLimits::for_frame_size(max_frame_size);
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(limits.write_buffer)
        .max_write_buffer_size(limits.max_write_buffer)
}

type Input = ServerInput<Tokio, Queue>;

/// The queue of one connection's writer task.
struct Queue(mpsc::UnboundedSender<Outbound>);

impl Writer for Queue {
    fn send(&self, outbound: Outbound) {
        let _ = self.0.send(outbound);
    }
}

/// A running tether server.
///
/// One task drives the [`Hub`]; each connection has a reader task (every binary WebSocket
/// message is one frame for the hub) and a writer task (frames from the hub, in order; what
/// is queued, up to [`WRITE_BATCH`](tether_core::embed::WRITE_BATCH) frames, goes out with
/// one flush and is reported back in one input, so the hub can pace replays and spot slow
/// consumers). The hub task handles queued inputs in bursts of up to
/// [`INPUT_BATCH`](tether_core::embed::INPUT_BATCH). When the hub closes a connection, the
/// WebSocket close code is 4000 plus the last three digits of the error code (42902
/// `slow_consumer` → 4902) and the reason is the code's name.
pub struct Server {
    local_addr: SocketAddr,
    inputs: mpsc::Sender<Input>,
    accept_task: JoinHandle<()>,
    hub_task: JoinHandle<()>,
}

impl Server {
    /// Binds `address` and starts serving `ws://` connections.
    pub async fn bind(
        address: impl tokio::net::ToSocketAddrs,
        config: ServerConfig,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(address).await?;
        let local_addr = listener.local_addr()?;
        let seed = match config.seed {
            Some(seed) => seed,
            None => fresh_seed()?,
        };
        let max_frame = config.hub.limits.max_frame_size;
        let (inputs, receiver) = mpsc::channel(1024);
        let hub_task = tokio::spawn(drive_hub(Hub::new(config.hub, seed), receiver));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            inputs.clone(),
            max_frame,
            config.transport.tls,
        ));
        tracing::info!(%local_addr, "tether server listening");
        Ok(Server {
            local_addr,
            inputs,
            accept_task,
            hub_task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, tells every client the server is shutting down (they reconnect
    /// elsewhere or later) and waits for the hub task to finish.
    pub async fn shutdown(self) {
        self.accept_task.abort();
        let (done, wait) = oneshot::channel();
        if self.inputs.send(Input::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        let _ = self.hub_task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    inputs: mpsc::Sender<Input>,
    max_frame: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let inputs = inputs.clone();
                match acceptor.clone() {
                    None => {
                        tokio::spawn(serve_connection(stream, peer, inputs, max_frame));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(tls) => serve_connection(tls, peer, inputs, max_frame).await,
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed")
                                }
                            }
                        });
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    inputs: mpsc::Sender<Input>,
    max_frame: usize,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the handshake's state is large and needed only once; inline, it would size the
    // connection task's allocation for the connection's whole life.
    let handshake =
        tokio_tungstenite::accept_async_with_config(stream, Some(websocket_config(max_frame)));
    let ws = match Box::pin(handshake).await {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%peer, %error, "websocket handshake failed");
            return;
        }
    };
    let (mut sink, mut source) = ws.split();
    let (writer, mut outbound) = mpsc::unbounded_channel();
    let (reply, id) = oneshot::channel();
    if inputs
        .send(Input::Accept {
            writer: Queue(writer),
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
    // Writer: frames from the hub, in order, in batches reported to the hub.
    let write_inputs = inputs.clone();
    let writer_task = tokio::spawn(async move {
        // What is queued goes out with one flush (one syscall, not one per frame) and is
        // reported to the hub in one `Written` input.
        'batches: while let Some(first) = outbound.recv().await {
            let batch = WriteBatch::take(first, || outbound.try_recv().ok());
            for frame in batch.frames {
                if sink.feed(Message::Binary(frame)).await.is_err() {
                    break 'batches;
                }
            }
            if sink.flush().await.is_err()
                || (batch.written > 0
                    && write_inputs
                        .send(Input::Written(connection, batch.written))
                        .await
                        .is_err())
            {
                break;
            }
            if let Some(reason) = batch.close {
                let frame = CloseFrame {
                    code: CloseCode::from(close_code(&reason)),
                    reason: reason.code.name().into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
        }
        let _ = sink.close().await;
    });
    // Reader: every binary message is one frame for the hub. It stops when the peer closes,
    // or when the writer finished because the hub closed the connection.
    let mut writer_task = writer_task;
    loop {
        let message = tokio::select! {
            message = source.next() => message,
            _ = &mut writer_task => break,
        };
        let Some(message) = message else { break };
        match message {
            Ok(Message::Binary(bytes)) => {
                if inputs.send(Input::Bytes(connection, bytes)).await.is_err() {
                    break;
                }
            }
            Ok(Message::Text(text)) => {
                // Not a tether frame; the hub answers with its protocol error and closes.
                let bytes = Bytes::copy_from_slice(text.as_bytes());
                if inputs.send(Input::Bytes(connection, bytes)).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = inputs.send(Input::Closed(connection)).await;
    if !writer_task.is_finished() {
        writer_task.abort();
    }
}

async fn drive_hub(mut hub: Hub, mut inputs: mpsc::Receiver<Input>) {
    let origin = Origin::now();
    let mut connections = Connections::new();
    // One timer, moved only when the hub's deadline moves.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        let deadline = hub.poll_timeout().map(|d| origin.instant(d));
        if let Some(deadline) = deadline {
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
        }
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { break };
                // Whatever else is already queued is handled in the same wake-up (bounded, so
                // timers still run), with one clock reading.
                let now = origin.stamp();
                let flow = handle_batch(
                    input,
                    INPUT_BATCH,
                    || inputs.try_recv().ok(),
                    |input| connections.input(&mut hub, now, input, log_event),
                );
                if flow == Flow::Stop {
                    return;
                }
            }
            () = &mut timer, if deadline.is_some() => {
                armed = None;
                connections.timeout(&mut hub, origin.stamp(), log_event);
            }
        }
    }
}

/// Operator logs. Events never carry credentials, so nothing here can leak a token.
fn log_event(event: HubEvent) {
    match event.severity() {
        Severity::Debug => tracing::debug!("{event}"),
        Severity::Info => tracing::info!("{event}"),
        Severity::Warn => tracing::warn!("{event}"),
    }
}
