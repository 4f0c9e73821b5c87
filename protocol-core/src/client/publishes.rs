//! Publishes waiting for their acknowledgement: `docs/protocol.md` §6.5.

use std::collections::VecDeque;

use super::event::PublishId;
use crate::error::{ErrorCode, ErrorInfo};
use crate::wire::{ChannelName, ClientFrame, Message};

/// One unresolved publish.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) id: PublishId,
    pub(crate) channel: ChannelName,
    pub(crate) messages: Vec<Message>,
    /// The serial on the current session, once sent.
    pub(crate) serial: Option<u64>,
    /// When it was first sent, on the hub's wall clock as the client estimates it (Unix ms):
    /// a publish first sent longer ago than the hub's dedupe window is not resent to a new
    /// session (§6.5).
    pub(crate) first_sent_ms: Option<u64>,
}

/// Unresolved publishes in publish order. Those with a serial form a prefix of the queue,
/// with consecutive serials: serials are given in queue order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Publishes {
    queue: VecDeque<Pending>,
    next_serial: u64,
    next_id: u64,
}

impl Publishes {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn next_serial(&self) -> u64 {
        self.next_serial
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.queue.iter()
    }

    /// Adds a publish (the caller checked the bounds).
    pub(crate) fn push(&mut self, channel: ChannelName, messages: Vec<Message>) -> PublishId {
        let id = PublishId(self.next_id);
        self.next_id += 1;
        self.queue.push_back(Pending {
            id,
            channel,
            messages,
            serial: None,
            first_sent_ms: None,
        });
        id
    }

    /// Restores a publish from a snapshot with the serial it had.
    pub(crate) fn restore(
        &mut self,
        channel: ChannelName,
        messages: Vec<Message>,
        serial: Option<u64>,
        first_sent_ms: Option<u64>,
    ) -> PublishId {
        let id = self.push(channel, messages);
        if let Some(pending) = self.queue.back_mut() {
            pending.serial = serial;
            pending.first_sent_ms = first_sent_ms;
        }
        id
    }

    /// Restores the session's next serial from a snapshot, whether or not publishes are
    /// pending: a resumed session must not reuse a serial the hub has answered.
    pub(crate) fn restore_next_serial(&mut self, next_serial: u64) {
        self.next_serial = next_serial;
    }

    /// A new session: serials restart at 0 and every publish will be sent again.
    pub(crate) fn restart_serials(&mut self) {
        self.next_serial = 0;
        for pending in &mut self.queue {
            pending.serial = None;
        }
    }

    /// The frames to send on a fresh transport: publishes that already have a serial are
    /// sent again with it (resumed session), then the others get the next serials. `now_ms`
    /// (the hub's clock, estimated) stamps those sent for the first time.
    pub(crate) fn frames_for_new_transport(&mut self, now_ms: u64) -> Vec<ClientFrame> {
        let mut frames = Vec::with_capacity(self.queue.len());
        for pending in &mut self.queue {
            pending.first_sent_ms.get_or_insert(now_ms);
            let serial = *pending.serial.get_or_insert_with(|| {
                let serial = self.next_serial;
                self.next_serial += 1;
                serial
            });
            frames.push(frame(pending, serial));
        }
        frames
    }

    /// Gives the newest publish its serial and returns its frame (sent at once when
    /// connected), stamped first sent at `now_ms`.
    pub(crate) fn send_newest(&mut self, now_ms: u64) -> Option<ClientFrame> {
        let pending = self.queue.back_mut()?;
        pending.first_sent_ms.get_or_insert(now_ms);
        let serial = self.next_serial;
        self.next_serial += 1;
        pending.serial = Some(serial);
        Some(frame(pending, serial))
    }

    /// Removes and returns the publishes whose serials are in `serial .. serial + count`.
    pub(crate) fn resolve_range(&mut self, serial: u64, count: u32) -> Vec<PublishId> {
        let end = serial.saturating_add(u64::from(count));
        let in_range = |pending: &Pending| pending.serial.is_some_and(|s| s >= serial && s < end);
        let mut resolved = Vec::new();
        while self.queue.front().is_some_and(in_range) {
            if let Some(pending) = self.queue.pop_front() {
                resolved.push(pending.id);
            }
        }
        if self.queue.iter().any(in_range) {
            // Answers normally come in serial order; keep going for any other order.
            self.queue.retain(|pending| {
                if in_range(pending) {
                    resolved.push(pending.id);
                    false
                } else {
                    true
                }
            });
        }
        resolved
    }

    /// Removes and returns every publish matching `predicate`.
    pub(crate) fn remove_where(
        &mut self,
        mut predicate: impl FnMut(&Pending) -> bool,
    ) -> Vec<PublishId> {
        let mut removed = Vec::new();
        self.queue.retain(|pending| {
            if predicate(pending) {
                removed.push(pending.id);
                false
            } else {
                true
            }
        });
        removed
    }

    /// Removes and returns every publish.
    pub(crate) fn drain_all(&mut self) -> Vec<PublishId> {
        self.queue.drain(..).map(|pending| pending.id).collect()
    }
}

fn frame(pending: &Pending, serial: u64) -> ClientFrame {
    ClientFrame::Publish {
        serial,
        channel: pending.channel.clone(),
        messages: pending.messages.clone(),
    }
}

/// The error a publish fails with when the queue is full.
pub(crate) fn queue_full(max: usize) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::PublishQueueFull,
        format!("{max} publishes are already waiting for their acknowledgement"),
    )
}
