//! The client's task: application commands and transport events in, the core's outputs
//! carried out, one timer for the core's deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
// Unbounded channels here are each bounded by what feeds them: see `Channel` and the
// `transports` field.
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_lite::{FutureExt, StreamExt};
use tether_core::client::{Client as Core, Output, TransportId};
use tether_core::embed::{ConnectionStats, Credentials, Dispatcher, Notice, Origin, TokenError};

use super::transport::{Connector, Incoming, Source, TransportEvent};
use super::{Command, Neutral};
use crate::runtime::Runtime;
use crate::state::StateWatch;

/// Frames handled per wake-up before the driver looks at its other inputs again.
const READ_BATCH: usize = 64;

/// A frame read from the open transport, or its end (`None`: it just ended).
type Read = Option<Incoming>;

/// Why the driver woke up.
enum Wake {
    Deadline,
    Read(TransportId, Read),
    Transport(TransportEvent),
    Command(Option<Command>),
    Token(Result<String, TokenError>),
}

pub(crate) struct Driver<R: Runtime> {
    core: Core,
    connector: Arc<Connector<R>>,
    dispatcher: Dispatcher<Neutral>,
    watch: StateWatch,
    stats: Arc<ConnectionStats>,
    origin: Origin,
    /// Each transport's writer queue; dropping it gives the transport up. Unbounded: the
    /// core transmits only what its own limits allow (bounded publish queue, one frame per
    /// request), and a transport that stops draining is declared dead by the core's
    /// liveness timer and dropped.
    transports: HashMap<TransportId, UnboundedSender<Bytes>>,
    /// The open transport's incoming frames.
    reading: Option<(TransportId, Source)>,
    /// From the transports' tasks: at most two events each.
    transport_events: Channel<TransportEvent>,
    /// Token providers' answers: the core keeps at most one request outstanding.
    tokens: Channel<Result<String, TokenError>>,
}

/// Both halves of one of the driver's own channels (futures-channel's: polling an empty
/// one costs an atomic waker registration, no lock). Unbounded as channels; each is bounded
/// by what feeds it: two events per transport (the core opens one at a time), one token
/// answer per request (the core keeps one outstanding).
type Channel<T> = (UnboundedSender<T>, UnboundedReceiver<T>);

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(
        core: Core,
        connector: Connector<R>,
        credentials: Credentials,
        watch: StateWatch,
        stats: Arc<ConnectionStats>,
    ) -> Driver<R> {
        Driver {
            core,
            connector: Arc::new(connector),
            dispatcher: Dispatcher::new(credentials),
            watch,
            stats,
            origin: Origin::new(Instant::now()),
            transports: HashMap::new(),
            reading: None,
            // Bounded by their senders (see `Channel`).
            transport_events: unbounded(),
            tokens: unbounded(),
        }
    }

    fn now(&self) -> tether_core::Time {
        self.origin.time_at(Instant::now())
    }

    pub(crate) async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        self.core.connect(self.now());
        // One timer for the driver's life, moved only when the deadline moves.
        let mut timer = self.connector.runtime.timer(Instant::now());
        let mut armed: Option<Instant> = None;
        loop {
            self.drain();
            if self.dispatcher.closed(&self.core) {
                break;
            }
            // Re-read the deadline after every input (it moves with every input).
            let deadline = self.core.poll_timeout().map(|d| self.origin.instant(d));
            if let Some(deadline) = deadline {
                if armed != Some(deadline) {
                    R::reset(&mut timer, deadline);
                    armed = Some(deadline);
                }
            }
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            let wake = std::future::poll_fn(|cx| {
                // The timer first: once fired it is cleared, so it cannot starve the rest.
                if deadline.is_some() && timer.poll(cx).is_ready() {
                    return Poll::Ready(Wake::Deadline);
                }
                if let Some((id, source)) = self.reading.as_mut() {
                    if let Poll::Ready(read) = source.poll_next(cx) {
                        return Poll::Ready(Wake::Read(*id, read));
                    }
                }
                if let Poll::Ready(Some(event)) = self.transport_events.1.poll_next(cx) {
                    return Poll::Ready(Wake::Transport(event));
                }
                if let Poll::Ready(Some(answer)) = self.tokens.1.poll_next(cx) {
                    return Poll::Ready(Wake::Token(answer));
                }
                commands.poll_next(cx).map(Wake::Command)
            })
            .await;
            let now = self.now();
            match wake {
                Wake::Deadline => {
                    armed = None;
                    self.core.handle_timeout(now);
                }
                Wake::Read(id, read) => self.received(id, read),
                Wake::Transport(TransportEvent::Opened(id, source)) => {
                    if self.transports.contains_key(&id) {
                        self.reading = Some((id, source));
                        self.core.handle_transport_open(now, id);
                    }
                }
                Wake::Transport(TransportEvent::Closed(id, reason)) => self.closed(id, reason),
                Wake::Transport(TransportEvent::Blocked(id, reason)) => {
                    if self.transports.remove(&id).is_some() {
                        self.core.handle_transport_blocked(now, id, reason);
                    }
                }
                Wake::Token(answer) => {
                    self.dispatcher
                        .command(&mut self.core, now, Command::Token(answer));
                }
                Wake::Command(Some(command)) => {
                    self.dispatcher.command(&mut self.core, now, command);
                }
                Wake::Command(None) => {
                    // Every handle was dropped: close in order, then stop.
                    self.core.close(now);
                    self.drain();
                    break;
                }
            }
        }
        // Dropping the writer queues ends every transport task.
        self.transports.clear();
    }

    /// A message of the open transport, and whatever else it already has ready (up to a
    /// batch), so a burst costs one wake-up.
    fn received(&mut self, id: TransportId, mut read: Read) {
        for round in 1..=READ_BATCH {
            let now = self.now();
            match read {
                Some(Incoming::Frame(bytes)) => self.core.handle_transport_bytes(now, id, bytes),
                Some(Incoming::Ended(reason)) => return self.closed(id, reason),
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
                Some(next) => read = next,
                None => return,
            }
        }
    }

    fn closed(&mut self, id: TransportId, reason: String) {
        if self.reading.as_ref().is_some_and(|(open, _)| *open == id) {
            self.reading = None;
        }
        if self.transports.remove(&id).is_some() {
            let now = self.now();
            self.core.handle_transport_closed(now, id, reason);
        }
    }

    /// Carries out every output of the core.
    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::OpenTransport { transport, kind } => {
                    let (writer, outgoing) = unbounded();
                    self.transports.insert(transport, writer);
                    self.connector
                        .open(transport, kind, outgoing, self.transport_events.0.clone());
                }
                Output::Transmit { transport, bytes } => {
                    if let Some(writer) = self.transports.get(&transport) {
                        let _ = writer.unbounded_send(bytes);
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
                    self.transports.remove(&transport);
                }
                Output::Event(event) => {
                    let now = self.now();
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
                self.watch.set(current, reason);
            }
            Some(Notice::Update(reason)) => {
                tracing::info!(code = reason.code.as_u32(), reason = %reason.message, "connection update");
            }
            Some(Notice::FetchToken(request)) => {
                let answers = self.tokens.0.clone();
                self.connector.runtime.spawn(async move {
                    let _ = answers.unbounded_send(request.await);
                });
            }
            None => {}
        }
    }
}
