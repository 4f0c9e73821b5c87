//! `tether-conformance`: runs the protocol's test vectors.
//!
//! ```text
//! tether-conformance vectors [DIR]          run every vector below DIR (default: the committed ones)
//! tether-conformance record-wire DIR [--force]   write the wire vectors from the built-in samples
//! tether-conformance sim --seeds N [--start S] [--sabotage NAME] [--store] [--blocked-websockets]   run N simulation seeds
//! tether-conformance sim --seed S --trace      replay one seed and print its trace
//!   (--store: the hub on the reference store, with store faults)
//! tether-conformance storm [--clients N]       the reconnect storm
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Instant;

use tether_conformance::sim::{self, SimConfig};
use tether_conformance::{record, run_dir, vectors_dir};
use tether_core::sabotage::Sabotage;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["vectors"] => vectors(vectors_dir()),
        ["vectors", dir] => vectors(PathBuf::from(dir)),
        ["record-wire", dir] => record_wire(dir, false),
        ["record-wire", dir, "--force"] => record_wire(dir, true),
        ["record-behaviour", dir] => record_behaviour(dir, false),
        ["record-behaviour", dir, "--force"] => record_behaviour(dir, true),
        ["sim", rest @ ..] => simulate(rest),
        ["storm"] => storm(10_000, 0),
        ["storm", "--clients", n] => match n.parse() {
            Ok(n) => storm(n, 0),
            Err(_) => usage(),
        },
        ["storm", "--clients", n, "--down-ms", down] => match (n.parse(), down.parse()) {
            (Ok(n), Ok(down)) => storm(n, down),
            _ => usage(),
        },
        _ => usage(),
    }
}

fn record_behaviour(dir: &str, overwrite: bool) -> ExitCode {
    match tether_conformance::behaviour_record::write_all(&PathBuf::from(dir), overwrite) {
        Ok(count) => {
            println!("wrote {count} behaviour vectors to {dir}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  tether-conformance vectors [DIR]\n  tether-conformance record-wire DIR [--force]\n  tether-conformance record-behaviour DIR [--force]\n  \
         tether-conformance sim --seeds N [--start S] [--sabotage NAME] [--store] [--blocked-websockets]\n  \
         tether-conformance sim --seed S [--trace] [--sabotage NAME] [--store] [--blocked-websockets]\n  tether-conformance storm [--clients N [--down-ms MS]]\n\
         sabotage names: {}",
        SABOTAGE_NAMES.join(", ")
    );
    ExitCode::from(2)
}

/// Every name `--sabotage` takes (see `sabotage_named`).
const SABOTAGE_NAMES: [&str; 9] = [
    "none",
    "client-drops-deliveries",
    "hub-forgets-message-ids",
    "client-swaps-deliveries",
    "client-forgets-pending-publishes",
    "client-accepts-stale-transports",
    "client-stops-retrying",
    "hub-without-publish-record",
    "client-resends-past-dedupe-window",
];

fn sabotage_named(name: &str) -> Option<Sabotage> {
    Some(match name {
        "none" => Sabotage::None,
        "client-drops-deliveries" => Sabotage::ClientDropsDeliveries,
        "hub-forgets-message-ids" => Sabotage::HubForgetsMessageIds,
        "client-swaps-deliveries" => Sabotage::ClientSwapsDeliveries,
        "client-forgets-pending-publishes" => Sabotage::ClientForgetsPendingPublishes,
        "client-accepts-stale-transports" => Sabotage::ClientAcceptsStaleTransports,
        "client-stops-retrying" => Sabotage::ClientStopsRetrying,
        "hub-without-publish-record" => Sabotage::HubWithoutPublishRecord,
        "client-resends-past-dedupe-window" => Sabotage::ClientResendsPastDedupeWindow,
        _ => return None,
    })
}

fn simulate(args: &[&str]) -> ExitCode {
    let mut seeds = 1u64;
    let mut start = 0u64;
    let mut trace = false;
    let mut config = SimConfig::default();
    let mut sabotage_name = "none";
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value =
            |rest: &mut std::slice::Iter<'_, &str>| rest.next().and_then(|v| v.parse::<u64>().ok());
        match *arg {
            "--seeds" => match value(&mut rest) {
                Some(n) => seeds = n,
                None => return usage(),
            },
            "--start" | "--seed" => match value(&mut rest) {
                Some(s) => start = s,
                None => return usage(),
            },
            "--trace" => trace = true,
            "--store" => config.store = true,
            "--blocked-websockets" => config.blocked_websockets = true,
            "--sabotage" => match rest
                .next()
                .copied()
                .and_then(|n| sabotage_named(n).map(|s| (n, s)))
            {
                Some((name, sabotage)) => {
                    sabotage_name = name;
                    config.sabotage = sabotage;
                }
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let began = Instant::now();
    let mut failed = 0u64;
    let mut totals = sim::SimStats::default();
    for seed in start..start + seeds {
        let report = sim::run(seed, &config);
        totals.publishes += report.stats.publishes;
        totals.deliveries += report.stats.deliveries;
        totals.faults += report.stats.faults;
        totals.state_losses += report.stats.state_losses;
        totals.restores += report.stats.restores;
        totals.slow_consumer_drops += report.stats.slow_consumer_drops;
        totals.store_restarts += report.stats.store_restarts;
        totals.store_failures += report.stats.store_failures;
        totals.blocked_websockets += report.stats.blocked_websockets;
        totals.http_transports += report.stats.http_transports;
        if trace {
            for entry in &report.trace.entries {
                println!("{} c{} {:?}", entry.at, entry.client, entry.record);
            }
            println!("final states: {:?}", report.trace.final_states);
            println!("trace hash {:016x}", report.trace_hash);
        }
        if !report.violations.is_empty() {
            failed += 1;
            println!(
                "seed {seed} FAILED ({} violations), first: {}",
                report.violations.len(),
                report.violations[0]
            );
            println!(
                "  replay: cargo run -p tether-conformance --release -- sim --seed {seed} --trace --sabotage {sabotage_name}{}{}",
                if config.store { " --store" } else { "" },
                if config.blocked_websockets {
                    " --blocked-websockets"
                } else {
                    ""
                }
            );
        }
    }
    if config.blocked_websockets {
        println!(
            "fallback: {} WebSocket transports blocked, {} HTTP binding transports opened",
            totals.blocked_websockets, totals.http_transports
        );
    }
    println!(
        "{} publishes, {} deliveries, {} faults: {} hub state losses, {} clients restored \
         from a snapshot, {} slow-consumer drops",
        totals.publishes,
        totals.deliveries,
        totals.faults,
        totals.state_losses,
        totals.restores,
        totals.slow_consumer_drops
    );
    if config.store {
        println!(
            "store: {} restarts on the store kept, {} appends refused by a failing store",
            totals.store_restarts, totals.store_failures
        );
    }
    println!(
        "{} passed, {} failed ({} seeds in {:.1} s)",
        seeds - failed,
        failed,
        seeds,
        began.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn storm(clients: usize, down_ms: u64) -> ExitCode {
    let report = sim::storm::run(clients, 1, std::time::Duration::from_millis(down_ms));
    println!(
        "reconnect storm: {} clients dropped at once by a hub restart, the hub down {down_ms} ms",
        report.clients
    );
    println!("window (ms)   attempts   share");
    for (window, count) in &report.attempts_per_window {
        println!(
            "{:>5}-{:<5} {:>9}   {:>5.1} %",
            window * 100,
            window * 100 + 100,
            count,
            100.0 * *count as f64 / report.clients as f64
        );
    }
    println!(
        "peak share of one 100 ms window: {:.1} %",
        100.0 * report.peak_share
    );
    println!(
        "all connected again after: {:?}",
        report.all_connected_after
    );
    if report.peak_share <= 0.15 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn vectors(dir: PathBuf) -> ExitCode {
    let outcomes = match run_dir(&dir) {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for outcome in &outcomes {
        let shown = outcome.path.strip_prefix(&dir).unwrap_or(&outcome.path);
        match &outcome.result {
            Ok(()) => println!("ok   {}", shown.display()),
            Err(reason) => {
                failed += 1;
                println!("FAIL {}: {reason}", shown.display());
            }
        }
    }
    println!("{} passed, {} failed", outcomes.len() - failed, failed);
    if failed == 0 && !outcomes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn record_wire(dir: &str, overwrite: bool) -> ExitCode {
    match record::write_all(&PathBuf::from(dir), overwrite) {
        Ok(count) => {
            println!("wrote {count} wire vectors to {dir}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SABOTAGE_NAMES, sabotage_named};

    #[test]
    fn every_listed_sabotage_name_is_known() {
        for name in SABOTAGE_NAMES {
            assert!(sabotage_named(name).is_some(), "{name}");
        }
        assert!(sabotage_named("nope").is_none());
    }
}
