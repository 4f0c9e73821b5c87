//! Frames from clients, connecting, resuming and re-authenticating sessions.

use super::*;

impl Hub {
    pub(super) fn protocol_error(
        &mut self,
        now: Time,
        connection: ConnectionId,
        code: ErrorCode,
        text: &str,
    ) {
        let error = ErrorInfo::new(code, text);
        self.close_with_error(now, connection, error);
    }

    pub(super) fn handle_frame(
        &mut self,
        now: Time,
        connection: ConnectionId,
        frame: ClientFrame,
        answers: &mut Vec<Answer>,
    ) {
        let session = self.connections.get(&connection).and_then(|c| c.session);
        let Some(key) = session else {
            match frame {
                ClientFrame::Connect {
                    credentials,
                    client_id,
                    resume,
                    heartbeat_interval_ms,
                    options,
                    version,
                    ..
                } => {
                    if let Some(state) = self.connections.get_mut(&connection) {
                        state.echo = options.unwrap_or_default().echo;
                        state.minor = version.minor;
                    }
                    self.on_connect(
                        now,
                        connection,
                        credentials,
                        client_id,
                        resume,
                        heartbeat_interval_ms,
                    )
                }
                other => self.protocol_error(
                    now,
                    connection,
                    ErrorCode::UnexpectedFrame,
                    &format!("{} before connect", wire::Frame::kind(&other)),
                ),
            }
            return;
        };
        if self.check_token(now, key) {
            return;
        }
        match frame {
            ClientFrame::Connect { .. } => self.protocol_error(
                now,
                connection,
                ErrorCode::UnexpectedFrame,
                "a second connect",
            ),
            ClientFrame::Auth { token } => self.on_auth(now, connection, key, &token),
            frame @ (ClientFrame::Attach { .. } | ClientFrame::Detach { .. }) => {
                self.on_channel_request(now, connection, key, frame)
            }
            ClientFrame::Publish {
                serial,
                channel,
                messages,
            } => self.on_publish(now, connection, key, serial, channel, messages, answers),
            ClientFrame::HistoryRequest {
                request_id,
                channel,
                query,
            } => self.on_history(now, connection, key, request_id, channel, query),
            ClientFrame::Ping { id } => self.send(now, connection, &ServerFrame::Pong { id }),
            ClientFrame::Heartbeat => {}
            ClientFrame::Close => {
                self.send(now, connection, &ServerFrame::Closed);
                let reason = ErrorInfo::new(ErrorCode::ConnectionClosed, "closed by the client");
                self.close(now, connection, None, reason);
                self.remove_session(key);
            }
        }
    }

    pub(super) fn on_connect(
        &mut self,
        now: Time,
        connection: ConnectionId,
        credentials: Credentials,
        client_id: Option<wire::ClientId>,
        resume: Option<ResumeToken>,
        heartbeat_interval_ms: Option<u32>,
    ) {
        let mut token_info = None;
        let identity = match &credentials {
            Credentials::ApiKey { name, secret } => {
                auth::verify_api_key(&self.config.keys, name, secret, client_id.as_ref())
            }
            Credentials::Token { token } => auth::verify_token_with_info(
                &self.config.keys,
                &self.config.tokens,
                token,
                self.unix_ms,
            )
            .and_then(|(identity, info)| match &client_id {
                Some(asked) if *asked != identity.client_id => Err(ErrorInfo::new(
                    ErrorCode::ClientIdMismatch,
                    "the connect frame names another client id than the token",
                )),
                _ => Ok((identity, info)),
            })
            .and_then(|(identity, info)| {
                if self.revoked(&identity.client_id, &info) {
                    return Err(ErrorInfo::new(
                        ErrorCode::TokenRevoked,
                        "the token was revoked: get a new one",
                    ));
                }
                token_info = Some(info);
                Ok(identity)
            }),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(error) => {
                // An expired or revoked token is worth a renewal and a retry; anything else
                // is final.
                let frame = if matches!(
                    error.code,
                    ErrorCode::TokenExpired | ErrorCode::TokenRevoked
                ) {
                    ServerFrame::Disconnect {
                        error: error.clone(),
                    }
                } else {
                    ServerFrame::Error {
                        error: error.clone(),
                    }
                };
                self.close(now, connection, Some(frame), error);
                return;
            }
        };
        let heartbeat_interval = heartbeat_interval_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .unwrap_or(self.config.heartbeat_interval)
            // Not `clamp`: it panics when the bounds are crossed (a configuration
            // `validate` refuses, but the hub never panics on its configuration).
            .min(self.config.max_heartbeat_interval)
            .max(self.config.min_heartbeat_interval);

        let mut resume_error = None;
        let resumed = resume.and_then(|token| {
            let key = self.session_ids.get(&token.session_id).copied();
            let usable = key
                .and_then(|key| self.sessions.get(&key).map(|s| (key, s)))
                .filter(|(_, s)| {
                    auth::constant_time_eq(&s.secret.0, &token.secret.0)
                        && s.identity.client_id == identity.client_id
                });
            if usable.is_none() {
                resume_error = Some(ErrorInfo::new(
                    ErrorCode::SessionNotFound,
                    "session unknown or expired",
                ));
            }
            usable.map(|(key, _)| key)
        });
        match (resumed, &resume_error) {
            (Some(_), _) => self.totals.resumes += 1,
            (None, Some(_)) => self.totals.resumes_refused += 1,
            (None, None) => {}
        }
        let key = match resumed {
            Some(key) => {
                let old = self.sessions.get(&key).and_then(|s| s.connection);
                if let Some(old) = old {
                    let error = ErrorInfo::new(
                        ErrorCode::SessionReplaced,
                        "the session was resumed elsewhere",
                    );
                    self.close_with_disconnect(now, old, error);
                }
                if let Some(at) = self.sessions.get(&key).and_then(|s| s.detached_at) {
                    self.detached.remove(&(at, key));
                }
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.identity = identity;
                    session.heartbeat_interval = heartbeat_interval;
                    session.detached_at = None;
                    session.connection = Some(connection);
                }
                self.timers.cancel(Timer::SessionExpiry(key));
                key
            }
            None => self.new_session(identity, heartbeat_interval, connection),
        };
        self.save_session(key);
        if let Some(session) = self.sessions.get_mut(&key) {
            session.token = token_info;
        }
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.session = Some(key);
        }
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let client_minor = self.connections.get(&connection).map_or(0, |c| c.minor);
        let frame = ServerFrame::Connected {
            session: ResumeToken {
                session_id: session.id,
                secret: session.secret,
            },
            client_id: session.identity.client_id.clone(),
            resumed: resumed.is_some(),
            server_time_ms: self.unix_ms,
            heartbeat_interval_ms: u32::try_from(heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            session_ttl_ms: u32::try_from(self.config.session_ttl.as_millis()).unwrap_or(u32::MAX),
            token_expires_at_ms: session.identity.expires_at_ms,
            limits: self.session_limits(),
            error: resume_error,
            // Appended in 1.1: only for clients that know it (§3).
            dedupe_window_ms: (client_minor >= 1)
                .then(|| u32::try_from(self.config.dedupe_window.as_millis()).unwrap_or(u32::MAX)),
        };
        let event = HubEvent::Connected {
            connection,
            session: session.id,
            client_id: session.identity.client_id.clone(),
            resumed: resumed.is_some(),
        };
        self.send(now, connection, &frame);
        self.emit(event);
        self.timers.cancel(Timer::FirstFrame(connection));
        self.timers.set(
            now.saturating_add(heartbeat_interval),
            Timer::Heartbeat(connection),
        );
        self.timers.set(
            now.saturating_add(heartbeat_interval + self.config.idle_grace),
            Timer::Idle(connection),
        );
        self.schedule_token_expiry(now, key);
    }

    pub(super) fn session_limits(&self) -> SessionLimits {
        let limits = &self.config.limits;
        let to_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        SessionLimits {
            max_frame_size: to_u32(limits.max_frame_size),
            max_channel_name_len: to_u32(limits.max_channel_name_len),
            max_messages_per_publish: to_u32(limits.max_messages_per_publish),
            max_channels: to_u32(self.config.max_channels_per_session),
        }
    }

    pub(super) fn new_session(
        &mut self,
        identity: Identity,
        heartbeat_interval: Duration,
        connection: ConnectionId,
    ) -> SessionKey {
        if self.sessions.len() >= self.config.max_sessions {
            // Make room: the session dropped longest ago goes first.
            if let Some((_, oldest)) = self.detached.pop_first() {
                if let Some(session) = self.remove_session(oldest) {
                    self.emit(HubEvent::SessionExpired { session });
                }
            }
        }
        let key = SessionKey(self.next_session);
        self.next_session += 1;
        let id = loop {
            let candidate = SessionId(self.rng.next_u64());
            // Id 0 is the server-side API's (its publishes carry it to the store).
            if candidate != super::api::API_SESSION_ID && !self.session_ids.contains_key(&candidate)
            {
                break candidate;
            }
        };
        let mut secret = [0u8; 16];
        self.rng.fill(&mut secret);
        self.session_ids.insert(id, key);
        self.sessions.insert(
            key,
            Session {
                id,
                secret: ResumeSecret(secret),
                identity,
                next_serial: 0,
                record: Default::default(),
                connection: Some(connection),
                subscriptions: BTreeMap::new(),
                heartbeat_interval,
                detached_at: None,
                creations: CreationRate::default(),
                queued: VecDeque::new(),
                hooked: None,
                gated: VecDeque::new(),
                gated_bytes: 0,
                restored: false,
                token: None,
            },
        );
        key
    }

    pub(super) fn allows(
        &self,
        key: SessionKey,
        channel: &ChannelName,
        operation: Operation,
    ) -> bool {
        self.sessions
            .get(&key)
            .is_some_and(|s| s.identity.capabilities.allows(channel, operation))
    }

    pub(super) fn on_auth(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        token: &str,
    ) {
        let verified = auth::verify_token_with_info(
            &self.config.keys,
            &self.config.tokens,
            token,
            self.unix_ms,
        );
        let current = self
            .sessions
            .get(&key)
            .map(|s| s.identity.client_id.clone());
        let mut token_info = None;
        let outcome = verified.and_then(|(identity, info)| {
            if Some(&identity.client_id) != current.as_ref() {
                Err(ErrorInfo::new(
                    ErrorCode::ClientIdMismatch,
                    "a renewal may not change the client id",
                ))
            } else if self.revoked(&identity.client_id, &info) {
                Err(ErrorInfo::new(
                    ErrorCode::TokenRevoked,
                    "the token was revoked: get a new one",
                ))
            } else {
                token_info = Some(info);
                Ok(identity)
            }
        });
        match outcome {
            Err(error) => self.send(
                now,
                connection,
                &ServerFrame::Authed {
                    token_expires_at_ms: None,
                    error: Some(error),
                },
            ),
            Ok(identity) => {
                let expires = identity.expires_at_ms;
                let client_id = identity.client_id.clone();
                let mut revoked = Vec::new();
                if let Some(at) = self.sessions.get(&key).and_then(|s| s.detached_at) {
                    self.detached.remove(&(at, key));
                }
                if let Some(session) = self.sessions.get_mut(&key) {
                    session.identity = identity;
                    session.token = token_info;
                    for channel in session.subscriptions.keys() {
                        if let Some(state) = self.channels.get(channel) {
                            if !session
                                .identity
                                .capabilities
                                .allows(&state.name, Operation::Subscribe)
                            {
                                revoked.push(*channel);
                            }
                        }
                    }
                    for channel in &revoked {
                        session.subscriptions.remove(channel);
                    }
                }
                self.send(
                    now,
                    connection,
                    &ServerFrame::Authed {
                        token_expires_at_ms: expires,
                        error: None,
                    },
                );
                for channel in revoked {
                    let name = self.channels.get(&channel).map(|c| c.name.clone());
                    self.unsubscribe(channel, key);
                    if let Some(name) = name {
                        let error = ErrorInfo::new(
                            ErrorCode::Forbidden,
                            "the renewed token does not allow subscribe",
                        );
                        self.send(
                            now,
                            connection,
                            &ServerFrame::Detached {
                                channel: name,
                                error: Some(error),
                            },
                        );
                    }
                }
                self.schedule_token_expiry(now, key);
                self.save_session(key);
                self.emit(HubEvent::Reauthenticated {
                    connection,
                    client_id,
                });
            }
        }
    }
}
