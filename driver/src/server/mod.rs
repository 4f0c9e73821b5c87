//! The server: one task drives the hub, one task accepts, one task per connection moves
//! bytes.
//!
//! Glue only: every decision (auth, limits, heartbeats, slow consumers, …) is the hub's; the
//! routing of its outputs is [`tether_core::embed::Connections`]'.

mod connection;
mod http;
mod hub;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_channel::oneshot;
use futures_lite::FutureExt;
use tether_core::embed::{self, ServerInput, SocketLimits};
use tether_core::server::{Hub, StorageMode};

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
/// WebSocket close code is the error code's own (one to one, in 4000–4999:
/// [`ErrorCode::close_code`](tether_core::ErrorCode::close_code)) and the reason is the
/// code's name.
///
/// Sockets are bounded outside the hub too ([`SocketLimits`]): a handshake (TLS, WebSocket
/// upgrade) must finish within its deadline, only so many may be under way at once (beyond,
/// a new socket is closed at once), and a connection the hub closed is dropped within the
/// close timeout whether or not its peer reads. Accept errors (e.g. out of file
/// descriptors) back off exponentially up to 1 s, logged once per episode.
pub struct Server<R: Runtime> {
    local_addr: SocketAddr,
    inputs: tokio::sync::mpsc::Sender<Input>,
    /// Closing it stops the accept loop.
    stop_accepting: async_channel::Sender<()>,
    /// Ends (every sender dropped) once the accept loop and every connection task ended:
    /// nothing is ever sent on it.
    tasks_ended: async_channel::Receiver<()>,
    /// Closing it drops every socket at once (see [`Server::abort`]).
    abort: async_channel::Sender<()>,
    runtime: R,
    close_timeout: Duration,
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
        let (inputs, receiver) = tokio::sync::mpsc::channel(1024);
        let (stop_accepting, stopped) = async_channel::bounded(1);
        let mut hub_config = config.hub;
        let storage = match &config.store {
            Some(store) => {
                hub_config.storage = StorageMode::External;
                let restored = store.restore(embed::unix_ms(SystemTime::now()))?;
                // The store's thread queues each completion for the hub's task; it waits
                // when that queue is full (the hub task never waits for the store).
                // A weak sender: the store alone does not keep the hub's task alive.
                let completions = inputs.downgrade();
                let sink = store.start(Box::new(move |completion| {
                    if let Some(inputs) = completions.upgrade() {
                        let _ = inputs.blocking_send(Input::Storage(completion));
                    }
                }))?;
                Some((restored, sink))
            }
            None => None,
        };
        runtime.spawn(hub::drive(
            runtime.clone(),
            Hub::new(hub_config, seed),
            receiver,
            storage,
        ));
        // Every task that serves a socket holds a clone; `shutdown` waits for the last.
        let (alive, tasks_ended) = async_channel::bounded(1);
        let (abort, aborted) = async_channel::bounded(1);
        let accepting = Accepting {
            alive,
            aborted,
            inputs: inputs.clone(),
            max_frame,
            tls: tls.map(futures_rustls::TlsAcceptor::from),
            runtime: runtime.clone(),
            limits: config.sockets,
            handshakes: Arc::new(AtomicUsize::new(0)),
        };
        runtime.spawn(async move {
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
            tasks_ended,
            abort,
            runtime,
            close_timeout: config.sockets.close_timeout,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, tells every client the server is shutting down (they reconnect
    /// elsewhere or later), and waits until each connection has sent that and closed — at
    /// most the close timeout ([`SocketLimits::close_timeout`], default 5 s) after the hub
    /// finished — so a process that exits next does not cut the last frames.
    pub async fn shutdown(self) {
        self.stop_accepting.close();
        let (done, wait) = oneshot::channel();
        if self.inputs.send(Input::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        let deadline = after(self.close_timeout);
        let _ = within(&self.runtime, deadline, self.tasks_ended.recv()).await;
    }

    /// Stops as a crash would, for tests and demos of recovery: the listener and every
    /// socket are dropped at once (no client is told anything; their transports just end),
    /// the hub is dropped, and a store is abandoned — not marked stopped cleanly — once
    /// released, so a new server can open it.
    pub async fn abort(self) {
        self.stop_accepting.close();
        self.abort.close();
        let (done, wait) = oneshot::channel();
        if self.inputs.send(Input::Abort(done)).await.is_ok() {
            let _ = wait.await;
        }
        let deadline = after(self.close_timeout);
        let _ = within(&self.runtime, deadline, self.tasks_ended.recv()).await;
    }
}

struct Accepting<R> {
    /// Held by the accept loop and cloned into each socket's task (see `Server::shutdown`).
    alive: async_channel::Sender<()>,
    /// Ends when the server is aborted: each socket's task stops there, dropping its socket.
    aborted: async_channel::Receiver<()>,
    inputs: tokio::sync::mpsc::Sender<Input>,
    max_frame: usize,
    tls: Option<futures_rustls::TlsAcceptor>,
    runtime: R,
    limits: SocketLimits,
    /// Sockets in their handshake now.
    handshakes: Arc<AtomicUsize>,
}

/// One socket counted in [`Accepting::handshakes`] until its handshake ended either way.
pub(crate) struct Handshaking(Arc<AtomicUsize>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first accept error of an episode is logged at `warn`, then every this many.
const ACCEPT_ERRORS_LOGGED_EVERY: u64 = 100;

impl<R: Runtime> Accepting<R> {
    async fn run(self, listener: R::Listener) {
        let mut errors: u64 = 0;
        loop {
            match R::accept(&listener).await {
                Ok((stream, peer)) => {
                    errors = 0;
                    if self.handshakes.load(Ordering::Relaxed) >= self.limits.max_pending_handshakes
                    {
                        tracing::debug!(%peer, "too many handshakes under way: socket closed");
                        continue;
                    }
                    self.handshakes.fetch_add(1, Ordering::Relaxed);
                    let handshaking = Handshaking(self.handshakes.clone());
                    let deadline = after(self.limits.handshake_timeout);
                    let connection = connection::Accepted {
                        runtime: self.runtime.clone(),
                        peer,
                        inputs: self.inputs.clone(),
                        max_frame: self.max_frame,
                        deadline,
                        close_timeout: self.limits.close_timeout,
                        handshaking,
                    };
                    let alive = self.alive.clone();
                    let aborted = self.aborted.clone();
                    let abort = async move {
                        let _ = aborted.recv().await;
                    };
                    match self.tls.clone() {
                        None => self.runtime.spawn(async move {
                            connection.serve(stream).or(abort).await;
                            drop(alive);
                        }),
                        Some(acceptor) => self.runtime.spawn(
                            async move {
                                let _alive = alive;
                                let runtime = connection.runtime.clone();
                                match within(&runtime, deadline, acceptor.accept(stream)).await {
                                    Some(Ok(tls)) => connection.serve(tls).await,
                                    Some(Err(error)) => {
                                        tracing::debug!(%peer, %error, "TLS handshake failed")
                                    }
                                    None => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            }
                            .or(abort),
                        ),
                    }
                }
                Err(error) => {
                    // Out of file descriptors, typically: back off instead of spinning, and
                    // say so once per episode rather than once per attempt.
                    errors += 1;
                    if errors % ACCEPT_ERRORS_LOGGED_EVERY == 1 {
                        tracing::warn!(%error, consecutive = errors, "accept failed; backing off");
                    }
                    let shift = u32::try_from(errors.min(7)).unwrap_or(7);
                    let pause = Duration::from_millis(10 << shift).min(Duration::from_secs(1));
                    let mut timer = self.runtime.timer(Instant::now() + pause);
                    (&mut timer).await;
                }
            }
        }
    }
}

/// The longest wait any socket limit stands for: a larger one is read as this.
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The instant `wait` from now; a wait beyond a day (e.g. `Duration::MAX`) counts as a
/// day, so no setting can overflow the clock.
pub(crate) fn after(wait: Duration) -> Instant {
    Instant::now() + wait.min(LONGEST_WAIT)
}

/// `future`'s output, or `None` if `deadline` passes first.
pub(crate) async fn within<R: Runtime, F: Future>(
    runtime: &R,
    deadline: Instant,
    future: F,
) -> Option<F::Output> {
    let timer = runtime.timer(deadline);
    async { Some(future.await) }
        .or(async {
            timer.await;
            None
        })
        .await
}
