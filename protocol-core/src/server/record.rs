//! Each session's record of its recent publishes: the outcome of every serial, so a resend
//! is answered from it — without storing again — however long after it comes (§7.4).

use std::collections::VecDeque;

use super::storage::StorageRequestId;
use crate::error::{ErrorCode, ErrorInfo};
use crate::wire::Message;

/// What the hub did with one publish serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// A digest of the publish's message ids, to refuse a resend that carries others.
    ids: u64,
    outcome: Outcome,
}

/// Where a publish serial stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acknowledged.
    Acked,
    /// Refused with this code.
    Refused(ErrorCode),
    /// Waiting for the store to make it durable (`StorageMode::External`).
    Pending(StorageRequestId),
}

/// The outcomes of a session's last publishes, by serial: at most `capacity` (the oldest
/// forgotten first), 24 bytes each.
#[derive(Clone, Debug, Default)]
pub(crate) struct PublishRecord {
    /// The serial of `entries[0]`.
    first: u64,
    entries: VecDeque<Entry>,
}

/// How a resent serial is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// As the first time: `None` acknowledged, or the refusal.
    Answer(Option<ErrorInfo>),
    /// Not the messages it first carried.
    Different,
    /// Still waiting for the store: answered with the first send's outcome.
    Pending(StorageRequestId),
    /// Too old: its outcome is forgotten.
    Forgotten,
}

impl PublishRecord {
    /// Records the outcome of the new serial `serial`, whose messages have the [`digest`]
    /// `ids`. It is the one after the last, except after a restore that lost the last
    /// outcomes (§7.7): then the older ones are forgotten.
    pub(crate) fn record(&mut self, serial: u64, ids: u64, outcome: Outcome, capacity: usize) {
        if self.next_serial() != Some(serial) {
            self.entries.clear();
            self.first = serial;
        }
        self.entries.push_back(Entry { ids, outcome });
        while self.entries.len() > capacity.max(1) {
            self.entries.pop_front();
            self.first += 1;
        }
    }

    /// The answer to a resend of `serial` (lower than the session's next serial).
    pub(crate) fn resend(&self, serial: u64, messages: &[Message]) -> Resend {
        let Some(entry) = serial
            .checked_sub(self.first)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| self.entries.get(index))
        else {
            return Resend::Forgotten;
        };
        if entry.ids != digest(messages) {
            return Resend::Different;
        }
        match entry.outcome {
            Outcome::Acked => Resend::Answer(None),
            Outcome::Refused(code) => Resend::Answer(Some(ErrorInfo::new(
                code,
                format!("this publish was refused when first sent ({code})"),
            ))),
            Outcome::Pending(request) => Resend::Pending(request),
        }
    }

    /// Settles a pending serial once the store answered (nothing if it is forgotten).
    pub(crate) fn settle(&mut self, serial: u64, outcome: Outcome) {
        if let Some(entry) = serial
            .checked_sub(self.first)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| self.entries.get_mut(index))
        {
            entry.outcome = outcome;
        }
    }

    /// The digest recorded for `serial`, if it is still recorded.
    pub(crate) fn digest_of(&self, serial: u64) -> Option<u64> {
        serial
            .checked_sub(self.first)
            .and_then(|index| usize::try_from(index).ok())
            .and_then(|index| self.entries.get(index))
            .map(|entry| entry.ids)
    }

    /// The serial after the newest recorded one, if any is recorded.
    pub(crate) fn next_serial(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64)
    }
}

/// FNV-1a over the message ids, each followed by a separator: deterministic, cheap, and
/// enough to tell a resend of the same messages from a different publish.
pub(crate) fn digest(messages: &[Message]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for message in messages {
        for byte in message.id.as_str().bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MessageId;

    fn publish(ids: &[&str]) -> Vec<Message> {
        ids.iter()
            .map(|id| Message {
                id: MessageId::new(*id).expect("valid"),
                name: String::new(),
                data: bytes::Bytes::new(),
            })
            .collect()
    }

    #[test]
    fn answers_resends_as_the_first_time_and_forgets_the_oldest() {
        let mut record = PublishRecord::default();
        record.record(0, digest(&publish(&["a:0"])), Outcome::Acked, 2);
        record.record(
            1,
            digest(&publish(&["a:1", "a:2"])),
            Outcome::Refused(ErrorCode::Forbidden),
            2,
        );
        assert_eq!(
            record.resend(1, &publish(&["a:1", "a:2"])),
            Resend::Answer(Some(ErrorInfo::new(
                ErrorCode::Forbidden,
                "this publish was refused when first sent (40300 forbidden)"
            )))
        );
        assert_eq!(record.resend(0, &publish(&["a:0"])), Resend::Answer(None));
        assert_eq!(record.resend(0, &publish(&["b:0"])), Resend::Different);
        assert_eq!(
            record.resend(1, &publish(&["a:2", "a:1"])),
            Resend::Different
        );
        record.record(
            2,
            digest(&publish(&["a:3"])),
            Outcome::Pending(StorageRequestId(7)),
            2,
        );
        assert_eq!(record.resend(0, &publish(&["a:0"])), Resend::Forgotten);
        assert_eq!(
            record.resend(2, &publish(&["a:3"])),
            Resend::Pending(StorageRequestId(7))
        );
        record.settle(2, Outcome::Acked);
        assert_eq!(record.resend(2, &publish(&["a:3"])), Resend::Answer(None));
        assert_eq!(record.next_serial(), Some(3));
    }
}
