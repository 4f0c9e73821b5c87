//! Channels: attach, detach, publish, fan-out, flow-controlled replay, history.

use super::record::{Outcome, Resend};
use super::*;
use crate::wire::ChannelMessage;

/// What became of a new publish.
pub(super) enum Published {
    /// Answered now: `None` stored (or every message a duplicate), or why it was refused.
    Done(Option<ErrorInfo>),
    /// Sent to the store: answered when it answers this request.
    Pending(StorageRequestId),
}

impl Hub {
    pub(super) fn unsubscribe(&mut self, channel: ChannelKey, session: SessionKey) {
        if let Some(state) = self.channels.get_mut(&channel) {
            state.subscribers.remove(&session);
        }
        self.free_if_idle(channel);
    }

    /// Frees a channel nothing refers to any more (no subscriber, no retained message, no
    /// remembered message id) at once, and remembers its position, so that using it again
    /// continues at the same epoch and serial: a dropped subscriber resuming from that
    /// position finds it continuous (§7.3).
    pub(super) fn free_if_idle(&mut self, channel: ChannelKey) {
        if !self.channels.get(&channel).is_some_and(|c| c.is_idle()) {
            return;
        }
        if let Some(state) = self.channels.remove(&channel) {
            self.channel_keys.remove(&state.name);
            let position = state.position();
            self.positions.remember(state.name, position);
        }
        self.timers.cancel(Timer::Trim(channel));
    }

    /// The channel's key, creating it — at its remembered position, if any — when the table
    /// has room and `creator` has not created too many channels this second.
    pub(super) fn channel_key(
        &mut self,
        now: Time,
        name: &ChannelName,
        creator: SessionKey,
    ) -> Result<ChannelKey, ErrorInfo> {
        if let Some(key) = self.channel_keys.get(name) {
            return Ok(*key);
        }
        if self.channels.len() >= self.config.max_channels {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "the server holds its maximum of channels",
            ));
        }
        let rate = self.config.channel_creations_per_second;
        if let Some(session) = self.sessions.get_mut(&creator) {
            if !session.creations.admit(now, rate) {
                return Err(ErrorInfo::new(
                    ErrorCode::LimitExceeded,
                    "the session creates channels too fast",
                ));
            }
        }
        let position = match self.positions.recall(name) {
            Some(position) => position,
            None => {
                let position = Position {
                    epoch: self.rng.next_u64(),
                    serial: 0,
                };
                self.store_request(StorageRequest::SaveChannel {
                    channel: name.clone(),
                    position,
                });
                position
            }
        };
        let key = ChannelKey(self.next_channel);
        self.next_channel += 1;
        self.channels
            .insert(key, Channel::new(name.clone(), position));
        self.channel_keys.insert(name.clone(), key);
        Ok(key)
    }

    /// An `attach` or `detach`: taken now, or held behind an attach of the same channel
    /// that waits for the store (§7.7).
    pub(super) fn on_channel_request(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        frame: ClientFrame,
    ) {
        let name = match &frame {
            ClientFrame::Attach { channel, .. } | ClientFrame::Detach { channel } => channel,
            _ => return,
        };
        if let Some(conn) = self.connections.get_mut(&connection) {
            if let Some(held) = conn.attaching.get_mut(name) {
                if conn.held >= MAX_HELD_CHANNEL_REQUESTS {
                    self.protocol_error(
                        now,
                        connection,
                        ErrorCode::LimitExceeded,
                        "too many attach and detach requests wait for the store or a hook",
                    );
                } else {
                    held.push_back(frame);
                    conn.held += 1;
                }
                return;
            }
        }
        match frame {
            ClientFrame::Attach { channel, from } => {
                self.on_attach(now, connection, key, channel, from);
            }
            ClientFrame::Detach { channel } => self.on_detach(now, connection, key, channel),
            _ => {}
        }
    }

    /// The attach of `name` that waited for the store is answered: takes the requests held
    /// behind it, in order, until one waits for the store again.
    pub(super) fn release_held(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: &ChannelName,
    ) {
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        let Some(mut held) = conn.attaching.remove(name) else {
            return;
        };
        conn.held -= held.len();
        while let Some(frame) = held.pop_front() {
            if self.connections.get(&connection).and_then(|c| c.session) != Some(key) {
                return;
            }
            self.on_channel_request(now, connection, key, frame);
            if let Some(conn) = self.connections.get_mut(&connection) {
                if let Some(waiting) = conn.attaching.get_mut(name) {
                    // Waiting for the store again: the rest stays behind this attach.
                    conn.held += held.len();
                    waiting.extend(held);
                    return;
                }
            }
        }
    }

    pub(super) fn on_attach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
        from: Option<Position>,
    ) {
        let refuse = |code: ErrorCode, text: &str| detached(&name, code, text);
        if !self.allows(key, &name, Operation::Subscribe) {
            let frame = refuse(
                ErrorCode::Forbidden,
                "no subscribe capability for this channel",
            );
            self.send(now, connection, &frame);
            return;
        }
        if self.config.channel_options(name.as_str()).attach_hook {
            // Attaches waiting (for a hook or the store) count against the session's
            // channel limit, which bounds the hooks a connection has waiting.
            let waiting = self
                .connections
                .get(&connection)
                .map_or(0, |c| c.attaching.len());
            let attached = self.sessions.get(&key).map_or(0, |s| s.subscriptions.len());
            if waiting + attached >= self.config.max_channels_per_session {
                let frame = refuse(
                    ErrorCode::TooManyChannels,
                    "the session has its maximum of channels waiting to be attached",
                );
                self.send(now, connection, &frame);
                return;
            }
            self.hook_attach(now, connection, key, name, from);
            return;
        }
        self.attach_allowed(now, connection, key, name, from);
    }

    /// An attach the capabilities and any hook allow: answered now, or once the store
    /// answered (a replay older than the cache).
    pub(super) fn attach_allowed(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
        from: Option<Position>,
    ) {
        let refuse = |code: ErrorCode, text: &str| detached(&name, code, text);
        let existing = self.channel_keys.get(&name).copied();
        let attached_count = self.sessions.get(&key).map_or(0, |s| s.subscriptions.len());
        let already = existing.is_some_and(|ck| {
            self.sessions
                .get(&key)
                .is_some_and(|s| s.subscriptions.contains_key(&ck))
        });
        if !already && attached_count >= self.config.max_channels_per_session {
            let frame = refuse(
                ErrorCode::TooManyChannels,
                "the session is attached to its maximum of channels",
            );
            self.send(now, connection, &frame);
            return;
        }
        let channel_key = match self.channel_key(now, &name, key) {
            Ok(channel_key) => channel_key,
            Err(error) => {
                let frame = ServerFrame::Detached {
                    channel: name,
                    error: Some(error),
                };
                self.send(now, connection, &frame);
                return;
            }
        };
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let current = channel.position();
        let (continuity, position, error) = match from {
            None => (Continuity::Fresh, current, None),
            Some(p) if p.epoch != channel.epoch => (
                Continuity::Gap,
                current,
                Some(ErrorInfo::new(
                    ErrorCode::EpochChanged,
                    "the channel started a new epoch: positions of the old one do not carry over",
                )),
            ),
            Some(p) if p.serial <= current.serial && channel.retains_after(p.serial) => {
                (Continuity::Continuous, p, None)
            }
            Some(p) if p.serial < current.serial && self.durable() => {
                // Older than the cache: the store may have it (answered on its page).
                self.replay_read(connection, key, channel_key, p.serial, Some(p));
                return;
            }
            Some(_) => (Continuity::Gap, current, Some(history_unavailable())),
        };
        self.answer_attach(
            now,
            connection,
            key,
            channel_key,
            continuity,
            position,
            error,
        );
        self.pump(now, connection);
    }

    /// Attaches the session to a channel at `position` (its subscription's cursor) and
    /// answers the client's attach with `attached`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_attach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        channel_key: ChannelKey,
        continuity: Continuity,
        position: Position,
        error: Option<ErrorInfo>,
    ) {
        let Some(channel) = self.channels.get_mut(&channel_key) else {
            return;
        };
        channel.subscribers.insert(key);
        let name = channel.name.clone();
        if let Some(session) = self.sessions.get_mut(&key) {
            session.subscriptions.insert(
                channel_key,
                Subscription {
                    cursor: position.serial,
                    fetching: false,
                },
            );
        }
        let frame = ServerFrame::Attached {
            channel: name,
            position,
            continuity,
            error,
        };
        self.send(now, connection, &frame);
    }

    /// A new id for a request with a completion.
    pub(super) fn next_request_id(&mut self) -> StorageRequestId {
        let id = StorageRequestId(self.next_request);
        self.next_request += 1;
        id
    }

    pub(super) fn on_detach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
    ) {
        if let Some(channel_key) = self.channel_keys.get(&name).copied() {
            if let Some(session) = self.sessions.get_mut(&key) {
                session.subscriptions.remove(&channel_key);
            }
            self.unsubscribe(channel_key, key);
        }
        self.send(
            now,
            connection,
            &ServerFrame::Detached {
                channel: name,
                error: None,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_publish(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        serial: u64,
        name: ChannelName,
        messages: Vec<Message>,
        answers: &mut Vec<Answer>,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if serial >= session.next_serial && session.hooked.is_some() {
            // Behind the session's publish that waits for its hook (§7.9), in order.
            let size = crate::wire::publish_frame_len(&name, &messages);
            if session.gated.len() >= self.config.publish_record
                || session.gated_bytes + size > self.config.max_pending_bytes
            {
                self.protocol_error(
                    now,
                    connection,
                    ErrorCode::LimitExceeded,
                    "too many publishes wait behind one waiting for the application's hook",
                );
            } else {
                session.gated_bytes += size;
                session.gated.push_back(super::hooks::Gated {
                    serial,
                    channel: name,
                    messages,
                });
            }
            return;
        }
        if serial > session.next_serial && session.restored {
            // The serials between were refused before a crash lost their record (an
            // acknowledged or stored publish has its record in the store): the client knows
            // their outcome; a resend of one is answered publish_outcome_unknown (§7.7).
            session.next_serial = serial;
        }
        if serial >= session.next_serial {
            session.restored = false;
        }
        if serial > session.next_serial {
            self.protocol_error(
                now,
                connection,
                ErrorCode::InvalidPublishSerial,
                "a publish serial was skipped",
            );
            return;
        }
        #[cfg(feature = "sabotage")]
        let forgets = matches!(
            self.config.sabotage,
            crate::sabotage::Sabotage::HubForgetsMessageIds
                | crate::sabotage::Sabotage::HubWithoutPublishRecord
        );
        #[cfg(not(feature = "sabotage"))]
        let forgets = false;
        if serial < session.next_serial && forgets {
            // Sabotage (G2): no record — a resend goes through dedupe only (or nothing).
            let error = match self.publish_new(now, key, &name, messages, None) {
                Published::Done(error) => error,
                Published::Pending(request) => {
                    self.queue_answer(key, serial, Some(request), None, answers);
                    return;
                }
            };
            self.queue_answer(key, serial, None, error, answers);
            return;
        }
        if serial < session.next_serial {
            // A resend: answered from the session's record, never stored again (§7.4).
            let error = match session.record.resend(serial, &messages) {
                Resend::Answer(error) => error,
                Resend::Pending(request) => {
                    // Answered when the store answers the first send.
                    self.queue_answer(key, serial, Some(request), None, answers);
                    return;
                }
                Resend::Different => Some(ErrorInfo::new(
                    ErrorCode::InvalidPublishSerial,
                    "a resent serial carries other messages than it first did",
                )),
                Resend::Forgotten => Some(ErrorInfo::new(
                    ErrorCode::PublishOutcomeUnknown,
                    "this serial is older than the session's record of outcomes",
                )),
            };
            self.queue_answer(key, serial, None, error, answers);
            return;
        }
        session.next_serial += 1;
        let ids = super::record::digest(&messages);
        if self.config.channel_options(name.as_str()).publish_hook
            && self.publish_refusal(key, &name, &messages).is_none()
        {
            // Answered once the application's hook answered (§7.9).
            let request = self.next_request_id();
            if let Some(session) = self.sessions.get_mut(&key) {
                let capacity = self.config.publish_record;
                session
                    .record
                    .record(serial, ids, Outcome::Pending(request), capacity);
            }
            self.queue_answer(key, serial, Some(request), None, answers);
            self.hook_publish(now, key, request, serial, name, messages);
            return;
        }
        let published = self.publish_new(now, key, &name, messages, Some((serial, ids)));
        let (outcome, waiting, error) = match published {
            Published::Done(None) => {
                self.totals.acknowledged(Duration::ZERO);
                (Outcome::Acked, None, None)
            }
            Published::Done(Some(error)) => {
                self.totals.publishes_refused += 1;
                (Outcome::Refused(error.code), None, Some(error))
            }
            Published::Pending(request) => (Outcome::Pending(request), Some(request), None),
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            let capacity = self.config.publish_record;
            session.record.record(serial, ids, outcome, capacity);
            let session_id = session.id;
            if waiting.is_none() {
                self.store_request(StorageRequest::RecordPublish(PublishOutcome {
                    session: session_id,
                    serial,
                    digest: ids,
                    refused: error.as_ref().map(|e| e.code.as_u32()),
                }));
            }
        }
        self.queue_answer(key, serial, waiting, error, answers);
    }

    /// Answers a publish serial: at once (in `answers`) unless an earlier answer of the
    /// session is held back for the store, in which case it waits behind it; `waiting`
    /// holds it until the store answers that request.
    pub(super) fn queue_answer(
        &mut self,
        key: SessionKey,
        serial: u64,
        waiting: Option<StorageRequestId>,
        error: Option<ErrorInfo>,
        answers: &mut Vec<Answer>,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if waiting.is_none() && session.queued.is_empty() {
            answers.push(Answer { serial, error });
        } else {
            session.queued.push_back(Queued {
                serial,
                waiting,
                error,
            });
        }
    }

    /// Stores and fans out a new publish, or sends it to the store; `publish` is its serial
    /// and digest when it came from a publish frame.
    fn publish_new(
        &mut self,
        now: Time,
        key: SessionKey,
        name: &ChannelName,
        messages: Vec<Message>,
        publish: Option<(u64, u64)>,
    ) -> Published {
        if let Some(error) = self.publish_refusal(key, name, &messages) {
            return Published::Done(Some(error));
        }
        let Some(session) = self.sessions.get(&key) else {
            return Published::Done(Some(ErrorInfo::new(
                ErrorCode::Internal,
                "the session is gone",
            )));
        };
        let publisher = session.identity.client_id.clone();
        let origin = session.id;
        self.store_new(now, key, origin, publisher, name, messages, publish)
    }

    /// Why a new publish of session `key` is refused before anything is stored (no message,
    /// no capability, the namespace's publish rule, §7.3), if it is.
    fn publish_refusal(
        &self,
        key: SessionKey,
        name: &ChannelName,
        messages: &[Message],
    ) -> Option<ErrorInfo> {
        if messages.is_empty() {
            // Every publish frame uses its serial, so the client's numbering stays in step;
            // one that carries nothing is refused, never acknowledged.
            return Some(ErrorInfo::new(
                ErrorCode::InvalidMessage,
                "a publish carries at least one message",
            ));
        }
        let Some(session) = self.sessions.get(&key) else {
            return Some(ErrorInfo::new(ErrorCode::Internal, "the session is gone"));
        };
        if !session
            .identity
            .capabilities
            .allows(name, Operation::Publish)
        {
            return Some(ErrorInfo::new(
                ErrorCode::Forbidden,
                "no publish capability for this channel",
            ));
        }
        match self.config.channel_options(name.as_str()).publish {
            Publishers::Clients => None,
            Publishers::Subscribers => {
                let attached = self
                    .channel_keys
                    .get(name)
                    .is_some_and(|channel| session.subscriptions.contains_key(channel));
                (!attached).then(|| {
                    ErrorInfo::new(
                        ErrorCode::Forbidden,
                        "only sessions attached to this channel may publish on it",
                    )
                })
            }
            Publishers::Server => Some(ErrorInfo::new(
                ErrorCode::Forbidden,
                "only the server publishes on this channel",
            )),
        }
    }

    /// Stores and fans out a new publish whose checks passed when it came (they are not
    /// made again: the session may have lost its attachments with its transport since) and
    /// whose hook allowed it, or sends it to the store.
    pub(super) fn publish_checked(
        &mut self,
        now: Time,
        key: SessionKey,
        name: &ChannelName,
        messages: Vec<Message>,
        serial: u64,
    ) -> Published {
        let Some(session) = self.sessions.get(&key) else {
            return Published::Done(Some(ErrorInfo::new(
                ErrorCode::Internal,
                "the session is gone",
            )));
        };
        let publisher = session.identity.client_id.clone();
        let origin = session.id;
        let ids = super::record::digest(&messages);
        self.store_new(
            now,
            key,
            origin,
            publisher,
            name,
            messages,
            Some((serial, ids)),
        )
    }

    /// Stores and fans out new messages of `publisher` (session `key`, `origin` to the
    /// store), or sends them to the store; the capability is checked by the caller.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_new(
        &mut self,
        now: Time,
        key: SessionKey,
        origin: SessionId,
        publisher: wire::ClientId,
        name: &ChannelName,
        messages: Vec<Message>,
        publish: Option<(u64, u64)>,
    ) -> Published {
        let channel_key = match self.channel_key(now, name, key) {
            Ok(channel_key) => channel_key,
            Err(error) => return Published::Done(Some(error)),
        };
        if self.durable() {
            return self.append(now, key, origin, channel_key, messages, publisher, publish);
        }
        for message in messages {
            let Some(channel) = self.channels.get_mut(&channel_key) else {
                return Published::Done(Some(ErrorInfo::new(
                    ErrorCode::Internal,
                    "the channel is gone",
                )));
            };
            #[cfg(feature = "sabotage")]
            let forgets = self.config.sabotage == crate::sabotage::Sabotage::HubForgetsMessageIds;
            #[cfg(not(feature = "sabotage"))]
            let forgets = false;
            // A resend from another session of the same messages (the first one expired):
            // dropped within the dedupe window, and acknowledged.
            if channel.is_duplicate(&message.id) && !forgets {
                continue;
            }
            let stored = channel.store(
                message,
                publisher.clone(),
                key,
                now,
                self.unix_ms,
                self.config.framing,
                &self.config.limits,
                self.config.retention_count,
                self.config.dedupe_capacity,
            );
            match stored {
                Ok((stored_serial, frame)) => {
                    self.totals.messages_stored += 1;
                    let trim_at = now
                        .saturating_add(self.config.retention_age.min(self.config.dedupe_window));
                    self.schedule_trim(channel_key, trim_at);
                    self.fan_out(now, channel_key, stored_serial, &frame, key);
                }
                Err(error) => {
                    self.free_if_idle(channel_key);
                    return Published::Done(Some(error));
                }
            }
        }
        Published::Done(None)
    }

    /// Gives the new messages of a publish their positions and sends them to the store
    /// (§7.7): nothing is fanned out or acknowledged before it answers. Messages whose id
    /// is in the dedupe window are dropped (acknowledged, not stored again); a publish
    /// with a message that cannot be encoded is refused whole.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &mut self,
        now: Time,
        key: SessionKey,
        origin: SessionId,
        channel_key: ChannelKey,
        messages: Vec<Message>,
        publisher: wire::ClientId,
        publish: Option<(u64, u64)>,
    ) -> Published {
        let unix_ms = self.unix_ms;
        let framing = self.config.framing;
        let Some(channel) = self.channels.get_mut(&channel_key) else {
            return Published::Done(Some(ErrorInfo::new(
                ErrorCode::Internal,
                "the channel is gone",
            )));
        };
        let mut pending = Vec::new();
        let mut deliveries = Vec::new();
        for message in messages {
            if channel.is_duplicate(&message.id)
                || pending.iter().any(|p: &PendingMessage| p.id == message.id)
            {
                continue;
            }
            let serial = channel.assigned + 1 + pending.len() as u64;
            let delivery = ChannelMessage {
                position: Position {
                    epoch: channel.epoch,
                    serial,
                },
                message,
                publisher: publisher.clone(),
                timestamp_ms: unix_ms,
            };
            match channel.encode(delivery.clone(), framing, &self.config.limits) {
                Ok((frame, body)) => {
                    pending.push(PendingMessage {
                        serial,
                        frame,
                        body,
                        unix_ms,
                        id: delivery.message.id.clone(),
                    });
                    deliveries.push(delivery);
                }
                Err(error) => {
                    self.free_if_idle(channel_key);
                    return Published::Done(Some(error));
                }
            }
        }
        if pending.is_empty() {
            // Every message is a duplicate: acknowledged, nothing to store.
            return Published::Done(None);
        }
        for message in &pending {
            channel.remember_id(message.id.clone(), now, self.config.dedupe_capacity);
        }
        channel.assigned += pending.len() as u64;
        channel.in_flight += 1;
        let generation = channel.generation;
        let name = channel.name.clone();
        let trim_at = now.saturating_add(self.config.retention_age.min(self.config.dedupe_window));
        self.schedule_trim(channel_key, trim_at);
        let id = self.next_request_id();
        self.appends.insert(
            id,
            PendingAppend {
                channel: channel_key,
                generation,
                messages: pending,
                origin: key,
                publish: publish.map(|(serial, _)| serial),
                received: now,
            },
        );
        self.store_request(StorageRequest::Append {
            id,
            channel: name,
            messages: deliveries,
            origin,
            outcome: publish.map(|(serial, digest)| PublishOutcome {
                session: origin,
                serial,
                digest,
                refused: None,
            }),
        });
        Published::Pending(id)
    }

    /// Sends a new message to every subscriber that is caught up; lagging ones get it from
    /// their replay; one whose pending bytes would pass the limit is a slow consumer. The
    /// publishing session `origin` gets `own_message` instead if it asked for no echo.
    pub(super) fn fan_out(
        &mut self,
        now: Time,
        channel_key: ChannelKey,
        serial: u64,
        frame: &Bytes,
        origin: SessionKey,
    ) {
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let subscribers: Vec<SessionKey> = channel.subscribers.iter().copied().collect();
        let echoes = self.config.channel_options(channel.name.as_str()).echo;
        for key in subscribers {
            let Some(session) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(connection) = session.connection else {
                continue;
            };
            let Some(subscription) = session.subscriptions.get_mut(&channel_key) else {
                continue;
            };
            if subscription.cursor + 1 != serial {
                self.pump(now, connection);
                continue;
            }
            let pending = self
                .connections
                .get(&connection)
                .map_or(0, |c| c.pending_bytes);
            let echo = echo_of(self.connections.get(&connection), echoes);
            if pending + frame.len() > self.config.max_pending_bytes {
                self.slow_consumer(now, connection, pending);
                continue;
            }
            subscription.cursor = serial;
            if key == origin && !echo {
                self.send_own_message(now, connection, channel_key, serial);
            } else {
                self.deliver(now, connection, frame.clone());
            }
        }
    }

    /// Tells a client that asked for no echo the position its own message took (§7.4).
    fn send_own_message(
        &mut self,
        now: Time,
        connection: ConnectionId,
        channel_key: ChannelKey,
        serial: u64,
    ) {
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let frame = ServerFrame::OwnMessage {
            channel: channel.name.clone(),
            position: Position {
                epoch: channel.epoch,
                serial,
            },
        };
        self.send(now, connection, &frame);
    }

    pub(super) fn slow_consumer(
        &mut self,
        now: Time,
        connection: ConnectionId,
        pending_bytes: usize,
    ) {
        self.totals.slow_consumers += 1;
        self.emit(HubEvent::SlowConsumer {
            connection,
            pending_bytes,
        });
        let error = ErrorInfo::new(
            ErrorCode::SlowConsumer,
            "the connection fell too far behind",
        );
        self.close_with_disconnect(now, connection, error);
    }

    /// Continues held-back replays on a connection while its pending bytes are under half
    /// the limit. A replay whose next message is no longer retained cannot continue: the
    /// connection is a slow consumer (it resumes later and is told of the gap).
    pub(super) fn pump(&mut self, now: Time, connection: ConnectionId) {
        let Some(key) = self.connections.get(&connection).and_then(|c| c.session) else {
            return;
        };
        let budget = self.config.max_pending_bytes / 2;
        // The common case — every subscription caught up — costs a scan and no allocation
        // (this runs for every write the adapter reports).
        let channels: Vec<ChannelKey> = match self.sessions.get(&key) {
            Some(session) => {
                let behind = |(channel_key, subscription): (&ChannelKey, &_)| {
                    let subscription: &Subscription = subscription;
                    self.channels
                        .get(channel_key)
                        .is_some_and(|channel| subscription.cursor < channel.last)
                };
                if !session.subscriptions.iter().any(behind) {
                    return;
                }
                session.subscriptions.keys().copied().collect()
            }
            None => return,
        };
        for channel_key in channels {
            loop {
                let pending = self
                    .connections
                    .get(&connection)
                    .map_or(usize::MAX, |c| c.pending_bytes);
                if pending >= budget {
                    return;
                }
                let Some((cursor, fetching)) = self
                    .sessions
                    .get(&key)
                    .and_then(|s| s.subscriptions.get(&channel_key))
                    .map(|s| (s.cursor, s.fetching))
                else {
                    break;
                };
                if fetching {
                    break;
                }
                let Some(channel) = self.channels.get(&channel_key) else {
                    break;
                };
                if cursor >= channel.last {
                    break;
                }
                let Some((frame, origin)) = channel
                    .delivery(cursor + 1)
                    .map(|(frame, origin)| (frame.clone(), origin))
                else {
                    if self.durable() {
                        // Older than the cache: continued from the store.
                        self.replay_read(connection, key, channel_key, cursor, None);
                        break;
                    }
                    self.slow_consumer(now, connection, pending);
                    return;
                };
                let echoes = self.config.channel_options(channel.name.as_str()).echo;
                let echo = echo_of(self.connections.get(&connection), echoes);
                if let Some(subscription) = self
                    .sessions
                    .get_mut(&key)
                    .and_then(|s| s.subscriptions.get_mut(&channel_key))
                {
                    subscription.cursor = cursor + 1;
                }
                if origin == key && !echo {
                    self.send_own_message(now, connection, channel_key, cursor + 1);
                } else {
                    self.deliver(now, connection, frame);
                }
            }
        }
    }

    /// A history page from the hub's cache, or what to ask the store for (§7.5, §7.7).
    pub(super) fn history_lookup(&self, name: &ChannelName, query: &HistoryQuery) -> Lookup {
        if query.limit == 0 || query.limit > MAX_HISTORY_LIMIT {
            return Lookup::Refused(ErrorInfo::new(
                ErrorCode::InvalidHistoryQuery,
                "limit must be 1 to 1000",
            ));
        }
        // Leave room for the page's own fields within the frame allowance.
        let budget = self
            .config
            .limits
            .max_frame_size
            .saturating_sub(1024)
            .max(1);
        let durable = self.durable();
        let held = self
            .channel_keys
            .get(name)
            .and_then(|k| self.channels.get(k));
        let cached = held.map(|channel| {
            let answer = channel.history(query, budget);
            let full = matches!(&answer, Ok((_, Some(_))));
            let cached = answer.is_err() || channel.caches(query, full);
            (answer, cached, channel.epoch, channel.last)
        });
        match cached {
            Some((Ok((messages, next)), true, ..)) => Lookup::Page(messages, next),
            Some((Err(error), ..)) => Lookup::Refused(error),
            None if !durable => Lookup::Page(vec![], None),
            Some((Ok(_), false, epoch, last)) if durable => Lookup::Read {
                held: Some((epoch, last)),
                budget,
            },
            Some((Ok((messages, next)), ..)) => Lookup::Page(messages, next),
            None => Lookup::Read {
                held: self.positions.peek(name).map(|p| (p.epoch, p.serial)),
                budget,
            },
        }
    }

    pub(super) fn on_history(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        request_id: u64,
        name: ChannelName,
        query: HistoryQuery,
    ) {
        let page = |messages, next, error| ServerFrame::HistoryPage {
            request_id,
            channel: name.clone(),
            messages,
            next,
            error,
        };
        let frame = if !self.allows(key, &name, Operation::History) {
            page(
                vec![],
                None,
                Some(ErrorInfo::new(
                    ErrorCode::Forbidden,
                    "no history capability for this channel",
                )),
            )
        } else if !self.config.channel_options(name.as_str()).history {
            page(
                vec![],
                None,
                Some(ErrorInfo::new(
                    ErrorCode::Forbidden,
                    "history is off for this channel's namespace",
                )),
            )
        } else {
            match self.history_lookup(&name, &query) {
                Lookup::Page(messages, next) => page(messages, next, None),
                Lookup::Refused(error) => page(vec![], None, Some(error)),
                Lookup::Read { held, budget } => {
                    return self.read(connection, request_id, name, query, held, budget);
                }
            }
        };
        self.send(now, connection, &frame);
    }

    /// Asks the store for a history page older than the cache (§7.7); `held` is the
    /// channel's epoch and last serial when the hub knows them.
    fn read(
        &mut self,
        connection: ConnectionId,
        request_id: u64,
        channel: ChannelName,
        query: HistoryQuery,
        held: Option<(u64, u64)>,
        max_bytes: usize,
    ) {
        let now = self.clock.now();
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        if conn.reads >= MAX_READS_IN_FLIGHT {
            let frame = ServerFrame::HistoryPage {
                request_id,
                channel,
                messages: vec![],
                next: None,
                error: Some(ErrorInfo::new(
                    ErrorCode::LimitExceeded,
                    "too many history requests at once",
                )),
            };
            self.send(now, connection, &frame);
            return;
        }
        conn.reads += 1;
        let id = self.next_request_id();
        self.reads.insert(
            id,
            PendingRead {
                connection,
                channel: channel.clone(),
                purpose: ReadFor::History { request_id },
            },
        );
        self.store_request(StorageRequest::Read {
            id,
            channel,
            epoch: held.map(|(epoch, _)| epoch),
            until: held.map(|(_, last)| last),
            query,
            max_bytes,
        });
    }

    /// Asks the store for the messages after `cursor` of a channel, for a replay older than
    /// the cache (§7.7); `attach` is the position of an attach waiting for the answer.
    pub(super) fn replay_read(
        &mut self,
        connection: ConnectionId,
        session: SessionKey,
        channel_key: ChannelKey,
        cursor: u64,
        attach: Option<Position>,
    ) {
        let Some(channel) = self.channels.get_mut(&channel_key) else {
            return;
        };
        if attach.is_some() {
            // Not a subscriber yet: the channel must stay until the answer.
            channel.in_flight += 1;
            if let Some(conn) = self.connections.get_mut(&connection) {
                conn.attaching.insert(channel.name.clone(), VecDeque::new());
            }
        }
        if let Some(subscription) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.subscriptions.get_mut(&channel_key))
        {
            subscription.fetching = true;
        }
        let epoch = channel.epoch;
        let until = channel.last;
        let name = channel.name.clone();
        let id = self.next_request_id();
        self.reads.insert(
            id,
            PendingRead {
                connection,
                channel: name.clone(),
                purpose: ReadFor::Replay {
                    session,
                    channel: channel_key,
                    attach,
                },
            },
        );
        let query = HistoryQuery {
            start: Some(wire::HistoryBound::Position(Position {
                epoch,
                serial: cursor + 1,
            })),
            end: None,
            direction: wire::Direction::Forwards,
            limit: REPLAY_BATCH,
        };
        let max_bytes = (self.config.max_pending_bytes / 4)
            .min(self.config.limits.max_frame_size)
            .max(1);
        self.store_request(StorageRequest::Read {
            id,
            channel: name,
            epoch: Some(epoch),
            until: Some(until),
            query,
            max_bytes,
        });
    }

    /// Sends the publish answers of one input, coalescing consecutive ones into ranges.
    pub(super) fn send_answers(
        &mut self,
        now: Time,
        connection: ConnectionId,
        answers: Vec<Answer>,
    ) {
        if answers.is_empty() || !self.connections.contains_key(&connection) {
            return;
        }
        let mut frames: Vec<ServerFrame> = Vec::new();
        for answer in answers {
            let merged = match (frames.last_mut(), &answer.error) {
                (Some(ServerFrame::Ack { serial, count }), None)
                    if *serial + u64::from(*count) == answer.serial =>
                {
                    *count += 1;
                    true
                }
                (
                    Some(ServerFrame::Nack {
                        serial,
                        count,
                        error,
                    }),
                    Some(new),
                ) if *serial + u64::from(*count) == answer.serial && error == new => {
                    *count += 1;
                    true
                }
                _ => false,
            };
            if !merged {
                frames.push(match answer.error {
                    None => ServerFrame::Ack {
                        serial: answer.serial,
                        count: 1,
                    },
                    Some(error) => ServerFrame::Nack {
                        serial: answer.serial,
                        count: 1,
                        error,
                    },
                });
            }
        }
        for frame in frames {
            self.send(now, connection, &frame);
        }
    }
}

/// Why an attach from a position cannot continue: what follows it is no longer kept (or the
/// position is ahead of the channel).
pub(super) fn history_unavailable() -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::HistoryUnavailable,
        "the position is not in the retained history (older than it, or ahead of the channel)",
    )
}

/// Whether a connection gets its own session's messages on a channel whose namespace says
/// `echoes` (§7.3, §7.4): not if it asked for no echo, nor where the namespace has none —
/// unless it speaks 1.0, which has no `own_message`.
pub(super) fn echo_of(connection: Option<&Connection>, echoes: bool) -> bool {
    connection.is_none_or(|c| c.echo && (echoes || c.minor == 0))
}

/// A `detached` refusing an attach of `channel`.
fn detached(channel: &ChannelName, code: ErrorCode, text: &str) -> ServerFrame {
    ServerFrame::Detached {
        channel: channel.clone(),
        error: Some(ErrorInfo::new(code, text)),
    }
}
