//! Readings of the real clocks, handed to the core as inputs.

use std::time::{SystemTime, UNIX_EPOCH};

use tether_core::{Seed, Time, Timestamp};
use tokio::time::Instant;

/// The monotonic origin of one state machine: `Time` counts milliseconds from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin(Instant);

impl Origin {
    pub(crate) fn now() -> Origin {
        Origin(Instant::now())
    }

    /// The current monotonic time.
    pub(crate) fn time(&self) -> Time {
        Time::from_millis(u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Both clocks, for the hub.
    pub(crate) fn stamp(&self) -> Timestamp {
        Timestamp::new(self.time(), unix_ms())
    }

    /// The instant at which `deadline` falls.
    pub(crate) fn instant(&self, deadline: Time) -> Instant {
        self.0 + std::time::Duration::from_millis(deadline.as_millis())
    }
}

/// Wall-clock time in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh seed from the operating system's random source.
pub(crate) fn fresh_seed() -> std::io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(seed)
}
