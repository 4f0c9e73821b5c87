//! The server: one task drives the hub, one task accepts, one task per connection moves
//! bytes.
//!
//! Glue only: every decision (auth, limits, heartbeats, slow consumers, …) is the hub's; the
//! routing of its outputs is [`tether_core::embed::Connections`]'.

mod connection;
mod hub;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use tether_core::embed::{self, ServerInput};
use tether_core::server::Hub;

use crate::client::Neutral;
use crate::runtime::{Bind, Runtime};
use connection::Queue;

type Input = ServerInput<Neutral, Queue>;

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
pub struct Server<R: Runtime> {
    local_addr: SocketAddr,
    inputs: async_channel::Sender<Input>,
    /// Closing it stops the accept loop.
    stop_accepting: async_channel::Sender<()>,
    _runtime: std::marker::PhantomData<R>,
}

impl<R: Runtime> Server<R> {
    /// Binds `address` and starts serving `ws://` (or, with TLS in the options, `wss://`).
    ///
    /// # Errors
    /// The bind's error; `internal` when no seed could be drawn or the runtime cannot be
    /// reached from here.
    pub async fn bind<A>(
        address: A,
        config: embed::ServerOptions<R::ServerTransport>,
    ) -> io::Result<Server<R>>
    where
        R: Bind<A>,
    {
        let (runtime, tls) = R::for_server(&config.transport)?;
        let listener = R::bind(address).await?;
        let local_addr = R::local_addr(&listener)?;
        let seed = match config.seed {
            Some(seed) => seed,
            None => crate::fresh_seed()?,
        };
        let max_frame = config.hub.limits.max_frame_size;
        let (inputs, receiver) = async_channel::bounded(1024);
        let (stop_accepting, stopped) = async_channel::bounded(1);
        runtime.spawn(Box::pin(hub::drive(
            runtime.clone(),
            Hub::new(config.hub, seed),
            receiver,
        )));
        let accepting = Accepting {
            inputs: inputs.clone(),
            max_frame,
            tls: tls.map(futures_rustls::TlsAcceptor::from),
            runtime: runtime.clone(),
        };
        runtime.spawn(Box::pin(async move {
            accepting
                .run(listener)
                .or(async {
                    let _ = stopped.recv().await;
                })
                .await;
        }));
        tracing::info!(%local_addr, "tether server listening");
        Ok(Server {
            local_addr,
            inputs,
            stop_accepting,
            _runtime: std::marker::PhantomData,
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

struct Accepting<R> {
    inputs: async_channel::Sender<Input>,
    max_frame: usize,
    tls: Option<futures_rustls::TlsAcceptor>,
    runtime: R,
}

impl<R: Runtime> Accepting<R> {
    async fn run(self, listener: R::Listener) {
        loop {
            match R::accept(&listener).await {
                Ok((stream, peer)) => {
                    let (inputs, max_frame) = (self.inputs.clone(), self.max_frame);
                    match self.tls.clone() {
                        None => self
                            .runtime
                            .spawn(Box::pin(connection::serve(stream, peer, inputs, max_frame))),
                        Some(acceptor) => self.runtime.spawn(Box::pin(async move {
                            match acceptor.accept(stream).await {
                                Ok(tls) => connection::serve(tls, peer, inputs, max_frame).await,
                                Err(error) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed")
                                }
                            }
                        })),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    let mut pause = self
                        .runtime
                        .timer(std::time::Instant::now() + Duration::from_millis(50));
                    (&mut pause).await;
                }
            }
        }
    }
}
