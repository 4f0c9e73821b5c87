//! The real clocks: the core's time is read off `Instant::now()` through an
//! [`Origin`](tether_core::embed::Origin); sleeping is on async-io's timer.

use std::time::Instant;

use tether_core::embed::Origin;
use tether_core::{Seed, Time};

/// Sleeps until the core's `deadline` (counted from `origin`), or forever when there is none.
pub(crate) async fn sleep_until(origin: &Origin, deadline: Option<Time>) {
    match deadline {
        Some(deadline) => {
            async_io::Timer::at(origin.instant(deadline)).await;
        }
        None => std::future::pending().await,
    }
}

/// The current time of the state machine counted from `origin`.
pub(crate) fn now(origin: &Origin) -> Time {
    origin.time_at(Instant::now())
}

/// A fresh seed from the operating system's random source.
pub(crate) fn fresh_seed() -> std::io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(seed)
}
