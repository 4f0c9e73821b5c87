//! Recovery across a process restart: `docs/protocol.md` §6.7.

use serde::{Deserialize, Serialize};

use crate::wire::{ChannelName, Message, Position, ResumeToken};

/// Everything a new process needs to continue a client's session as if only the network
/// had dropped: the session to resume, the message id source, channel positions and the
/// publishes not yet acknowledged. Tokens are not included: the new client asks for one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSnapshot {
    /// The session to resume.
    pub session: Option<ResumeToken>,
    /// The prefix of the client's message ids.
    pub instance_id: String,
    /// The next message id counter.
    pub message_counter: u64,
    /// The next publish serial of the session.
    pub next_serial: u64,
    /// Attached channels and their last delivered positions.
    pub channels: Vec<(ChannelName, Option<Position>)>,
    /// Publishes not yet resolved, in order.
    pub publishes: Vec<SnapshotPublish>,
}

/// A publish not yet resolved when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPublish {
    /// Its serial on the session, if it was sent.
    pub serial: Option<u64>,
    /// The channel.
    pub channel: ChannelName,
    /// The messages, with their ids.
    pub messages: Vec<Message>,
    /// When it was first sent, on the hub's wall clock (Unix ms) as the client estimated it;
    /// `None` if never sent. A restored client does not resend it to a new session if that
    /// was longer ago than the hub's dedupe window (§6.5, §6.7).
    #[serde(default)]
    pub first_sent_ms: Option<u64>,
}
