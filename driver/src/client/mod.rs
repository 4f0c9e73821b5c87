//! The client's public handles: [`Client`], [`Channel`], [`Subscription`].
//!
//! Glue only: when to connect, retry, resend, renew or give up is decided by
//! [`tether_core::client::Client`]; the bookkeeping around it is
//! [`tether_core::embed::Dispatcher`]'s; the task that drives both is [`driver`]'s.

mod driver;
mod http;
mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::Stream;
use tether_core::client::{Client as Core, ConnectionState, HistoryPage, NewMessage};
use tether_core::embed::{self, ChannelEvent, ConnectionStats, Error, Plumbing};
use tether_core::wire::{ChannelName, HistoryQuery};
use tether_core::{ErrorCode, ErrorInfo};

use crate::runtime::Runtime;
use crate::state::StateWatch;

/// The runtime-neutral channels behind the [`Dispatcher`](embed::Dispatcher).
pub(crate) enum Neutral {}

impl Plumbing for Neutral {
    type Reply<T: Send + 'static> = oneshot::Sender<T>;
    /// Unbounded: a subscription's events wait until the application reads them. What it
    /// holds is bounded by what the application subscribed to and does not read — its own
    /// memory, never the server's (the hub bounds what it sends by its pending-bytes limit).
    type Sink = tokio::sync::mpsc::UnboundedSender<ChannelEvent>;

    fn reply<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) {
        let _ = reply.send(value);
    }

    fn deliver(sink: &Self::Sink, event: ChannelEvent) -> bool {
        sink.send(event).is_ok()
    }
}

pub(crate) type Command = embed::Command<Neutral>;

/// A tether client. Cheap to clone; the connection lives until `close` or until every clone
/// is dropped.
pub struct Client<R: Runtime> {
    // Unbounded: the application's own calls; each waits for its answer, and publishes are
    // bounded by the core's queue (refused at its limit).
    commands: futures_channel::mpsc::UnboundedSender<Command>,
    watch: StateWatch,
    view: R::StateView,
    stats: Arc<ConnectionStats>,
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            commands: self.commands.clone(),
            watch: self.watch.clone(),
            view: self.view.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<R: Runtime> Client<R> {
    /// Starts a client for `url` (`ws://` or `wss://host:port/path`) and begins connecting
    /// in the background; watch [`state`](Client::state) to see it connect.
    ///
    /// # Errors
    /// [`Error::Url`] for a URL that is not `ws://` or `wss://`; `internal` when no seed
    /// could be drawn or the runtime cannot be reached from here.
    pub fn connect(
        url: &str,
        options: embed::ClientOptions<R::ClientTransport>,
    ) -> Result<Client<R>, Error> {
        let internal =
            |e: std::io::Error| Error::Protocol(ErrorInfo::new(ErrorCode::Internal, e.to_string()));
        let target = transport::Target::parse(url)?;
        let (runtime, tls) = R::for_client(&options.transport).map_err(internal)?;
        let seed = match options.seed {
            Some(seed) => seed,
            None => crate::fresh_seed().map_err(internal)?,
        };
        let core = Core::new(options.config.clone(), seed);
        let (commands, receiver) = futures_channel::mpsc::unbounded();
        let watch = StateWatch::new(core.state());
        let view = R::state_view(&watch);
        let stats = Arc::new(ConnectionStats::default());
        let connector = transport::Connector {
            runtime: runtime.clone(),
            target,
            tls,
            // The WebSocket layer admits any frame a conformant hub may send; the core's
            // decoder enforces the limits the hub announced (plus the delivery overhead, §5).
            max_frame: tether_core::wire::Limits::PROTOCOL_MAX
                .for_hub_frames()
                .max_frame_size
                .max(options.config.limits.max_frame_size),
            buffered: std::sync::atomic::AtomicBool::new(false),
        };
        let task = driver::Driver::new(
            core,
            connector,
            options.credentials,
            watch.clone(),
            stats.clone(),
        )
        .run(receiver);
        runtime.spawn(task);
        Ok(Client {
            commands,
            watch,
            view,
            stats,
        })
    }

    /// Counters of what the connection went through.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// The connection state, observable.
    pub fn state(&self) -> R::StateView {
        self.view.clone()
    }

    /// Every connection state change from now on, each with the previous state and its
    /// reason; the stream ends after Failed or Closed. See [`StateChanges`](crate::state::StateChanges).
    pub fn state_changes(&self) -> crate::state::StateChanges {
        self.watch.changes()
    }

    /// Why the connection last changed state because of an error, if it did since it was
    /// last Connected (cleared on Connected).
    pub fn last_error(&self) -> Option<ErrorInfo> {
        self.watch.last_error()
    }

    /// Waits until the client is Connected; fails with the reason if it reaches Failed or
    /// Closed instead.
    pub async fn connected(&self) -> Result<(), Error> {
        let state = self
            .watch
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
    ///
    /// # Errors
    /// The name's code (`invalid_channel_name`, …) when it is not a valid channel name.
    pub fn channel(&self, name: &str) -> Result<Channel<R>, Error> {
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
        let _ = self.commands.unbounded_send(Command::RetryNow);
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
        let queued = self.commands.unbounded_send(command(reply));
        async move {
            queued.map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)
        }
    }
}

/// A channel of a [`Client`].
pub struct Channel<R: Runtime> {
    name: ChannelName,
    client: Client<R>,
}

impl<R: Runtime> Clone for Channel<R> {
    fn clone(&self) -> Self {
        Channel {
            name: self.name.clone(),
            client: self.client.clone(),
        }
    }
}

impl<R: Runtime> Channel<R> {
    /// The channel's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Attaches the channel and returns its stream of events, once the hub confirmed the
    /// attach (or refused it, with its code). Messages arrive exactly once and in order,
    /// across reconnects; a lost continuity arrives as [`ChannelEvent::Discontinuity`].
    ///
    /// Any number of subscriptions may share a channel; each gets every event. The channel
    /// stays attached until the last one is [unsubscribed](Subscription::unsubscribe) or
    /// dropped; a later subscribe attaches it again, fresh (§6.6).
    ///
    /// # Errors
    /// The hub's refusal (`forbidden`, `channel_name_too_long`, …); `connection_failed` or
    /// `connection_closed` when the client fails or closes before the answer.
    pub async fn subscribe(&self) -> Result<Subscription, Error> {
        // Unbounded: buffered until the application reads, like any subscription (see
        // `Neutral::Sink`): a subscriber that never reads costs the application's own memory,
        // not the server's. Block-based: one allocation per 32 events, not one per event
        // (tokio's channels run on any executor).
        let (sink, events) = tokio::sync::mpsc::unbounded_channel();
        let channel = self.name.clone();
        let id = self
            .client
            .ask(|reply| Command::Subscribe {
                channel,
                sink,
                reply,
            })
            .await??;
        Ok(Subscription {
            events,
            leave: Some(Leave {
                commands: self.client.commands.clone(),
                channel: self.name.clone(),
                id,
            }),
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
///
/// The stream ends after [`ChannelEvent::Failed`] (the hub detached the channel, or the
/// client reached Failed or Closed). Dropping it unsubscribes, like
/// [`unsubscribe`](Subscription::unsubscribe) without waiting.
pub struct Subscription {
    events: tokio::sync::mpsc::UnboundedReceiver<ChannelEvent>,
    /// How to leave the channel; taken when done.
    leave: Option<Leave>,
}

/// What a subscription needs to unsubscribe.
struct Leave {
    /// The client's command queue (see `Client::commands`): a subscription sends at most one
    /// `Unsubscribe` on it in its life (`leave` is taken when sent), so it adds at most one
    /// entry per subscription the application made.
    commands: futures_channel::mpsc::UnboundedSender<Command>,
    channel: ChannelName,
    id: embed::SubscriberId,
}

impl Subscription {
    /// Stops this subscription; when it was the channel's last, the client detaches the
    /// channel. Resolves once the client took it into account (it does not wait for the
    /// hub), at once when the client is gone. Events not yet read are discarded.
    pub async fn unsubscribe(mut self) {
        let Some(leave) = self.leave.take() else {
            return;
        };
        let (reply, done) = oneshot::channel();
        // Bounded: one `Unsubscribe` per subscription (`leave` was taken above).
        let sent = leave.commands.unbounded_send(Command::Unsubscribe {
            channel: leave.channel,
            id: leave.id,
            reply: Some(reply),
        });
        if sent.is_ok() {
            let _ = done.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(leave) = self.leave.take() {
            // Bounded: one `Unsubscribe` per subscription, and only if `unsubscribe` did not
            // already send it (`leave` is taken either way).
            let _ = leave.commands.unbounded_send(Command::Unsubscribe {
                channel: leave.channel,
                id: leave.id,
                reply: None,
            });
        }
    }
}

impl Stream for Subscription {
    type Item = ChannelEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
        self.events.poll_recv(cx)
    }
}
