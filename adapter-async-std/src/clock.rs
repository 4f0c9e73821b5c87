//! Readings of the real clocks, handed to the core as inputs; sleeping on async-io's timer.

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

    /// Sleeps until `deadline`, or forever when there is none.
    pub(crate) async fn sleep_until(&self, deadline: Option<Time>) {
        match deadline {
            Some(deadline) => {
                async_io::Timer::at(self.0.instant(deadline)).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// A fresh seed from the operating system's random source.
pub(crate) fn fresh_seed() -> std::io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(seed)
}
