//! The hub's side of the storage port: store completions, sessions kept in the store, and
//! the state a store hands back at a restart (§7.7).

use super::delivery::history_unavailable;
use super::record::Outcome;
use super::*;

impl Hub {
    /// The store answered a request (see [`storage`] for the contract). A
    /// completion for an unknown request is ignored.
    ///
    /// On [`Appended`](StorageCompletion::Appended) the messages become part of the channel
    /// — fanned out, replayable, in history — and the publish is acknowledged (on the
    /// session's current transport, after any answer held before it). On
    /// [`Failed`](StorageCompletion::Failed) the publish is refused with the completion's
    /// error, its message ids are forgotten (a resend is stored) and the channel's
    /// positions after its last stored message are given again.
    pub fn handle_storage(&mut self, now: Timestamp, completion: StorageCompletion) {
        let now = self.tick(now);
        let (id, error) = match completion {
            StorageCompletion::Appended { id } => (id, None),
            StorageCompletion::Failed { id, error } if self.reads.contains_key(&id) => {
                self.answer_read(now, id, Err(error));
                return;
            }
            StorageCompletion::Failed { id, error } => (id, Some(error)),
            StorageCompletion::Page { id, messages, next } => {
                self.answer_read(now, id, Ok((messages, next)));
                return;
            }
        };
        let Some(append) = self.appends.remove(&id) else {
            return;
        };
        let channel_key = append.channel;
        if let Some(channel) = self.channels.get_mut(&channel_key) {
            channel.in_flight = channel.in_flight.saturating_sub(1);
        }
        match &error {
            None => self.appended(now, &append),
            Some(error) => {
                self.emit(HubEvent::StorageFailed {
                    channel: self.channels.get(&channel_key).map(|c| c.name.clone()),
                    reason: error.clone(),
                });
                if let Some(channel) = self.channels.get_mut(&channel_key) {
                    for message in &append.messages {
                        channel.forget_id(&message.id);
                    }
                    if channel.generation == append.generation {
                        // The appends emitted after this one fail too (the store refuses a
                        // hole): the next publish takes the first position not stored.
                        channel.assigned = channel.last;
                        channel.generation += 1;
                    }
                }
            }
        }
        let origin = append.origin;
        if append.publish.is_some() {
            match error {
                None => self.totals.acknowledged(now.since(append.received)),
                Some(_) => self.totals.publishes_refused += 1,
            }
        }
        if let Some(serial) = append.publish {
            if let Some(session) = self.sessions.get_mut(&origin) {
                let outcome = match &error {
                    None => Outcome::Acked,
                    Some(error) => Outcome::Refused(error.code),
                };
                session.record.settle(serial, outcome);
                if let Some(error) = &error {
                    let digest = session.record.digest_of(serial);
                    let session_id = session.id;
                    if let Some(digest) = digest {
                        self.store_request(StorageRequest::RecordPublish(PublishOutcome {
                            session: session_id,
                            serial,
                            digest,
                            refused: Some(error.code.as_u32()),
                        }));
                    }
                }
            }
        }
        self.api_appended(id, error.as_ref());
        self.release_answers(now, origin, id, error);
        self.free_if_idle(channel_key);
    }

    /// Sends the store's history page to the client that asked, if it is still there.
    fn answer_read(
        &mut self,
        now: Time,
        id: StorageRequestId,
        answer: Result<(Vec<wire::ChannelMessage>, Option<HistoryQuery>), ErrorInfo>,
    ) {
        let Some(read) = self.reads.remove(&id) else {
            return;
        };
        let request_id = match read.purpose {
            ReadFor::History { request_id } => request_id,
            ReadFor::Api { id } => {
                self.api_read(id, answer);
                return;
            }
            ReadFor::Replay {
                session,
                channel,
                attach,
            } => {
                let messages = answer.map(|(messages, _)| messages).unwrap_or_default();
                self.replayed(now, read.connection, session, channel, attach, messages);
                if attach.is_some() {
                    self.release_held(now, read.connection, session, &read.channel);
                }
                return;
            }
        };
        let Some(conn) = self.connections.get_mut(&read.connection) else {
            return;
        };
        conn.reads = conn.reads.saturating_sub(1);
        let (messages, next, error) = match answer {
            Ok((messages, next)) => (messages, next, None),
            Err(error) => (vec![], None, Some(error)),
        };
        let frame = ServerFrame::HistoryPage {
            request_id,
            channel: read.channel,
            messages,
            next,
            error,
        };
        self.send(now, read.connection, &frame);
    }

    /// The store's page of a replay: sent on if it continues the subscriber's position —
    /// answering a waiting attach `continuous` — and the replay goes on (from the cache or
    /// the store); otherwise the store no longer has what follows the position: a waiting
    /// attach is answered with a gap, an attached subscriber is dropped as a slow consumer
    /// (it resumes and is told of the gap).
    fn replayed(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        channel_key: ChannelKey,
        attach: Option<Position>,
        messages: Vec<wire::ChannelMessage>,
    ) {
        if attach.is_some() {
            if let Some(channel) = self.channels.get_mut(&channel_key) {
                channel.in_flight = channel.in_flight.saturating_sub(1);
            }
        }
        let live = self.connections.get(&connection).and_then(|c| c.session) == Some(key)
            && self.channels.contains_key(&channel_key);
        if !live {
            self.free_if_idle(channel_key);
            return;
        }
        let cursor = match attach {
            Some(from) => from.serial,
            None => match self
                .sessions
                .get(&key)
                .and_then(|s| s.subscriptions.get(&channel_key))
            {
                Some(subscription) => subscription.cursor,
                None => return,
            },
        };
        let continues = messages
            .first()
            .is_some_and(|m| m.position.serial == cursor + 1);
        let Some(channel) = self.channels.get(&channel_key) else {
            return;
        };
        let name = channel.name.clone();
        let current = channel.position();
        if let Some(from) = attach {
            let (continuity, position, error) = if continues {
                (Continuity::Continuous, from, None)
            } else {
                (Continuity::Gap, current, Some(history_unavailable()))
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
            if !continues {
                self.pump(now, connection);
                return;
            }
        } else if !continues {
            let pending = self
                .connections
                .get(&connection)
                .map_or(0, |c| c.pending_bytes);
            self.slow_consumer(now, connection, pending);
            return;
        }
        // Send the page on, in order, up to what the hub itself has delivered.
        let echoes = self.config.channel_options(name.as_str()).echo;
        let echo = super::delivery::echo_of(self.connections.get(&connection), echoes);
        let own = self
            .sessions
            .get(&key)
            .map(|s| s.identity.client_id.clone());
        let mut next = cursor + 1;
        for message in messages {
            let serial = message.position.serial;
            if serial != next || serial > current.serial {
                break;
            }
            if !echo && own.as_ref() == Some(&message.publisher) {
                let frame = ServerFrame::OwnMessage {
                    channel: name.clone(),
                    position: message.position,
                };
                self.send(now, connection, &frame);
            } else {
                let Some(channel) = self.channels.get(&channel_key) else {
                    return;
                };
                match channel.encode(message, self.config.framing, &self.config.limits) {
                    Ok((frame, _)) => self.deliver(now, connection, frame),
                    Err(error) => {
                        self.close(now, connection, None, error);
                        return;
                    }
                }
            }
            if !self.connections.contains_key(&connection) {
                return;
            }
            next += 1;
        }
        if let Some(subscription) = self
            .sessions
            .get_mut(&key)
            .and_then(|s| s.subscriptions.get_mut(&channel_key))
        {
            subscription.cursor = next - 1;
            subscription.fetching = false;
        }
        self.pump(now, connection);
    }

    /// The messages of an append are stored: they join the channel and go to subscribers.
    fn appended(&mut self, now: Time, append: &PendingAppend) {
        let retention_count = self.config.retention_count;
        for message in &append.messages {
            let Some(channel) = self.channels.get_mut(&append.channel) else {
                return;
            };
            if message.serial != channel.last + 1 {
                // A store that broke the contract (an append after a failed one stored):
                // never deliver out of order.
                let reason = ErrorInfo::new(
                    ErrorCode::Internal,
                    format!(
                        "the store answered serial {} after {}",
                        message.serial, channel.last
                    ),
                );
                let name = channel.name.clone();
                self.emit(HubEvent::StorageFailed {
                    channel: Some(name),
                    reason,
                });
                return;
            }
            self.totals.messages_stored += 1;
            channel.retain(
                message.serial,
                message.frame.clone(),
                message.body,
                now,
                message.unix_ms,
                append.origin,
                retention_count,
            );
            self.fan_out(
                now,
                append.channel,
                message.serial,
                &message.frame,
                append.origin,
            );
        }
    }

    /// Answers the publishes of `origin` waiting for `request`, then every answer queued
    /// behind them that is ready, on the session's transport.
    pub(super) fn release_answers(
        &mut self,
        now: Time,
        origin: SessionKey,
        request: StorageRequestId,
        error: Option<ErrorInfo>,
    ) {
        let Some(session) = self.sessions.get_mut(&origin) else {
            return;
        };
        for queued in session.queued.iter_mut() {
            if queued.waiting == Some(request) {
                queued.waiting = None;
                queued.error = error.clone();
            }
        }
        let mut answers = Vec::new();
        while session.queued.front().is_some_and(|q| q.waiting.is_none()) {
            if let Some(queued) = session.queued.pop_front() {
                answers.push(Answer {
                    serial: queued.serial,
                    error: queued.error,
                });
            }
        }
        if let Some(connection) = session.connection {
            self.send_answers(now, connection, answers);
        }
    }

    /// Keeps a session in the store (new, resumed or renewed), when the hub has one.
    pub(super) fn save_session(&mut self, key: SessionKey) {
        if !self.durable() {
            return;
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let stored = StoredSession {
            id: session.id,
            secret: session.secret,
            identity: session.identity.clone(),
            heartbeat_interval_ms: crate::time::millis(session.heartbeat_interval),
            record: Vec::new(),
        };
        self.store_request(StorageRequest::SaveSession(stored));
    }

    /// Takes what a store held when the hub starts: channels continue at their stored
    /// positions (with their newest messages cached and their message ids in the dedupe
    /// window), and sessions can be resumed — each waits for its client for the session
    /// TTL from `now`. Call once, before the first [`accept`](Hub::accept).
    ///
    /// With [`positions_lost`](RestoredState::positions_lost) (a store that may have lost its last writes, §7.7) every
    /// channel starts a new epoch instead, so no position is ever given twice; message
    /// ids are still remembered.
    pub fn restore(&mut self, now: Timestamp, state: RestoredState) {
        let positions_lost = state.positions_lost;
        let unix_now = now.unix_ms;
        self.revocations = state
            .revocations
            .into_iter()
            .filter(|r| r.expires_at_ms > unix_now)
            .take(super::MAX_REVOCATIONS)
            .collect();
        let now = self.tick(now);
        let at = |unix_ms: u64| {
            Time::from_millis(
                now.as_millis()
                    .saturating_sub(unix_now.saturating_sub(unix_ms)),
            )
        };
        let mut keys = HashMap::new();
        for stored in state.sessions {
            let key = SessionKey(self.next_session);
            self.next_session += 1;
            let mut record = record::PublishRecord::default();
            for outcome in &stored.record {
                let refused = outcome.refused.map(ErrorCode::from_u32);
                let outcome_kind = match refused {
                    None => Outcome::Acked,
                    Some(code) => Outcome::Refused(code),
                };
                record.record(
                    outcome.serial,
                    outcome.digest,
                    outcome_kind,
                    self.config.publish_record,
                );
            }
            let next_serial = record.next_serial().unwrap_or(0);
            self.session_ids.insert(stored.id, key);
            keys.insert(stored.id, key);
            self.sessions.insert(
                key,
                Session {
                    id: stored.id,
                    secret: stored.secret,
                    identity: stored.identity,
                    next_serial,
                    record,
                    connection: None,
                    subscriptions: BTreeMap::new(),
                    heartbeat_interval: Duration::from_millis(stored.heartbeat_interval_ms),
                    detached_at: Some(now),
                    creations: CreationRate::default(),
                    queued: VecDeque::new(),
                    hooked: None,
                    gated: VecDeque::new(),
                    gated_bytes: 0,
                    token: None,
                    restored: true,
                },
            );
            self.detached.insert((now, key));
            self.timers.set(
                now.saturating_add(self.config.session_ttl),
                Timer::SessionExpiry(key),
            );
        }
        // A message from a session that is not restored is nobody's own message.
        let nobody = SessionKey(u64::MAX);
        for restored in state.channels {
            let position = if positions_lost {
                let position = Position {
                    epoch: self.rng.next_u64(),
                    serial: 0,
                };
                self.store_request(StorageRequest::SaveChannel {
                    channel: restored.name.clone(),
                    position,
                });
                position
            } else {
                restored.position
            };
            // The cache is the contiguous run of stored messages that ends at the
            // channel's last serial, at most the retention count.
            let mut run = Vec::new();
            if !positions_lost {
                let mut expected = position.serial;
                for stored in restored.recent.iter().rev() {
                    let message = &stored.message;
                    if run.len() >= self.config.retention_count.max(1)
                        || expected == 0
                        || message.position.epoch != position.epoch
                        || message.position.serial != expected
                    {
                        break;
                    }
                    run.push(stored);
                    expected -= 1;
                }
                run.reverse();
            }
            let before = Position {
                epoch: position.epoch,
                serial: position.serial - run.len() as u64,
            };
            let mut channel = Channel::new(restored.name.clone(), before);
            for stored in run {
                let message = &stored.message;
                let origin = keys.get(&stored.origin).copied().unwrap_or(nobody);
                let Ok((frame, body)) =
                    channel.encode(message.clone(), self.config.framing, &self.config.limits)
                else {
                    // Not sendable under this configuration's limits: the cache starts after.
                    channel = Channel::new(restored.name.clone(), message.position);
                    continue;
                };
                channel.retain(
                    message.position.serial,
                    frame,
                    body,
                    at(message.timestamp_ms),
                    message.timestamp_ms,
                    origin,
                    self.config.retention_count,
                );
            }
            channel.last = position.serial;
            channel.assigned = position.serial;
            let mut ids = restored.ids;
            ids.sort_by_key(|(_, unix_ms)| *unix_ms);
            for (id, unix_ms) in ids {
                channel.remember_id(id, at(unix_ms), self.config.dedupe_capacity);
            }
            let next = channel.trim(now, self.config.retention_age, self.config.dedupe_window);
            if channel.is_idle() {
                self.positions.remember(restored.name, position);
                continue;
            }
            if let Some(old) = self.channel_keys.get(&restored.name).copied() {
                self.channels.remove(&old);
            }
            let key = ChannelKey(self.next_channel);
            self.next_channel += 1;
            self.channel_keys.insert(restored.name, key);
            self.channels.insert(key, channel);
            if let Some(next) = next {
                self.schedule_trim(key, next);
            }
        }
    }
}
