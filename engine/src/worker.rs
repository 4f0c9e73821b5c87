//! The engine's thread: requests in order, one batch per wake-up (group commit), one sync
//! per batch, completions back in order; retention sweeps between batches.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjall::{OwnedWriteBatch, PersistMode};
use tether_core::server::history::{self, PageItem};
use tether_core::server::{
    PublishOutcome, StorageCompletion, StorageRequest, StorageSink, SyncTimes, continues,
};
use tether_core::wire::{ChannelMessage, ChannelName, HistoryQuery, Position, SessionId};
use tether_core::{ErrorCode, ErrorInfo};

use crate::{
    Durability, EngineConfig, Head, MessageValue, RUNNING, RecordValue, Spaces, keys, millis,
};

/// How often retention and expired ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Most keys one sweep deletes (the rest waits for the next: a sweep never stalls appends
/// for long).
const SWEEP_LIMIT: usize = 50_000;

/// What the engine's thread shows the rest of the process (readiness, metrics).
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Why the engine stopped taking writes, once it did.
    poisoned: Mutex<Option<String>>,
    /// How long its syncs took.
    syncs: Mutex<SyncTimes>,
}

impl Observed {
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn poison(&self, error: &str) {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| error.to_owned());
    }

    pub(crate) fn sync_times(&self) -> SyncTimes {
        *self.syncs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn synced(&self, took: Duration) {
        self.syncs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(took);
    }
}

/// The hub's end of the engine's queue.
struct Sink {
    /// Unbounded: the hub's task never waits for the disk. What is queued is bounded by
    /// what the hub has in flight (appends: one per publish awaiting its answer, which the
    /// sessions' publish records bound; reads: 16 per connection).
    requests: Option<Sender<StorageRequest>>,
    thread: Option<JoinHandle<()>>,
    /// Set by `close` (not by `abandon`): the thread marks the store stopped cleanly.
    clean: Arc<AtomicBool>,
}

impl StorageSink for Sink {
    fn request(&mut self, request: StorageRequest) {
        if let Some(requests) = &self.requests {
            // The thread ends only when this sender is dropped (or it panicked: then the
            // hub's publishes wait, as for a store that stopped answering).
            let _ = requests.send(request);
        }
    }

    fn close(mut self: Box<Self>) {
        self.clean.store(true, Ordering::Release);
        self.finish();
    }

    fn abandon(mut self: Box<Self>) {
        self.finish();
    }
}

impl Sink {
    fn finish(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the storage engine's thread panicked");
            }
        }
    }
}

pub(crate) fn start(
    spaces: Spaces,
    config: Arc<EngineConfig>,
    heads: HashMap<ChannelName, Head>,
    completions: Box<dyn FnMut(StorageCompletion) + Send>,
    observed: Arc<Observed>,
) -> io::Result<Box<dyn StorageSink>> {
    let (requests, queue) = mpsc::channel();
    let clean = Arc::new(AtomicBool::new(false));
    let mut worker = Worker {
        clean: clean.clone(),
        spaces,
        config,
        heads,
        completions,
        poisoned: None,
        observed,
        last_sync: Instant::now(),
        unsynced: false,
        last_sweep: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("tether-engine".into())
        .spawn(move || worker.run(queue))?;
    Ok(Box::new(Sink {
        requests: Some(requests),
        thread: Some(thread),
        clean,
    }))
}

struct Worker {
    clean: Arc<AtomicBool>,
    spaces: Spaces,
    config: Arc<EngineConfig>,
    heads: HashMap<ChannelName, Head>,
    completions: Box<dyn FnMut(StorageCompletion) + Send>,
    /// Set when a sync failed: what reached the disk is unknown, so nothing more is taken.
    poisoned: Option<String>,
    /// Shared with the engine: the poison and sync times, for readiness and metrics.
    observed: Arc<Observed>,
    last_sync: Instant,
    /// Written to the operating system since the last sync (interval durability).
    unsynced: bool,
    last_sweep: Instant,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Worker {
    fn run(&mut self, queue: Receiver<StorageRequest>) {
        loop {
            let wait = match self.config.durability {
                Durability::Interval(interval) if self.unsynced => {
                    interval.saturating_sub(self.last_sync.elapsed())
                }
                _ => SWEEP_EVERY.saturating_sub(self.last_sweep.elapsed()),
            };
            let first = match queue.recv_timeout(wait) {
                Ok(request) => Some(request),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < self.config.max_batch.max(1) {
                    match queue.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                self.handle(batch);
            }
            if self.unsynced && self.last_sync.elapsed() >= self.sync_interval() {
                self.sync_now();
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
        }
        self.stop();
    }

    fn sync_interval(&self) -> Duration {
        match self.config.durability {
            Durability::Sync => Duration::ZERO,
            Durability::Interval(interval) => interval,
        }
    }

    /// A clean stop: everything synced, then the marker removed (and synced).
    fn stop(&mut self) {
        if self.poisoned.is_some() || !self.clean.load(Ordering::Acquire) {
            return;
        }
        let done = self
            .spaces
            .db
            .persist(PersistMode::SyncAll)
            .and_then(|()| self.spaces.meta.remove(RUNNING))
            .and_then(|()| self.spaces.db.persist(PersistMode::SyncAll));
        if let Err(error) = done {
            tracing::error!(%error, "the store could not be closed cleanly");
        }
    }

    fn sync_now(&mut self) {
        let started = Instant::now();
        let synced = self.spaces.db.persist(PersistMode::SyncAll);
        self.observed.synced(started.elapsed());
        if let Err(error) = synced {
            tracing::error!(%error, "the store could not sync; it takes no more writes");
            self.observed.poison(&error.to_string());
            self.poisoned = Some(error.to_string());
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    fn failure(&self, what: &str) -> ErrorInfo {
        match &self.poisoned {
            Some(error) => ErrorInfo::new(
                ErrorCode::StorageFailed,
                format!("the store failed earlier and takes no writes: {error}"),
            ),
            None => ErrorInfo::new(ErrorCode::StorageFailed, what.to_owned()),
        }
    }

    fn handle(&mut self, requests: Vec<StorageRequest>) {
        let mut batch = self.spaces.db.batch();
        let mut heads: HashMap<ChannelName, Head> = HashMap::new();
        let mut answers: Vec<StorageCompletion> = Vec::new();
        let mut reads = Vec::new();
        let mut writes = 0usize;
        for request in requests {
            match request {
                StorageRequest::Append {
                    id,
                    channel,
                    messages,
                    origin,
                    outcome,
                } => {
                    if self.poisoned.is_some() {
                        answers.push(StorageCompletion::Failed {
                            id,
                            error: self.failure(""),
                        });
                        continue;
                    }
                    let head = heads
                        .get(&channel)
                        .or_else(|| self.heads.get(&channel))
                        .copied();
                    match self.append(&mut batch, &channel, head, &messages, origin, outcome) {
                        Ok(head) => {
                            heads.insert(channel, head);
                            writes += 1;
                            answers.push(StorageCompletion::Appended { id });
                        }
                        Err(error) => answers.push(StorageCompletion::Failed { id, error }),
                    }
                }
                StorageRequest::RecordPublish(outcome) => {
                    self.record(&mut batch, &outcome);
                    writes += 1;
                }
                StorageRequest::SaveChannel { channel, position } => {
                    let head = Head {
                        epoch: position.epoch,
                        last: position.serial,
                    };
                    heads.insert(channel, head);
                    writes += 1;
                }
                StorageRequest::SaveSession(session) => {
                    match postcard::to_allocvec(&session) {
                        Ok(value) => {
                            batch.insert(&self.spaces.sessions, keys::session(session.id), value)
                        }
                        Err(error) => tracing::error!(%error, "a session could not be encoded"),
                    }
                    writes += 1;
                }
                StorageRequest::DropSession { session } => {
                    self.drop_session(&mut batch, session);
                    writes += 1;
                }
                StorageRequest::SaveRevocations(revocations) => {
                    match postcard::to_allocvec(&revocations) {
                        Ok(value) => batch.insert(&self.spaces.meta, crate::REVOCATIONS, value),
                        Err(error) => tracing::error!(%error, "revocations could not be encoded"),
                    }
                    writes += 1;
                }
                read @ StorageRequest::Read { .. } => reads.push(read),
            }
        }
        if writes > 0 && self.poisoned.is_none() {
            for (channel, head) in &heads {
                self.put_head(&mut batch, channel, *head);
            }
            if let Err(error) = self.commit(batch) {
                tracing::error!(%error, "the store could not write; it takes no more writes");
                // What a failed write left in the journal is unknown (a part of the batch may
                // be recovered at the next start): no later batch may reuse its positions, so
                // the engine takes no more writes until it is opened again.
                let error = self.failure(&format!("the store could not write: {error}"));
                if self.poisoned.is_none() {
                    self.observed.poison(&error.message);
                    self.poisoned = Some(error.message.clone());
                }
                for answer in &mut answers {
                    if let StorageCompletion::Appended { id } = *answer {
                        *answer = StorageCompletion::Failed {
                            id,
                            error: error.clone(),
                        };
                    }
                }
                heads.clear();
            }
            self.heads.extend(heads);
        }
        for answer in answers {
            (self.completions)(answer);
        }
        for read in reads {
            if let StorageRequest::Read {
                id,
                channel,
                epoch,
                until,
                query,
                max_bytes,
            } = read
            {
                let answer = match self.read(&channel, epoch, until, &query, max_bytes) {
                    Ok((messages, next)) => StorageCompletion::Page { id, messages, next },
                    Err(error) => StorageCompletion::Failed { id, error },
                };
                (self.completions)(answer);
            }
        }
    }

    /// Commits the batch and makes it as durable as the mode promises.
    fn commit(&mut self, batch: OwnedWriteBatch) -> Result<(), String> {
        batch.commit().map_err(|e| e.to_string())?;
        match self.config.durability {
            Durability::Sync => {
                self.sync_now();
                if let Some(error) = &self.poisoned {
                    return Err(format!("sync failed: {error}"));
                }
            }
            Durability::Interval(_) => {
                // To the operating system now (a process crash loses nothing), to the disk
                // on the interval.
                self.spaces
                    .db
                    .persist(PersistMode::Buffer)
                    .map_err(|e| e.to_string())?;
                self.unsynced = true;
            }
        }
        Ok(())
    }

    /// Adds an append to the batch after checking it continues the channel's log.
    fn append(
        &self,
        batch: &mut OwnedWriteBatch,
        channel: &ChannelName,
        head: Option<Head>,
        messages: &[ChannelMessage],
        origin: SessionId,
        outcome: Option<PublishOutcome>,
    ) -> Result<Head, ErrorInfo> {
        let head = head.map(|h| Position {
            epoch: h.epoch,
            serial: h.last,
        });
        let new_head = continues(head, messages)
            .map_err(|error| self.failure(&format!("{channel}: {error}")))?;
        let first = messages[0].position;
        let (keep, _) = self.config.retention_of(channel.as_str());
        for message in messages {
            let serial = message.position.serial;
            if keep > 0 {
                let value = MessageValue {
                    message: message.clone(),
                    origin,
                };
                let value = postcard::to_allocvec(&value)
                    .map_err(|e| self.failure(&format!("a message could not be encoded: {e}")))?;
                batch.insert(
                    &self.spaces.messages,
                    keys::message(channel, first.epoch, serial),
                    value,
                );
                if serial > keep {
                    batch.remove(
                        &self.spaces.messages,
                        keys::message(channel, first.epoch, serial - keep),
                    );
                }
            }
            batch.insert(
                &self.spaces.ids,
                keys::id(message.timestamp_ms, channel, &message.message.id),
                [],
            );
        }
        let head = Head {
            epoch: new_head.epoch,
            last: new_head.serial,
        };
        // The head is written once per batch (`handle`), however many appends it holds.
        if let Some(outcome) = outcome {
            self.record(batch, &outcome);
        }
        Ok(head)
    }

    fn put_head(&self, batch: &mut OwnedWriteBatch, channel: &ChannelName, head: Head) {
        match postcard::to_allocvec(&head) {
            Ok(value) => batch.insert(&self.spaces.channels, keys::channel(channel), value),
            Err(error) => tracing::error!(%error, "a channel head could not be encoded"),
        }
    }

    fn record(&self, batch: &mut OwnedWriteBatch, outcome: &PublishOutcome) {
        let value = RecordValue {
            digest: outcome.digest,
            refused: outcome.refused,
        };
        if let Ok(value) = postcard::to_allocvec(&value) {
            batch.insert(
                &self.spaces.records,
                keys::record(outcome.session, outcome.serial),
                value,
            );
        }
        let capacity = self.config.publish_record.max(1);
        if outcome.serial >= capacity {
            batch.remove(
                &self.spaces.records,
                keys::record(outcome.session, outcome.serial - capacity),
            );
        }
    }

    fn drop_session(&self, batch: &mut OwnedWriteBatch, session: SessionId) {
        batch.remove(&self.spaces.sessions, keys::session(session));
        for guard in self.spaces.records.prefix(keys::session(session)) {
            match guard.key() {
                Ok(key) => batch.remove(&self.spaces.records, key),
                Err(error) => {
                    tracing::error!(%error, "a session's records could not be listed");
                    break;
                }
            }
        }
    }

    /// One history page from the stored log.
    fn read(
        &self,
        channel: &ChannelName,
        epoch: Option<u64>,
        until: Option<u64>,
        query: &HistoryQuery,
        max_bytes: usize,
    ) -> Result<(Vec<ChannelMessage>, Option<HistoryQuery>), ErrorInfo> {
        let head = self.heads.get(channel).copied();
        let Some(epoch) = epoch.or(head.map(|h| h.epoch)) else {
            return Ok((Vec::new(), None));
        };
        history::check_epoch(query, epoch)?;
        let until = until
            .or(head.filter(|h| h.epoch == epoch).map(|h| h.last))
            .unwrap_or(u64::MAX);
        let prefix = keys::messages_of(channel, epoch);
        let start = match query.start {
            Some(tether_core::wire::HistoryBound::Position(p)) => p.serial,
            _ => 0,
        };
        let end = match query.end {
            Some(tether_core::wire::HistoryBound::Position(p)) => p.serial.min(until),
            _ => until,
        };
        if start > end {
            return Ok((Vec::new(), None));
        }
        let range = keys::message(channel, epoch, start)..=keys::message(channel, epoch, end);
        let name_len = channel.as_str().len();
        let items = self.spaces.messages.range(range);
        let decode = move |guard: fjall::Guard| -> Result<Stored, ErrorInfo> {
            let (key, value) = guard.into_inner().map_err(|e| read_error(&e))?;
            if !key.starts_with(&prefix) {
                return Err(read_error(&"a key outside the channel"));
            }
            let stored: MessageValue = postcard::from_bytes(&value).map_err(|e| read_error(&e))?;
            Ok(Stored {
                size: value.len() + name_len + 8,
                message: stored.message,
            })
        };
        match query.direction {
            tether_core::wire::Direction::Forwards => {
                history::page(query, epoch, items.map(decode), max_bytes)
            }
            tether_core::wire::Direction::Backwards => {
                history::page(query, epoch, items.rev().map(decode), max_bytes)
            }
        }
    }

    /// Deletes what is past its retention, and ids past the dedupe window; at most
    /// [`SWEEP_LIMIT`] keys per sweep.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        if self.poisoned.is_some() {
            return;
        }
        let now = now_unix_ms();
        let mut batch = self.spaces.db.batch();
        let mut budget = SWEEP_LIMIT;
        let ids_before = keys::id_from(now.saturating_sub(millis(self.config.dedupe_window)));
        for guard in self.spaces.ids.range(..ids_before) {
            if budget == 0 {
                break;
            }
            if let Ok(key) = guard.key() {
                batch.remove(&self.spaces.ids, key);
                budget -= 1;
            }
        }
        let channels: Vec<(ChannelName, Head)> =
            self.heads.iter().map(|(n, h)| (n.clone(), *h)).collect();
        for (channel, head) in channels {
            if budget == 0 {
                break;
            }
            let (_, age) = self.config.retention_of(channel.as_str());
            let cutoff = now.saturating_sub(millis(age));
            let all = keys::messages_of_channel(&channel);
            let current = keys::messages_of(&channel, head.epoch);
            let after = head
                .epoch
                .checked_add(1)
                .map(|epoch| keys::messages_of(&channel, epoch));
            // Other epochs (left by a restart that lost positions): every old message.
            let others = self
                .spaces
                .messages
                .range(all.clone()..current.clone())
                .chain(
                    after
                        .map(|after| self.spaces.messages.range(after..))
                        .into_iter()
                        .flatten(),
                );
            for guard in others {
                let Ok((key, value)) = guard.into_inner() else {
                    break;
                };
                if budget == 0 || !key.starts_with(&all) {
                    break;
                }
                if postcard::from_bytes::<MessageValue>(&value)
                    .is_ok_and(|stored| stored.message.timestamp_ms < cutoff)
                {
                    batch.remove(&self.spaces.messages, key);
                    budget -= 1;
                }
            }
            // The current epoch is in time order: stop at the first young message.
            for guard in self.spaces.messages.prefix(&current) {
                let Ok((key, value)) = guard.into_inner() else {
                    break;
                };
                let young = postcard::from_bytes::<MessageValue>(&value)
                    .map_or(true, |stored| stored.message.timestamp_ms >= cutoff);
                if budget == 0 || young {
                    break;
                }
                batch.remove(&self.spaces.messages, key);
                budget -= 1;
            }
        }
        if batch.is_empty() {
            return;
        }
        if let Err(error) = batch.commit() {
            tracing::warn!(%error, "a retention sweep could not write; tried again later");
            return;
        }
        // Deletions need no sync of their own: they ride on the next sync.
        self.unsynced = matches!(self.config.durability, Durability::Interval(_));
    }
}

fn read_error(error: &dyn std::fmt::Display) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::StorageFailed,
        format!("the store could not read history: {error}"),
    )
}

/// A stored message as the pager sees it.
struct Stored {
    size: usize,
    message: ChannelMessage,
}

impl PageItem for Stored {
    fn serial(&self) -> u64 {
        self.message.position.serial
    }

    fn unix_ms(&self) -> u64 {
        self.message.timestamp_ms
    }

    fn size(&self) -> usize {
        self.size
    }

    fn message(self) -> Result<ChannelMessage, ErrorInfo> {
        Ok(self.message)
    }
}
