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

/// The origin of one state machine's `Time` on a clock read in milliseconds — a browser's
/// `performance.now()`, where `std::time::Instant` does not exist (wasm32). Like [`Origin`],
/// it reads no clock: readings come in, `Time` goes out.
#[derive(Clone, Copy, Debug)]
pub struct MillisOrigin(f64);

impl MillisOrigin {
    /// `Time::ZERO` falls at the reading `start_ms`.
    pub fn new(start_ms: f64) -> MillisOrigin {
        MillisOrigin(start_ms)
    }

    /// The core's time at the reading `now_ms` (a reading before the origin, or not a
    /// number, is the origin: the core's time never goes back).
    pub fn time_at(&self, now_ms: f64) -> Time {
        let elapsed = now_ms - self.0;
        if elapsed.is_nan() || elapsed <= 0.0 {
            return Time::ZERO;
        }
        // Whole milliseconds; readings beyond u64 are clamped by the cast.
        Time::from_millis(elapsed as u64)
    }

    /// The reading at which `deadline` falls.
    pub fn reading(&self, deadline: Time) -> f64 {
        self.0 + deadline.as_millis() as f64
    }

    /// Milliseconds from the reading `now_ms` until `deadline` (0 when it has passed): what
    /// to give `setTimeout`.
    pub fn wait_ms(&self, now_ms: f64, deadline: Time) -> f64 {
        (self.reading(deadline) - now_ms).max(0.0)
    }
}

/// A wall-clock reading in Unix milliseconds (0 before 1970).
pub fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH).map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_readings_convert_both_ways_and_never_go_back() {
        let origin = MillisOrigin::new(1_000.25);
        assert_eq!(origin.time_at(1_000.25), Time::ZERO);
        assert_eq!(origin.time_at(1_500.9), Time::from_millis(500));
        assert_eq!(origin.time_at(900.0), Time::ZERO, "before the origin");
        assert_eq!(origin.time_at(f64::NAN), Time::ZERO);
        let deadline = Time::from_millis(2_000);
        assert_eq!(origin.reading(deadline), 3_000.25);
        assert_eq!(origin.wait_ms(2_000.25, deadline), 1_000.0);
        assert_eq!(origin.wait_ms(4_000.0, deadline), 0.0);
    }
}
