//! A store kept in memory that follows the storage port's contract to the letter: the
//! reference an engine is checked against, and the simulator's store. Not for production:
//! it keeps every message in memory and nothing survives the process.

use std::collections::BTreeMap;

use super::history::{self, PageItem};
use super::storage::{
    PublishOutcome, RestoredChannel, RestoredState, StorageCompletion, StorageRequest,
    StoredMessage, StoredSession,
};
use crate::error::ErrorInfo;
use crate::wire::{ChannelMessage, ChannelName, HistoryQuery, MessageId, Position, SessionId};

/// Checks that `messages` continue a channel whose stored head is `head` (consecutive
/// positions of one epoch, the first one past the head's last serial — or serial 1 of an
/// epoch the store does not hold); returns the new head. The check every engine makes
/// before an append (see the port's calling contract).
///
/// # Errors
/// A description of the mismatch.
pub fn continues(head: Option<Position>, messages: &[ChannelMessage]) -> Result<Position, String> {
    let Some(first) = messages.first().map(|m| m.position) else {
        return Err("an append without messages".into());
    };
    let continues = match head {
        Some(head) if head.epoch == first.epoch => head.serial + 1 == first.serial,
        _ => first.serial == 1,
    };
    let consecutive = messages.iter().enumerate().all(|(index, m)| {
        m.position.epoch == first.epoch && m.position.serial == first.serial + index as u64
    });
    if !continues || !consecutive {
        return Err(format!(
            "the append at {}:{} does not continue the stored log (head {head:?})",
            first.epoch, first.serial
        ));
    }
    Ok(Position {
        epoch: first.epoch,
        serial: first.serial + messages.len() as u64 - 1,
    })
}

/// The reference store (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct ModelStore {
    heads: BTreeMap<ChannelName, Position>,
    /// Messages of each channel's current epoch, oldest first.
    messages: BTreeMap<ChannelName, Vec<StoredMessage>>,
    /// Message ids with when they were stored (Unix ms).
    ids: Vec<(u64, ChannelName, MessageId)>,
    sessions: BTreeMap<SessionId, StoredSession>,
    records: BTreeMap<(SessionId, u64), PublishOutcome>,
    revocations: Vec<super::auth::Revocation>,
    /// Appends are refused while this is set (a failing disk).
    pub failing: bool,
}

struct Item<'a>(&'a StoredMessage);

impl PageItem for Item<'_> {
    fn serial(&self) -> u64 {
        self.0.message.position.serial
    }
    fn unix_ms(&self) -> u64 {
        self.0.message.timestamp_ms
    }
    fn size(&self) -> usize {
        self.0.message.message.data.len() + 64
    }
    fn message(self) -> Result<ChannelMessage, ErrorInfo> {
        Ok(self.0.message.clone())
    }
}

impl ModelStore {
    /// An empty store.
    pub fn new() -> ModelStore {
        ModelStore::default()
    }

    /// Carries out one request at `unix_ms`; the completion, for requests that have one.
    pub fn apply(&mut self, request: StorageRequest, unix_ms: u64) -> Option<StorageCompletion> {
        match request {
            StorageRequest::Append {
                id,
                channel,
                messages,
                origin,
                outcome,
            } => {
                if self.failing {
                    return Some(StorageCompletion::failed(id, "the store is failing"));
                }
                let head = match continues(self.heads.get(&channel).copied(), &messages) {
                    Ok(head) => head,
                    Err(error) => return Some(StorageCompletion::failed(id, error)),
                };
                let log = self.messages.entry(channel.clone()).or_default();
                if log
                    .last()
                    .is_some_and(|m| m.message.position.epoch != head.epoch)
                {
                    log.clear();
                }
                for message in messages {
                    self.ids
                        .push((unix_ms, channel.clone(), message.message.id.clone()));
                    log.push(StoredMessage { message, origin });
                }
                self.heads.insert(channel, head);
                if let Some(outcome) = outcome {
                    self.records
                        .insert((outcome.session, outcome.serial), outcome);
                }
                Some(StorageCompletion::Appended { id })
            }
            StorageRequest::RecordPublish(outcome) => {
                self.records
                    .insert((outcome.session, outcome.serial), outcome);
                None
            }
            StorageRequest::SaveChannel { channel, position } => {
                self.heads.insert(channel, position);
                None
            }
            StorageRequest::SaveSession(session) => {
                self.sessions.insert(session.id, session);
                None
            }
            StorageRequest::SaveRevocations(revocations) => {
                self.revocations = revocations;
                None
            }
            StorageRequest::DropSession { session } => {
                self.sessions.remove(&session);
                self.records.retain(|(id, _), _| *id != session);
                None
            }
            StorageRequest::Read {
                id,
                channel,
                epoch,
                until,
                query,
                max_bytes,
            } => Some(self.read(id, &channel, epoch, until, &query, max_bytes)),
        }
    }

    fn read(
        &self,
        id: super::StorageRequestId,
        channel: &ChannelName,
        epoch: Option<u64>,
        until: Option<u64>,
        query: &HistoryQuery,
        max_bytes: usize,
    ) -> StorageCompletion {
        let head = self.heads.get(channel).copied();
        let Some(epoch) = epoch.or(head.map(|h| h.epoch)) else {
            return StorageCompletion::Page {
                id,
                messages: Vec::new(),
                next: None,
            };
        };
        if let Err(error) = history::check_epoch(query, epoch) {
            return StorageCompletion::Failed { id, error };
        }
        let until = until.unwrap_or(u64::MAX);
        let log: Vec<&StoredMessage> = self
            .messages
            .get(channel)
            .into_iter()
            .flatten()
            .filter(|m| m.message.position.epoch == epoch && m.message.position.serial <= until)
            .collect();
        let items: Box<dyn Iterator<Item = Result<Item<'_>, ErrorInfo>>> = match query.direction {
            crate::wire::Direction::Forwards => Box::new(log.iter().map(|m| Ok(Item(m)))),
            crate::wire::Direction::Backwards => Box::new(log.iter().rev().map(|m| Ok(Item(m)))),
        };
        match history::page(query, epoch, items, max_bytes) {
            Ok((messages, next)) => StorageCompletion::Page { id, messages, next },
            Err(error) => StorageCompletion::Failed { id, error },
        }
    }

    /// What a hub restored from this store at `now_unix_ms` gets: heads, the newest
    /// `cache_count` messages no older than `cache_age_ms`, ids within `dedupe_window_ms`,
    /// sessions with their records (the newest `record` of each).
    pub fn restored(
        &self,
        now_unix_ms: u64,
        cache_count: usize,
        cache_age_ms: u64,
        dedupe_window_ms: u64,
        record: usize,
    ) -> RestoredState {
        let channels = self
            .heads
            .iter()
            .map(|(name, head)| {
                let log = self.messages.get(name).map_or(&[][..], Vec::as_slice);
                let recent: Vec<StoredMessage> = log
                    .iter()
                    .rev()
                    .take(cache_count)
                    .take_while(|m| {
                        m.message.timestamp_ms >= now_unix_ms.saturating_sub(cache_age_ms)
                    })
                    .filter(|m| m.message.position.epoch == head.epoch)
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let ids = self
                    .ids
                    .iter()
                    .filter(|(at, channel, _)| {
                        channel == name && *at >= now_unix_ms.saturating_sub(dedupe_window_ms)
                    })
                    .map(|(at, _, id)| (id.clone(), *at))
                    .collect();
                RestoredChannel {
                    name: name.clone(),
                    position: *head,
                    recent,
                    ids,
                }
            })
            .collect();
        let sessions = self
            .sessions
            .values()
            .map(|session| {
                let mut session = session.clone();
                let mut outcomes: Vec<PublishOutcome> = self
                    .records
                    .range((session.id, 0)..=(session.id, u64::MAX))
                    .map(|(_, outcome)| outcome.clone())
                    .collect();
                // The newest run of consecutive serials.
                let mut start = outcomes.len();
                while start > 0 && outcomes.len() - start < record {
                    let consecutive = start == outcomes.len()
                        || outcomes[start - 1].serial + 1 == outcomes[start].serial;
                    if !consecutive {
                        break;
                    }
                    start -= 1;
                }
                session.record = outcomes.split_off(start);
                session
            })
            .collect();
        RestoredState {
            channels,
            sessions,
            positions_lost: false,
            revocations: self.revocations.clone(),
        }
    }

    /// Messages stored in `channel`'s current epoch.
    pub fn stored(&self, channel: &ChannelName) -> &[StoredMessage] {
        self.messages.get(channel).map_or(&[], Vec::as_slice)
    }
}
