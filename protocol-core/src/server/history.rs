//! Paging a channel's history (§7.5), the same way from the hub's cache and from a store.

use crate::error::{ErrorCode, ErrorInfo};
use crate::wire::{ChannelMessage, Direction, HistoryBound, HistoryQuery, Position};

/// Refuses a query whose position bounds name another epoch than the channel's
/// (`epoch_changed`, §7.5).
///
/// # Errors
/// `epoch_changed` when a bound is a position of another epoch.
pub fn check_epoch(query: &HistoryQuery, epoch: u64) -> Result<(), ErrorInfo> {
    for bound in [query.start, query.end].into_iter().flatten() {
        if let HistoryBound::Position(position) = bound {
            if position.epoch != epoch {
                return Err(ErrorInfo::new(
                    ErrorCode::EpochChanged,
                    "the position is of another epoch",
                ));
            }
        }
    }
    Ok(())
}

/// One message of a channel as the pager sees it: serial, Unix ms, and the size it takes
/// in a page (bytes); `message` reads it whole only when it goes in the page.
pub trait PageItem {
    /// Its serial.
    fn serial(&self) -> u64;
    /// When it was published (Unix ms).
    fn unix_ms(&self) -> u64;
    /// Its size in a page, in bytes.
    fn size(&self) -> usize;
    /// The message itself.
    ///
    /// # Errors
    /// It cannot be read (a corrupt record): the page fails with this error.
    fn message(self) -> Result<ChannelMessage, ErrorInfo>;
}

/// One page of `query` over `items` — a channel's messages of `epoch`, in the query's
/// direction (oldest first for forwards, newest first for backwards; items outside the
/// bounds are skipped) — holding at most `query.limit` messages and `max_bytes` bytes (at
/// least one message), and the query for the next page when there is more.
///
/// # Errors
/// The first error an item gives.
pub fn page<I, T>(
    query: &HistoryQuery,
    epoch: u64,
    items: I,
    max_bytes: usize,
) -> Result<(Vec<ChannelMessage>, Option<HistoryQuery>), ErrorInfo>
where
    I: IntoIterator<Item = Result<T, ErrorInfo>>,
    T: PageItem,
{
    let after_start = |item: &T| match query.start {
        None => true,
        Some(HistoryBound::Position(p)) => item.serial() >= p.serial,
        Some(HistoryBound::Time(ms)) => item.unix_ms() >= ms,
    };
    let before_end = |item: &T| match query.end {
        None => true,
        Some(HistoryBound::Position(p)) => item.serial() <= p.serial,
        Some(HistoryBound::Time(ms)) => item.unix_ms() <= ms,
    };
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    let mut page = Vec::new();
    let mut bytes = 0;
    let mut last_serial = None;
    for item in items {
        let item = item?;
        if !(after_start(&item) && before_end(&item)) {
            continue;
        }
        let size = item.size();
        if page.len() == limit || (!page.is_empty() && bytes + size > max_bytes) {
            // There is more: the next page starts after the last message of this one.
            let serial = last_serial.unwrap_or(item.serial());
            let mut next = *query;
            match query.direction {
                Direction::Forwards => {
                    next.start = Some(HistoryBound::Position(Position {
                        epoch,
                        serial: serial + 1,
                    }))
                }
                Direction::Backwards => {
                    next.end = Some(HistoryBound::Position(Position {
                        epoch,
                        serial: serial.saturating_sub(1),
                    }))
                }
            }
            return Ok((page, Some(next)));
        }
        bytes += size;
        last_serial = Some(item.serial());
        page.push(item.message()?);
    }
    Ok((page, None))
}
