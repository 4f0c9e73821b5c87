//! Restart with many retained messages (issue 18): fills a store with N messages (default
//! 1,000,000, `--messages N`) over 10 channels through the storage port, stops it cleanly or
//! not, then measures what a server's start costs before it can serve the first resume:
//! opening the store (journal recovery), reading back what the hub restores (heads, cached
//! messages, dedupe ids, sessions) and the hub's restore — with the process's RSS after it.
//!
//! `cargo bench -p tether-engine --bench restart [-- --messages N]`

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tether_core::server::{
    Hub, HubConfig, StorageCompletion, StorageMode, StorageRequest, StorageRequestId, Store,
};
use tether_core::wire::{
    ChannelMessage, ChannelName, ClientId, Message, MessageId, Position, SessionId,
};
use tether_core::{Time, Timestamp};
use tether_engine::{Engine, EngineConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--measure") {
        let number = |i: usize| args.get(at + i).and_then(|n| n.parse().ok()).unwrap_or(0);
        measure(
            std::path::Path::new(&args[at + 1]),
            number(2),
            number(3),
            number(4),
        );
        return;
    }
    let messages: u64 = args
        .iter()
        .position(|a| a == "--messages")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut hub_config = HubConfig::default();
    hub_config.storage = StorageMode::External;
    let mut config = EngineConfig::for_hub(&hub_config);
    config.default_retention = (u64::MAX, Duration::from_secs(24 * 3600));

    // Fill: 10 channels, appends of 100 messages of 100 bytes, answered in order.
    let channels: Vec<ChannelName> = (0..10)
        .map(|i| ChannelName::new(format!("bench:{i}")).expect("valid"))
        .collect();
    let filling = Instant::now();
    {
        let engine = Engine::open(dir.path(), config.clone()).expect("opens");
        let (done, answers) = mpsc::channel();
        let mut sink = engine
            .start(Box::new(move |completion| {
                let _ = done.send(completion);
            }))
            .expect("starts");
        let per_channel = messages / channels.len() as u64;
        let mut sent = 0u64;
        let now = unix_ms();
        for (c, channel) in channels.iter().enumerate() {
            let epoch = 1000 + c as u64;
            let mut serial = 1;
            while serial <= per_channel {
                let batch: Vec<ChannelMessage> = (serial..(serial + 100).min(per_channel + 1))
                    .map(|s| ChannelMessage {
                        position: Position { epoch, serial: s },
                        message: Message {
                            id: MessageId::new(format!("m-{c}-{s}")).expect("valid"),
                            name: "n".into(),
                            data: Bytes::from(vec![7u8; 100]),
                        },
                        publisher: ClientId::new("bench").expect("valid"),
                        timestamp_ms: now,
                    })
                    .collect();
                serial += batch.len() as u64;
                sink.request(StorageRequest::Append {
                    id: StorageRequestId(sent),
                    channel: channel.clone(),
                    messages: batch,
                    origin: SessionId(1),
                    outcome: None,
                });
                sent += 1;
                // Keep at most 64 appends in flight.
                if sent >= 64 {
                    match answers.recv().expect("answered") {
                        StorageCompletion::Appended { .. } => {}
                        other => panic!("not stored: {other:?}"),
                    }
                }
            }
        }
        sink.abandon();
    }
    let fill = filling.elapsed();
    let disk = Engine::open(dir.path(), config.clone())
        .map(|e| e.disk_space())
        .unwrap_or(0);
    // Measured in a fresh process, as a restarted server would be.
    let status = std::process::Command::new(std::env::current_exe().expect("itself"))
        .arg("--measure")
        .arg(dir.path())
        .arg(messages.to_string())
        .arg(format!("{disk}"))
        .arg(format!("{}", fill.as_millis()))
        .status()
        .expect("runs the measurement");
    assert!(status.success());
}

fn measure(dir: &std::path::Path, messages: u64, disk: u64, fill_ms: u64) {
    let mut hub_config = HubConfig::default();
    hub_config.storage = StorageMode::External;
    let mut config = EngineConfig::for_hub(&hub_config);
    config.default_retention = (u64::MAX, Duration::from_secs(24 * 3600));
    let rss_before = rss_kib();

    let start = Instant::now();
    let engine = Engine::open(dir, config).expect("opens again");
    let opened = start.elapsed();
    let state = engine.restore(unix_ms()).expect("restores");
    let read = start.elapsed();
    let cached: usize = state.channels.iter().map(|c| c.recent.len()).sum();
    let ids: usize = state.channels.iter().map(|c| c.ids.len()).sum();
    let mut hub = Hub::new(hub_config, [1; 32]);
    hub.restore(Timestamp::new(Time::ZERO, unix_ms()), state);
    let restored = start.elapsed();
    let rss_after = rss_kib();
    println!(
        "restart with {messages} retained messages ({:.0} MB on disk, filled in {:.1} s, last run not stopped cleanly):",
        disk as f64 / 1e6,
        fill_ms as f64 / 1000.0
    );
    println!(
        "  open (journal recovery) {} ms, read back {} ms ({cached} cached messages, {ids} dedupe ids), hub restore {} ms: ready after {} ms",
        opened.as_millis(),
        (read - opened).as_millis(),
        (restored - read).as_millis(),
        restored.as_millis()
    );
    println!(
        "  RSS {} MiB at process start, {} MiB once restored (the hub holds its cache and dedupe ids; the log stays on disk)",
        rss_before / 1024,
        rss_after / 1024
    );
    drop(hub);
}
