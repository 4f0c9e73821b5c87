//! Channels: attach, detach, publish, fan-out, flow-controlled replay, history.

use super::record::Resend;
use super::*;

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
            None => Position {
                epoch: self.rng.next_u64(),
                serial: 0,
            },
        };
        let key = ChannelKey(self.next_channel);
        self.next_channel += 1;
        self.channels
            .insert(key, Channel::new(name.clone(), position));
        self.channel_keys.insert(name.clone(), key);
        Ok(key)
    }

    pub(super) fn on_attach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        name: ChannelName,
        from: Option<Position>,
    ) {
        let refuse = |code: ErrorCode, text: &str| ServerFrame::Detached {
            channel: name.clone(),
            error: Some(ErrorInfo::new(code, text)),
        };
        if !self.allows(key, &name, Operation::Subscribe) {
            let frame = refuse(
                ErrorCode::Forbidden,
                "no subscribe capability for this channel",
            );
            self.send(now, connection, &frame);
            return;
        }
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
                    "the channel's history was lost",
                )),
            ),
            Some(p) if p.serial <= current.serial && channel.retains_after(p.serial) => {
                (Continuity::Continuous, p, None)
            }
            Some(_) => (
                Continuity::Gap,
                current,
                Some(ErrorInfo::new(
                    ErrorCode::HistoryUnavailable,
                    "the position is not in the retained history (older than it, or ahead of the channel)",
                )),
            ),
        };
        if let Some(channel) = self.channels.get_mut(&channel_key) {
            channel.subscribers.insert(key);
        }
        if let Some(session) = self.sessions.get_mut(&key) {
            session.subscriptions.insert(
                channel_key,
                Subscription {
                    cursor: position.serial,
                },
            );
        }
        self.send(
            now,
            connection,
            &ServerFrame::Attached {
                channel: name,
                position,
                continuity,
                error,
            },
        );
        self.pump(now, connection);
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
            let error = self.publish_new(now, key, &name, messages);
            answers.push(Answer { serial, error });
            return;
        }
        if serial < session.next_serial {
            // A resend: answered from the session's record, never stored again (§7.4).
            let error = match session.record.resend(serial, &messages) {
                Resend::Answer(error) => error,
                Resend::Different => Some(ErrorInfo::new(
                    ErrorCode::InvalidPublishSerial,
                    "a resent serial carries other messages than it first did",
                )),
                Resend::Forgotten => Some(ErrorInfo::new(
                    ErrorCode::PublishOutcomeUnknown,
                    "this serial is older than the session's record of outcomes",
                )),
            };
            answers.push(Answer { serial, error });
            return;
        }
        session.next_serial += 1;
        let ids = super::record::digest(&messages);
        let error = self.publish_new(now, key, &name, messages);
        if let Some(session) = self.sessions.get_mut(&key) {
            let capacity = self.config.publish_record;
            session
                .record
                .record(serial, ids, error.as_ref().map(|e| e.code), capacity);
        }
        answers.push(Answer { serial, error });
    }

    /// Stores and fans out a new publish; `None` when accepted, or why it was refused.
    fn publish_new(
        &mut self,
        now: Time,
        key: SessionKey,
        name: &ChannelName,
        messages: Vec<Message>,
    ) -> Option<ErrorInfo> {
        if messages.is_empty() {
            // Every publish frame uses its serial, so the client's numbering stays in step;
            // one that carries nothing is refused, never acknowledged.
            return Some(ErrorInfo::new(
                ErrorCode::InvalidMessage,
                "a publish carries at least one message",
            ));
        }
        let session = self.sessions.get(&key)?;
        let publisher = session.identity.client_id.clone();
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
        let channel_key = match self.channel_key(now, name, key) {
            Ok(channel_key) => channel_key,
            Err(error) => return Some(error),
        };
        for message in messages {
            let Some(channel) = self.channels.get_mut(&channel_key) else {
                return Some(ErrorInfo::new(ErrorCode::Internal, "the channel is gone"));
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
                    let trim_at = now
                        .saturating_add(self.config.retention_age.min(self.config.dedupe_window));
                    self.schedule_trim(channel_key, trim_at);
                    self.fan_out(now, channel_key, stored_serial, &frame, key);
                }
                Err(error) => {
                    self.free_if_idle(channel_key);
                    return Some(error);
                }
            }
        }
        None
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
            let (pending, echo) = self
                .connections
                .get(&connection)
                .map_or((0, true), |c| (c.pending_bytes, c.echo));
            if pending + frame.len() > self.config.max_pending_bytes {
                self.slow_consumer(now, connection, pending);
                continue;
            }
            subscription.cursor = serial;
            if key == origin && !echo {
                self.send_own_message(now, connection, channel_key, serial);
            } else {
                self.transmit(now, connection, frame.clone());
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
                let Some(cursor) = self
                    .sessions
                    .get(&key)
                    .and_then(|s| s.subscriptions.get(&channel_key))
                    .map(|s| s.cursor)
                else {
                    break;
                };
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
                    self.slow_consumer(now, connection, pending);
                    return;
                };
                let echo = self.connections.get(&connection).is_none_or(|c| c.echo);
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
                    self.transmit(now, connection, frame);
                }
            }
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
        } else if query.limit == 0 || query.limit > MAX_HISTORY_LIMIT {
            page(
                vec![],
                None,
                Some(ErrorInfo::new(
                    ErrorCode::InvalidHistoryQuery,
                    "limit must be 1 to 1000",
                )),
            )
        } else {
            match self
                .channel_keys
                .get(&name)
                .and_then(|k| self.channels.get(k))
            {
                None => page(vec![], None, None),
                Some(channel) => {
                    // Leave room for the page's own fields within the frame allowance.
                    let budget = self
                        .config
                        .limits
                        .max_frame_size
                        .saturating_sub(1024)
                        .max(1);
                    match channel.history(&query, budget) {
                        Ok((messages, next)) => page(messages, next, None),
                        Err(error) => page(vec![], None, Some(error)),
                    }
                }
            }
        };
        self.send(now, connection, &frame);
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
