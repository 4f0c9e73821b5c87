//! What the hub does when a deadline comes due: first frame, idle, heartbeat, token
//! expiry, session expiry, channel trimming.

use super::*;

impl Hub {
    pub(super) fn fire(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::FirstFrame(id) => {
                if self
                    .connections
                    .get(&id)
                    .is_some_and(|c| c.session.is_none())
                {
                    let error =
                        ErrorInfo::new(ErrorCode::FirstFrameTimeout, "no connect frame in time");
                    self.close_with_disconnect(now, id, error);
                }
            }
            Timer::Idle(id) => {
                let Some((last, interval)) = self.connection_timing(id) else {
                    return;
                };
                let deadline = last.saturating_add(interval + self.config.idle_grace);
                if deadline <= now {
                    let error =
                        ErrorInfo::new(ErrorCode::IdleTimeout, "nothing received from the client");
                    self.close_with_disconnect(now, id, error);
                } else {
                    self.timers.set(deadline, Timer::Idle(id));
                }
            }
            Timer::Heartbeat(id) => {
                let Some(conn) = self.connections.get(&id) else {
                    return;
                };
                let Some((_, interval)) = self.connection_timing(id) else {
                    return;
                };
                let due = conn.last_sent.saturating_add(interval);
                if due <= now {
                    self.send(now, id, &ServerFrame::Heartbeat);
                    self.timers
                        .set(now.saturating_add(interval), Timer::Heartbeat(id));
                } else {
                    self.timers.set(due, Timer::Heartbeat(id));
                }
            }
            Timer::TokenExpiry(key) => {
                // The one expiry timer of the session: every token change moved it.
                self.check_token(now, key);
                if self
                    .sessions
                    .get(&key)
                    .is_some_and(|session| session.connection.is_some())
                {
                    // Not expired yet by the wall clock (it moved): look again later.
                    self.schedule_token_expiry(now, key);
                }
            }
            Timer::SessionExpiry(key) => {
                let expired = self.sessions.get(&key).is_some_and(|s| {
                    s.connection.is_none()
                        && s.detached_at
                            .is_some_and(|at| at.saturating_add(self.config.session_ttl) <= now)
                });
                if expired {
                    if let Some(session) = self.remove_session(key) {
                        self.emit(HubEvent::SessionExpired { session });
                    }
                }
            }
            Timer::Hook(id) => self.hook_timed_out(now, id),
            Timer::Trim(key) => {
                let retention = self.config.retention_age;
                let window = self.config.dedupe_window;
                let next = self
                    .channels
                    .get_mut(&key)
                    .and_then(|channel| channel.trim(now, retention, window));
                match next {
                    Some(at) => self.schedule_trim(key, at),
                    None => self.free_if_idle(key),
                }
            }
        }
    }

    /// Sets the channel's trim deadline unless it has one already (trimming then looks
    /// for the next one itself).
    pub(super) fn schedule_trim(&mut self, key: ChannelKey, at: Time) {
        if self.channels.contains_key(&key) && self.timers.deadline(Timer::Trim(key)).is_none() {
            self.timers.set(at, Timer::Trim(key));
        }
    }

    /// Last receive time and heartbeat interval of a connection with a session.
    pub(super) fn connection_timing(&self, id: ConnectionId) -> Option<(Time, Duration)> {
        let conn = self.connections.get(&id)?;
        let session = self.sessions.get(&conn.session?)?;
        Some((conn.last_received, session.heartbeat_interval))
    }

    /// Moves the session's one expiry timer to its token's `exp` + leeway (by the wall
    /// clock of the last input), or removes it when the session has no token expiry.
    pub(super) fn schedule_token_expiry(&mut self, now: Time, key: SessionKey) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let Some(expires_at_ms) = session.identity.expires_at_ms else {
            self.timers.cancel(Timer::TokenExpiry(key));
            return;
        };
        let leeway_ms = self.config.tokens.leeway.min(auth::MAX_LEEWAY).as_millis() as u64;
        let remaining = expires_at_ms
            .saturating_add(leeway_ms)
            .saturating_sub(self.unix_ms);
        self.timers.set(
            now.saturating_add(Duration::from_millis(remaining)),
            Timer::TokenExpiry(key),
        );
    }

    /// Disconnects the session's transport if its token expired by the wall clock.
    pub(super) fn check_token(&mut self, now: Time, key: SessionKey) -> bool {
        let Some(session) = self.sessions.get(&key) else {
            return false;
        };
        let leeway_ms = self.config.tokens.leeway.min(auth::MAX_LEEWAY).as_millis() as u64;
        let expired = session
            .identity
            .expires_at_ms
            .is_some_and(|at| at.saturating_add(leeway_ms) <= self.unix_ms);
        if let (true, Some(connection)) = (expired, session.connection) {
            let error =
                ErrorInfo::new(ErrorCode::TokenExpired, "the token expired without renewal");
            self.close_with_disconnect(now, connection, error);
            return true;
        }
        false
    }
}
