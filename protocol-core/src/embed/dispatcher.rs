//! The client side's bookkeeping between application handles and the state machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::{
    Client, ConnectionState, Event, HistoryPage, NewMessage, PingId, PublishId, RequestId,
    TokenReason,
};
use crate::embed::credentials::{Credentials, TokenAnswer, TokenError, TokenFuture};
use crate::wire::{ChannelMessage, ChannelName, Continuity, HistoryQuery, Position};
use crate::{ErrorCode, ErrorInfo, Time};

/// Gives the core a token provider's answer.
fn answer_token(core: &mut Client, now: Time, answer: Result<String, TokenError>) {
    match answer {
        Ok(token) => core.provide_token(now, token),
        Err(TokenError::Unavailable(reason)) => core.token_unavailable(now, reason),
        Err(TokenError::Refused(reason)) => core.token_refused(now, reason),
    }
}

/// What went wrong with an application's request, with the protocol's stable code where
/// there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The protocol refused or failed the operation (NACK, Suspended, Closed, Failed, …).
    #[error("{0}")]
    Protocol(ErrorInfo),
    /// The client was closed or dropped.
    #[error("the client is closed")]
    Closed,
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("unsupported URL {0:?}: use ws:// or wss://host:port/path")]
    Url(String),
}

impl Error {
    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Protocol(info) => info.code,
            Error::Closed => ErrorCode::ConnectionClosed,
            Error::Url(_) => ErrorCode::BadRequest,
        }
    }
}

/// A change of the connection state, as applications watch it: the state before, the
/// state after, and the error that caused the change, if one did (§6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStateChange {
    /// The state before.
    pub previous: ConnectionState,
    /// The state now.
    pub current: ConnectionState,
    /// Why, when an error caused it (a lost transport, a refusal, …).
    pub reason: Option<ErrorInfo>,
}

impl ConnectionStateChange {
    /// A change from `previous` to `current`, caused by `reason` if an error caused it.
    pub fn new(
        previous: ConnectionState,
        current: ConnectionState,
        reason: Option<ErrorInfo>,
    ) -> ConnectionStateChange {
        ConnectionStateChange {
            previous,
            current,
            reason,
        }
    }
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// A message, exactly once and in order.
    Message(ChannelMessage),
    /// The channel is (again) attached.
    Attached {
        /// Deliveries continue after this position.
        position: Position,
        /// How it continues.
        continuity: Continuity,
    },
    /// Continuity was lost between these positions (the history API may fill it).
    Discontinuity {
        /// The last position delivered before.
        last: Option<Position>,
        /// Deliveries continue after this one.
        resumed_after: Position,
        /// Why, as the hub said.
        reason: Option<ErrorInfo>,
    },
    /// The channel was detached by the hub (refused or revoked); the stream ends.
    Failed(ErrorInfo),
}

/// The adapter's channel types: how a waiting caller gets its one answer, and how a
/// subscriber gets its events.
pub trait Plumbing {
    /// The sending half of a one-shot reply.
    type Reply<T: Send + 'static>: Send;
    /// The sending half of a subscriber's event stream.
    type Sink: Send;

    /// Answers a waiting caller (who may have gone away: then nothing happens).
    fn reply<T: Send + 'static>(reply: Self::Reply<T>, value: T);

    /// Gives an event to a subscriber; `false` when the subscriber has gone away.
    fn deliver(sink: &Self::Sink, event: ChannelEvent) -> bool;
}

/// Identifies one subscriber of a client (unique for the client's life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriberId(u64);

/// An application's request, sent from its handles to the task that owns the state machine.
pub enum Command<P: Plumbing> {
    /// Attach a channel and stream its events to `sink`; `reply` once attached (with the
    /// subscriber's id) or refused. Any number of subscribers may share a channel: each gets
    /// every event.
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Where its events go.
        sink: P::Sink,
        /// Answered on `attached` or refusal.
        reply: P::Reply<Result<SubscriberId, Error>>,
    },
    /// Remove one subscriber; when it was the channel's last, the channel is detached
    /// (§6.6). `reply`, if any, once done (at once: the hub's answer is not awaited). An
    /// unknown id (its stream already ended) does nothing.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
        /// The subscriber.
        id: SubscriberId,
        /// Answered once removed.
        reply: Option<P::Reply<()>>,
    },
    /// Publish; `reply` on ACK or NACK.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The messages, as one publish.
        messages: Vec<NewMessage>,
        /// Answered on ACK or NACK.
        reply: P::Reply<Result<(), Error>>,
    },
    /// A page of history.
    History {
        /// The channel.
        channel: ChannelName,
        /// Which page.
        query: HistoryQuery,
        /// Answered with the page.
        reply: P::Reply<Result<HistoryPage, Error>>,
    },
    /// Measure the round trip.
    Ping(P::Reply<Result<Duration, Error>>),
    /// The network is back: retry now.
    RetryNow,
    /// Close in order; answered once Closed.
    Close(P::Reply<()>),
    /// A token provider's answer.
    Token(Result<String, TokenError>),
}

/// What the adapter itself must act on, after the dispatcher did its part of an event.
pub enum Notice {
    /// The connection state changed (publish it to watchers; log it).
    State {
        /// The new state.
        current: ConnectionState,
        /// Why, when an error caused it.
        reason: Option<ErrorInfo>,
    },
    /// Something changed without a state change (log it).
    Update(ErrorInfo),
    /// Run this provider request and send its answer back as [`Command::Token`]. The core
    /// makes sure only one is outstanding.
    FetchToken(TokenFuture),
}

/// Counters of what a connection went through, for metrics and demos.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Times the client reached Connected.
    pub connects: AtomicU64,
    /// Reconnections that presented the session for resume (successful ones are this minus
    /// `resume_failures`).
    pub resumes: AtomicU64,
    /// Resumes the hub could not honour (a new session began).
    pub resume_failures: AtomicU64,
    /// Token renewals requested on a live connection.
    pub renewals: AtomicU64,
    /// Discontinuities reported on any channel.
    pub discontinuities: AtomicU64,
    /// Times the adapter's task woke up (an input, a transport event or a deadline).
    pub wakeups: AtomicU64,
}

impl ConnectionStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reply of a publish.
type Done<P> = <P as Plumbing>::Reply<Result<(), Error>>;

/// The reply of a subscribe.
type Subscribed<P> = <P as Plumbing>::Reply<Result<SubscriberId, Error>>;

/// Routes application commands to the [`Client`] and its events back to whoever waits.
///
/// One per client task. Replies that are never answered (the task ends) are dropped, which
/// the adapter's handles read as [`Error::Closed`].
pub struct Dispatcher<P: Plumbing> {
    credentials: Credentials,
    /// Each channel's subscribers, in the order they subscribed (bounded by the
    /// application's own subscriptions).
    subscribers: HashMap<ChannelName, Vec<(SubscriberId, P::Sink)>>,
    next_subscriber: u64,
    pending_attach: HashMap<ChannelName, Vec<(SubscriberId, Subscribed<P>)>>,
    publishes: HashMap<PublishId, Done<P>>,
    histories: HashMap<RequestId, P::Reply<Result<HistoryPage, Error>>>,
    pings: HashMap<PingId, P::Reply<Result<Duration, Error>>>,
    closing: Vec<P::Reply<()>>,
}

impl<P: Plumbing> Dispatcher<P> {
    /// A dispatcher applying the token policy of `credentials`.
    pub fn new(credentials: Credentials) -> Dispatcher<P> {
        Dispatcher {
            credentials,
            subscribers: HashMap::new(),
            next_subscriber: 0,
            pending_attach: HashMap::new(),
            publishes: HashMap::new(),
            histories: HashMap::new(),
            pings: HashMap::new(),
            closing: Vec::new(),
        }
    }

    /// Carries out an application command.
    pub fn command(&mut self, core: &mut Client, now: Time, command: Command<P>) {
        match command {
            Command::Subscribe {
                channel,
                sink,
                reply,
            } => {
                // Registered before the attach, which may be answered at once (already
                // attached) and must reach this subscriber too.
                let id = SubscriberId(self.next_subscriber);
                self.next_subscriber += 1;
                self.subscribers
                    .entry(channel.clone())
                    .or_default()
                    .push((id, sink));
                self.pending_attach
                    .entry(channel.clone())
                    .or_default()
                    .push((id, reply));
                if let Err(error) = core.attach(now, channel.clone()) {
                    self.remove_subscriber(&channel, id);
                    if let Some(reply) = self.take_pending(&channel, id) {
                        P::reply(reply, Err(Error::Protocol(error)));
                    }
                }
            }
            Command::Unsubscribe { channel, id, reply } => {
                if self.remove_subscriber(&channel, id) {
                    self.detach_if_unwanted(core, now, &channel);
                }
                if let Some(reply) = reply {
                    P::reply(reply, ());
                }
            }
            Command::Publish {
                channel,
                messages,
                reply,
            } => match core.publish(now, channel, messages) {
                Ok(id) => {
                    self.publishes.insert(id, reply);
                }
                Err(error) => P::reply(reply, Err(Error::Protocol(error))),
            },
            Command::History {
                channel,
                query,
                reply,
            } => match core.history(now, channel, query) {
                Ok(id) => {
                    self.histories.insert(id, reply);
                }
                Err(error) => P::reply(reply, Err(Error::Protocol(error))),
            },
            Command::Ping(reply) => match core.ping(now) {
                Ok(id) => {
                    self.pings.insert(id, reply);
                }
                Err(error) => P::reply(reply, Err(Error::Protocol(error))),
            },
            Command::RetryNow => core.retry_now(now),
            Command::Close(reply) => {
                self.closing.push(reply);
                core.close(now);
            }
            Command::Token(answer) => answer_token(core, now, answer),
        }
    }

    /// Whether a requested close has completed; if so every `close` caller is answered and
    /// the adapter's task should stop.
    pub fn closed(&mut self, core: &Client) -> bool {
        if core.state() != ConnectionState::Closed || self.closing.is_empty() {
            return false;
        }
        for reply in self.closing.drain(..) {
            P::reply(reply, ());
        }
        true
    }

    /// Handles an event of the core: answers waiting callers, feeds subscribers, counts in
    /// `stats`, applies the token policy; returns what is left for the adapter.
    pub fn event(
        &mut self,
        core: &mut Client,
        now: Time,
        stats: &ConnectionStats,
        event: Event,
    ) -> Option<Notice> {
        match event {
            Event::StateChanged {
                current, reason, ..
            } => {
                if current == ConnectionState::Suspended {
                    self.suspended(core, now);
                }
                if current == ConnectionState::Connected {
                    ConnectionStats::bump(&stats.connects);
                    if core.resume_token().is_some() && stats.connects.load(Ordering::Relaxed) > 1 {
                        ConnectionStats::bump(&stats.resumes);
                    }
                }
                return Some(Notice::State { current, reason });
            }
            Event::Update { reason } => {
                if reason.code == ErrorCode::SessionNotFound {
                    ConnectionStats::bump(&stats.resume_failures);
                }
                return Some(Notice::Update(reason));
            }
            Event::TokenRequired { reason } => {
                if reason == TokenReason::Renewal {
                    ConnectionStats::bump(&stats.renewals);
                }
                match self.credentials.answer(reason) {
                    TokenAnswer::Now(answer) => answer_token(core, now, answer),
                    TokenAnswer::Fetch(request) => return Some(Notice::FetchToken(request)),
                    TokenAnswer::None => {}
                }
            }
            Event::PublishResolved { id, result } => {
                if let Some(reply) = self.publishes.remove(&id) {
                    P::reply(reply, result.map_err(Error::Protocol));
                }
            }
            Event::Attached {
                channel,
                position,
                continuity,
            } => {
                for (id, reply) in self.pending_attach.remove(&channel).into_iter().flatten() {
                    P::reply(reply, Ok(id));
                }
                self.notify(
                    core,
                    now,
                    &channel,
                    ChannelEvent::Attached {
                        position,
                        continuity,
                    },
                );
            }
            Event::Detached { channel, error } => {
                let error = error
                    .unwrap_or_else(|| ErrorInfo::new(ErrorCode::ConnectionClosed, "detached"));
                for (_, reply) in self.pending_attach.remove(&channel).into_iter().flatten() {
                    P::reply(reply, Err(Error::Protocol(error.clone())));
                }
                if let Some(sinks) = self.subscribers.remove(&channel) {
                    for (_, sink) in sinks {
                        P::deliver(&sink, ChannelEvent::Failed(error.clone()));
                    }
                }
            }
            Event::Message { channel, message } => {
                self.notify(core, now, &channel, ChannelEvent::Message(message));
            }
            Event::Discontinuity {
                channel,
                last,
                resumed_after,
                reason,
            } => {
                ConnectionStats::bump(&stats.discontinuities);
                self.notify(
                    core,
                    now,
                    &channel,
                    ChannelEvent::Discontinuity {
                        last,
                        resumed_after,
                        reason,
                    },
                );
            }
            Event::HistoryPage { id, result, .. } => {
                if let Some(reply) = self.histories.remove(&id) {
                    P::reply(reply, result.map_err(Error::Protocol));
                }
            }
            Event::Pong { id, result } => {
                if let Some(reply) = self.pings.remove(&id) {
                    P::reply(reply, result.map_err(Error::Protocol));
                }
            }
        }
        None
    }

    /// The connection is Suspended: subscribes still waiting for an attach fail with
    /// `connection_suspended` instead of waiting for a connection that may not come back
    /// soon (channels already attached stay, and continue when it does).
    fn suspended(&mut self, core: &mut Client, now: Time) {
        let error = ErrorInfo::new(
            ErrorCode::ConnectionSuspended,
            "the connection is suspended: subscribe again once connected",
        );
        for (channel, waiting) in std::mem::take(&mut self.pending_attach) {
            for (id, reply) in waiting {
                self.remove_subscriber(&channel, id);
                P::reply(reply, Err(Error::Protocol(error.clone())));
            }
            self.detach_if_unwanted(core, now, &channel);
        }
    }

    /// Forgets subscriber `id` of `channel`; whether it was there.
    fn remove_subscriber(&mut self, channel: &ChannelName, id: SubscriberId) -> bool {
        let Some(sinks) = self.subscribers.get_mut(channel) else {
            return false;
        };
        let before = sinks.len();
        sinks.retain(|(each, _)| *each != id);
        let removed = sinks.len() != before;
        if sinks.is_empty() {
            self.subscribers.remove(channel);
        }
        removed
    }

    /// Takes the reply of subscriber `id`'s subscribe, if it still waits.
    fn take_pending(&mut self, channel: &ChannelName, id: SubscriberId) -> Option<Subscribed<P>> {
        let waiting = self.pending_attach.get_mut(channel)?;
        let index = waiting.iter().position(|(each, _)| *each == id)?;
        let (_, reply) = waiting.remove(index);
        if waiting.is_empty() {
            self.pending_attach.remove(channel);
        }
        Some(reply)
    }

    /// Detaches `channel` once its last subscriber left (unsubscribed, or gone away, such as
    /// a subscribe whose caller stopped waiting) and none waits for an attach.
    fn detach_if_unwanted(&mut self, core: &mut Client, now: Time, channel: &ChannelName) {
        if !self.subscribers.contains_key(channel) && !self.pending_attach.contains_key(channel) {
            core.detach(now, channel);
        }
    }

    /// Gives `event` to every subscriber of `channel` (the last one gets it without a copy)
    /// and forgets those that went away; detaches the channel when the last one did.
    fn notify(&mut self, core: &mut Client, now: Time, channel: &ChannelName, event: ChannelEvent) {
        let Some(sinks) = self.subscribers.get_mut(channel) else {
            return;
        };
        let mut event = Some(event);
        let last = sinks.len().saturating_sub(1);
        let mut index = 0;
        sinks.retain(|(_, sink)| {
            let this = if index == last {
                event.take()
            } else {
                event.clone()
            };
            index += 1;
            this.is_some_and(|event| P::deliver(sink, event))
        });
        if sinks.is_empty() {
            self.subscribers.remove(channel);
            self.detach_if_unwanted(core, now, channel);
        }
    }
}
