//! Retry delays: `docs/protocol.md` §6.4.

use std::time::Duration;

use super::config::ClientConfig;
use crate::rng::Rng;

/// Counts failed attempts and turns them into delays. The count resets only after a
/// connection stayed up for `stable_after`, so connect-then-drop loops keep backing off.
#[derive(Clone, Debug, Default)]
pub(crate) struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// The delay before reconnecting after losing a transport that was connected for
    /// `connected_for`.
    pub(crate) fn after_connection_lost(
        &mut self,
        connected_for: Duration,
        config: &ClientConfig,
        rng: &mut Rng,
    ) -> Duration {
        if connected_for >= config.stable_after {
            self.attempts = 0;
        }
        if self.attempts == 0 {
            self.attempts = 1;
            return rng.duration_between(Duration::ZERO, config.first_retry_max);
        }
        self.after_failed_attempt(config, rng)
    }

    /// The delay after an attempt that did not reach Connected (or a connection that
    /// dropped before it was stable).
    pub(crate) fn after_failed_attempt(
        &mut self,
        config: &ClientConfig,
        rng: &mut Rng,
    ) -> Duration {
        let attempt = self.attempts.max(1);
        self.attempts = attempt.saturating_add(1);
        let growth = 2u32.saturating_pow(attempt - 1);
        let ceiling = config
            .backoff_base
            .saturating_mul(growth)
            .min(config.backoff_cap);
        rng.duration_between(Duration::ZERO, ceiling)
            .max(config.backoff_floor)
    }

    /// The delay between two attempts while Suspended: the interval ± its jitter.
    pub(crate) fn suspended(config: &ClientConfig, rng: &mut Rng) -> Duration {
        let interval = config.suspended_retry;
        let jitter = interval * config.suspended_jitter_percent.min(100) / 100;
        rng.duration_between(interval - jitter, interval + jitter)
    }
}
