//! The server: one task drives the hub, one task per connection moves bytes.
//!
//! Glue only: every decision (auth, limits, heartbeats, slow consumers, …) is the hub's; the
//! routing of its outputs is [`tether_core::embed::Connections`]'.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::{FutureExt, StreamExt};
use futures_util::SinkExt;
use tether_core::embed::{
    self, Connections, Flow, INPUT_BATCH, Origin, Outbound, ServerInput, TransportLimits,
    WriteBatch, Writer, close_code, handle_batch,
};
use tether_core::server::{Hub, HubEvent, Severity};

use crate::client::Neutral;
use crate::clock::{fresh_seed, sleep_until};
use crate::spawner::Spawner;

/// How to run a [`Server`]: the hub's configuration, a seed, and [`ServerTransport`].
pub type ServerConfig = embed::ServerOptions<ServerTransport>;

/// This adapter's own server options.
#[derive(Clone, Debug, Default)]
pub struct ServerTransport {
    /// TLS for `wss://` (see [`tls_from_pem`]); `None` serves plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the server's tasks run (async-std's executor unless set).
    pub spawner: Spawner,
}

/// A TLS configuration from a PEM certificate chain and a PEM private key.
pub fn tls_from_pem(
    certificate_chain: &[u8],
    private_key: &[u8],
) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: rustls::pki_types::pem::Error| io::Error::new(io::ErrorKind::InvalidInput, e);
    let chain = CertificateDer::pem_slice_iter(certificate_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let key = PrivateKeyDer::from_pem_slice(private_key).map_err(invalid)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
    .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// WebSocket limits derived from the frame limit (see [`TransportLimits`]).
pub(crate) fn websocket_config(max_frame_size: usize) -> WebSocketConfig {
    let limits = TransportLimits::for_frame_size(max_frame_size);
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(limits.write_buffer)
        .max_write_buffer_size(limits.max_write_buffer)
}

type Input = ServerInput<Neutral, Queue>;

/// The queue of one connection's writer.
struct Queue(async_channel::Sender<Outbound>);

impl Writer for Queue {
    fn send(&self, outbound: Outbound) {
        let _ = self.0.try_send(outbound);
    }
}

/// A running tether server.
///
/// One task drives the [`Hub`]; each connection has one task that reads (every binary
/// WebSocket message is one frame for the hub) and writes (frames from the hub, in order;
/// what is queued, up to [`WRITE_BATCH`](tether_core::embed::WRITE_BATCH) frames, goes out
/// with one flush and is reported back in one input, so the hub can pace replays and spot
/// slow consumers). The hub task handles queued inputs in bursts of up to
/// [`INPUT_BATCH`](tether_core::embed::INPUT_BATCH). When the hub closes a connection, the
/// WebSocket close code is 4000 plus the last three digits of the error code (42902
/// `slow_consumer` → 4902) and the reason is the code's name.
pub struct Server {
    local_addr: SocketAddr,
    inputs: async_channel::Sender<Input>,
    /// Closing it stops the accept loop.
    stop_accepting: async_channel::Sender<()>,
}

impl Server {
    /// Binds `address` and starts serving.
    pub async fn bind(
        address: impl async_net::AsyncToSocketAddrs,
        config: ServerConfig,
    ) -> io::Result<Server> {
        let listener = async_net::TcpListener::bind(address).await?;
        let local_addr = listener.local_addr()?;
        let seed = match config.seed {
            Some(seed) => seed,
            None => fresh_seed()?,
        };
        let max_frame = config.hub.limits.max_frame_size;
        let (inputs, receiver) = async_channel::bounded(1024);
        let (stop_accepting, stopped) = async_channel::bounded(1);
        config
            .transport
            .spawner
            .spawn(drive_hub(Hub::new(config.hub, seed), receiver));
        let accepting = Accepting {
            inputs: inputs.clone(),
            max_frame,
            tls: config.transport.tls.map(futures_rustls::TlsAcceptor::from),
            spawner: config.transport.spawner.clone(),
        };
        config.transport.spawner.spawn(async move {
            accepting
                .run(listener)
                .or(async {
                    let _ = stopped.recv().await;
                })
                .await;
        });
        tracing::info!(%local_addr, "tether server listening");
        Ok(Server {
            local_addr,
            inputs,
            stop_accepting,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, tells every client the server is shutting down (they reconnect
    /// elsewhere or later) and waits for the hub to finish.
    pub async fn shutdown(self) {
        self.stop_accepting.close();
        let (done, wait) = oneshot::channel();
        if self.inputs.send(Input::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Accepting {
    inputs: async_channel::Sender<Input>,
    max_frame: usize,
    tls: Option<futures_rustls::TlsAcceptor>,
    spawner: Spawner,
}

impl Accepting {
    async fn run(self, listener: async_net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (inputs, max_frame) = (self.inputs.clone(), self.max_frame);
                    match self.tls.clone() {
                        None => self
                            .spawner
                            .spawn(serve_connection(stream, peer, inputs, max_frame)),
                        Some(acceptor) => self.spawner.spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(tls) => serve_connection(tls, peer, inputs, max_frame).await,
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed")
                                }
                            }
                        }),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    async_io::Timer::after(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    inputs: async_channel::Sender<Input>,
    max_frame: usize,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the handshake's state is large and needed only once; inline, it would size the
    // connection task's allocation for the connection's whole life.
    let handshake =
        async_tungstenite::accept_async_with_config(stream, Some(websocket_config(max_frame)));
    let ws = match Box::pin(handshake).await {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%peer, %error, "websocket handshake failed");
            return;
        }
    };
    let (mut sink, mut source) = futures_util::StreamExt::split(ws);
    let (writer, outbound) = async_channel::unbounded();
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
    // Frames from the hub, in order: what is queued goes out with one flush and is reported
    // to the hub in one input, so it can pace replays and spot slow consumers.
    let writing = async {
        while let Ok(first) = outbound.recv().await {
            let batch = WriteBatch::take(first, || outbound.try_recv().ok());
            for frame in batch.frames {
                if sink.feed(Message::Binary(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err()
                || (batch.written > 0
                    && inputs
                        .send(Input::Written(connection, batch.written))
                        .await
                        .is_err())
            {
                return;
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
    };
    // Every binary message is one frame for the hub; a text message is not a tether frame,
    // and the hub answers it with its protocol error.
    let reading = async {
        while let Some(Ok(message)) = source.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if inputs.send(Input::Bytes(connection, bytes)).await.is_err() {
                break;
            }
        }
    };
    // Whichever ends first ends the connection: the peer went away, or the hub closed it.
    writing.or(reading).await;
    let _ = inputs.send(Input::Closed(connection)).await;
}

async fn drive_hub(mut hub: Hub, inputs: async_channel::Receiver<Input>) {
    let origin = Origin::new(Instant::now());
    let mut connections = Connections::new();
    loop {
        let deadline = hub.poll_timeout();
        let input = async { Some(inputs.recv().await) }
            .or(async {
                sleep_until(&origin, deadline).await;
                None
            })
            .await;
        let now = origin.stamp_at(Instant::now(), SystemTime::now());
        match input {
            Some(Ok(input)) => {
                // Whatever else is already queued is handled in the same wake-up (bounded, so
                // timers still run), with one clock reading.
                let flow = handle_batch(
                    input,
                    INPUT_BATCH,
                    || inputs.try_recv().ok(),
                    |input| connections.input(&mut hub, now, input, log_event),
                );
                if flow == Flow::Stop {
                    break;
                }
            }
            Some(Err(_)) => break,
            None => connections.timeout(&mut hub, now, log_event),
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
