//! `tether demo`: runs [`tether_tokio::demo`] and prints its report.

use tether_tokio::demo::{self, DemoOptions};

use crate::Failure;

pub(crate) async fn run(messages: usize) -> Result<(), Failure> {
    let options = DemoOptions {
        messages,
        ..DemoOptions::default()
    };
    println!(
        "demo: {} publishers x {} messages, {} subscribers, through a proxy cutting every connection after 0.3-1.5 s",
        options.publishers, options.messages, options.subscribers
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
