//! The tokio WebSocket client: one task per client drives the core, moves bytes, sleeps until
//! the core's next deadline and turns events into futures and streams.
//!
//! Glue only: when to connect, retry, resend, renew or give up is decided by
//! [`tether_core::client::Client`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use tether_core::client::{
    Client as Core, ConnectionState, Event, HistoryPage, NewMessage, Output, TransportId,
};
use tether_core::embed::{
    self, ChannelEvent, ConnectionStats, Dispatcher, Error, Notice, Plumbing,
};
use tether_core::wire::{ChannelName, HistoryQuery};
use tether_core::{ErrorCode, ErrorInfo};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::clock::{Origin, fresh_seed};
use crate::server::websocket_config;

/// Options of a [`Client`]: credentials, the core's configuration (protocol defaults), a
/// seed, and [`ClientTransport`].
pub type ClientOptions = embed::ClientOptions<ClientTransport>;

/// The tokio client's own options.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// TLS for `wss://` URLs; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The tokio channels behind the [`Dispatcher`].
pub(crate) enum Tokio {}

impl Plumbing for Tokio {
    type Reply<T: Send + 'static> = oneshot::Sender<T>;
    type Sink = mpsc::UnboundedSender<ChannelEvent>;

    fn reply<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) {
        let _ = reply.send(value);
    }

    fn deliver(sink: &Self::Sink, event: ChannelEvent) -> bool {
        sink.send(event).is_ok()
    }
}

type Command = tether_core::embed::Command<Tokio>;

/// A tether client on tokio. Cheap to clone; the connection lives until `close` or until
/// every clone is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    reason: watch::Receiver<Option<ErrorInfo>>,
    stats: Arc<ConnectionStats>,
}

impl Client {
    /// Starts a client for `url` (`ws://` or `wss://host:port/path`) and begins connecting
    /// in the background; watch [`state`](Client::state) to see it connect.
    pub fn connect(url: &str, options: ClientOptions) -> Result<Client, Error> {
        if !url.starts_with("ws://") && !url.starts_with("wss://") {
            return Err(Error::Url(url.to_owned()));
        }
        let seed = match options.seed {
            Some(seed) => seed,
            None => fresh_seed()
                .map_err(|e| Error::Protocol(ErrorInfo::new(ErrorCode::Internal, e.to_string())))?,
        };
        let core = Core::new(options.config.clone(), seed);
        let (commands, receiver) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(core.state());
        let (reason_tx, reason) = watch::channel(None);
        let stats = Arc::new(ConnectionStats::default());
        let driver = Driver {
            stats: stats.clone(),
            reason: reason_tx,
            core,
            url: url.to_owned(),
            max_frame: options.config.limits.max_frame_size,
            tls: options.transport.tls.clone(),
            origin: Origin::now(),
            commands: commands.downgrade(),
            state: state_tx,
            transports: HashMap::new(),
            transport_events: mpsc::unbounded_channel(),
            dispatcher: Dispatcher::new(options.credentials),
            reading: None,
        };
        tokio::spawn(driver.run(receiver));
        Ok(Client {
            commands,
            state,
            reason,
            stats,
        })
    }

    /// Counters of what the connection went through.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// The connection state, observable.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Why the connection last changed state because of an error, if it did.
    pub fn last_error(&self) -> Option<ErrorInfo> {
        self.reason.borrow().clone()
    }

    /// Waits until the client is Connected; fails with the reason if it reaches Failed or
    /// Closed instead.
    pub async fn connected(&self) -> Result<(), Error> {
        let mut state = self.state.clone();
        loop {
            let current = *state.borrow_and_update();
            match current {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::Failed | ConnectionState::Closed => {
                    return Err(self.last_error().map_or(Error::Closed, Error::Protocol));
                }
                _ => {}
            }
            state.changed().await.map_err(|_| Error::Closed)?;
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
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ping(reply))?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Tells the client the network is back (e.g. from the operating system): it retries at
    /// once instead of waiting for its backoff.
    pub fn network_is_back(&self) {
        let _ = self.send(Command::RetryNow);
    }

    /// Closes the connection in order; pending publishes fail with `connection_closed`.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Close(reply)).is_ok() {
            let _ = done.await;
        }
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).map_err(|_| Error::Closed)
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
        let (sink, events) = mpsc::unbounded_channel();
        let (reply, attached) = oneshot::channel();
        self.client.send(Command::Subscribe {
            channel: self.name.clone(),
            sink,
            reply,
        })?;
        attached.await.map_err(|_| Error::Closed)??;
        Ok(Subscription { events })
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
        let (reply, answer) = oneshot::channel();
        let queued = self.client.send(Command::Publish {
            channel: self.name.clone(),
            messages,
            reply,
        });
        async move {
            queued?;
            answer.await.map_err(|_| Error::Closed)?
        }
    }

    /// A page of the channel's retained history; follow `next` for more.
    pub async fn history(&self, query: HistoryQuery) -> Result<HistoryPage, Error> {
        let (reply, answer) = oneshot::channel();
        self.client.send(Command::History {
            channel: self.name.clone(),
            query,
            reply,
        })?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

/// The events of an attached channel (a `futures::Stream`). Buffered until read.
pub struct Subscription {
    events: mpsc::UnboundedReceiver<ChannelEvent>,
}

impl Stream for Subscription {
    type Item = ChannelEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
        self.events.poll_recv(cx)
    }
}

/// The reading half of an open WebSocket; the driver reads it itself (no task hop per frame).
type Source = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

enum TransportEvent {
    Opened(TransportId, mpsc::UnboundedSender<Option<Bytes>>, Source),
    Closed(TransportId, String),
}

/// Frames handled per wake-up before the driver looks at its other inputs again.
const READ_BATCH: usize = 64;

struct Transport {
    /// `None` until the WebSocket is open.
    writer: Option<mpsc::UnboundedSender<Option<Bytes>>>,
    task: JoinHandle<()>,
}

struct Driver {
    stats: Arc<ConnectionStats>,
    reason: watch::Sender<Option<ErrorInfo>>,
    core: Core,
    url: String,
    max_frame: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    origin: Origin,
    commands: mpsc::WeakUnboundedSender<Command>,
    state: watch::Sender<ConnectionState>,
    transports: HashMap<TransportId, Transport>,
    transport_events: (
        mpsc::UnboundedSender<TransportEvent>,
        mpsc::UnboundedReceiver<TransportEvent>,
    ),
    dispatcher: Dispatcher<Tokio>,
    /// The open transport's incoming frames.
    reading: Option<(TransportId, Source)>,
}

/// The next message of the open transport, or never when none is open.
async fn next_message(
    reading: &mut Option<(TransportId, Source)>,
) -> (
    TransportId,
    Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) {
    match reading {
        Some((id, source)) => (*id, source.next().await),
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.core.connect(self.origin.time());
        // One timer for the driver's life, moved only when the deadline moves (a new timer
        // per wake-up would cost a timer-wheel insert and removal each time).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            self.drain();
            if self.dispatcher.closed(&self.core) {
                break;
            }
            // Re-read the deadline after every input (it moves with every input).
            let deadline = self.core.poll_timeout().map(|d| self.origin.instant(d));
            if let Some(deadline) = deadline {
                if armed != Some(deadline) {
                    timer.as_mut().reset(deadline);
                    armed = Some(deadline);
                }
            }
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => {
                        // Every handle was dropped: close in order, then stop.
                        self.core.close(self.origin.time());
                        self.drain();
                        break;
                    }
                },
                Some(event) = self.transport_events.1.recv() => self.transport_event(event),
                (id, message) = next_message(&mut self.reading) => self.received(id, message),
                () = &mut timer, if deadline.is_some() => {
                    armed = None;
                    self.core.handle_timeout(self.origin.time());
                }
            }
        }
        for (_, transport) in self.transports.drain() {
            transport.task.abort();
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.origin.time();
        self.dispatcher.command(&mut self.core, now, command);
    }

    fn transport_event(&mut self, event: TransportEvent) {
        let now = self.origin.time();
        match event {
            TransportEvent::Opened(id, writer, source) => {
                if let Some(transport) = self.transports.get_mut(&id) {
                    transport.writer = Some(writer);
                    self.reading = Some((id, source));
                    self.core.handle_transport_open(now, id);
                }
            }
            TransportEvent::Closed(id, reason) => self.closed(id, reason),
        }
    }

    /// A message of the open transport, and whatever else it already has ready (up to a
    /// batch), so a burst costs one wake-up.
    fn received(
        &mut self,
        id: TransportId,
        mut message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        for round in 1..=READ_BATCH {
            let now = self.origin.time();
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    self.core.handle_transport_bytes(now, id, bytes)
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason =
                        frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string());
                    return self.closed(id, reason);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return self.closed(id, error.to_string()),
                None => return self.closed(id, "connection ended".into()),
            }
            // Only read ahead what this round will handle: a message read is never dropped.
            if round == READ_BATCH {
                return;
            }
            let Some((_, source)) = self.reading.as_mut() else {
                return;
            };
            match futures_util::FutureExt::now_or_never(source.next()) {
                Some(next) => message = next,
                None => return,
            }
        }
    }

    fn closed(&mut self, id: TransportId, reason: String) {
        if self.reading.as_ref().is_some_and(|(open, _)| *open == id) {
            self.reading = None;
        }
        if self.transports.remove(&id).is_some() {
            let now = self.origin.time();
            self.core.handle_transport_closed(now, id, reason);
        }
    }

    /// Carries out every output of the core.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::OpenTransport { transport } => self.open(transport),
                Output::Transmit { transport, bytes } => {
                    if let Some(writer) = self
                        .transports
                        .get(&transport)
                        .and_then(|t| t.writer.as_ref())
                    {
                        let _ = writer.send(Some(bytes));
                    }
                }
                Output::CloseTransport { transport, .. } => {
                    if self
                        .reading
                        .as_ref()
                        .is_some_and(|(open, _)| *open == transport)
                    {
                        self.reading = None;
                    }
                    if let Some(transport) = self.transports.remove(&transport) {
                        match transport.writer {
                            Some(writer) => {
                                let _ = writer.send(None);
                            }
                            None => transport.task.abort(),
                        }
                    }
                }
                Output::Event(event) => self.event(event),
            }
        }
    }

    fn open(&mut self, id: TransportId) {
        let url = self.url.clone();
        let config = websocket_config(self.max_frame);
        let events = self.transport_events.0.clone();
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let task = tokio::spawn(async move {
            let connecting = tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                Some(config),
                true,
                connector,
            );
            // Boxed: the connect's state is large and needed once; inline, it would size
            // this long-lived writer task's allocation.
            let ws = match Box::pin(connecting).await {
                Ok((ws, _)) => ws,
                Err(error) => {
                    let _ = events.send(TransportEvent::Closed(id, error.to_string()));
                    return;
                }
            };
            let (mut sink, source) = ws.split();
            let (writer, mut outgoing) = mpsc::unbounded_channel::<Option<Bytes>>();
            if events
                .send(TransportEvent::Opened(id, writer, source))
                .is_err()
            {
                return;
            }
            // The writer: everything queued goes out with one flush. It ends when the core
            // gives the transport up (`None`, or the queue dropped by the driver).
            'batches: while let Some(Some(bytes)) = outgoing.recv().await {
                let mut batch = Some(bytes);
                while let Some(bytes) = batch.take() {
                    if sink.feed(Message::Binary(bytes)).await.is_err() {
                        break 'batches;
                    }
                    match outgoing.try_recv() {
                        Ok(Some(bytes)) => batch = Some(bytes),
                        Ok(None) => {
                            let _ = sink.close().await;
                            return;
                        }
                        Err(_) => {}
                    }
                }
                if sink.flush().await.is_err() {
                    break 'batches;
                }
            }
            if outgoing.is_closed() || matches!(outgoing.try_recv(), Ok(None)) {
                let _ = sink.close().await;
                return;
            }
            let _ = events.send(TransportEvent::Closed(id, "write failed".into()));
        });
        self.transports.insert(id, Transport { writer: None, task });
    }

    fn event(&mut self, event: Event) {
        let now = self.origin.time();
        let notice = self
            .dispatcher
            .event(&mut self.core, now, &self.stats, event);
        match notice {
            Some(Notice::State { current, reason }) => {
                match &reason {
                    Some(reason) => {
                        tracing::info!(state = %current, code = reason.code.as_u32(), reason = %reason.message, "connection state")
                    }
                    None => tracing::info!(state = %current, "connection state"),
                }
                if reason.is_some() {
                    let _ = self.reason.send(reason);
                }
                let _ = self.state.send(current);
            }
            Some(Notice::Update(reason)) => {
                tracing::info!(code = reason.code.as_u32(), reason = %reason.message, "connection update");
            }
            Some(Notice::FetchToken(request)) => {
                if let Some(commands) = self.commands.upgrade() {
                    tokio::spawn(async move {
                        let _ = commands.send(Command::Token(request.await));
                    });
                }
            }
            None => {}
        }
    }
}
