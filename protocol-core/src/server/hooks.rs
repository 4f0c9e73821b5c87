//! Hooks (`docs/protocol.md` §7.9): the application decides on an attach or a publish of
//! the channels whose namespace asks for it — allow, refuse, or (a publish) replace the
//! messages' names and data. Sans-IO like the rest of the hub: the hub emits
//! [`HubOutput::Hook`] and takes the answer with [`Hub::handle_hook`]; each request has a time
//! bound ([`HubConfig::hook_timeout`](super::HubConfig::hook_timeout)), after which it is
//! refused with `hook_timeout` and a late answer is ignored.
//!
//! Order is kept: attach and detach requests of the channel wait behind an attach that waits
//! for its hook (as behind one waiting for the store, §7.7), and a session's new publishes
//! wait behind its publish that waits for its hook, so every publisher's messages are stored
//! in the order it sent them.

use std::collections::VecDeque;

use super::delivery::Published;
use super::record::Outcome;
use super::storage::StorageRequestId;
use super::{Answer, ConnectionId, Hub, HubOutput, SessionKey, StorageRequest, Timer};
use crate::error::{ErrorCode, ErrorInfo};
use crate::time::{Time, Timestamp};
use crate::wire::{ChannelName, ClientId, Message, Position, ServerFrame, SessionId};

/// Identifies one hook request; its answer names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookId(pub u64);

/// What the application is asked to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookRequest {
    /// May this session attach to this channel? (Its capabilities allow it.)
    Attach {
        /// The session.
        session: SessionId,
        /// Its client id.
        client_id: ClientId,
        /// The channel.
        channel: ChannelName,
    },
    /// May this session publish these messages to this channel, and as they are? (Its
    /// capabilities and the namespace allow it; the messages are new, not a resend.)
    Publish {
        /// The session.
        session: SessionId,
        /// Its client id (the messages' publisher).
        client_id: ClientId,
        /// The channel.
        channel: ChannelName,
        /// The messages, in order.
        messages: Vec<Message>,
    },
}

/// The application's decision on a [`HookRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAnswer {
    /// Go ahead.
    Allow,
    /// Refuse: the attach is answered `detached`, the publish `nack`ed, with `forbidden` and
    /// this text (for people: never put secrets in it).
    Refuse(String),
    /// The application's hook failed (e.g. it panicked): refused with `internal` and this
    /// text.
    Fail(String),
    /// (Publish only.) Store these messages instead: as many as the publish carried, with
    /// the same ids in the same order (dedupe and resends go by id, §7.4) — names and data
    /// may differ. Anything else refuses the publish with `internal`, as does a replacement
    /// whose publish would pass the frame limit. To an attach it means `Allow`.
    Replace(Vec<Message>),
}

/// A hook request waiting for its answer.
#[derive(Debug)]
pub(super) enum PendingHook {
    Attach {
        connection: ConnectionId,
        key: SessionKey,
        channel: ChannelName,
        from: Option<Position>,
    },
    Publish {
        key: SessionKey,
        serial: u64,
        channel: ChannelName,
        messages: Vec<Message>,
        received: Time,
    },
}

/// A new publish frame waiting behind its session's publish that waits for a hook.
#[derive(Debug)]
pub(super) struct Gated {
    pub(super) serial: u64,
    pub(super) channel: ChannelName,
    pub(super) messages: Vec<Message>,
}

impl Hub {
    /// Takes the application's answer to hook request `id` (§7.9). An answer to a request
    /// that timed out, or whose connection or session is gone, is ignored.
    pub fn handle_hook(&mut self, now: Timestamp, id: HookId, answer: HookAnswer) {
        let now = self.tick(now);
        self.settle_hook(now, StorageRequestId(id.0), Ok(answer));
    }

    /// Asks the application about an attach; the channel's later attach and detach requests
    /// on this connection wait behind it.
    pub(super) fn hook_attach(
        &mut self,
        now: Time,
        connection: ConnectionId,
        key: SessionKey,
        channel: ChannelName,
        from: Option<Position>,
    ) {
        let Some(session) = self.sessions.get(&key) else {
            return;
        };
        let request = HookRequest::Attach {
            session: session.id,
            client_id: session.identity.client_id.clone(),
            channel: channel.clone(),
        };
        let id = self.next_request_id();
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.attaching.insert(channel.clone(), VecDeque::new());
            conn.attach_hooks.push(id);
        }
        self.hooks.insert(
            id,
            PendingHook::Attach {
                connection,
                key,
                channel,
                from,
            },
        );
        self.ask_hook(now, id, request);
    }

    /// Asks the application about a new publish (serial `serial`, already counted and
    /// recorded as waiting for `id`); the session's later new publishes wait behind it.
    pub(super) fn hook_publish(
        &mut self,
        now: Time,
        key: SessionKey,
        id: StorageRequestId,
        serial: u64,
        channel: ChannelName,
        messages: Vec<Message>,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.hooked = Some(id);
        let request = HookRequest::Publish {
            session: session.id,
            client_id: session.identity.client_id.clone(),
            channel: channel.clone(),
            messages: messages.clone(),
        };
        self.hooks.insert(
            id,
            PendingHook::Publish {
                key,
                serial,
                channel,
                messages,
                received: now,
            },
        );
        self.ask_hook(now, id, request);
    }

    fn ask_hook(&mut self, now: Time, id: StorageRequestId, request: HookRequest) {
        self.timers.set(
            now.saturating_add(self.config.hook_timeout),
            Timer::Hook(id),
        );
        self.outputs.push_back(HubOutput::Hook {
            id: HookId(id.0),
            request,
        });
    }

    /// The hook's time bound passed: refused with `hook_timeout`, if still waiting.
    pub(super) fn hook_timed_out(&mut self, now: Time, id: StorageRequestId) {
        let error = ErrorInfo::new(
            ErrorCode::HookTimeout,
            "the application's hook did not answer in time",
        );
        self.settle_hook(now, id, Err(error));
    }

    fn settle_hook(
        &mut self,
        now: Time,
        id: StorageRequestId,
        answer: Result<HookAnswer, ErrorInfo>,
    ) {
        let Some(pending) = self.hooks.remove(&id) else {
            return;
        };
        self.timers.cancel(Timer::Hook(id));
        let refusal = |answer: &Result<HookAnswer, ErrorInfo>| match answer {
            Err(error) => Some(error.clone()),
            Ok(HookAnswer::Refuse(text)) => {
                Some(ErrorInfo::new(ErrorCode::Forbidden, text.clone()))
            }
            Ok(HookAnswer::Fail(text)) => Some(ErrorInfo::new(ErrorCode::Internal, text.clone())),
            Ok(_) => None,
        };
        match pending {
            PendingHook::Attach {
                connection,
                key,
                channel,
                from,
            } => {
                if let Some(conn) = self.connections.get_mut(&connection) {
                    conn.attach_hooks.retain(|waiting| *waiting != id);
                }
                let current = self
                    .connections
                    .get(&connection)
                    .is_some_and(|c| c.session == Some(key));
                if !current {
                    return;
                }
                let held = self
                    .connections
                    .get_mut(&connection)
                    .and_then(|c| c.attaching.remove(&channel))
                    .unwrap_or_default();
                match refusal(&answer) {
                    Some(error) => {
                        let frame = ServerFrame::Detached {
                            channel: channel.clone(),
                            error: Some(error),
                        };
                        self.send(now, connection, &frame);
                    }
                    None => self.attach_allowed(now, connection, key, channel.clone(), from),
                }
                // The requests held behind it: if the attach now waits for the store (a
                // replay older than the cache), behind that wait; otherwise taken now.
                let Some(conn) = self.connections.get_mut(&connection) else {
                    return;
                };
                match conn.attaching.get_mut(&channel) {
                    Some(waiting) => waiting.extend(held),
                    None => {
                        conn.attaching.insert(channel.clone(), held);
                        self.release_held(now, connection, key, &channel);
                    }
                }
            }
            PendingHook::Publish {
                key,
                serial,
                channel,
                messages,
                received,
            } => {
                let Some(session) = self.sessions.get_mut(&key) else {
                    return;
                };
                session.hooked = None;
                let messages = match (refusal(&answer), answer) {
                    (Some(error), _) => Err(error),
                    (None, Ok(HookAnswer::Replace(replacement))) => {
                        self.replacement(&channel, &messages, replacement)
                    }
                    (None, _) => Ok(messages),
                };
                let published = match messages {
                    Err(error) => Published::Done(Some(error)),
                    Ok(messages) => self.publish_checked(now, key, &channel, messages, serial),
                };
                self.settle_publish(now, key, serial, id, published, received);
                self.release_gated(now, key);
            }
        }
    }

    /// The hook's replacement for `original`, if the hub takes it.
    fn replacement(
        &self,
        channel: &ChannelName,
        original: &[Message],
        replacement: Vec<Message>,
    ) -> Result<Vec<Message>, ErrorInfo> {
        let same_ids = replacement.len() == original.len()
            && replacement.iter().zip(original).all(|(r, o)| r.id == o.id);
        if !same_ids {
            return Err(ErrorInfo::new(
                ErrorCode::Internal,
                "the application's hook replaced the messages with others than the publish's ids",
            ));
        }
        if replacement
            .iter()
            .any(|m| m.name.len() > crate::wire::MAX_MESSAGE_NAME_LEN)
        {
            return Err(ErrorInfo::new(
                ErrorCode::Internal,
                "the application's hook replaced a message name with one over 256 bytes",
            ));
        }
        let size = crate::wire::publish_frame_len(channel, &replacement);
        if size > self.config.limits.max_frame_size {
            return Err(ErrorInfo::new(
                ErrorCode::Internal,
                format!(
                    "the application's hook replaced the messages with {size} bytes; the hub takes {}",
                    self.config.limits.max_frame_size
                ),
            ));
        }
        Ok(replacement)
    }

    /// Records the outcome of a publish that waited for its hook and answers it (and what
    /// waits behind it), or points what waits on the hook to the store's request.
    fn settle_publish(
        &mut self,
        now: Time,
        key: SessionKey,
        serial: u64,
        hook: StorageRequestId,
        published: Published,
        received: Time,
    ) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        match published {
            Published::Pending(request) => {
                session.record.settle(serial, Outcome::Pending(request));
                for queued in session.queued.iter_mut() {
                    if queued.waiting == Some(hook) {
                        queued.waiting = Some(request);
                    }
                }
                if let Some(append) = self.appends.get_mut(&request) {
                    append.received = received;
                }
            }
            Published::Done(error) => {
                let outcome = match &error {
                    None => Outcome::Acked,
                    Some(error) => Outcome::Refused(error.code),
                };
                session.record.settle(serial, outcome);
                let session_id = session.id;
                let digest = session.record.digest_of(serial);
                match &error {
                    None => self.totals.acknowledged(now.since(received)),
                    Some(_) => self.totals.publishes_refused += 1,
                }
                if let Some(digest) = digest {
                    self.store_request(StorageRequest::RecordPublish(
                        super::storage::PublishOutcome {
                            session: session_id,
                            serial,
                            digest,
                            refused: error.as_ref().map(|e| e.code.as_u32()),
                        },
                    ));
                }
                self.release_answers(now, key, hook, error);
            }
        }
    }

    /// Takes the new publishes that waited behind a hook, in order, until one waits for a
    /// hook again (the rest then wait behind it).
    fn release_gated(&mut self, now: Time, key: SessionKey) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        let gated = std::mem::take(&mut session.gated);
        session.gated_bytes = 0;
        let Some(connection) = session.connection else {
            return;
        };
        let mut answers: Vec<Answer> = Vec::new();
        for publish in gated {
            if self.connections.get(&connection).and_then(|c| c.session) != Some(key) {
                return;
            }
            self.on_publish(
                now,
                connection,
                key,
                publish.serial,
                publish.channel,
                publish.messages,
                &mut answers,
            );
        }
        self.send_answers(now, connection, answers);
    }
}
