//! Readings of the real clocks, handed to the core as inputs.

use std::time::{Instant, SystemTime};

use tether_core::embed;
use tether_core::{Seed, Time, Timestamp};

/// The monotonic origin of one state machine: `Time` counts milliseconds from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin(embed::Origin);

impl Origin {
    pub(crate) fn now() -> Origin {
        Origin(embed::Origin::new(Instant::now()))
    }

    /// The current monotonic time.
    pub(crate) fn time(&self) -> Time {
        self.0.time_at(Instant::now())
    }

    /// Both clocks, for the hub.
    pub(crate) fn stamp(&self) -> Timestamp {
        self.0.stamp_at(Instant::now(), SystemTime::now())
    }

    /// The instant at which `deadline` falls, on tokio's timer.
    pub(crate) fn instant(&self, deadline: Time) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0.instant(deadline))
    }
}

/// A fresh seed from the operating system's random source.
pub(crate) fn fresh_seed() -> std::io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use tether_core::Time;
    use tether_core::embed::Origin;

    /// The core's `Origin` only converts; reading the clock is this module's job, so the
    /// round trip is checked here, with a real instant.
    #[test]
    fn times_and_instants_convert_both_ways() {
        let start = Instant::now();
        let origin = Origin::new(start);
        assert_eq!(origin.time_at(start), Time::ZERO);
        assert_eq!(
            origin.time_at(start + Duration::from_millis(1500)),
            Time::from_millis(1500)
        );
        assert_eq!(
            origin.instant(Time::from_millis(250)),
            start + Duration::from_millis(250)
        );
        // An instant before the origin is the origin: time never goes negative.
        if let Some(before) = start.checked_sub(Duration::from_secs(1)) {
            assert_eq!(origin.time_at(before), Time::ZERO);
        }
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(origin.stamp_at(start, wall).unix_ms, 1_700_000_000_123);
    }
}
