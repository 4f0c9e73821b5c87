//! Where tether's channel logs live: an embedded durable store on
//! [fjall](https://docs.rs/fjall) (a pure-Rust LSM tree with a journal and explicit sync)
//! serving the hub's storage port (`tether_core::server::storage`), for every adapter.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tether_engine::{Engine, EngineConfig};
//!
//! let engine = Engine::open("/var/lib/tether", EngineConfig::default())?;
//! // tether_tokio::ServerConfig::store = Some(Arc::new(engine)), then Server::bind(..)
//! # let _ = Arc::new(engine);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # What it keeps (one fjall keyspace each)
//!
//! - `messages`: every message by (channel, epoch, serial), as delivered, with the session
//!   that published it; trimmed by the [`RetentionRule`] of the channel's pattern.
//! - `channels`: each channel's epoch and last serial.
//! - `ids`: message ids by time, for the hub's dedupe window after a restart.
//! - `sessions` and `records`: resumable sessions and their publish outcomes.
//! - `meta`: whether the last run stopped cleanly.
//!
//! # Durability
//!
//! One thread takes requests in order and commits whatever is queued as one batch (group
//! commit). With [`Durability::Sync`] (the default) it syncs the journal to disk before any
//! append of the batch is reported stored — a publish is acknowledged only once it is on
//! disk. With [`Durability::Interval`] it syncs at most that often and reports appends
//! stored once written to the operating system: a crash of the machine (not of the process)
//! can lose the last interval, so after an unclean stop the hub starts new epochs
//! (`docs/protocol.md` §7.7). A torn tail after `kill -9` is dropped by fjall's journal
//! recovery; what was synced is never lost.
//!
//! # Errors
//!
//! A write or sync that fails answers the batch's appends with `storage_failed` (50001)
//! and logs the error; a failed sync also stops the engine from taking more (what reached
//! the disk is unknown until a restart reads it back): every later append fails the same
//! way, so nothing is ever acknowledged that is not stored.

mod keys;
mod worker;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use serde::{Deserialize, Serialize};
use tether_core::server::{
    PublishOutcome, RestoredChannel, RestoredState, StorageCompletion, StorageSink, Store,
    StoredMessage, StoredSession, SyncTimes, pattern_matches,
};
use tether_core::wire::{ChannelMessage, ChannelName, MessageId, Position, SessionId};

/// How long a channel's messages are kept, for channels whose name matches `pattern`
/// (the capability pattern syntax: `chat:*`, `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    /// Which channels.
    pub pattern: String,
    /// Most messages kept per channel (0: none are kept after they are delivered).
    pub count: u64,
    /// How long a message is kept.
    pub age: Duration,
}

/// When appends are synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Sync every batch before reporting its appends stored (the default): nothing
    /// acknowledged is ever lost.
    Sync,
    /// Sync at most this often; appends are reported once written to the operating system.
    /// A machine crash can lose the last interval; the hub then starts new epochs.
    Interval(Duration),
}

/// What the engine needs to know.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Retention per channel pattern, first match wins; a channel no rule matches keeps
    /// [`default_retention`](EngineConfig::default_retention).
    pub retention: Vec<RetentionRule>,
    /// Retention of channels no rule matches (default 10,000 messages, 24 h).
    pub default_retention: (u64, Duration),
    /// When appends are synced (default: every batch).
    pub durability: Durability,
    /// How long message ids are kept for the hub's dedupe window (default 120 s: the hub's
    /// `dedupe_window`).
    pub dedupe_window: Duration,
    /// Publish outcomes kept per session (default 1,024: the hub's `publish_record`).
    pub publish_record: u64,
    /// Messages per channel handed to the hub at a restart, for its cache (default 1,000:
    /// the hub's `retention_count`), no older than `cache_age` (default 120 s).
    pub cache_count: usize,
    /// See `cache_count`.
    pub cache_age: Duration,
    /// Most requests committed as one batch (default 4,096).
    pub max_batch: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            retention: Vec::new(),
            default_retention: (10_000, Duration::from_secs(24 * 3600)),
            durability: Durability::Sync,
            dedupe_window: Duration::from_secs(120),
            publish_record: 1024,
            cache_count: 1000,
            cache_age: Duration::from_secs(120),
            max_batch: 4096,
        }
    }
}

impl EngineConfig {
    /// The defaults, with what must follow the hub's configuration taken from `hub`: the
    /// dedupe window, the publish record, and the cache handed back at a restart (the hub's
    /// retention count and age, so a resume after a restart replays what it would have
    /// before).
    pub fn for_hub(hub: &tether_core::server::HubConfig) -> EngineConfig {
        EngineConfig {
            dedupe_window: hub.dedupe_window.max(hub.session_ttl),
            publish_record: u64::try_from(hub.publish_record).unwrap_or(u64::MAX),
            cache_count: hub.retention_count,
            cache_age: hub.retention_age,
            ..EngineConfig::default()
        }
    }

    /// The retention of `channel`: (most messages, longest age).
    pub fn retention_of(&self, channel: &str) -> (u64, Duration) {
        self.retention
            .iter()
            .find(|rule| pattern_matches(&rule.pattern, channel))
            .map_or(self.default_retention, |rule| (rule.count, rule.age))
    }
}

/// The keyspaces.
#[derive(Clone)]
pub(crate) struct Spaces {
    pub(crate) db: Database,
    pub(crate) messages: Keyspace,
    pub(crate) channels: Keyspace,
    pub(crate) ids: Keyspace,
    pub(crate) sessions: Keyspace,
    pub(crate) records: Keyspace,
    pub(crate) meta: Keyspace,
}

/// A stored message: what was delivered and who published it.
#[derive(Serialize, Deserialize)]
pub(crate) struct MessageValue {
    pub(crate) message: ChannelMessage,
    pub(crate) origin: SessionId,
}

/// A channel's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) epoch: u64,
    pub(crate) last: u64,
}

/// A publish outcome without its session and serial (they are the key).
#[derive(Serialize, Deserialize)]
pub(crate) struct RecordValue {
    pub(crate) digest: u64,
    pub(crate) refused: Option<u32>,
}

/// Most bytes of journal kept before memtables are flushed (bounds recovery after a crash).
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The value of [`RUNNING`] for a run that syncs on an interval (it may have reported
/// appends stored that a machine crash then lost).
pub(crate) const RUNNING_INTERVAL: &[u8] = b"interval";

/// The `meta` key that says a run is under way (its value: the run's durability mode) (removed at a clean stop).
pub(crate) const RUNNING: &[u8] = b"running";
/// The `meta` key of the token revocations in force (postcard, a list).
pub(crate) const REVOCATIONS: &[u8] = b"revocations";

/// The embedded store: open it on a directory, hand it to a server's options
/// (`ServerOptions::store`); the server restores from it and runs its thread.
pub struct Engine {
    dir: PathBuf,
    config: EngineConfig,
    spaces: Spaces,
    /// Channel heads, loaded at open; the worker thread takes them when it starts.
    heads: Mutex<Option<HashMap<ChannelName, Head>>>,
    /// Whether the previous run stopped without closing the engine.
    unclean: bool,
    /// Whether that run synced on an interval (then its last acknowledged appends may be
    /// lost, and the hub starts new epochs): the mode the store was *written* in, whatever
    /// this run's mode.
    unclean_interval: bool,
    /// Shared with the worker thread: why it stopped taking writes, and its sync times.
    observed: Arc<worker::Observed>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("unclean", &self.unclean)
            .finish_non_exhaustive()
    }
}

pub(crate) fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

impl Engine {
    /// Opens (or creates) the store in `dir` and reads every channel's head.
    ///
    /// # Errors
    /// The directory cannot be created or read, or holds something fjall cannot recover.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> io::Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let db = Database::builder(&dir)
            .manual_journal_persist(true)
            // A short journal: memtables are flushed to tables sooner, so the journal a
            // restart replays after kill -9 stays small (7 s with fjall's default for 1 M
            // messages, see `benches/restart.rs`).
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(io_error)?;
        let open = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(io_error)
        };
        let spaces = Spaces {
            messages: open("messages")?,
            channels: open("channels")?,
            ids: open("ids")?,
            sessions: open("sessions")?,
            records: open("records")?,
            meta: open("meta")?,
            db,
        };
        let running = spaces.meta.get(RUNNING).map_err(io_error)?;
        let unclean = running.is_some();
        let unclean_interval = running.is_some_and(|mode| &mode[..] == RUNNING_INTERVAL);
        let mut heads = HashMap::new();
        for guard in spaces.channels.iter() {
            let (key, value) = guard.into_inner().map_err(io_error)?;
            let Some(name) = keys::channel_name(&key) else {
                continue;
            };
            let head: Head = postcard::from_bytes(&value).map_err(io_error)?;
            heads.insert(name, head);
        }
        Ok(Engine {
            dir,
            config,
            spaces,
            heads: Mutex::new(Some(heads)),
            unclean,
            unclean_interval,
            observed: Arc::new(worker::Observed::default()),
        })
    }

    /// The directory it stores in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the previous run on this directory stopped without closing the engine
    /// (a crash, `kill -9`).
    pub fn unclean(&self) -> bool {
        self.unclean
    }

    /// Whether the hub restored from this store starts new epochs: the previous run synced
    /// on an interval and did not stop cleanly, so it may have acknowledged appends a crash
    /// lost (`docs/protocol.md` §7.7). Decided by the mode the store was written in, not by
    /// this run's.
    pub fn starts_new_epochs(&self) -> bool {
        self.unclean_interval
    }

    /// Bytes on disk.
    pub fn disk_space(&self) -> u64 {
        self.spaces.db.disk_space().unwrap_or(0)
    }

    fn restore_state(&self, now_unix_ms: u64) -> io::Result<RestoredState> {
        let heads = self
            .heads
            .lock()
            .map_err(io_error)?
            .clone()
            .unwrap_or_default();
        let cache_from = now_unix_ms.saturating_sub(millis(self.config.cache_age));
        let mut ids: HashMap<ChannelName, Vec<(MessageId, u64)>> = HashMap::new();
        let ids_from = now_unix_ms.saturating_sub(millis(self.config.dedupe_window));
        for guard in self.spaces.ids.range(keys::id_from(ids_from)..) {
            let (key, _) = guard.into_inner().map_err(io_error)?;
            if let Some((unix_ms, channel, id)) = keys::id_parts(&key) {
                ids.entry(channel).or_default().push((id, unix_ms));
            }
        }
        let mut channels = Vec::with_capacity(heads.len());
        for (name, head) in heads {
            let mut recent = Vec::new();
            if self.config.cache_count > 0 && head.last > 0 {
                let prefix = keys::messages_of(&name, head.epoch);
                for guard in self.spaces.messages.prefix(&prefix).rev() {
                    let value = guard.value().map_err(io_error)?;
                    let stored: MessageValue = postcard::from_bytes(&value).map_err(io_error)?;
                    if stored.message.timestamp_ms < cache_from {
                        break;
                    }
                    recent.push(StoredMessage {
                        message: stored.message,
                        origin: stored.origin,
                    });
                    if recent.len() >= self.config.cache_count {
                        break;
                    }
                }
                recent.reverse();
            }
            channels.push(RestoredChannel {
                ids: ids.remove(&name).unwrap_or_default(),
                name,
                position: Position {
                    epoch: head.epoch,
                    serial: head.last,
                },
                recent,
            });
        }
        let mut sessions = Vec::new();
        for guard in self.spaces.sessions.iter() {
            let (key, value) = guard.into_inner().map_err(io_error)?;
            let Ok(mut session) = postcard::from_bytes::<StoredSession>(&value) else {
                tracing::warn!("a stored session is unreadable; skipped");
                continue;
            };
            let mut record = Vec::new();
            for guard in self.spaces.records.prefix(&key[..]).rev() {
                let (key, value) = guard.into_inner().map_err(io_error)?;
                let (Some(serial), Ok(value)) = (
                    keys::record_serial(&key),
                    postcard::from_bytes::<RecordValue>(&value),
                ) else {
                    continue;
                };
                // Consecutive serials, newest first.
                if record
                    .last()
                    .is_some_and(|newer: &PublishOutcome| newer.serial != serial + 1)
                    || record.len() as u64 >= self.config.publish_record
                {
                    break;
                }
                record.push(PublishOutcome {
                    session: session.id,
                    serial,
                    digest: value.digest,
                    refused: value.refused,
                });
            }
            record.reverse();
            session.record = record;
            sessions.push(session);
        }
        let positions_lost = self.unclean_interval;
        let revocations = match self.spaces.meta.get(REVOCATIONS).map_err(io_error)? {
            Some(value) => postcard::from_bytes(&value).map_err(io_error)?,
            None => Vec::new(),
        };
        Ok(RestoredState {
            channels,
            sessions,
            positions_lost,
            revocations,
        })
    }
}

impl Store for Engine {
    fn restore(&self, now_unix_ms: u64) -> io::Result<RestoredState> {
        self.restore_state(now_unix_ms)
    }

    fn start(
        &self,
        completions: Box<dyn FnMut(StorageCompletion) + Send>,
    ) -> io::Result<Box<dyn StorageSink>> {
        let heads = self
            .heads
            .lock()
            .map_err(io_error)?
            .take()
            .ok_or_else(|| io::Error::other("the engine is already started"))?;
        // From here until a clean stop, a crash leaves the marker.
        let mode: &[u8] = match self.config.durability {
            Durability::Sync => b"sync",
            Durability::Interval(_) => RUNNING_INTERVAL,
        };
        self.spaces.meta.insert(RUNNING, mode).map_err(io_error)?;
        self.spaces
            .db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(io_error)?;
        worker::start(
            self.spaces.clone(),
            Arc::new(self.config.clone()),
            heads,
            completions,
            self.observed.clone(),
        )
    }

    fn health(&self) -> Result<(), String> {
        match self.observed.poisoned() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn sync_times(&self) -> Option<SyncTimes> {
        Some(self.observed.sync_times())
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
