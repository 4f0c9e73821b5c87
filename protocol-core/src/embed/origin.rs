//! Converting between a monotonic clock's instants and the core's `Time`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::time::{Time, Timestamp, millis};

/// The origin of one state machine's `Time`: an instant of the adapter's monotonic clock.
///
/// It reads no clock: the adapter reads its own monotonic clock, passes the reading in and
/// gets `Time` out, and turns the core's deadlines back into instants to sleep until.
#[derive(Clone, Copy, Debug)]
pub struct Origin(Instant);

impl Origin {
    /// `Time::ZERO` falls at `start`.
    pub fn new(start: Instant) -> Origin {
        Origin(start)
    }

    /// The core's time at `now`.
    pub fn time_at(&self, now: Instant) -> Time {
        Time::from_millis(millis(now.saturating_duration_since(self.0)))
    }

    /// Both clocks for the hub, from readings of each.
    pub fn stamp_at(&self, now: Instant, wall: SystemTime) -> Timestamp {
        Timestamp::new(self.time_at(now), unix_ms(wall))
    }

    /// The instant at which `deadline` falls.
    pub fn instant(&self, deadline: Time) -> Instant {
        self.0 + Duration::from_millis(deadline.as_millis())
    }
}

/// A wall-clock reading in Unix milliseconds (0 before 1970).
pub fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH).map_or(0, millis)
}
