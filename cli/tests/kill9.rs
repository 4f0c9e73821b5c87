//! `tether serve --data-dir` killed with SIGKILL at random moments and started again on the
//! same directory, while publishers count acknowledgements and subscribers count what they
//! receive (issue 18): every acknowledged message must be in history exactly once, and every
//! subscriber must get every message once, in order, with no discontinuity.
//!
//! `TETHER_KILL9_ROUNDS` sets the number of kills (default 6, what CI runs; the long
//! run is 25). Linux only (signals); loopback only; bounded in time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tether_tokio::tether_core::embed::DeliveryAudit;
use tether_tokio::tether_core::wire::{Direction, HistoryQuery};
use tether_tokio::{ChannelEvent, Client, ClientOptions};

const KEY: &str = "app:app-secret";
const CHANNEL: &str = "ledger";

/// A server process, killed when dropped (also when the test fails).
struct Served(Child);

impl Served {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `tether serve` on `port` over `dir`; returns once it listens.
fn serve(port: u16, dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--key", KEY, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        // Keep every message of the run, so history can be checked whole.
        .args(["--default-retention", "10000000/1h"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starts tether serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let started = Instant::now();
    let mut line = String::new();
    while !line.contains("tether server on") {
        line.clear();
        let read = stdout.read_line(&mut line).expect("reads stdout");
        assert!(read > 0, "tether serve ended before listening");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no listen line"
        );
    }
    // Keep reading so the pipe never fills.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Served(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A small deterministic generator for the kill schedule.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low + 1))
    }
}

/// Waits for one publish's outcome.
async fn resolve(
    (sequence, handle): (
        usize,
        tokio::task::JoinHandle<Result<(), tether_tokio::Error>>,
    ),
) -> (usize, Result<(), String>) {
    let outcome = match handle.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    (sequence, outcome)
}

fn client(url: &str) -> Client {
    let mut options = ClientOptions::api_key("app", "app-secret");
    options.config.backoff_base = Duration::from_millis(100);
    options.config.backoff_floor = Duration::from_millis(50);
    options.config.backoff_cap = Duration::from_millis(800);
    options.config.stable_after = Duration::from_millis(500);
    Client::connect(url, options).expect("a valid url")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_and_duplicates_nothing() {
    let rounds: usize = std::env::var("TETHER_KILL9_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let mut server = serve(port, dir.path());

    let publishers = 3;
    let subscribers = 3;
    let mut collectors = Vec::new();
    let mut clients = Vec::new();
    let received: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    for count in &received {
        let client = client(&url);
        let mut subscription = client
            .channel(CHANNEL)
            .expect("a valid name")
            .subscribe()
            .await
            .expect("subscribes");
        clients.push(client);
        let count = count.clone();
        collectors.push(tokio::spawn(async move {
            let (mut seen, mut discontinuities) = (Vec::new(), 0u64);
            while let Some(event) = subscription.next().await {
                match event {
                    ChannelEvent::Message(message) => {
                        seen.extend(DeliveryAudit::parse_label(&message.message.data));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    ChannelEvent::Discontinuity {
                        last,
                        resumed_after,
                        reason,
                    } => {
                        eprintln!("discontinuity: last {last:?}, resumed after {resumed_after:?}: {reason:?}");
                        discontinuities += 1;
                    }
                    ChannelEvent::Failed(_) => break,
                    _ => {}
                }
            }
            (seen, discontinuities)
        }));
    }

    // Publishers publish until the kills are over, each publish pipelined (it resolves on
    // its own acknowledgement).
    let publishing = Arc::new(AtomicBool::new(true));
    let mut publisher_tasks = Vec::new();
    for index in 0..publishers {
        let client = client(&url);
        clients.push(client.clone());
        let channel = client.channel(CHANNEL).expect("a valid name");
        let publishing = publishing.clone();
        publisher_tasks.push(tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let mut outcomes = Vec::new();
            let mut sequence = 0;
            while publishing.load(Ordering::Relaxed) {
                // At most 200 unacknowledged: while the server is down, publishers wait
                // rather than fill the client's queue.
                if pending.len() >= 200 {
                    if let Some(oldest) = pending.pop_front() {
                        outcomes.push(resolve(oldest).await);
                    }
                }
                let publish = channel.publish("n", DeliveryAudit::label(index, sequence));
                pending.push_back((sequence, tokio::spawn(publish)));
                sequence += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            for handle in pending {
                outcomes.push(resolve(handle).await);
            }
            outcomes
        }));
    }

    let mut schedule = Schedule(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut slowest_start = Duration::ZERO;
    for round in 0..rounds {
        tokio::time::sleep(schedule.next(300, 1500)).await;
        server.kill();
        tokio::time::sleep(schedule.next(50, 600)).await;
        let restarting = Instant::now();
        server = serve(port, dir.path());
        let took = restarting.elapsed();
        slowest_start = slowest_start.max(took);
        eprintln!(
            "kill {} of {rounds} at {:.1} s; listening again {} ms after the restart",
            round + 1,
            started.elapsed().as_secs_f64(),
            took.as_millis()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    publishing.store(false, Ordering::Relaxed);

    let mut audit = DeliveryAudit::new();
    let mut acked = 0usize;
    let mut failures = Vec::new();
    for (index, task) in publisher_tasks.into_iter().enumerate() {
        let outcomes = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every publish resolves within 60 s")
            .expect("the publisher task ends");
        for (sequence, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    acked += 1;
                    audit.acked(index, sequence);
                }
                Err(error) => failures.push(format!("publisher {index} #{sequence}: {error}")),
            }
        }
    }
    // Subscribers catch up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && received
            .iter()
            .any(|c| (c.load(Ordering::Relaxed) as usize) < acked)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // History: every acknowledged message exactly once, at consecutive serials.
    let reader = client(&url);
    reader.connected().await.expect("the reader connects");
    let channel = reader.channel(CHANNEL).expect("a valid name");
    let mut query = HistoryQuery {
        direction: Direction::Forwards,
        limit: 1000,
        ..HistoryQuery::default()
    };
    let mut history = Vec::new();
    let mut serials = Vec::new();
    loop {
        let page = channel.history(query).await.expect("a history page");
        for message in &page.messages {
            history.extend(DeliveryAudit::parse_label(&message.message.data));
            serials.push(message.position.serial);
        }
        match page.next {
            Some(next) => query = next,
            None => break,
        }
    }
    let mut in_history = DeliveryAudit::new();
    for (index, sequence) in &history {
        in_history.acked(*index, *sequence);
    }
    let mut sorted = history.clone();
    sorted.sort();
    sorted.dedup();
    reader.close().await;

    for client in &clients {
        client.close().await;
    }
    let mut discontinuities = 0;
    for collector in collectors {
        let (seen, gaps) = collector.await.expect("the collector ends");
        discontinuities += gaps;
        audit.subscriber(seen);
    }
    let report = audit.report();
    server.kill();
    eprintln!(
        "{rounds} kills (slowest restart {} ms): {acked} acknowledged, history {} ({} distinct), received {:?}, lost {}, duplicated {}, reordered {}, discontinuities {discontinuities}, failed {}",
        slowest_start.as_millis(),
        history.len(),
        sorted.len(),
        report.received,
        report.lost,
        report.duplicated,
        report.reordered,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "publishes failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(acked > 0, "nothing was acknowledged");
    assert_eq!(
        (report.lost, report.duplicated, report.reordered),
        (0, 0, 0)
    );
    assert_eq!(discontinuities, 0, "a subscriber saw a discontinuity");
    assert_eq!(history.len(), sorted.len(), "a message is in history twice");
    assert_eq!(
        history.len(),
        acked,
        "history holds other than the acknowledged messages"
    );
    assert!(
        serials.windows(2).all(|w| w[1] == w[0] + 1),
        "history has a hole or a repeat"
    );
}
