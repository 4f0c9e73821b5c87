//! Client scenarios: retry delays, jitter bounds, no reset on connect-then-drop loops.

mod support;

use std::time::Duration;

use support::scripted::*;
use tether_core::client::{Client, ClientConfig, ConnectionState};

/// Delays before each of `failures` consecutive failed attempts after a stable connection
/// was lost.
fn delays(seed: u8, failures: usize) -> Vec<Duration> {
    let mut s = Scripted::with_config(ClientConfig::new(key_auth()), seed);
    s.connect_new();
    s.advance(Duration::from_secs(11)); // stable
    s.drop_transport();
    let mut delays = Vec::new();
    for _ in 0..failures {
        delays.push(s.wait_for_open(Duration::from_secs(60)));
        let transport = s.transport.take().expect("asked to open");
        s.client
            .handle_transport_closed(s.now, transport, "refused");
        s.drain();
    }
    delays
}

#[test]
fn backoff_delays_stay_within_their_jitter_bounds_over_1000_seeds() {
    let config = ClientConfig::new(key_auth());
    let mut first_sum = Duration::ZERO;
    for seed in 0..1000u32 {
        let mut s = Scripted::from_client(Client::new(ClientConfig::new(key_auth()), {
            let mut full = [0u8; 32];
            full[..4].copy_from_slice(&seed.to_le_bytes());
            full
        }));
        s.connect_new();
        s.advance(Duration::from_secs(11));
        s.drop_transport();
        let mut observed = Vec::new();
        for _ in 0..7 {
            observed.push(s.wait_for_open(Duration::from_secs(60)));
            let transport = s.transport.take().expect("asked to open");
            s.client
                .handle_transport_closed(s.now, transport, "refused");
            s.drain();
        }
        // First retry after a stable connection: 0 to 1 s.
        assert!(
            observed[0] <= config.first_retry_max,
            "seed {seed}: {observed:?}"
        );
        first_sum += observed[0];
        // Then full jitter over base * 2^(n-1), capped, at least the floor.
        for (n, delay) in observed.iter().enumerate().skip(1) {
            let ceiling = (config.backoff_base * 2u32.pow(n as u32 - 1)).min(config.backoff_cap);
            assert!(
                *delay >= config.backoff_floor && *delay <= ceiling,
                "seed {seed}, attempt {n}: {delay:?} outside {:?}..={ceiling:?}",
                config.backoff_floor
            );
        }
    }
    // Uniform over 0-1 s: the mean of 1000 draws is near 500 ms, so they are spread out.
    let mean = first_sum / 1000;
    assert!(
        mean > Duration::from_millis(400) && mean < Duration::from_millis(600),
        "{mean:?}"
    );
}

#[test]
fn delays_grow_and_different_seeds_spread_them() {
    let a = delays(1, 8);
    let b = delays(2, 8);
    assert_ne!(a, b);
    let late: Duration = a[5..].iter().sum();
    let early: Duration = a[..3].iter().sum();
    assert!(late > early, "later attempts wait longer: {a:?}");
}

#[test]
fn backoff_does_not_reset_after_connect_then_drop_loops() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.advance(Duration::from_secs(11));
    s.drop_transport();
    // Each attempt connects, then drops after 1 s (never stable).
    let mut waits = Vec::new();
    for _ in 0..8 {
        waits.push(s.wait_for_open(Duration::from_secs(60)));
        s.open();
        s.reply(connected(true));
        assert_eq!(s.state(), ConnectionState::Connected);
        s.advance(Duration::from_secs(1));
        s.drop_transport();
    }
    // With a reset each time, every wait would be within 0-1 s.
    let total: Duration = waits.iter().sum();
    assert!(
        total > Duration::from_secs(8),
        "backoff kept growing: {waits:?}"
    );
    assert!(
        waits[6] >= Duration::from_millis(100),
        "never zero-delay: {waits:?}"
    );
}

#[test]
fn a_stable_connection_resets_the_backoff() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    for _ in 0..6 {
        s.drop_transport();
        s.wait_for_open(Duration::from_secs(60));
        s.open();
        s.reply(connected(true));
    }
    s.advance(Duration::from_secs(10));
    s.drop_transport();
    let wait = s.wait_for_open(Duration::from_secs(60));
    assert!(
        wait <= Duration::from_secs(1),
        "back to the first-retry delay: {wait:?}"
    );
}

#[test]
fn retry_now_skips_the_wait() {
    let mut s = Scripted::new(key_auth());
    s.connect_new();
    s.drop_transport();
    assert_eq!(s.state(), ConnectionState::Disconnected);
    s.client.retry_now(s.now);
    s.drain();
    assert!(s.transport.is_some(), "a transport is requested at once");
}
