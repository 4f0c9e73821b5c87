//! Application commands: connect, close, attach, detach, publish, history, ping, tokens.

use super::*;

impl Client {
    /// Starts connecting (from Initialized, Closed or Failed), or retries at once (from
    /// Disconnected or Suspended). Does nothing in other states.
    pub fn connect(&mut self, now: Time) {
        let now = self.clock.advance(now);
        match self.state {
            ConnectionState::Initialized | ConnectionState::Closed | ConnectionState::Failed => {
                self.backoff = Backoff::default();
                self.suspended = false;
                self.suspend_at = None;
                self.start_attempt(now);
            }
            ConnectionState::Disconnected | ConnectionState::Suspended => self.start_attempt(now),
            ConnectionState::Connecting | ConnectionState::Connected | ConnectionState::Closing => {
            }
        }
    }

    /// Retries at once from Disconnected or Suspended, e.g. when the operating system says
    /// the network is back. The backoff count is kept.
    pub fn retry_now(&mut self, now: Time) {
        let now = self.clock.advance(now);
        let waiting_for_token = self.state == ConnectionState::Connecting
            && self.transport.is_none()
            && self.tokens.connect_when_provided;
        if waiting_for_token {
            // The request under way may never be answered (§6.8): ask again now.
            self.tokens.requested = None;
            self.start_attempt(now);
        } else if matches!(
            self.state,
            ConnectionState::Disconnected | ConnectionState::Suspended
        ) {
            self.start_attempt(now);
        }
    }

    /// Ends the session: in order when Connected, at once otherwise. Pending publishes fail
    /// with `connection_closed`.
    pub fn close(&mut self, now: Time) {
        let now = self.clock.advance(now);
        match self.state {
            ConnectionState::Closing | ConnectionState::Closed => {}
            ConnectionState::Connected => {
                self.send(now, &ClientFrame::Close);
                self.close_deadline = Some(now.saturating_add(self.config.request_timeout));
                self.set_state(ConnectionState::Closing, None);
            }
            _ => self.finish_close(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "closed by the application",
            )),
        }
    }

    /// Attaches a channel: continues from its last position if it had one. The outcome is
    /// an [`Event::Attached`] or [`Event::Detached`]. Refused at once (with the code) when
    /// the client is Closed, Failed or Suspended, or the name breaks the hub's limits.
    pub fn attach(&mut self, now: Time, channel: ChannelName) -> Result<(), ErrorInfo> {
        let now = self.clock.advance(now);
        self.check_usable()?;
        if self.suspended {
            return Err(ErrorInfo::new(
                ErrorCode::ConnectionSuspended,
                "the connection is suspended: attach again once connected",
            ));
        }
        super::check_channel_name(&channel, &self.outgoing_limits())?;
        let deadline = now.saturating_add(self.config.request_timeout);
        match self
            .channels
            .attach(channel.clone(), self.is_connected(), deadline)
        {
            Attach::Send(frame) => self.send(now, &frame),
            Attach::Underway => {}
            // Answered at once, so no caller waits for an answer that will not come (§6.6).
            #[cfg(feature = "sabotage")]
            Attach::Already(_) if self.sabotage_ignores_attach_of_attached() => {}
            Attach::Already(position) => self.emit(Event::Attached {
                channel,
                position,
                continuity: crate::wire::Continuity::Continuous,
            }),
        }
        Ok(())
    }

    /// Detaches a channel and forgets its position. The outcome is an [`Event::Detached`].
    pub fn detach(&mut self, now: Time, channel: &ChannelName) {
        let now = self.clock.advance(now);
        let deadline = now.saturating_add(self.config.request_timeout);
        match self.channels.detach(channel, deadline) {
            Detach::Send(frame) => self.send(now, &frame),
            Detach::Underway => {}
            Detach::Done => self.emit(Event::Detached {
                channel: channel.clone(),
                error: None,
            }),
        }
    }

    /// Publishes messages to a channel. The returned id is resolved exactly once by an
    /// [`Event::PublishResolved`]. Refused at once (with the code) when the client is
    /// Suspended, Closed or Failed, when too many publishes are pending, or when the
    /// publish could never fit the hub's limits.
    pub fn publish(
        &mut self,
        now: Time,
        channel: ChannelName,
        messages: Vec<NewMessage>,
    ) -> Result<PublishId, ErrorInfo> {
        let now = self.clock.advance(now);
        self.check_usable()?;
        if self.suspended {
            return Err(ErrorInfo::new(
                ErrorCode::ConnectionSuspended,
                "the connection is suspended",
            ));
        }
        if self.publishes.len() >= self.config.max_pending_publishes {
            return Err(publishes::queue_full(self.config.max_pending_publishes));
        }
        let messages: Vec<Message> = messages
            .into_iter()
            .map(|message| {
                let id = match message.id {
                    Some(id) => id,
                    None => self.next_message_id(),
                };
                Message {
                    id,
                    name: message.name,
                    data: message.data,
                }
            })
            .collect();
        check_publish_fits(&channel, &messages, &self.outgoing_limits())?;
        let id = self.publishes.push(channel, messages);
        if self.is_connected() {
            let now_ms = self.server_now_estimate(now);
            if let Some(frame) = self.publishes.send_newest(now_ms) {
                self.send(now, &frame);
            }
        }
        Ok(id)
    }

    /// Asks for a page of a channel's history. Answered by an [`Event::HistoryPage`].
    pub fn history(
        &mut self,
        now: Time,
        channel: ChannelName,
        query: HistoryQuery,
    ) -> Result<RequestId, ErrorInfo> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(ErrorInfo::new(
                ErrorCode::Unavailable,
                "history needs a connection",
            ));
        }
        super::check_channel_name(&channel, &self.outgoing_limits())?;
        if query.limit == 0 || query.limit > MAX_HISTORY_LIMIT {
            return Err(ErrorInfo::new(
                ErrorCode::InvalidHistoryQuery,
                "limit must be 1 to 1000",
            ));
        }
        if self.history.len() + self.pings.len() >= MAX_OUTSTANDING_REQUESTS {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "too many requests awaiting an answer",
            ));
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.history.insert(
            id,
            PendingHistory {
                channel: channel.clone(),
                deadline: now.saturating_add(self.config.request_timeout),
            },
        );
        self.send(
            now,
            &ClientFrame::HistoryRequest {
                request_id: id.0,
                channel,
                query,
            },
        );
        Ok(id)
    }

    /// Measures the round trip to the hub. Answered by an [`Event::Pong`].
    pub fn ping(&mut self, now: Time) -> Result<PingId, ErrorInfo> {
        let now = self.clock.advance(now);
        if !self.is_connected() {
            return Err(ErrorInfo::new(
                ErrorCode::Unavailable,
                "ping needs a connection",
            ));
        }
        if self.history.len() + self.pings.len() >= MAX_OUTSTANDING_REQUESTS {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "too many requests awaiting an answer",
            ));
        }
        let id = PingId(self.next_request);
        self.next_request += 1;
        self.pings.insert(
            id,
            PendingPing {
                sent: now,
                deadline: now.saturating_add(self.config.request_timeout),
            },
        );
        self.send(now, &ClientFrame::Ping { id: id.0 });
        Ok(id)
    }

    /// Answers [`Event::TokenRequired`] with a token.
    pub fn provide_token(&mut self, now: Time, token: String) {
        let now = self.clock.advance(now);
        self.tokens.requested = None;
        self.tokens.current = Some(token.clone());
        self.tokens.fresh = true;
        // Until the hub states the expiry, the previous estimate no longer applies.
        self.tokens.expires = None;
        self.tokens.renew_at = None;
        match self.state {
            ConnectionState::Connected => {
                self.tokens.auth_deadline = Some(now.saturating_add(self.config.request_timeout));
                self.send(now, &ClientFrame::Auth { token });
            }
            ConnectionState::Connecting if self.transport.is_none() => self.open_transport(now),
            ConnectionState::Disconnected | ConnectionState::Suspended
                if self.tokens.connect_when_provided =>
            {
                self.start_attempt(now);
            }
            _ => {}
        }
    }

    /// Answers [`Event::TokenRequired`]: no token can be had *now* (the application's auth
    /// service is unreachable, …). A connection attempt waiting for it fails and is retried
    /// with backoff, asking again; a renewal is asked again after a backoff delay while the
    /// current token stays in force, with an [`Event::Update`] (§6.8). Code
    /// `token_unavailable`.
    pub fn token_unavailable(&mut self, now: Time, reason: impl Into<String>) {
        let now = self.clock.advance(now);
        self.tokens.requested = None;
        let error = ErrorInfo::new(ErrorCode::TokenUnavailable, reason);
        self.token_not_provided(now, error);
    }

    /// Answers [`Event::TokenRequired`]: the application refuses to provide a token (the
    /// user signed out, lost access). The client goes to Failed with `token_unavailable`
    /// and does not retry (§6.8).
    pub fn token_refused(&mut self, now: Time, reason: impl Into<String>) {
        self.clock.advance(now);
        self.tokens.requested = None;
        self.fail(ErrorInfo::new(ErrorCode::TokenUnavailable, reason));
    }

    pub(super) fn check_usable(&self) -> Result<(), ErrorInfo> {
        match self.state {
            ConnectionState::Closing | ConnectionState::Closed => Err(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "the connection is closed",
            )),
            ConnectionState::Failed => Err(ErrorInfo::new(
                ErrorCode::ConnectionFailed,
                "the connection failed",
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn next_message_id(&mut self) -> MessageId {
        let id = format!("{}:{}", self.instance_id, self.message_counter);
        self.message_counter += 1;
        MessageId::new(id).expect("16 hex digits, a colon and a number fit in 128 bytes")
    }
}
