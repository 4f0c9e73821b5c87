//! One channel's state: positions, retained messages, dedupe window, subscribers, history.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::SessionKey;
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
    /// Serial of the newest message (0: none yet).
    pub(crate) last: u64,
    retained: VecDeque<Stored>,
    /// Sessions subscribed on a live transport, in key order (deterministic fan-out).
    pub(crate) subscribers: BTreeSet<SessionKey>,
    dedupe: HashSet<MessageId>,
    dedupe_order: VecDeque<(Time, MessageId)>,
}

impl Channel {
    /// A channel at `position`: a new one at serial 0, or one freed before, continuing.
    pub(crate) fn new(name: ChannelName, position: Position) -> Channel {
        Channel {
            name,
            epoch: position.epoch,
            last: position.serial,
            retained: VecDeque::new(),
            subscribers: BTreeSet::new(),
            dedupe: HashSet::new(),
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
        self.subscribers.is_empty() && self.retained.is_empty() && self.dedupe_order.is_empty()
    }

    pub(crate) fn is_duplicate(&self, id: &MessageId) -> bool {
        self.dedupe.contains(id)
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
        let frame = ServerFrame::Message {
            channel: self.name.clone(),
            message: ChannelMessage {
                position: Position {
                    epoch: self.epoch,
                    serial,
                },
                message,
                publisher,
                timestamp_ms: unix_ms,
            },
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
        let (bytes, body) =
            encoded.map_err(|error| ErrorInfo::new(error.code(), error.to_string()))?;
        self.last = serial;
        self.retained.push_back(Stored {
            serial,
            received: now,
            unix_ms,
            frame: bytes.clone(),
            body,
            origin,
        });
        while self.retained.len() > retention_count.max(1) {
            self.retained.pop_front();
        }
        self.dedupe.insert(id.clone());
        self.dedupe_order.push_back((now, id));
        while self.dedupe_order.len() > dedupe_capacity.max(1) {
            if let Some((_, old)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&old);
            }
        }
        Ok((serial, bytes))
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
            if let Some((_, old)) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&old);
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
        for bound in [query.start, query.end].into_iter().flatten() {
            if let HistoryBound::Position(position) = bound {
                if position.epoch != self.epoch {
                    return Err(ErrorInfo::new(
                        ErrorCode::EpochChanged,
                        "the position is of another epoch",
                    ));
                }
            }
        }
        let after_start = |stored: &Stored| match query.start {
            None => true,
            Some(HistoryBound::Position(p)) => stored.serial >= p.serial,
            Some(HistoryBound::Time(ms)) => stored.unix_ms >= ms,
        };
        let before_end = |stored: &Stored| match query.end {
            None => true,
            Some(HistoryBound::Position(p)) => stored.serial <= p.serial,
            Some(HistoryBound::Time(ms)) => stored.unix_ms <= ms,
        };
        let matching = |stored: &&Stored| after_start(stored) && before_end(stored);
        let mut ordered: Box<dyn Iterator<Item = &Stored>> = match query.direction {
            Direction::Forwards => Box::new(self.retained.iter().filter(matching)),
            Direction::Backwards => Box::new(self.retained.iter().rev().filter(matching)),
        };
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let mut page = Vec::new();
        let mut bytes = 0;
        let mut last_serial = None;
        for stored in ordered.by_ref() {
            let size = stored.frame.len() - stored.body;
            if page.len() == limit || (!page.is_empty() && bytes + size > max_bytes) {
                // There is more: the next page starts after the last message of this one.
                let serial = last_serial.unwrap_or(stored.serial);
                let mut next = *query;
                match query.direction {
                    Direction::Forwards => {
                        next.start = Some(HistoryBound::Position(Position {
                            epoch: self.epoch,
                            serial: serial + 1,
                        }))
                    }
                    Direction::Backwards => {
                        next.end = Some(HistoryBound::Position(Position {
                            epoch: self.epoch,
                            serial: serial.saturating_sub(1),
                        }))
                    }
                }
                return Ok((page, Some(next)));
            }
            let body = stored.frame.slice(stored.body..);
            let ServerFrame::Message { message, .. } =
                wire::decode::<ServerFrame>(&body, &Limits::PROTOCOL_MAX).map_err(|error| {
                    ErrorInfo::new(
                        ErrorCode::Internal,
                        format!("stored frame unreadable: {error}"),
                    )
                })?
            else {
                return Err(ErrorInfo::new(
                    ErrorCode::Internal,
                    "stored frame is not a message",
                ));
            };
            bytes += size;
            last_serial = Some(stored.serial);
            page.push(message);
        }
        Ok((page, None))
    }
}

/// The length of the varint prefix at the start of a length-prefixed frame.
fn prefix_len(frame: &[u8]) -> usize {
    frame
        .iter()
        .position(|byte| byte & 0x80 == 0)
        .map_or(0, |at| at + 1)
}
