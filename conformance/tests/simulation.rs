//! The deterministic simulator: seeds pass, traces replay exactly, and the checker catches
//! each deliberately broken guarantee.

use tether_conformance::sim::{self, Guarantee, Record, SimConfig};
use tether_core::ErrorCode;
use tether_core::client::Event;
use tether_core::sabotage::Sabotage;

/// How many seeds the test suite runs (CI runs more through the command line).
const SEEDS: u64 = 200;

#[test]
fn simulation_seeds_keep_every_guarantee() {
    let config = SimConfig::default();
    for seed in 0..SEEDS {
        let report = sim::run(seed, &config);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}\nreplay: cargo run -p tether-conformance --release -- sim --seed {seed} --trace",
            &report.violations[..report.violations.len().min(5)]
        );
        assert!(
            report.stats.publishes > 0 && report.stats.deliveries > 0,
            "seed {seed} did work"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    let config = SimConfig::default();
    for seed in [0, 7, 463] {
        let first = sim::run(seed, &config);
        let second = sim::run(seed, &config);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.trace.entries, second.trace.entries);
    }
    assert_ne!(
        sim::run(1, &config).trace_hash,
        sim::run(2, &config).trace_hash
    );
}

#[test]
fn faults_of_every_kind_happen_across_the_ci_seeds() {
    let config = SimConfig::default();
    let mut state_losses = 0;
    let mut faults = 0;
    let mut restores = 0;
    let mut slow_consumer_drops = 0;
    for seed in 0..50 {
        let report = sim::run(seed, &config);
        state_losses += report.stats.state_losses;
        faults += report.stats.faults;
        restores += report.stats.restores;
        slow_consumer_drops += report.stats.slow_consumer_drops;
    }
    assert!(faults > 500, "{faults} faults in 50 seeds");
    assert!(
        state_losses > 5,
        "{state_losses} hub restarts with lost state in 50 seeds"
    );
    assert!(
        restores > 5,
        "{restores} clients restored from a snapshot in 50 seeds"
    );
    assert!(
        slow_consumer_drops > 2,
        "{slow_consumer_drops} slow-consumer drops in 50 seeds"
    );
}

/// Runs each seed with the default configuration and fails on the first violation.
fn assert_seeds_keep_every_guarantee(seeds: &[u64]) {
    for &seed in seeds {
        let report = sim::run(seed, &SimConfig::default());
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
    }
}

/// Runs seeds with `sabotage` until the checker reports `expected`; fails if it never does.
fn caught(sabotage: Sabotage, expected: Guarantee) {
    let config = SimConfig {
        sabotage,
        ..SimConfig::default()
    };
    for seed in 0..100 {
        let report = sim::run(seed, &config);
        if report.violations.iter().any(|v| v.guarantee == expected) {
            return;
        }
    }
    panic!("{sabotage:?} was never reported as {expected:?} in 100 seeds");
}

#[test]
fn the_checker_catches_lost_messages_g1() {
    caught(Sabotage::ClientDropsDeliveries, Guarantee::G1);
}

#[test]
fn the_checker_catches_duplicates_g2() {
    caught(Sabotage::HubForgetsMessageIds, Guarantee::G2);
}

#[test]
fn the_checker_catches_reordering_g3() {
    caught(Sabotage::ClientSwapsDeliveries, Guarantee::G3);
}

#[test]
fn the_checker_catches_unresolved_publishes_g4() {
    caught(Sabotage::ClientForgetsPendingPublishes, Guarantee::G4);
}

#[test]
fn the_checker_catches_old_transports_acting_g5() {
    caught(Sabotage::ClientAcceptsStaleTransports, Guarantee::G5);
}

#[test]
fn the_checker_catches_a_client_that_never_comes_back_g6() {
    caught(Sabotage::ClientStopsRetrying, Guarantee::G6);
}

#[test]
fn regression_seeds_333_463_628_1740_first_frame_timeout_in_a_stall_is_not_fatal() {
    // The simulator found that a connect frame delayed past the first-frame deadline by a
    // stalled link got a fatal error: the client ended Failed.
    assert_seeds_keep_every_guarantee(&[333, 463, 628, 1740]);
}

#[test]
fn a_reconnect_storm_spreads_attempts_over_time() {
    let report = sim::storm::run(2_000, 1, std::time::Duration::ZERO);
    assert!(
        report.peak_share <= 0.15,
        "{:.1} % of clients in one 100 ms window",
        100.0 * report.peak_share
    );
    assert!(report.all_connected_after < std::time::Duration::from_secs(5));
    let attempts: usize = report.attempts_per_window.values().sum();
    assert!(attempts >= report.clients, "every client tried");
}

#[test]
fn regression_seeds_18481_28692_33362_a_late_token_expiry_after_a_clock_jump_recovers() {
    // A wall-clock jump in the hub made a token expire earlier than the client planned its
    // renewal (the client cannot see the hub's clock jump); the hub disconnected it with
    // token_expired right at the end of the settle period. The client renews and resumes:
    // the simulator now waits one more bounded window for such late recoveries.
    assert_seeds_keep_every_guarantee(&[18481, 28692, 33362]);
}

#[test]
fn regression_seeds_6134_8815_positions_of_undelivered_messages_come_from_the_hub() {
    // The checker judged a message lost when no client happened to receive it, so its
    // position was unknown and a same-epoch discontinuity could not be shown to cover it.
    // An observer on the hub now records where every message is stored.
    assert_seeds_keep_every_guarantee(&[6134, 8815]);
    assert!(
        !sim::run(6134, &SimConfig::default())
            .trace
            .stored
            .is_empty()
    );
}

/// Issue 20, item 2: the wider fault schedule (links that die silently or half way,
/// heartbeats up to the hub's 300 s maximum so a drop is noticed minutes late, client
/// processes restored from a snapshot after long gaps, slow-consumer drops) with the
/// hub's old behaviour back — resends caught only by the dedupe window — stores a resend
/// twice, and the checker says so; the same seed is clean with the session record.
#[test]
fn the_checker_catches_a_resend_stored_after_the_dedupe_window() {
    caught_on_seed_and_clean_without(Sabotage::HubWithoutPublishRecord, 91, Guarantee::G2);
}

/// Runs `seed` with `sabotage` and expects the checker to report `expected`; runs it again
/// without the sabotage and expects no violation. Returns the clean report.
fn caught_on_seed_and_clean_without(
    sabotage: Sabotage,
    seed: u64,
    expected: Guarantee,
) -> sim::SimReport {
    let sabotaged = SimConfig {
        sabotage,
        ..SimConfig::default()
    };
    let report = sim::run(seed, &sabotaged);
    assert!(
        report.violations.iter().any(|v| v.guarantee == expected),
        "{sabotage:?} on seed {seed}: {:?}",
        report.violations
    );
    let clean = sim::run(seed, &SimConfig::default());
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    clean
}

/// Issue 20, items 1 and 2: a client publishes at 48.6 s, its acknowledgements are lost,
/// its process dies at 86.9 s and is restored from its snapshot at 282.5 s; its session has
/// expired. With the old client, which resent to the new session whatever it had, the hub —
/// past its dedupe window — stores the messages again and subscribers get them twice (seed
/// 1252); the client now fails those publishes with `publish_outcome_unknown`.
#[test]
fn the_checker_catches_a_restored_client_resending_past_the_dedupe_window() {
    let clean = caught_on_seed_and_clean_without(
        Sabotage::ClientResendsPastDedupeWindow,
        1252,
        Guarantee::G2,
    );
    let outcome_unknown = clean.trace.entries.iter().any(|entry| {
        matches!(
            &entry.record,
            Record::Event(Event::PublishResolved { result: Err(error), .. })
                if error.code == ErrorCode::PublishOutcomeUnknown
        )
    });
    assert!(
        outcome_unknown,
        "the restored publish fails as outcome unknown"
    );
}

/// Issue 20, item 12: with the server down for a while, attempts refused meanwhile piled up
/// onto the first retries and landed together (21 % of 2,000 clients in one 100 ms window).
/// For downtimes of 0.5, 1, 5 and 30 s the busiest window stays within 15 %, and everyone is
/// back within the downtime plus the backoff cap.
#[test]
fn a_reconnect_storm_after_a_downtime_stays_spread() {
    for down_ms in [500, 1_000, 5_000, 30_000] {
        let down = std::time::Duration::from_millis(down_ms);
        let report = sim::storm::run(2_000, 1, down);
        assert!(
            report.peak_share <= 0.15,
            "down {down_ms} ms: {:.1} % of clients in one 100 ms window",
            100.0 * report.peak_share
        );
        assert!(
            report.all_connected_after < down + std::time::Duration::from_secs(35),
            "down {down_ms} ms: back after {:?}",
            report.all_connected_after
        );
    }
}

/// Found by the snapshot restores of issue 20's wider schedule: a client restored with
/// every publish acknowledged started its serials at 0 again, so its next publish reused a
/// serial of the resumed session and the hub refused it as `invalid_publish_serial` — a
/// publish lost for no fault (the checker now flags bad-request refusals). Seed 3 showed it.
#[test]
fn regression_seed_3_a_restored_client_continues_its_serials() {
    assert_seeds_keep_every_guarantee(&[3, 9, 15, 16]);
}

/// Issue 18: seeds on the reference store (slow syncs, failing windows, crashes between
/// sync and ACK with restarts on the store kept) keep every guarantee, with no discontinuity
/// while the store is kept (CI runs 1,000 through the command line).
#[test]
fn store_simulation_seeds_keep_every_guarantee() {
    let config = SimConfig {
        store: true,
        ..SimConfig::default()
    };
    let mut restarts = 0;
    for seed in 0..100 {
        let report = sim::run(seed, &config);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p tether-conformance --release -- sim --seed {seed} --trace --store",
            &report.violations[..report.violations.len().min(5)]
        );
        restarts += report.stats.store_restarts;
    }
    assert!(restarts > 10, "{restarts} restarts on the store kept");
}

/// §6.10 under faults: a third of the WebSocket transports are blocked; clients fall back to
/// the HTTP binding and move back after the probe interval, every guarantee holding.
#[test]
fn fallback_simulation_seeds_keep_every_guarantee() {
    let config = SimConfig {
        blocked_websockets: true,
        ..SimConfig::default()
    };
    let (mut blocked, mut http) = (0, 0);
    for seed in 0..100 {
        let report = sim::run(seed, &config);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p tether-conformance --release -- sim --seed {seed} --trace --blocked-websockets",
            &report.violations[..report.violations.len().min(5)]
        );
        blocked += report.stats.blocked_websockets;
        http += report.stats.http_transports;
    }
    assert!(
        blocked > 100 && http >= blocked,
        "{blocked} blocked, {http} HTTP transports"
    );
}

#[test]
fn regression_seed_200948_store_answers_to_superseded_attaches_are_dropped() {
    // With a store: a stalled link held attach, detach, attach, detach, attach of one
    // channel; the client took the hub's late answers to the superseded attaches for the
    // newest one and reported a discontinuity although the store kept everything.
    let config = SimConfig {
        store: true,
        ..SimConfig::default()
    };
    let report = sim::run(200_948, &config);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
