//! Time as an input: the core never reads a clock.
//!
//! [`Time`] is a monotonic instant in milliseconds since an origin the caller picks (for
//! example the moment its process started). Durations are `std::time::Duration`. Wall-clock
//! time, where the protocol needs it, is passed separately as Unix milliseconds.

use std::fmt;
use std::time::Duration;

/// A monotonic instant, in milliseconds since an origin chosen by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// The instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Time {
        Time(millis)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The instant `duration` later, saturating at the end of time.
    pub fn saturating_add(self, duration: Duration) -> Time {
        Time(self.0.saturating_add(millis(duration)))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Keeps a clock monotonic: a reading earlier than the last one is clamped to it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Clock {
    last: Time,
}

impl Clock {
    /// Records `now`, clamped so time never goes backwards, and returns it.
    pub(crate) fn advance(&mut self, now: Time) -> Time {
        self.last = self.last.max(now);
        self.last
    }

    /// The latest time seen.
    pub(crate) fn now(&self) -> Time {
        self.last
    }
}

/// A reading of both clocks the hub needs: monotonic time for its timers and wall-clock
/// time (Unix milliseconds) for message timestamps and token expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Monotonic time.
    pub monotonic: Time,
    /// Wall-clock time in Unix milliseconds.
    pub unix_ms: u64,
}

impl Timestamp {
    /// Both readings.
    pub const fn new(monotonic: Time, unix_ms: u64) -> Timestamp {
        Timestamp { monotonic, unix_ms }
    }
}
