//! The server: one task drives the hub, one task accepts, one task per connection moves
//! bytes.
//!
//! Glue only: every decision (auth, limits, heartbeats, slow consumers, …) is the hub's; the
//! routing of its outputs is [`tether_core::embed::Connections`]'.

mod connection;
mod fallback;
pub use fallback::{BINDING_HEADERS, BindingAnswer, BindingRequest, DownBody, PREFLIGHT_HEADERS};
mod http;
mod hub;
mod observe;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use tether_core::embed::{self, ServerInput, SocketLimits};
use tether_core::server::{
    ApiAnswer, ApiRequest, ChannelSummary, Hub, HubStats, PublishedMessage, StorageMode,
};
use tether_core::wire::{ChannelMessage, ChannelName, ClientId, HistoryQuery, Message};
use tether_core::{ErrorCode, ErrorInfo};

use crate::api::{Error, Revocation};

use crate::client::Neutral;
use crate::runtime::{Bind, Runtime};
use connection::Queue;

type Input = ServerInput<Neutral, Queue>;

/// A running tether server without a listener of its own: the hub, its store, and what
/// serves the connections handed to it — WebSocket connections whose HTTP upgrade another
/// server answered (an axum or hyper application, through
/// [`serve_upgraded`](Service::serve_upgraded)). [`Server`] is a `Service` with a listener.
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
/// Cheap to clone (every clone is the same server); it runs until
/// [`shutdown`](Service::shutdown) or [`abort`](Service::abort) is called on one clone, or
/// until every clone and every connection is gone.
pub struct Service<R: Runtime> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime> Clone for Service<R> {
    fn clone(&self) -> Self {
        Service {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<R> {
    inputs: tokio::sync::mpsc::Sender<Input>,
    /// Cloned into every task that serves a socket; taken by `shutdown` and `abort`, after
    /// which no new connection is served.
    alive: std::sync::Mutex<Option<async_channel::Sender<()>>>,
    /// Ends (every sender dropped) once every connection task ended: nothing is ever sent
    /// on it.
    tasks_ended: async_channel::Receiver<()>,
    /// Closing it drops every socket at once (see [`Service::abort`]).
    abort: async_channel::Sender<()>,
    /// Ends when the server is aborted: each socket's task stops there.
    aborted: async_channel::Receiver<()>,
    runtime: R,
    max_frame: usize,
    limits: SocketLimits,
    /// Sockets in their handshake now (TLS, WebSocket upgrade, or not yet past `connect`).
    handshakes: Arc<AtomicUsize>,
    tls: Option<Arc<rustls::ServerConfig>>,
    observer: observe::Observer,
    /// The HTTP binding's transports (§2.5).
    links: Arc<fallback::Links>,
}

impl<R: Runtime> Service<R> {
    /// Starts the hub (restoring it from the store of the options, if any) with no
    /// listener: connections come from [`serve_upgraded`](Service::serve_upgraded). The
    /// options' TLS configuration is not used here (the server that answers the HTTP
    /// upgrade terminates TLS); [`Server::bind`] uses it.
    ///
    /// # Errors
    /// `InvalidInput` when [`HubConfig::validate`](tether_core::server::HubConfig::validate)
    /// refuses the hub's configuration; `internal` when no seed could be drawn or the
    /// runtime cannot be reached from here; the store's error when it cannot be restored or
    /// started.
    pub fn start(config: embed::ServerOptions<R::ServerTransport>) -> io::Result<Service<R>> {
        config.hub.validate().map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("hub configuration: {why}"),
            )
        })?;
        if config.hub.uses_hooks() && config.hooks.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "hub configuration: a namespace asks for hooks (attach_hook, publish_hook) and \
                 the server options have none",
            ));
        }
        let (runtime, tls) = R::for_server(&config.transport)?;
        let seed = match config.seed {
            Some(seed) => seed,
            None => crate::fresh_seed()?,
        };
        let max_frame = config.hub.limits.max_frame_size;
        let (inputs, receiver) = tokio::sync::mpsc::channel(1024);
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
        let hooks = config.hooks.clone().map(|hooks| {
            Box::new(hub::HookRunner {
                runtime: runtime.clone(),
                hooks,
                inputs: inputs.downgrade(),
                bound: hub_config.hook_timeout,
            }) as Box<dyn embed::HookSink>
        });
        let counters = Arc::new(observe::Counters::default());
        runtime.spawn(hub::drive(
            runtime.clone(),
            Hub::new(hub_config, seed),
            receiver,
            storage,
            hooks,
            counters.clone(),
        ));
        let observer = observe::Observer {
            inputs: inputs.clone(),
            counters,
            store: config.store.clone(),
            serving: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let (alive, tasks_ended) = async_channel::bounded(1);
        let (abort, aborted) = async_channel::bounded(1);
        Ok(Service {
            shared: Arc::new(Shared {
                inputs,
                alive: std::sync::Mutex::new(Some(alive)),
                tasks_ended,
                abort,
                aborted,
                runtime,
                max_frame,
                limits: config.sockets,
                handshakes: Arc::new(AtomicUsize::new(0)),
                tls,
                observer,
                links: Arc::default(),
            }),
        })
    }

    /// Serves one WebSocket connection whose HTTP upgrade was answered elsewhere (`101
    /// Switching Protocols` sent): `stream` is the raw socket after that response, `peer`
    /// the client's address if known (for logs). Returns when the connection ended. The
    /// socket limits hold as for [`Server`]'s own sockets: beyond
    /// [`SocketLimits::max_pending_handshakes`] connections not yet past `connect`, or once
    /// the service is shutting down, the socket is dropped at once.
    pub async fn serve_upgraded<S>(&self, stream: S, peer: Option<SocketAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let Some(connection) = self.accepted(peer) else {
            return;
        };
        let Some(alive) = self.alive() else {
            return;
        };
        let aborted = self.shared.aborted.clone();
        connection
            .serve_upgraded(stream)
            .or(async move {
                let _ = aborted.recv().await;
            })
            .await;
        drop(alive);
    }

    /// A clone of the liveness sender, unless the service is shutting down.
    fn alive(&self) -> Option<async_channel::Sender<()>> {
        self.shared
            .alive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Answers a request of the HTTP binding (§2.5, the fallback for clients whose
    /// WebSocket is blocked) that another HTTP server received — e.g. an axum route next to
    /// the WebSocket upgrade. `body` is the request's body, at most
    /// [`binding_body_limit`](Self::binding_body_limit) bytes (for a larger one, answer
    /// [`binding_too_large`](Self::binding_too_large)). The answer's body, if any, is a
    /// stream of chunks to send as they come (a streaming response). The server's own
    /// listener serves the binding itself.
    pub async fn serve_binding(
        &self,
        request: BindingRequest,
        body: bytes::Bytes,
    ) -> BindingAnswer {
        let binding = self.binding();
        // Opening a transport is a handshake like a WebSocket's, bounded the same way.
        let slot = if request.transport.is_none() {
            let shared = &self.shared;
            if shared.handshakes.load(Ordering::Relaxed) >= shared.limits.max_pending_handshakes {
                return fallback::unavailable();
            }
            shared.handshakes.fetch_add(1, Ordering::Relaxed);
            Some(Handshaking(shared.handshakes.clone()))
        } else {
            None
        };
        binding.answer(request, body, slot).await
    }

    /// The largest body of a binding request [`serve_binding`](Self::serve_binding) takes,
    /// in bytes.
    pub fn binding_body_limit(&self) -> usize {
        self.binding().max_body()
    }

    /// The answer to a binding request whose body (`size` bytes) is over the limit (`413`;
    /// the transport it names, if any, is closed with `frame_too_large`).
    pub async fn binding_too_large(&self, request: &BindingRequest, size: usize) -> BindingAnswer {
        self.binding()
            .too_large(request.transport.as_deref(), size)
            .await
    }

    fn binding(&self) -> fallback::Binding<R> {
        fallback::Binding {
            runtime: self.shared.runtime.clone(),
            inputs: self.shared.inputs.clone(),
            links: self.shared.links.clone(),
            max_frame: self.shared.max_frame,
            close_timeout: self.shared.limits.close_timeout,
        }
    }

    /// What serving a new socket needs, unless too many handshakes are under way.
    fn accepted(&self, peer: SocketAddr) -> Option<connection::Accepted<R>> {
        let shared = &self.shared;
        if shared.handshakes.load(Ordering::Relaxed) >= shared.limits.max_pending_handshakes {
            tracing::debug!(%peer, "too many handshakes under way: socket closed");
            return None;
        }
        shared.handshakes.fetch_add(1, Ordering::Relaxed);
        Some(connection::Accepted {
            runtime: shared.runtime.clone(),
            peer,
            inputs: shared.inputs.clone(),
            max_frame: shared.max_frame,
            deadline: after(shared.limits.handshake_timeout),
            close_timeout: shared.limits.close_timeout,
            handshaking: Handshaking(shared.handshakes.clone()),
            observer: shared.observer.clone(),
            links: shared.links.clone(),
        })
    }

    /// Publishes `messages` to `channel` from the application's backend, with no client
    /// connection (§7.8): stored, fanned out and in history like a client's publish, and
    /// deduplicated by message id in the same window — a retry with the same ids stores
    /// nothing again. `publisher` is the client id subscribers see. Returns each message's
    /// position, in order (`None` for a duplicate), once stored (with a store: durable).
    ///
    /// # Errors
    /// `invalid_channel_name`, `invalid_message` (no message), `too_many_messages`,
    /// `frame_too_large`, `limit_exceeded` (channel table full), `storage_failed`; `Closed`
    /// once the hub has stopped.
    pub async fn publish(
        &self,
        publisher: &str,
        channel: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<PublishedMessage>, Error> {
        let channel = channel_name(channel)?;
        let publisher = ClientId::new(publisher).map_err(|e| {
            Error::Protocol(ErrorInfo::new(
                ErrorCode::BadRequest,
                format!("publisher: {e}"),
            ))
        })?;
        match self
            .api(ApiRequest::Publish {
                channel,
                messages,
                publisher,
            })
            .await?
        {
            ApiAnswer::Published(answer) => answer.map_err(Error::Protocol),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `channel`'s history (§7.5), as a client with the history capability would
    /// get it: the messages and the query of the next page, if any.
    ///
    /// # Errors
    /// `invalid_channel_name`, `invalid_history_query`, `storage_failed`; `Closed` once
    /// the hub has stopped.
    pub async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<(Vec<ChannelMessage>, Option<HistoryQuery>), Error> {
        let channel = channel_name(channel)?;
        match self.api(ApiRequest::History { channel, query }).await? {
            ApiAnswer::History(answer) => answer.map_err(Error::Protocol),
            other => Err(unexpected(&other)),
        }
    }

    /// The channels the hub holds now, with their positions and subscriber counts.
    ///
    /// # Errors
    /// `Closed` once the hub has stopped.
    pub async fn channels(&self) -> Result<Vec<ChannelSummary>, Error> {
        match self.api(ApiRequest::Channels).await? {
            ApiAnswer::Channels(channels) => Ok(channels),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes tokens (§8): sessions holding one are disconnected with `token_revoked` at
    /// once (their clients get a new token and resume), and such tokens are refused until
    /// the revocation ends; with a store it is kept across restarts. Returns how many
    /// connections it closed.
    ///
    /// # Errors
    /// `limit_exceeded` when 10,000 revocations are in force; `Closed` once the hub stopped.
    pub async fn revoke(&self, revocation: Revocation) -> Result<usize, Error> {
        match self.api(ApiRequest::Revoke(revocation)).await? {
            ApiAnswer::Revoked(answer) => answer.map_err(Error::Protocol),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the connections of `client_id` with `disconnected_by_server` (§7.8). With
    /// `reconnect: false` its clients stop (an `error` frame) and its sessions are freed,
    /// also those waiting for resume; with `reconnect: true` they reconnect and resume (a
    /// `disconnect` frame; to move them to another node). Returns the connections closed and
    /// the sessions freed. The client may connect again later: [`revoke`](Self::revoke) its
    /// tokens to keep it out.
    ///
    /// # Errors
    /// `bad_request` for an empty client id or one over 128 bytes; `Closed` once the hub
    /// stopped.
    pub async fn disconnect(
        &self,
        client_id: &str,
        reconnect: bool,
    ) -> Result<(usize, usize), Error> {
        let client_id = tether_core::wire::ClientId::new(client_id).map_err(Error::Protocol)?;
        match self
            .api(ApiRequest::Disconnect {
                client_id,
                reconnect,
            })
            .await?
        {
            ApiAnswer::Disconnected {
                connections,
                sessions,
            } => Ok((connections, sessions)),
            other => Err(unexpected(&other)),
        }
    }

    async fn api(&self, request: ApiRequest) -> Result<ApiAnswer, Error> {
        let (reply, answer) = oneshot::channel();
        let reply: tether_core::embed::ApiReply = Box::new(move |answer| {
            let _ = reply.send(answer);
        });
        self.shared
            .inputs
            .send(Input::Api { request, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }

    /// Counts an HTTP request in front of this service (e.g. the HTTP API) refused for its
    /// credentials, in the `auth_failures` metric under `code` (a 401xx code; others are
    /// not counted).
    pub fn count_auth_failure(&self, code: ErrorCode) {
        self.shared.observer.counters.http_auth_failure(code);
    }

    /// The hub's statistics and totals now; `None` once its task has stopped.
    pub async fn stats(&self) -> Option<HubStats> {
        self.shared.observer.stats().await
    }

    /// Every metric in the OpenMetrics text format (Prometheus scrapes it) (what `GET /metrics` answers): the
    /// connections, sessions and channels now; messages stored and delivered, publishes by
    /// outcome, bytes received and sent, slow consumers, resumes by outcome, disconnects and
    /// authentication failures by error code since the start; publish → ACK time and, with
    /// a store, its sync time as histograms in seconds. `None` once the hub has stopped.
    pub async fn metrics(&self) -> Option<String> {
        self.shared.observer.metrics().await
    }

    /// Whether the server takes connections and publishes now (what `GET /ready` answers
    /// 200 for): not shutting down, its hub answering, its store (if any) taking writes;
    /// otherwise why not.
    ///
    /// # Errors
    /// The reason it is not ready, for people.
    pub async fn ready(&self) -> Result<(), String> {
        self.shared.observer.ready().await
    }

    /// Stops serving new connections, tells every client the server is shutting down
    /// (they reconnect elsewhere or later), and waits until each connection has sent that
    /// and closed — at most the close timeout ([`SocketLimits::close_timeout`], default 5 s)
    /// after the hub finished — so a process that exits next does not cut the last frames.
    /// A store is closed cleanly.
    pub async fn shutdown(self) {
        self.stop_serving();
        let (done, wait) = oneshot::channel();
        if self.shared.inputs.send(Input::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
        self.wait_for_tasks().await;
    }

    /// Stops as a crash would, for tests and demos of recovery: every socket is dropped at
    /// once (no client is told anything; their transports just end), the hub is dropped,
    /// and a store is abandoned — not marked stopped cleanly — once released, so a new
    /// server can open it.
    pub async fn abort(self) {
        self.stop_serving();
        self.shared.abort.close();
        let (done, wait) = oneshot::channel();
        if self.shared.inputs.send(Input::Abort(done)).await.is_ok() {
            let _ = wait.await;
        }
        self.wait_for_tasks().await;
    }

    fn stop_serving(&self) {
        self.shared.observer.serving.store(false, Ordering::Relaxed);
        self.shared
            .alive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    async fn wait_for_tasks(&self) {
        let deadline = after(self.shared.limits.close_timeout);
        let _ = within(
            &self.shared.runtime,
            deadline,
            self.shared.tasks_ended.recv(),
        )
        .await;
    }
}

/// A running tether server with its own listener: a [`Service`] and an accept loop.
///
/// Sockets are bounded outside the hub too ([`SocketLimits`]): a handshake (TLS, WebSocket
/// upgrade) must finish within its deadline, only so many may be under way at once (beyond,
/// a new socket is closed at once), and a connection the hub closed is dropped within the
/// close timeout whether or not its peer reads. Accept errors (e.g. out of file
/// descriptors) back off exponentially up to 1 s, logged once per episode.
pub struct Server<R: Runtime> {
    service: Service<R>,
    local_addr: SocketAddr,
    /// Closing it stops the accept loop.
    stop_accepting: async_channel::Sender<()>,
}

impl<R: Runtime> Server<R> {
    /// Binds `address` and starts serving `ws://` (or, with TLS in the options, `wss://`).
    ///
    /// # Errors
    /// The bind's error; otherwise those of [`Service::start`] (a refused configuration
    /// included).
    pub async fn bind<A>(
        address: A,
        config: embed::ServerOptions<R::ServerTransport>,
    ) -> io::Result<Server<R>>
    where
        R: Bind<A>,
    {
        // The runtime and TLS configuration are checked before binding.
        R::for_server(&config.transport)?;
        let listener = R::bind(address).await?;
        let local_addr = R::local_addr(&listener)?;
        let service = Service::<R>::start(config)?;
        let (stop_accepting, stopped) = async_channel::bounded(1);
        let accepting = Accepting {
            tls: service
                .shared
                .tls
                .clone()
                .map(futures_rustls::TlsAcceptor::from),
            alive: service.alive(),
            service: service.clone(),
        };
        service.shared.runtime.spawn(async move {
            accepting
                .run(listener)
                .or(async {
                    let _ = stopped.recv().await;
                })
                .await;
        });
        tracing::info!(%local_addr, "tether server listening");
        Ok(Server {
            service,
            local_addr,
            stop_accepting,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's [`Service`]: to hand it connections upgraded elsewhere too.
    pub fn service(&self) -> &Service<R> {
        &self.service
    }

    /// Stops accepting, then [`Service::shutdown`].
    pub async fn shutdown(self) {
        self.stop_accepting.close();
        self.service.shutdown().await;
    }

    /// Stops accepting, then [`Service::abort`] (as a crash would).
    pub async fn abort(self) {
        self.stop_accepting.close();
        self.service.abort().await;
    }
}

struct Accepting<R: Runtime> {
    service: Service<R>,
    /// Held by the accept loop and cloned into each socket's task (see `Service::shutdown`).
    alive: Option<async_channel::Sender<()>>,
    tls: Option<futures_rustls::TlsAcceptor>,
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
        let Some(alive) = self.alive else {
            return;
        };
        let runtime = self.service.shared.runtime.clone();
        let mut errors: u64 = 0;
        loop {
            match R::accept(&listener).await {
                Ok((stream, peer)) => {
                    errors = 0;
                    let Some(connection) = self.service.accepted(peer) else {
                        continue;
                    };
                    let deadline = connection.deadline;
                    let alive = alive.clone();
                    let aborted = self.service.shared.aborted.clone();
                    let abort = async move {
                        let _ = aborted.recv().await;
                    };
                    match self.tls.clone() {
                        None => runtime.spawn(async move {
                            connection.serve(stream).or(abort).await;
                            drop(alive);
                        }),
                        Some(acceptor) => runtime.spawn(
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
                    let mut timer = runtime.timer(Instant::now() + pause);
                    (&mut timer).await;
                }
            }
        }
    }
}

fn channel_name(name: &str) -> Result<ChannelName, Error> {
    ChannelName::new(name).map_err(|e| {
        Error::Protocol(ErrorInfo::new(
            ErrorCode::InvalidChannelName,
            format!("channel {name:?}: {e}"),
        ))
    })
}

fn unexpected(answer: &ApiAnswer) -> Error {
    Error::Protocol(ErrorInfo::new(
        ErrorCode::Internal,
        format!("the hub answered another request: {answer:?}"),
    ))
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
