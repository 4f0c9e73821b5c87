//! `tether demo`: runs [`tether_tokio::demo`] and prints its report.

use std::sync::Arc;
use std::time::Duration;

use tether_engine::{Engine, EngineConfig};
use tether_tokio::HubConfig;
use tether_tokio::demo::{self, DemoOptions, StoreFactory};

use crate::Failure;

pub(crate) async fn run(messages: usize) -> Result<(), Failure> {
    // The embedded store on a temporary directory, removed at the end.
    let dir = tempfile::Builder::new()
        .prefix("tether-demo-")
        .tempdir()
        .map_err(|e| Failure::run(format!("no temporary directory for the demo's store: {e}")))?;
    let path = dir.path().to_path_buf();
    let mut hub = HubConfig::default();
    hub.retention_count = 100_000;
    let engine_config = EngineConfig::for_hub(&hub);
    let options = DemoOptions {
        messages,
        store: Some(StoreFactory(Arc::new(move || {
            let engine = Engine::open(&path, engine_config.clone())?;
            Ok(Arc::new(engine) as Arc<dyn tether_tokio::tether_core::server::Store>)
        }))),
        // Mid-stream: the publishers take about 10 ms per message.
        restart_after: Some(Duration::from_millis((messages as u64 * 10 / 2).max(200))),
        ..DemoOptions::default()
    };
    println!(
        "demo: {} publishers x {} messages, {} subscribers, through a proxy cutting every connection after 0.3-1.5 s; \
         the server keeps its channels in {} and is killed (a hard stop) and started again mid-stream",
        options.publishers,
        options.messages,
        options.subscribers,
        dir.path().display()
    );
    let report = demo::run(options)
        .await
        .map_err(|e| Failure::run(format!("the demo could not run: {e}")))?;
    println!("  publishes acknowledged : {}", report.acked);
    println!("  publishes failed       : {}", report.failed.len());
    for (index, count) in report.received.iter().enumerate() {
        println!("  subscriber {index} received : {count}");
    }
    println!("  connections cut        : {}", report.cuts);
    println!(
        "  reconnects             : {} ({} resumed the session)",
        report.reconnects, report.resumed
    );
    println!("  tokens renewed in-band : {}", report.renewals);
    println!("  server hard restarts   : {}", report.restarts);
    println!("  discontinuities        : {}", report.discontinuities);
    println!(
        "  lost {}, duplicated {}, out of order {}",
        report.lost, report.duplicated, report.reordered
    );
    println!("  took {:.1} s", report.elapsed.as_secs_f64());
    for failure in report.failed.iter().take(5) {
        println!("  failure: {failure}");
    }
    for stalled in &report.stalled {
        println!("  stalled: {stalled}");
    }
    if report.ok() {
        println!("every guarantee held");
        Ok(())
    } else {
        println!("A GUARANTEE BROKE");
        Err(Failure::run("a guarantee broke (see above)"))
    }
}
