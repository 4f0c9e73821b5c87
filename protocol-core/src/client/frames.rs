//! What the client does with each frame from the hub.

use super::*;

/// The dedupe window of a hub that does not announce one (1.0): the protocol default (§5).
const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// How much sooner than the hub's dedupe window a client stops resending to a new session:
/// room for the time between the hub storing a message and the client's first send being
/// stamped, and for the clock estimate's error.
const RESEND_MARGIN: Duration = Duration::from_secs(10);

impl Client {
    pub(super) fn handle_frame(&mut self, now: Time, frame: ServerFrame) {
        let handshaking = self
            .transport
            .as_ref()
            .is_some_and(|t| !matches!(t.phase, Phase::Connected { .. }));
        match frame {
            ServerFrame::Connected { .. } if handshaking => self.on_connected(now, frame),
            ServerFrame::Error { error } => self.fail(error),
            ServerFrame::Disconnect { error } => self.lose_transport(now, error, true),
            _ if handshaking => {
                let error = ErrorInfo::new(
                    ErrorCode::UnexpectedFrame,
                    format!("{} before connected", wire::Frame::kind(&frame)),
                );
                self.lose_transport(now, error, true);
            }
            ServerFrame::Connected { .. } => {
                let error = ErrorInfo::new(ErrorCode::UnexpectedFrame, "a second connected frame");
                self.lose_transport(now, error, true);
            }
            ServerFrame::Authed {
                token_expires_at_ms,
                error,
            } => {
                self.tokens.auth_deadline = None;
                match error {
                    Some(error) => self.emit(Event::Update { reason: error }),
                    None => {
                        if let Some(expires_at) = token_expires_at_ms {
                            self.plan_renewal(now, expires_at, self.server_now_estimate(now));
                        }
                    }
                }
            }
            ServerFrame::Attached {
                channel,
                position,
                continuity,
                error,
            } => {
                let mut events = Vec::new();
                self.channels
                    .on_attached(channel, position, continuity, error, &mut events);
                self.emit_all(events);
            }
            ServerFrame::Detached { channel, error } => {
                let mut events = Vec::new();
                self.channels.on_detached(channel, error, &mut events);
                self.emit_all(events);
            }
            ServerFrame::Ack { serial, count } => {
                let resolved = self.publishes.resolve_range(serial, count);
                self.resolve(resolved, &Ok(()));
            }
            ServerFrame::Nack {
                serial,
                count,
                error,
            } => {
                let resolved = self.publishes.resolve_range(serial, count);
                self.resolve(resolved, &Err(error));
            }
            ServerFrame::Message { channel, message } => {
                let mut events = Vec::new();
                self.channels.on_message(channel, message, &mut events);
                self.emit_all(events);
            }
            ServerFrame::OwnMessage { channel, position } => {
                let mut events = Vec::new();
                self.channels.on_own_message(channel, position, &mut events);
                self.emit_all(events);
            }
            ServerFrame::HistoryPage {
                request_id,
                channel,
                messages,
                next,
                error,
            } => {
                let id = RequestId(request_id);
                if self.history.remove(&id).is_some() {
                    let result = match error {
                        Some(error) => Err(error),
                        None => Ok(HistoryPage { messages, next }),
                    };
                    self.emit(Event::HistoryPage {
                        id,
                        channel,
                        result,
                    });
                }
            }
            ServerFrame::Pong { id } => {
                let id = PingId(id);
                if let Some(ping) = self.pings.remove(&id) {
                    self.emit(Event::Pong {
                        id,
                        result: Ok(now.since(ping.sent)),
                    });
                }
            }
            ServerFrame::Heartbeat => {}
            ServerFrame::Closed => {
                if self.state == ConnectionState::Closing {
                    self.finish_close(ErrorInfo::new(ErrorCode::ConnectionClosed, "closed"));
                }
            }
        }
    }

    pub(super) fn emit_all(&mut self, events: Vec<Event>) {
        for event in events {
            self.emit(event);
        }
    }

    /// The hub's wall clock now, as last learned (only differences of it are ever used).
    pub(super) fn server_now_estimate(&self, now: Time) -> u64 {
        self.server_clock.map_or(0, |(at, server_ms)| {
            server_ms.saturating_add(now.since(at).as_millis() as u64)
        })
    }

    pub(super) fn plan_renewal(&mut self, now: Time, expires_at_ms: u64, server_now_ms: u64) {
        let remaining = Duration::from_millis(expires_at_ms.saturating_sub(server_now_ms));
        self.tokens.expires = Some(now.saturating_add(remaining));
        let by_fraction = remaining * self.config.renew_at_percent.min(100) / 100;
        let by_margin = remaining.saturating_sub(self.config.renew_before_expiry);
        // Never sooner than half the lifetime: a token shorter than the margin would
        // otherwise be renewed at once, again and again.
        let renew_after = by_fraction.min(by_margin).max(remaining / 2);
        self.tokens.renew_at = Some(now.saturating_add(renew_after));
    }

    /// A new session: a publish first sent longer ago than the hub's dedupe window (minus
    /// [`RESEND_MARGIN`]) is not resent — the hub may have stored it and forgotten its id, so a
    /// resend could store it twice. It fails with `publish_outcome_unknown` (§6.5).
    fn forget_outlived_publishes(&mut self, server_time_ms: u64, dedupe_window_ms: Option<u32>) {
        #[cfg(feature = "sabotage")]
        if self.sabotage_resends_past_dedupe_window() {
            return;
        }
        let window = dedupe_window_ms.map_or(DEFAULT_DEDUPE_WINDOW, |ms| {
            Duration::from_millis(u64::from(ms))
        });
        let limit = window.saturating_sub(RESEND_MARGIN).as_millis() as u64;
        let outlived = self.publishes.remove_where(|p| {
            p.first_sent_ms
                .is_some_and(|sent| server_time_ms.saturating_sub(sent) >= limit)
        });
        self.resolve(
            outlived,
            &Err(ErrorInfo::new(
                ErrorCode::PublishOutcomeUnknown,
                format!(
                    "first sent more than {} s ago and the session was lost: \
                     the hub may have stored it; it is not sent again",
                    limit / 1000
                ),
            )),
        );
    }

    pub(super) fn on_connected(&mut self, now: Time, frame: ServerFrame) {
        let ServerFrame::Connected {
            session,
            resumed,
            server_time_ms,
            heartbeat_interval_ms,
            session_ttl_ms,
            token_expires_at_ms,
            limits,
            error,
            dedupe_window_ms,
            ..
        } = frame
        else {
            return;
        };
        let Some(transport) = self.transport.as_mut() else {
            return;
        };
        transport.phase = Phase::Connected { since: now };
        let asked_resume = transport.asked_resume;
        let to_usize = |value: u32| usize::try_from(value).unwrap_or(usize::MAX);
        self.session = Some(Session {
            resume: session,
            heartbeat_interval: Duration::from_millis(u64::from(heartbeat_interval_ms))
                .clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL),
            ttl: Duration::from_millis(u64::from(session_ttl_ms)),
            limits: Limits {
                max_frame_size: to_usize(limits.max_frame_size).max(wire::MIN_FRAME_SIZE),
                max_channel_name_len: to_usize(limits.max_channel_name_len),
                max_messages_per_publish: to_usize(limits.max_messages_per_publish),
            },
        });
        self.server_clock = Some((now, server_time_ms));
        self.retry_at = None;
        self.suspend_at = None;
        self.suspended = false;
        self.tokens.stale_in_a_row = 0;
        self.tokens.fresh = false;
        match token_expires_at_ms {
            Some(expires_at) if self.config.auth == Auth::Token => {
                self.plan_renewal(now, expires_at, server_time_ms);
            }
            _ => {
                self.tokens.expires = None;
                self.tokens.renew_at = None;
            }
        }
        self.set_state(ConnectionState::Connected, None);
        if !resumed {
            if asked_resume {
                let reason = error.unwrap_or_else(|| ErrorInfo::from(ErrorCode::SessionNotFound));
                self.emit(Event::Update { reason });
            }
            self.forget_outlived_publishes(server_time_ms, dedupe_window_ms);
            self.publishes.restart_serials();
        }
        // Publishes queued before the hub's limits were known may not fit them.
        let limits = self.outgoing_limits();
        let too_large = self.publishes.remove_where(|p| {
            p.serial.is_none() && check_publish_fits(&p.channel, &p.messages, &limits).is_err()
        });
        self.resolve(
            too_large,
            &Err(ErrorInfo::new(
                ErrorCode::FrameTooLarge,
                "the publish does not fit the hub's limits",
            )),
        );
        let deadline = now.saturating_add(self.config.request_timeout);
        let mut events = Vec::new();
        let attaches = self.channels.on_connected(deadline, &mut events);
        self.emit_all(events);
        for frame in attaches {
            self.send(now, &frame);
        }
        let now_ms = self.server_now_estimate(now);
        for frame in self.publishes.frames_for_new_transport(now_ms) {
            self.send(now, &frame);
        }
        if self.tokens.renew_at.is_some_and(|at| at <= now) {
            self.tokens.renew_at = None;
            self.request_token(now, TokenReason::Renewal);
        }
    }
}
