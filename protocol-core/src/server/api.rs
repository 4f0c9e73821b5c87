//! The server-side API (`docs/protocol.md` §7.8): what the application's backend asks of the
//! hub without a client connection — publish, history, the channels held — as inputs with
//! a request id, answered as [`HubOutput::Api`] outputs (at once, or once the store
//! answered). Sans-IO like the rest of the hub; the adapters carry it over HTTP.

use serde::{Deserialize, Serialize};

use super::auth::{Revocation, TokenInfo};
use super::delivery::Published;
use super::{ChannelKey, Hub, HubOutput, Lookup, PendingRead, ReadFor, SessionKey};
use crate::error::{ErrorCode, ErrorInfo};
use crate::time::Timestamp;
use crate::wire::{
    ChannelMessage, ChannelName, ClientId, HistoryQuery, Message, MessageId, Position, SessionId,
};

/// Identifies one API request; chosen by the caller, echoed in its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiRequestId(pub u64);

/// A request of the application's backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// Publish `messages` to `channel` as `publisher`: stored, fanned out and in history like
    /// a client's publish, deduplicated by message id in the same window (§7.4), with no
    /// capability check (the backend is trusted). 1 to the hub's `max_messages_per_publish`
    /// messages.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The messages, in order.
        messages: Vec<Message>,
        /// The client id subscribers see as the publisher.
        publisher: ClientId,
    },
    /// A page of a channel's history (§7.5).
    History {
        /// The channel.
        channel: ChannelName,
        /// Which page.
        query: HistoryQuery,
    },
    /// The channels the hub holds now.
    Channels,
    /// Revoke tokens (§8): sessions holding one are disconnected with `token_revoked`, and
    /// such tokens are refused until the revocation ends. Kept in the store, if any.
    Revoke(Revocation),
    /// End the connections of `client_id` with `disconnected_by_server` (§7.8). With
    /// `reconnect: false` they get an `error` frame and their sessions are freed, live or
    /// waiting for resume (the client stops; what it had not acknowledged is lost to it);
    /// with `reconnect: true` a `disconnect` frame, and the sessions stay for resume (to move
    /// clients elsewhere). Nothing stops the client connecting again later: revoke its tokens
    /// for that.
    Disconnect {
        /// Whose connections.
        client_id: ClientId,
        /// Whether the client should reconnect and resume.
        reconnect: bool,
    },
}

/// One published message's fate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedMessage {
    /// The message's id.
    pub id: MessageId,
    /// Where it was stored; `None` for a duplicate of a message stored within the dedupe
    /// window (not stored again; the earlier copy stands).
    pub position: Option<Position>,
}

/// A channel the hub holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    /// Its name.
    pub channel: ChannelName,
    /// Its epoch and last serial.
    pub position: Position,
    /// Sessions attached to it.
    pub subscribers: usize,
}

/// The answer to an [`ApiRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiAnswer {
    /// To `Publish`: each message's position, in order, or why nothing was stored.
    Published(Result<Vec<PublishedMessage>, ErrorInfo>),
    /// To `History`: the messages and the query of the next page, if any.
    History(Result<(Vec<ChannelMessage>, Option<HistoryQuery>), ErrorInfo>),
    /// To `Channels`, by name.
    Channels(Vec<ChannelSummary>),
    /// To `Revoke`: how many connections it closed, or why it was refused
    /// (`limit_exceeded`: the hub holds its maximum of revocations in force).
    Revoked(Result<usize, ErrorInfo>),
    /// To `Disconnect`: how many connections it closed and, with `reconnect: false`, how
    /// many sessions it freed (a session waiting for resume has no connection).
    Disconnected {
        /// Connections closed.
        connections: usize,
        /// Sessions freed.
        sessions: usize,
    },
}

/// The session key API publishes carry (no session has it: keys count up from 0).
pub(super) const API_SESSION: SessionKey = SessionKey(u64::MAX);
/// The session id API publishes carry to the store (no session has it).
pub(super) const API_SESSION_ID: SessionId = SessionId(0);

impl Hub {
    /// Takes a request of the application's backend; its answer comes out as
    /// [`HubOutput::Api`] with the same `id` — now, or (with a store) once the store
    /// answered (§7.8).
    pub fn handle_api(&mut self, now: Timestamp, id: ApiRequestId, request: ApiRequest) {
        let now = self.tick(now);
        let too_long = |channel: &ChannelName| {
            (channel.as_str().len() > self.config.limits.max_channel_name_len).then(|| {
                ErrorInfo::new(
                    ErrorCode::ChannelNameTooLong,
                    "the channel name is longer than the hub takes",
                )
            })
        };
        match &request {
            ApiRequest::Publish { channel, .. } => {
                if let Some(error) = too_long(channel) {
                    return self.answer_api(id, ApiAnswer::Published(Err(error)));
                }
            }
            ApiRequest::History { channel, .. } => {
                if let Some(error) = too_long(channel) {
                    return self.answer_api(id, ApiAnswer::History(Err(error)));
                }
            }
            ApiRequest::Channels | ApiRequest::Revoke(_) | ApiRequest::Disconnect { .. } => {}
        }
        match request {
            ApiRequest::Publish {
                channel,
                messages,
                publisher,
            } => self.api_publish(now, id, channel, messages, publisher),
            ApiRequest::History { channel, query } => self.api_history(id, channel, query),
            ApiRequest::Channels => {
                let channels = self
                    .channels
                    .values()
                    .map(|channel| ChannelSummary {
                        channel: channel.name.clone(),
                        position: channel.position(),
                        subscribers: channel.subscribers.len(),
                    })
                    .collect();
                self.answer_api(id, ApiAnswer::Channels(channels));
            }
            ApiRequest::Revoke(revocation) => {
                let answer = self.revoke(now, revocation);
                self.answer_api(id, ApiAnswer::Revoked(answer));
            }
            ApiRequest::Disconnect {
                client_id,
                reconnect,
            } => {
                let answer = self.disconnect(now, &client_id, reconnect);
                self.answer_api(id, answer);
            }
        }
    }

    /// Ends `client_id`'s connections and, unless it should `reconnect`, its sessions.
    fn disconnect(
        &mut self,
        now: crate::time::Time,
        client_id: &ClientId,
        reconnect: bool,
    ) -> ApiAnswer {
        let sessions: Vec<(SessionKey, Option<super::ConnectionId>)> = self
            .sessions
            .iter()
            .filter(|(_, s)| &s.identity.client_id == client_id)
            .map(|(key, s)| (*key, s.connection))
            .collect();
        let mut connections = 0;
        for (key, connection) in &sessions {
            if let Some(connection) = connection {
                connections += 1;
                if reconnect {
                    let error = ErrorInfo::new(
                        ErrorCode::DisconnectedByServer,
                        "disconnected by the application: reconnect and resume",
                    );
                    self.close_with_disconnect(now, *connection, error);
                } else {
                    let error = ErrorInfo::new(
                        ErrorCode::DisconnectedByServer,
                        "disconnected by the application",
                    );
                    self.close_with_error(now, *connection, error);
                }
            }
            if !reconnect {
                self.remove_session(*key);
            }
        }
        ApiAnswer::Disconnected {
            connections,
            sessions: if reconnect { 0 } else { sessions.len() },
        }
    }

    /// Whether a token of `client_id` with `info` is revoked now; drops ended revocations.
    pub(super) fn revoked(&mut self, client_id: &ClientId, info: &TokenInfo) -> bool {
        let now = self.unix_ms;
        self.revocations.retain(|r| r.expires_at_ms > now);
        self.revocations.iter().any(|r| r.revokes(client_id, info))
    }

    fn revoke(
        &mut self,
        now: crate::time::Time,
        revocation: Revocation,
    ) -> Result<usize, ErrorInfo> {
        let unix_ms = self.unix_ms;
        self.revocations.retain(|r| r.expires_at_ms > unix_ms);
        if revocation.expires_at_ms <= unix_ms {
            return Ok(0);
        }
        if self.revocations.len() >= super::MAX_REVOCATIONS {
            return Err(ErrorInfo::new(
                ErrorCode::LimitExceeded,
                "the server holds its maximum of revocations",
            ));
        }
        let closing: Vec<super::ConnectionId> = self
            .sessions
            .values()
            .filter(|s| {
                s.token
                    .as_ref()
                    .is_some_and(|info| revocation.revokes(&s.identity.client_id, info))
            })
            .filter_map(|s| s.connection)
            .collect();
        self.revocations.push(revocation);
        self.store_request(super::storage::StorageRequest::SaveRevocations(
            self.revocations.clone(),
        ));
        for connection in &closing {
            let error = ErrorInfo::new(
                ErrorCode::TokenRevoked,
                "the token was revoked: get a new one",
            );
            self.close_with_disconnect(now, *connection, error);
        }
        Ok(closing.len())
    }

    fn answer_api(&mut self, id: ApiRequestId, answer: ApiAnswer) {
        self.outputs.push_back(HubOutput::Api { id, answer });
    }

    fn api_publish(
        &mut self,
        now: crate::time::Time,
        id: ApiRequestId,
        channel: ChannelName,
        messages: Vec<Message>,
        publisher: ClientId,
    ) {
        let refuse = |code: ErrorCode, text: &str| {
            ApiAnswer::Published(Err(ErrorInfo::new(code, text.to_owned())))
        };
        if messages.is_empty() {
            let answer = refuse(
                ErrorCode::InvalidMessage,
                "a publish carries at least one message",
            );
            self.totals.publishes_refused += 1;
            return self.answer_api(id, answer);
        }
        if messages
            .iter()
            .any(|m| m.name.len() > crate::wire::MAX_MESSAGE_NAME_LEN)
        {
            let answer = refuse(
                ErrorCode::InvalidMessage,
                "a message name is longer than 256 bytes",
            );
            self.totals.publishes_refused += 1;
            return self.answer_api(id, answer);
        }
        if messages.len() > self.config.limits.max_messages_per_publish {
            let answer = refuse(
                ErrorCode::TooManyMessages,
                "more messages than the hub takes in one publish",
            );
            self.totals.publishes_refused += 1;
            return self.answer_api(id, answer);
        }
        let size = crate::wire::publish_frame_len(&channel, &messages);
        if size > self.config.limits.max_frame_size {
            self.totals.publishes_refused += 1;
            let answer = ApiAnswer::Published(Err(ErrorInfo::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "the publish takes {size} bytes; the hub accepts {} (as a client's)",
                    self.config.limits.max_frame_size
                ),
            )));
            return self.answer_api(id, answer);
        }
        // Which messages are new: not in the channel's dedupe window, nor earlier in this
        // publish. They take the next positions, in order.
        let held = self.channel_keys.get(&channel).copied();
        let mut fresh: Vec<bool> = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let seen = held
                .and_then(|key| self.channels.get(&key))
                .is_some_and(|c| c.is_duplicate(&message.id))
                || messages[..index].iter().any(|m| m.id == message.id);
            fresh.push(!seen);
        }
        let ids: Vec<MessageId> = messages.iter().map(|m| m.id.clone()).collect();
        let published = self.store_new(
            now,
            API_SESSION,
            API_SESSION_ID,
            publisher,
            &channel,
            messages,
            None,
        );
        let Some(channel_key) = self.channel_keys.get(&channel).copied() else {
            let answer = match published {
                Published::Done(Some(error)) => ApiAnswer::Published(Err(error)),
                _ => refuse(ErrorCode::Internal, "the channel is gone"),
            };
            return self.answer_api(id, answer);
        };
        match published {
            Published::Done(Some(error)) => {
                self.totals.publishes_refused += 1;
                self.answer_api(id, ApiAnswer::Published(Err(error)));
            }
            Published::Done(None) => {
                self.totals.acknowledged(std::time::Duration::ZERO);
                let positions = self.positions_of(channel_key, &ids, &fresh, None);
                self.answer_api(id, ApiAnswer::Published(Ok(positions)));
            }
            Published::Pending(request) => {
                let positions = self.positions_of(channel_key, &ids, &fresh, Some(request));
                self.api_appends.insert(request, (id, positions, now));
            }
        }
    }

    /// The positions of a publish's new messages: with a store, those the pending append
    /// gave them; in memory, the channel's last ones.
    fn positions_of(
        &self,
        channel_key: ChannelKey,
        ids: &[MessageId],
        fresh: &[bool],
        request: Option<super::storage::StorageRequestId>,
    ) -> Vec<PublishedMessage> {
        let Some(channel) = self.channels.get(&channel_key) else {
            return Vec::new();
        };
        let epoch = channel.epoch;
        let stored = fresh.iter().filter(|f| **f).count() as u64;
        let mut next = match request.and_then(|r| self.appends.get(&r)) {
            Some(append) => append.messages.first().map_or(0, |m| m.serial),
            None => channel.last + 1 - stored.min(channel.last),
        };
        ids.iter()
            .zip(fresh)
            .map(|(id, fresh)| PublishedMessage {
                id: id.clone(),
                position: fresh.then(|| {
                    let position = Position {
                        epoch,
                        serial: next,
                    };
                    next += 1;
                    position
                }),
            })
            .collect()
    }

    fn api_history(&mut self, id: ApiRequestId, channel: ChannelName, query: HistoryQuery) {
        match self.history_lookup(&channel, &query) {
            Lookup::Page(messages, next) => {
                self.answer_api(id, ApiAnswer::History(Ok((messages, next))));
            }
            Lookup::Refused(error) => self.answer_api(id, ApiAnswer::History(Err(error))),
            Lookup::Read { held, budget } => {
                let request = self.next_request_id();
                self.reads.insert(
                    request,
                    PendingRead {
                        connection: super::ConnectionId(u64::MAX),
                        channel: channel.clone(),
                        purpose: ReadFor::Api { id },
                    },
                );
                self.store_request(super::storage::StorageRequest::Read {
                    id: request,
                    channel,
                    epoch: held.map(|(epoch, _)| epoch),
                    until: held.map(|(_, last)| last),
                    query,
                    max_bytes: budget,
                });
            }
        }
    }

    /// The store answered an append an API publish waited for.
    pub(super) fn api_appended(
        &mut self,
        request: super::storage::StorageRequestId,
        error: Option<&ErrorInfo>,
    ) {
        if let Some((id, positions, received)) = self.api_appends.remove(&request) {
            let answer = match error {
                None => {
                    let waited = self.clock.now().since(received);
                    self.totals.acknowledged(waited);
                    ApiAnswer::Published(Ok(positions))
                }
                Some(error) => {
                    self.totals.publishes_refused += 1;
                    ApiAnswer::Published(Err(error.clone()))
                }
            };
            self.answer_api(id, answer);
        }
    }

    /// The store answered a history read of the API.
    pub(super) fn api_read(
        &mut self,
        id: ApiRequestId,
        answer: Result<(Vec<ChannelMessage>, Option<HistoryQuery>), ErrorInfo>,
    ) {
        self.answer_api(id, ApiAnswer::History(answer));
    }
}
