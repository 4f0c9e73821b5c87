//! # tether-driver
//!
//! The one driver behind every tether adapter: the client's task (commands in, the core's
//! outputs carried out, one WebSocket transport at a time), the server's hub task, accept
//! loop and connection tasks, and the writers with their batching — written once, over
//! `futures-io` streams and async-tungstenite, for any async runtime.
//!
//! An adapter is a [`Runtime`]: how to spawn a task, how to sleep until an instant, how to
//! open and accept TCP connections, and how to show the connection state to applications.
//! Everything else is here, and every protocol decision below it is
//! [`tether_core`]'s.
//!
//! ## Calling contract (for adapter authors)
//!
//! 1. Implement [`Runtime`] for a small `Clone` value that can spawn (a runtime handle or an
//!    executor), and [`Bind`] for the address types `Server::bind` should take.
//! 2. Re-export the handles with your runtime filled in:
//!    `pub type Client = tether_driver::Client<MyRuntime>;` (likewise [`Channel`],
//!    [`Server`]), and [`Subscription`], [`tls_from_pem`] as they are, and
//!    `pub use tether_driver::api::*;` for the types applications name (so every adapter
//!    offers the same ones).
//! 3. Give your transport options ([`Runtime::ClientTransport`],
//!    [`Runtime::ServerTransport`]): at least the rustls configuration, and whatever your
//!    runtime needs to be chosen by the user (an executor).
//!
//! What the driver guarantees to an adapter:
//!
//! - Every task it starts goes through [`Runtime::spawn`] and ends by itself: the client's
//!   task when the client is closed or every handle dropped, a transport's when the core
//!   gives it up or its socket fails, the server's when it is shut down. Nothing is ever
//!   cancelled through the runtime.
//! - It reads the clock only through `Instant::now()` and `SystemTime::now()`, and waits
//!   only on the [`Runtime::Timer`] it asked for; one timer per task, moved only when the
//!   core's deadline moves.
//! - Each task re-reads the core's deadline after every input and drains every output
//!   before it waits (the run loop of the core's rustdoc).
//! - Sockets come from [`Runtime::connect`] and [`Runtime::accept`] only, already in
//!   `futures-io` form; TLS (rustls) and WebSocket (async-tungstenite, with the limits of
//!   [`websocket_config`]) are layered here.
//!
//! ## Logs never hold credentials
//!
//! The driver's own logs (`tracing`) carry no credential. tungstenite logs every WebSocket
//! frame with its payload at `trace` through the `log` crate, and the first frame carries the
//! key secret or token; so this crate enables `log`'s `max_level_debug` feature, which
//! compiles every `log` record above `debug` out of the whole program. An application that
//! links tether therefore gets no `log::trace!` output from any crate (`tracing`'s own
//! `trace!` is unaffected).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
mod client;
mod runtime;
mod server;
mod state;
mod tls;

pub use client::{Channel, Client, Subscription};
pub use runtime::{Bind, Runtime, Task};
pub use server::{
    BINDING_HEADERS, BindingAnswer, BindingRequest, DownBody, PREFLIGHT_HEADERS, Server, Service,
};
pub use state::{CHANGES_KEPT, StateChanges, StateWatch};
pub use tls::{tls_from_pem, websocket_config};

/// A fresh seed from the operating system's random source.
pub(crate) fn fresh_seed() -> std::io::Result<tether_core::Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use tether_core::Time;
    use tether_core::embed::Origin;

    /// The core's `Origin` only converts; reading the clock is the driver's job, so the
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
