//! The client: one task drives the core, one task per transport moves bytes.
//!
//! Glue only: when to connect, retry, resend, renew or give up is decided by
//! [`tether_core::client::Client`]; the bookkeeping around it is
//! [`tether_core::embed::Dispatcher`]'s.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::{FutureExt, Stream, StreamExt};
use futures_util::SinkExt;
use tether_core::client::{
    Client as Core, ConnectionState, HistoryPage, NewMessage, Output, TransportId,
};
use tether_core::embed::{
    self, ChannelEvent, ConnectionStats, Dispatcher, Error, Notice, Origin, Plumbing, WRITE_BATCH,
};
use tether_core::wire::{ChannelName, HistoryQuery};
use tether_core::{ErrorCode, ErrorInfo};

use crate::clock::{fresh_seed, now, sleep_until};
use crate::server::websocket_config;
use crate::spawner::Spawner;
use crate::state::StateWatch;

/// Options of a [`Client`]: credentials, the core's configuration (protocol defaults), a
/// seed, and [`ClientTransport`].
pub type ClientOptions = embed::ClientOptions<ClientTransport>;

/// This adapter's own client options.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// TLS for `wss://` URLs; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the client's tasks run (async-std's executor unless set).
    pub spawner: Spawner,
}

/// The runtime-neutral channels behind the [`Dispatcher`].
pub(crate) enum Neutral {}

impl Plumbing for Neutral {
    type Reply<T: Send + 'static> = oneshot::Sender<T>;
    type Sink = async_channel::Sender<ChannelEvent>;

    fn reply<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) {
        let _ = reply.send(value);
    }

    fn deliver(sink: &Self::Sink, event: ChannelEvent) -> bool {
        sink.try_send(event).is_ok()
    }
}

type Command = tether_core::embed::Command<Neutral>;

/// A tether client on async-std or smol. Cheap to clone; the connection lives until `close`
/// or until every clone is dropped.
#[derive(Clone)]
pub struct Client {
    commands: async_channel::Sender<Command>,
    state: StateWatch,
    stats: Arc<ConnectionStats>,
}

impl Client {
    /// Starts a client for `url` (`ws://` or `wss://host:port/path`) and begins connecting
    /// in the background; watch [`state`](Client::state) to see it connect.
    pub fn connect(url: &str, options: ClientOptions) -> Result<Client, Error> {
        let target = Target::parse(url)?;
        let seed = match options.seed {
            Some(seed) => seed,
            None => fresh_seed()
                .map_err(|e| Error::Protocol(ErrorInfo::new(ErrorCode::Internal, e.to_string())))?,
        };
        let core = Core::new(options.config.clone(), seed);
        let (commands, receiver) = async_channel::unbounded();
        let state = StateWatch::new(core.state());
        let stats = Arc::new(ConnectionStats::default());
        let driver = Driver {
            stats: stats.clone(),
            state: state.clone(),
            core,
            target: Arc::new(target),
            max_frame: options.config.limits.max_frame_size,
            tls: options.transport.tls.clone(),
            spawner: options.transport.spawner.clone(),
            origin: Origin::new(Instant::now()),
            transports: HashMap::new(),
            internal: async_channel::unbounded(),
            dispatcher: Dispatcher::new(options.credentials),
        };
        options.transport.spawner.spawn(driver.run(receiver));
        Ok(Client {
            commands,
            state,
            stats,
        })
    }

    /// Counters of what the connection went through.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// The connection state, observable.
    pub fn state(&self) -> StateWatch {
        self.state.clone()
    }

    /// Why the connection last changed state because of an error, if it did.
    pub fn last_error(&self) -> Option<ErrorInfo> {
        self.state.last_error()
    }

    /// Waits until the client is Connected; fails with the reason if it reaches Failed or
    /// Closed instead.
    pub async fn connected(&self) -> Result<(), Error> {
        let state = self
            .state
            .wait_for(|s| {
                matches!(
                    s,
                    ConnectionState::Connected | ConnectionState::Failed | ConnectionState::Closed
                )
            })
            .await;
        match state {
            ConnectionState::Connected => Ok(()),
            _ => Err(self.last_error().map_or(Error::Closed, Error::Protocol)),
        }
    }

    /// A handle on a channel.
    pub fn channel(&self, name: &str) -> Result<Channel, Error> {
        let name = ChannelName::new(name).map_err(Error::Protocol)?;
        Ok(Channel {
            name,
            client: self.clone(),
        })
    }

    /// Measures the round trip to the server.
    pub async fn ping(&self) -> Result<Duration, Error> {
        self.ask(Command::Ping).await?
    }

    /// Tells the client the network is back (e.g. from the operating system): it retries at
    /// once instead of waiting for its backoff.
    pub fn network_is_back(&self) {
        let _ = self.commands.try_send(Command::RetryNow);
    }

    /// Closes the connection in order; pending publishes fail with `connection_closed`.
    pub async fn close(&self) {
        let _ = self.ask(Command::Close).await;
    }

    /// Sends the command made with a fresh reply, and waits for the reply.
    async fn ask<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        self.ask_later(command).await
    }

    /// Sends the command made with a fresh reply now; the returned future waits for the
    /// reply (and fails with `Closed` if the client is gone).
    fn ask_later<T: Send + 'static>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.try_send(command(reply));
        async move {
            queued.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)
        }
    }
}

/// A channel of a [`Client`].
#[derive(Clone)]
pub struct Channel {
    name: ChannelName,
    client: Client,
}

impl Channel {
    /// The channel's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Attaches the channel and returns its stream of events, once the hub confirmed the
    /// attach (or refused it, with its code). Messages arrive exactly once and in order,
    /// across reconnects; a lost continuity arrives as [`ChannelEvent::Discontinuity`].
    pub async fn subscribe(&self) -> Result<Subscription, Error> {
        let (sink, events) = async_channel::unbounded();
        let channel = self.name.clone();
        self.client
            .ask(|reply| Command::Subscribe {
                channel,
                sink,
                reply,
            })
            .await??;
        Ok(Subscription {
            events: Box::pin(events),
        })
    }

    /// Publishes one message; resolves `Ok` when the server acknowledged it, `Err` with the
    /// code when it was refused or could not be delivered (Suspended, Closed, Failed).
    ///
    /// The publish is queued when this is called, not when the future is first polled, so
    /// publishes keep the order of the calls even when their futures are awaited
    /// concurrently or out of order.
    pub fn publish(
        &self,
        name: &str,
        data: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.publish_all(vec![NewMessage::new(name, data.into())])
    }

    /// Publishes several messages as one publish (queued at once, like [`publish`](Self::publish)).
    pub fn publish_all(
        &self,
        messages: Vec<NewMessage>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let channel = self.name.clone();
        let answer = self.client.ask_later(|reply| Command::Publish {
            channel,
            messages,
            reply,
        });
        async move { answer.await? }
    }

    /// A page of the channel's retained history; follow `next` for more.
    pub async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, Error> {
        let channel = self.name.clone();
        self.client
            .ask(|reply| Command::History {
                channel,
                query,
                reply,
            })
            .await?
    }
}

/// The events of an attached channel (a `futures::Stream`). Buffered until read.
pub struct Subscription {
    events: Pin<Box<async_channel::Receiver<ChannelEvent>>>,
}

impl Stream for Subscription {
    type Item = ChannelEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
        self.events.as_mut().poll_next(cx)
    }
}

/// Where to connect, read from a `ws://` or `wss://` URL.
struct Target {
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let bad = || Error::Url(url.to_owned());
        let request = url.into_client_request().map_err(|_| bad())?;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?;
        // An IPv6 literal comes bracketed; the socket address wants it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }
}

/// Something from the client's own tasks.
enum Internal {
    Opened(TransportId),
    Bytes(TransportId, Bytes),
    Closed(TransportId, String),
    Token(Result<String, String>),
}

struct Driver {
    stats: Arc<ConnectionStats>,
    state: StateWatch,
    core: Core,
    target: Arc<Target>,
    max_frame: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    spawner: Spawner,
    origin: Origin,
    /// Each transport's writer queue; dropping it ends the transport's task.
    transports: HashMap<TransportId, async_channel::Sender<Bytes>>,
    internal: (
        async_channel::Sender<Internal>,
        async_channel::Receiver<Internal>,
    ),
    dispatcher: Dispatcher<Neutral>,
}

/// Why the driver woke up.
enum Wake {
    Command(Option<Command>),
    Internal(Internal),
    Deadline,
}

impl Driver {
    async fn run(mut self, commands: async_channel::Receiver<Command>) {
        self.core.connect(now(&self.origin));
        loop {
            self.drain();
            if self.dispatcher.closed(&self.core) {
                break;
            }
            // Re-read the deadline after every input (it moves with every input).
            let deadline = self.core.poll_timeout();
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            let internal = self.internal.1.clone();
            let wake = async { Wake::Command(commands.recv().await.ok()) }
                .or(async {
                    match internal.recv().await {
                        Ok(event) => Wake::Internal(event),
                        Err(_) => std::future::pending().await,
                    }
                })
                .or(async {
                    sleep_until(&self.origin, deadline).await;
                    Wake::Deadline
                })
                .await;
            let now = now(&self.origin);
            match wake {
                Wake::Command(Some(command)) => {
                    self.dispatcher.command(&mut self.core, now, command);
                }
                Wake::Command(None) => {
                    // Every handle was dropped: close in order, then stop.
                    self.core.close(now);
                    self.drain();
                    break;
                }
                Wake::Internal(event) => self.internal(event),
                Wake::Deadline => self.core.handle_timeout(now),
            }
        }
        // Dropping the writer queues ends every transport task.
        self.transports.clear();
    }

    fn internal(&mut self, event: Internal) {
        let now = now(&self.origin);
        match event {
            Internal::Opened(id) => {
                if self.transports.contains_key(&id) {
                    self.core.handle_transport_open(now, id);
                }
            }
            Internal::Bytes(id, bytes) => self.core.handle_transport_bytes(now, id, bytes),
            Internal::Closed(id, reason) => {
                if self.transports.remove(&id).is_some() {
                    self.core.handle_transport_closed(now, id, reason);
                }
            }
            Internal::Token(answer) => {
                self.dispatcher
                    .command(&mut self.core, now, Command::Token(answer));
            }
        }
    }

    /// Carries out every output of the core.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::OpenTransport { transport } => self.open(transport),
                Output::Transmit { transport, bytes } => {
                    if let Some(writer) = self.transports.get(&transport) {
                        let _ = writer.try_send(bytes);
                    }
                }
                Output::CloseTransport { transport, .. } => {
                    self.transports.remove(&transport);
                }
                Output::Event(event) => {
                    let now = now(&self.origin);
                    let notice = self
                        .dispatcher
                        .event(&mut self.core, now, &self.stats, event);
                    self.notice(notice);
                }
            }
        }
    }

    fn notice(&mut self, notice: Option<Notice>) {
        match notice {
            Some(Notice::State { current, reason }) => {
                match &reason {
                    Some(reason) => {
                        tracing::info!(state = %current, code = reason.code.as_u32(), reason = %reason.message, "connection state")
                    }
                    None => tracing::info!(state = %current, "connection state"),
                }
                self.state.set(current, reason);
            }
            Some(Notice::Update(reason)) => {
                tracing::info!(code = reason.code.as_u32(), reason = %reason.message, "connection update");
            }
            Some(Notice::FetchToken(request)) => {
                let internal = self.internal.0.clone();
                self.spawner.spawn(async move {
                    let _ = internal.send(Internal::Token(request.await)).await;
                });
            }
            None => {}
        }
    }

    fn open(&mut self, id: TransportId) {
        let (writer, outgoing) = async_channel::unbounded();
        self.transports.insert(id, writer);
        let events = self.internal.0.clone();
        let target = self.target.clone();
        let tls = self.tls.clone();
        let max_frame = self.max_frame;
        self.spawner.spawn(async move {
            // Connecting stops early if the core gives the transport up meanwhile (the
            // writer queue closes; nothing is sent on it before the transport is open).
            let gave_up = async {
                let _ = outgoing.recv().await;
                Err("given up".to_owned())
            };
            // Boxed: the connect's state is large and needed once; inline, it would size
            // this long-lived transport task's allocation.
            let ws = match Box::pin(connect(&target, tls, max_frame)).or(gave_up).await {
                Ok(ws) => ws,
                Err(reason) => {
                    let _ = events.send(Internal::Closed(id, reason)).await;
                    return;
                }
            };
            if events.send(Internal::Opened(id)).await.is_err() {
                return;
            }
            let (mut sink, mut source) = futures_util::StreamExt::split(ws);
            let reading = async {
                while let Some(message) = source.next().await {
                    match message {
                        Ok(Message::Binary(bytes)) => {
                            if events.send(Internal::Bytes(id, bytes)).await.is_err() {
                                return;
                            }
                        }
                        Ok(Message::Close(frame)) => {
                            let reason =
                                frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string());
                            let _ = events.send(Internal::Closed(id, reason)).await;
                            return;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let _ = events.send(Internal::Closed(id, error.to_string())).await;
                            return;
                        }
                    }
                }
                let _ = events
                    .send(Internal::Closed(id, "connection ended".into()))
                    .await;
            };
            let writing = async {
                // What is queued goes out with one flush.
                while let Ok(first) = outgoing.recv().await {
                    let mut next = Some(first);
                    let mut taken = 0;
                    let mut written = true;
                    while let Some(bytes) = next.take() {
                        if sink.feed(Message::Binary(bytes)).await.is_err() {
                            written = false;
                            break;
                        }
                        taken += 1;
                        if taken < WRITE_BATCH {
                            next = outgoing.try_recv().ok();
                        }
                    }
                    if !written || sink.flush().await.is_err() {
                        let _ = events
                            .send(Internal::Closed(id, "write failed".into()))
                            .await;
                        return;
                    }
                }
                // The core gave the transport up: close it in order.
                let _ = sink.close().await;
            };
            reading.or(writing).await;
        });
    }
}

/// A boxed byte stream: plain TCP or TLS over it.
trait Io: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Send + Unpin> Io for T {}

async fn connect(
    target: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_frame: usize,
) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let tcp = async_net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if target.tls {
        let config = match tls {
            Some(config) => config,
            None => web_pki_roots()?,
        };
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| e.to_string())?;
        let tls = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = async_tungstenite::client_async_with_config(
        target.url.as_str(),
        stream,
        Some(websocket_config(max_frame)),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// TLS trusting the bundled web PKI roots.
fn web_pki_roots() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
