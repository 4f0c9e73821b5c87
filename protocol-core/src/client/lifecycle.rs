//! Transport events, timers, connection attempts, retry, suspension, close and failure.

use super::*;

/// Connects refused in a row with `token_expired`, each with a new token, after which the
/// application is told its token source gives expired tokens (§6.8).
pub(super) const STALE_TOKENS_REPORTED_AFTER: u32 = 3;

impl Client {
    /// The transport asked for by `OpenTransport { transport }` is open.
    pub fn handle_transport_open(&mut self, now: Time, transport: TransportId) {
        let now = self.clock.advance(now);
        let Some(current) = self.transport.as_mut().filter(|t| t.id == transport) else {
            return;
        };
        if !matches!(current.phase, Phase::Opening) {
            return;
        }
        current.phase = Phase::Handshaking;
        current.last_received = now;
        if current.kind == TransportKind::WebSocket {
            // WebSocket works (again): no more falling back (§6.10).
            self.fallback_until = None;
        }
        let credentials = match &self.config.auth {
            Auth::ApiKey { name, secret } => Credentials::ApiKey {
                name: name.clone(),
                secret: secret.clone(),
            },
            Auth::Token => Credentials::Token {
                token: self.tokens.current.clone().unwrap_or_default(),
            },
        };
        let resume = self.session.map(|session| session.resume);
        current.asked_resume = resume.is_some();
        let frame = ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials,
            client_id: self.config.client_id.clone(),
            resume,
            heartbeat_interval_ms: self
                .config
                .heartbeat_interval
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            // Only what differs from the defaults is asked for, so a default client's
            // connect is the 1.0 frame.
            options: (!self.config.echo).then_some(wire::ConnectOptions { echo: false }),
        };
        self.send(now, &frame);
    }

    /// The transport closed or failed underneath the client.
    pub fn handle_transport_closed(
        &mut self,
        now: Time,
        transport: TransportId,
        reason: impl Into<String>,
    ) {
        let now = self.clock.advance(now);
        if self.transport.as_ref().is_some_and(|t| t.id == transport) {
            let error = ErrorInfo::new(ErrorCode::TransportClosed, reason);
            self.lose_transport(now, error, false);
        }
    }

    /// The transport could not open because something answered it other than the hub: a
    /// WebSocket upgrade refused with an HTTP status (a proxy or firewall: 403, 502, …) or
    /// not answered in time. With [`Fallback::enabled`](super::Fallback), a blocked
    /// WebSocket is replaced at once by an HTTP binding transport, kept for
    /// `probe_interval` (§6.10); otherwise, or for another kind, it is a closed transport.
    pub fn handle_transport_blocked(
        &mut self,
        now: Time,
        transport: TransportId,
        reason: impl Into<String>,
    ) {
        let now = self.clock.advance(now);
        let Some(current) = self.transport.as_ref().filter(|t| t.id == transport) else {
            return;
        };
        let reason = ErrorInfo::new(ErrorCode::TransportClosed, reason);
        if !(self.config.fallback.enabled
            && current.kind == TransportKind::WebSocket
            && matches!(current.phase, Phase::Opening))
        {
            self.lose_transport(now, reason, false);
            return;
        }
        self.outputs.push_back(Output::CloseTransport {
            transport,
            reason: reason.clone(),
        });
        self.transport = None;
        self.fallback_until = Some(now.saturating_add(self.config.fallback.probe_interval));
        self.emit(Event::Update {
            reason: ErrorInfo::new(
                ErrorCode::TransportClosed,
                format!(
                    "WebSocket blocked ({}): using the HTTP binding",
                    reason.message
                ),
            ),
        });
        self.open_transport(now);
    }

    /// Bytes received on a transport: one frame with message framing, any part of the
    /// stream with stream framing.
    pub fn handle_transport_bytes(&mut self, now: Time, transport: TransportId, bytes: Bytes) {
        let now = self.clock.advance(now);
        #[cfg(feature = "sabotage")]
        let transport = match self.transport.as_ref() {
            Some(current) if self.sabotage_accepts_stale() => current.id,
            _ => transport,
        };
        let limits = self.incoming_limits();
        let Some(current) = self.transport.as_mut().filter(|t| t.id == transport) else {
            return;
        };
        current.last_received = now;
        if let Some(decoder) = current.decoder.as_mut() {
            decoder.set_limits(limits);
        }
        let frames = wire::decode_received(current.decoder.as_mut(), &bytes, &limits);
        match frames {
            Ok(frames) => {
                for frame in frames {
                    if self.transport.as_ref().is_none_or(|t| t.id != transport) {
                        break; // an earlier frame ended this transport
                    }
                    self.handle_frame(now, frame);
                }
            }
            Err(error) => self.lose_transport(now, error.to_error_info(), true),
        }
    }

    /// Call when the deadline from [`poll_timeout`](Client::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Time) {
        let now = self.clock.advance(now);
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.finish_close(ErrorInfo::new(
                ErrorCode::RequestTimeout,
                "no answer to close",
            ));
            return;
        }
        if let Some(transport) = &self.transport {
            if matches!(transport.phase, Phase::Opening)
                && transport.open_deadline.is_some_and(|d| d <= now)
            {
                let id = transport.id;
                self.handle_transport_blocked(now, id, "the WebSocket did not open in time");
                return self.handle_timeout(now);
            }
        }
        if let Some(transport) = &self.transport {
            let error = match transport.phase {
                Phase::Opening | Phase::Handshaking if transport.connect_deadline <= now => Some(
                    ErrorInfo::new(ErrorCode::RequestTimeout, "connect timed out"),
                ),
                Phase::Connected { .. }
                    if self.liveness_deadline(transport).is_some_and(|d| d <= now) =>
                {
                    Some(ErrorInfo::new(
                        ErrorCode::HeartbeatTimeout,
                        "nothing received from the hub",
                    ))
                }
                Phase::Connected { .. }
                    if self.channels.next_deadline().is_some_and(|d| d <= now)
                        || self.tokens.auth_deadline.is_some_and(|d| d <= now) =>
                {
                    Some(ErrorInfo::new(
                        ErrorCode::RequestTimeout,
                        "a request got no answer",
                    ))
                }
                _ => None,
            };
            if let Some(error) = error {
                self.lose_transport(now, error, true);
            }
        }
        self.expire_requests(now);
        if let Some(transport) = &self.transport {
            if self.heartbeat_deadline(transport).is_some_and(|d| d <= now) {
                self.send(now, &ClientFrame::Heartbeat);
            }
        }
        if self.tokens.requested.is_some_and(|d| d <= now) {
            // The application did not answer: the request is dropped, and asked again —
            // on the next attempt, or for a renewal after a backoff delay (§6.8).
            self.tokens.requested = None;
            let error = ErrorInfo::new(ErrorCode::RequestTimeout, "no token was provided in time");
            self.token_not_provided(now, error);
        }
        if self.tokens.renew_at.is_some_and(|d| d <= now) {
            self.tokens.renew_at = None;
            self.request_token(now, TokenReason::Renewal);
        }
        if self.suspend_at.is_some_and(|d| d <= now) {
            self.suspend_at = None;
            self.enter_suspended();
        }
        if self.retry_at.is_some_and(|d| d <= now) {
            self.retry_at = None;
            self.start_attempt(now);
        }
    }

    /// No token came for the request under way (`error` says why). An attempt waiting for it
    /// fails (backoff, then it asks again); while Connected, the renewal is asked again after
    /// a backoff delay, and the current token stays in force until it expires.
    pub(super) fn token_not_provided(&mut self, now: Time, error: ErrorInfo) {
        if self.tokens.connect_when_provided && self.transport.is_none() {
            self.tokens.connect_when_provided = false;
            if self.state == ConnectionState::Connecting {
                self.attempt_failed(now, error);
            } else if self.retry_at.is_none() {
                // Disconnected or Suspended, the attempt waited for this token: retry later.
                let delay = self
                    .backoff
                    .after_failed_attempt(&self.config, &mut self.rng);
                self.retry_at = Some(now.saturating_add(delay));
                self.emit(Event::Update { reason: error });
            }
        } else if self.state == ConnectionState::Connected && self.config.auth == Auth::Token {
            let delay = self
                .backoff
                .after_failed_attempt(&self.config, &mut self.rng);
            let again = now.saturating_add(delay);
            // Before the token expires if there is time; the hub disconnects at expiry.
            self.tokens.renew_at = Some(match self.tokens.expires {
                Some(expires) if expires > now => again.min(expires),
                _ => again,
            });
            self.emit(Event::Update { reason: error });
        }
    }

    pub(super) fn request_token(&mut self, now: Time, reason: TokenReason) {
        if self.tokens.requested.is_some() {
            return; // exactly one request in flight
        }
        self.tokens.requested = Some(now.saturating_add(self.config.request_timeout));
        self.emit(Event::TokenRequired { reason });
    }

    /// Starts a connection attempt: asks for a token first if one is needed.
    pub(super) fn start_attempt(&mut self, now: Time) {
        self.retry_at = None;
        if let Some(old) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: old.id,
                reason: ErrorInfo::new(ErrorCode::TransportClosed, "replaced by a new attempt"),
            });
        }
        self.set_state(ConnectionState::Connecting, None);
        if self.config.auth == Auth::Token {
            let expired = self.tokens.expires.is_some_and(|expiry| expiry <= now);
            if self.tokens.current.is_none() || expired {
                if expired {
                    self.tokens.current = None;
                }
                let reason = if expired {
                    TokenReason::Expired
                } else {
                    TokenReason::Initial
                };
                self.tokens.connect_when_provided = true;
                self.request_token(now, reason);
                return;
            }
        }
        self.open_transport(now);
    }

    pub(super) fn open_transport(&mut self, now: Time) {
        self.tokens.connect_when_provided = false;
        let id = TransportId(self.next_transport);
        self.next_transport += 1;
        let decoder = match self.config.framing {
            Framing::Message => None,
            Framing::Stream => Some(StreamDecoder::new(self.config.limits)),
        };
        let fallback = self.config.fallback;
        let falling_back = fallback.enabled
            && (fallback.http_only || self.fallback_until.is_some_and(|until| now < until));
        let kind = if falling_back {
            TransportKind::HttpStream
        } else {
            TransportKind::WebSocket
        };
        let open_deadline = (fallback.enabled && kind == TransportKind::WebSocket)
            .then(|| now.saturating_add(fallback.websocket_timeout));
        self.transport = Some(Transport {
            id,
            kind,
            open_deadline,
            phase: Phase::Opening,
            connect_deadline: now.saturating_add(self.config.request_timeout),
            last_received: now,
            last_sent: now,
            asked_resume: false,
            decoder,
        });
        self.outputs.push_back(Output::OpenTransport {
            transport: id,
            kind,
        });
    }

    /// The current transport is gone (closed underneath us, or given up by us when
    /// `close_it`).
    pub(super) fn lose_transport(&mut self, now: Time, reason: ErrorInfo, close_it: bool) {
        let Some(transport) = self.transport.take() else {
            return;
        };
        if close_it {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: reason.clone(),
            });
        }
        self.fail_requests(ErrorInfo::new(
            ErrorCode::TransportClosed,
            "the transport closed",
        ));
        #[cfg(feature = "sabotage")]
        self.sabotage_forgets_publishes();
        self.channels.on_transport_lost();
        self.tokens.auth_deadline = None;
        match (self.state, transport.phase) {
            (ConnectionState::Closing, _) => self.finish_close(reason),
            (ConnectionState::Connected, Phase::Connected { since }) => {
                let ttl = self.session.map_or(self.config.session_ttl, |s| s.ttl);
                self.suspend_at = Some(now.saturating_add(ttl));
                let delay = self.backoff.after_connection_lost(
                    now.since(since),
                    &self.config,
                    &mut self.rng,
                );
                self.set_state(ConnectionState::Disconnected, Some(reason.clone()));
                if token_ended(reason.code) && self.config.auth == Auth::Token {
                    // The token of a working connection ran out or was revoked: renew and
                    // resume at once.
                    self.renew_then_connect(now);
                    return;
                }
                self.schedule_retry(now, delay, &reason);
            }
            (ConnectionState::Connecting, _) => self.attempt_failed(now, reason),
            _ => {}
        }
    }

    /// An attempt did not reach Connected.
    pub(super) fn attempt_failed(&mut self, now: Time, reason: ErrorInfo) {
        if self.suspend_at.is_none() && !self.suspended {
            let ttl = self.session.map_or(self.config.session_ttl, |s| s.ttl);
            self.suspend_at = Some(now.saturating_add(ttl));
        }
        if self.suspended {
            let delay = Backoff::suspended(&self.config, &mut self.rng);
            self.set_state(ConnectionState::Suspended, Some(reason.clone()));
            self.schedule_retry(now, delay, &reason);
        } else {
            let delay = self
                .backoff
                .after_failed_attempt(&self.config, &mut self.rng);
            self.set_state(ConnectionState::Disconnected, Some(reason.clone()));
            self.schedule_retry(now, delay, &reason);
        }
    }

    pub(super) fn schedule_retry(&mut self, now: Time, delay: Duration, reason: &ErrorInfo) {
        #[cfg(feature = "sabotage")]
        if self.sabotage_stops_retrying() {
            self.retry_at = None;
            return;
        }
        if token_ended(reason.code) && self.config.auth == Auth::Token {
            // A connect refused because its token had expired or was revoked.
            let fresh = std::mem::take(&mut self.tokens.fresh);
            self.tokens.current = None;
            // Expired as of now: the next attempt asks for a token because this one expired.
            self.tokens.expires = Some(now);
            self.tokens.renew_at = None;
            if !fresh {
                // A token kept from an earlier connection ran out: ask for a new one now.
                self.renew_then_connect(now);
                return;
            }
            // The token was new, and already expired for the hub (clocks apart, a cached
            // token): a failed attempt like any other, retried after the backoff delay, and
            // after a few in a row the application is told (§6.8).
            self.tokens.stale_in_a_row += 1;
            if self.tokens.stale_in_a_row == STALE_TOKENS_REPORTED_AFTER {
                self.emit(Event::Update {
                    reason: ErrorInfo::new(
                        ErrorCode::TokenExpired,
                        format!(
                            "{STALE_TOKENS_REPORTED_AFTER} new tokens in a row were already expired for the server: \
                             the token source's clock is behind the server's, or it hands out cached tokens"
                        ),
                    ),
                });
            }
        }
        self.retry_at = Some(now.saturating_add(delay));
    }

    /// Asks for a new token and connects as soon as it arrives.
    fn renew_then_connect(&mut self, now: Time) {
        self.tokens.current = None;
        self.tokens.expires = None;
        self.tokens.renew_at = None;
        self.tokens.fresh = false;
        self.tokens.connect_when_provided = true;
        self.retry_at = None;
        self.request_token(now, TokenReason::Expired);
    }

    pub(super) fn enter_suspended(&mut self) {
        self.suspended = true;
        let error = ErrorInfo::new(
            ErrorCode::ConnectionSuspended,
            "disconnected for longer than the session TTL",
        );
        let failed = self.publishes.drain_all();
        self.resolve(failed, &Err(error.clone()));
        if self.state == ConnectionState::Disconnected {
            let delay = Backoff::suspended(&self.config, &mut self.rng);
            let now = self.clock.now();
            self.set_state(ConnectionState::Suspended, Some(error));
            if self.retry_at.is_some() {
                self.retry_at = Some(now.saturating_add(delay));
            }
        }
    }

    pub(super) fn finish_close(&mut self, reason: ErrorInfo) {
        if let Some(transport) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: reason.clone(),
            });
        }
        self.close_deadline = None;
        self.retry_at = None;
        self.suspend_at = None;
        self.tokens = Tokens {
            current: self.tokens.current.take(),
            ..Tokens::default()
        };
        let failed = self.publishes.drain_all();
        self.resolve(
            failed,
            &Err(ErrorInfo::new(
                ErrorCode::ConnectionClosed,
                "the connection was closed",
            )),
        );
        let closed = ErrorInfo::new(ErrorCode::ConnectionClosed, "the connection was closed");
        self.fail_requests(closed.clone());
        self.detach_all(&closed);
        self.session = None;
        let reason = (reason.code != ErrorCode::ConnectionClosed).then_some(reason);
        self.set_state(ConnectionState::Closed, reason);
    }

    pub(super) fn fail(&mut self, error: ErrorInfo) {
        if let Some(transport) = self.transport.take() {
            self.outputs.push_back(Output::CloseTransport {
                transport: transport.id,
                reason: error.clone(),
            });
        }
        self.retry_at = None;
        self.suspend_at = None;
        self.close_deadline = None;
        self.tokens.renew_at = None;
        self.tokens.auth_deadline = None;
        self.tokens.requested = None;
        self.tokens.connect_when_provided = false;
        let failure = ErrorInfo::new(
            ErrorCode::ConnectionFailed,
            format!("the connection failed: {error}"),
        );
        let failed = self.publishes.drain_all();
        self.resolve(failed, &Err(failure.clone()));
        self.fail_requests(failure.clone());
        self.detach_all(&failure);
        self.set_state(ConnectionState::Failed, Some(error));
    }

    /// Ends every channel with `reason` (Failed or Closed): each, attached or still
    /// attaching, is reported [`Event::Detached`] with it, so no attach waits and no
    /// subscription stays open on a connection that will not come back by itself.
    fn detach_all(&mut self, reason: &ErrorInfo) {
        for channel in self.channels.drain() {
            self.emit(Event::Detached {
                channel,
                error: Some(reason.clone()),
            });
        }
    }

    pub(super) fn fail_requests(&mut self, error: ErrorInfo) {
        for (id, pending) in self.history.take() {
            self.emit(Event::HistoryPage {
                id,
                channel: pending.channel,
                result: Err(error.clone()),
            });
        }
        for (id, _) in self.pings.take() {
            self.emit(Event::Pong {
                id,
                result: Err(error.clone()),
            });
        }
    }

    pub(super) fn expire_requests(&mut self, now: Time) {
        let timeout = ErrorInfo::new(ErrorCode::RequestTimeout, "no answer in time");
        let expired: Vec<RequestId> = self
            .history
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.history.remove(&id) {
                self.emit(Event::HistoryPage {
                    id,
                    channel: pending.channel,
                    result: Err(timeout.clone()),
                });
            }
        }
        let expired: Vec<PingId> = self
            .pings
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.pings.remove(&id);
            self.emit(Event::Pong {
                id,
                result: Err(timeout.clone()),
            });
        }
    }
}

/// Whether `code` says the token is no longer good (expired or revoked): a new one is asked
/// for and the session resumed (§6.8).
fn token_ended(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::TokenExpired | ErrorCode::TokenRevoked)
}
