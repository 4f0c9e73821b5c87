//! One channel's state: positions, retained messages, dedupe window, subscribers, history.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{SessionKey, history};
use crate::client::Framing;
use crate::error::{ErrorCode, ErrorInfo};
use crate::time::Time;
use crate::wire::{
    self, ChannelMessage, ChannelName, ClientId, Direction, HistoryBound, HistoryQuery, Limits,
    Message, MessageId, Position, ServerFrame,
};

/// A retained message: its delivery frame, ready to send, encoded once.
#[derive(Clone, Debug)]
struct Stored {
    serial: u64,
    received: Time,
    unix_ms: u64,
    /// The transport-ready delivery (with its length prefix under stream framing).
    frame: Bytes,
    /// Where the frame itself starts in `frame` (after any length prefix).
    body: usize,
    /// The session that published it (a client asking for no echo gets its position only).
    origin: SessionKey,
}

/// A channel of the hub.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) name: ChannelName,
    pub(crate) epoch: u64,
    /// Serial of the newest message stored (0: none yet).
    pub(crate) last: u64,
    /// Serial of the newest message given a position: `last`, plus what is on its way to
    /// the store (`StorageMode::External`).
    pub(crate) assigned: u64,
    /// Appends on their way to the store.
    pub(crate) in_flight: usize,
    /// Bumped when a failed append takes the assigned serials back, so the appends emitted
    /// after it (which fail too) do not take them back again.
    pub(crate) generation: u64,
    retained: VecDeque<Stored>,
    /// Sessions subscribed on a live transport, in key order (deterministic fan-out).
    pub(crate) subscribers: BTreeSet<SessionKey>,
    /// Remembered ids and when each was stored (its entry in `dedupe_order`).
    dedupe: HashMap<MessageId, Time>,
    dedupe_order: VecDeque<(Time, MessageId)>,
}

impl Channel {
    /// A channel at `position`: a new one at serial 0, or one freed before, continuing.
    pub(crate) fn new(name: ChannelName, position: Position) -> Channel {
        Channel {
            name,
            epoch: position.epoch,
            last: position.serial,
            assigned: position.serial,
            in_flight: 0,
            generation: 0,
            retained: VecDeque::new(),
            subscribers: BTreeSet::new(),
            dedupe: HashMap::new(),
            dedupe_order: VecDeque::new(),
        }
    }

    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            serial: self.last,
        }
    }

    /// Nothing refers to the channel any more: it can be freed.
    pub(crate) fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.retained.is_empty()
            && self.dedupe_order.is_empty()
            && self.in_flight == 0
    }

    pub(crate) fn is_duplicate(&self, id: &MessageId) -> bool {
        self.dedupe.contains_key(id)
    }

    /// Stores a new message: gives it the next serial, encodes its delivery frame once,
    /// remembers its id. Returns the serial and the shared frame bytes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &mut self,
        message: Message,
        publisher: ClientId,
        origin: SessionKey,
        now: Time,
        unix_ms: u64,
        framing: Framing,
        limits: &Limits,
        retention_count: usize,
        dedupe_capacity: usize,
    ) -> Result<(u64, Bytes), ErrorInfo> {
        let serial = self.last + 1;
        let id = message.id.clone();
        let delivery = ChannelMessage {
            position: Position {
                epoch: self.epoch,
                serial,
            },
            message,
            publisher,
            timestamp_ms: unix_ms,
        };
        let (bytes, body) = self.encode(delivery, framing, limits)?;
        self.assigned = serial;
        self.retain(
            serial,
            bytes.clone(),
            body,
            now,
            unix_ms,
            origin,
            retention_count,
        );
        self.remember_id(id, now, dedupe_capacity);
        Ok((serial, bytes))
    }

    /// The transport-ready delivery frame of `message` and where its body starts (after
    /// any length prefix).
    pub(crate) fn encode(
        &self,
        message: ChannelMessage,
        framing: Framing,
        limits: &Limits,
    ) -> Result<(Bytes, usize), ErrorInfo> {
        let frame = ServerFrame::Message {
            channel: self.name.clone(),
            message,
        };
        let limits = limits.for_hub_frames();
        let encoded = match framing {
            Framing::Message => wire::encode(&frame, &limits).map(|bytes| (bytes, 0)),
            Framing::Stream => {
                let mut out = BytesMut::new();
                wire::encode_length_prefixed(&frame, &limits, &mut out).map(|_| {
                    let bytes = out.freeze();
                    let body = prefix_len(&bytes);
                    (bytes, body)
                })
            }
        };
        encoded.map_err(|error| ErrorInfo::new(error.code(), error.to_string()))
    }

    /// Keeps the message at `serial` — the one after `last` — as the newest retained.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn retain(
        &mut self,
        serial: u64,
        frame: Bytes,
        body: usize,
        received: Time,
        unix_ms: u64,
        origin: SessionKey,
        retention_count: usize,
    ) {
        self.last = serial;
        self.retained.push_back(Stored {
            serial,
            received,
            unix_ms,
            frame,
            body,
            origin,
        });
        while self.retained.len() > retention_count.max(1) {
            self.retained.pop_front();
        }
    }

    /// Remembers a message id as stored at `at`, for the dedupe window.
    pub(crate) fn remember_id(&mut self, id: MessageId, at: Time, dedupe_capacity: usize) {
        self.dedupe.insert(id.clone(), at);
        self.dedupe_order.push_back((at, id));
        while self.dedupe_order.len() > dedupe_capacity.max(1) {
            if let Some((at, old)) = self.dedupe_order.pop_front() {
                self.expire_id(&old, at);
            }
        }
    }

    /// Forgets a message id that was not stored after all (a failed append). Its place in
    /// the expiry order stays until it expires; it then removes nothing, even if the id
    /// was stored again since.
    pub(crate) fn forget_id(&mut self, id: &MessageId) {
        self.dedupe.remove(id);
    }

    /// The entry of `id` stored at `at` leaves the window: the id is forgotten unless it
    /// was stored again since.
    fn expire_id(&mut self, id: &MessageId, at: Time) {
        if self.dedupe.get(id) == Some(&at) {
            self.dedupe.remove(id);
        }
    }

    /// Drops what is older than the retention and dedupe windows. Returns when the next
    /// entry will be due, if any remain.
    pub(crate) fn trim(
        &mut self,
        now: Time,
        retention: Duration,
        dedupe_window: Duration,
    ) -> Option<Time> {
        while self
            .retained
            .front()
            .is_some_and(|stored| stored.received.saturating_add(retention) <= now)
        {
            self.retained.pop_front();
        }
        while self
            .dedupe_order
            .front()
            .is_some_and(|(at, _)| at.saturating_add(dedupe_window) <= now)
        {
            if let Some((at, old)) = self.dedupe_order.pop_front() {
                self.expire_id(&old, at);
            }
        }
        let retained = self
            .retained
            .front()
            .map(|s| s.received.saturating_add(retention));
        let dedupe = self
            .dedupe_order
            .front()
            .map(|(at, _)| at.saturating_add(dedupe_window));
        match (retained, dedupe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The retained delivery frame of `serial` and the session that published it, if it is
    /// still retained.
    pub(crate) fn delivery(&self, serial: u64) -> Option<(&Bytes, SessionKey)> {
        self.stored(serial)
            .map(|stored| (&stored.frame, stored.origin))
    }

    fn stored(&self, serial: u64) -> Option<&Stored> {
        let first = self.retained.front()?.serial;
        let index = usize::try_from(serial.checked_sub(first)?).ok()?;
        self.retained.get(index)
    }

    /// Whether every message after `serial` is retained (so a replay from it is complete).
    pub(crate) fn retains_after(&self, serial: u64) -> bool {
        serial >= self.last
            || self
                .retained
                .front()
                .is_some_and(|first| first.serial <= serial + 1)
    }

    /// A page of history for `query`, at most `max_bytes` of frames (at least one message).
    pub(crate) fn history(
        &self,
        query: &HistoryQuery,
        max_bytes: usize,
    ) -> Result<(Vec<ChannelMessage>, Option<HistoryQuery>), ErrorInfo> {
        history::check_epoch(query, self.epoch)?;
        let items: Box<dyn Iterator<Item = Result<&Stored, ErrorInfo>>> = match query.direction {
            Direction::Forwards => Box::new(self.retained.iter().map(Ok)),
            Direction::Backwards => Box::new(self.retained.iter().rev().map(Ok)),
        };
        history::page(query, self.epoch, items, max_bytes)
    }

    /// Whether the cache alone answers `query` as the whole log would: every message the
    /// query could want is cached (the cache starts at the epoch's first message, or the
    /// query starts within it), or — newest first — the page fills before the cache ends.
    pub(crate) fn caches(&self, query: &HistoryQuery, page_is_full: bool) -> bool {
        let Some(front) = self.retained.front() else {
            return self.last == 0;
        };
        if front.serial <= 1 || page_is_full && query.direction == Direction::Backwards {
            return true;
        }
        match query.start {
            Some(HistoryBound::Position(p)) => p.serial >= front.serial,
            Some(HistoryBound::Time(ms)) => ms > front.unix_ms,
            None => false,
        }
    }
}

impl history::PageItem for &Stored {
    fn serial(&self) -> u64 {
        self.serial
    }

    fn unix_ms(&self) -> u64 {
        self.unix_ms
    }

    fn size(&self) -> usize {
        self.frame.len() - self.body
    }

    fn message(self) -> Result<ChannelMessage, ErrorInfo> {
        let body = self.frame.slice(self.body..);
        match wire::decode::<ServerFrame>(&body, &Limits::PROTOCOL_MAX) {
            Ok(ServerFrame::Message { message, .. }) => Ok(message),
            Ok(_) => Err(ErrorInfo::new(
                ErrorCode::Internal,
                "stored frame is not a message",
            )),
            Err(error) => Err(ErrorInfo::new(
                ErrorCode::Internal,
                format!("stored frame unreadable: {error}"),
            )),
        }
    }
}

/// The length of the varint prefix at the start of a length-prefixed frame.
fn prefix_len(frame: &[u8]) -> usize {
    frame
        .iter()
        .position(|byte| byte & 0x80 == 0)
        .map_or(0, |at| at + 1)
}
