//! The engine keeps each channel's messages by the first retention rule its name matches,
//! and gives back what it kept after a restart.

use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tether_core::server::{StorageCompletion, StorageRequest, StorageRequestId, Store};
use tether_core::wire::{
    ChannelMessage, ChannelName, ClientId, Message, MessageId, Position, SessionId,
};
use tether_engine::{Engine, EngineConfig, RetentionRule};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn config() -> EngineConfig {
    EngineConfig {
        retention: vec![
            RetentionRule {
                pattern: "cursor:*".into(),
                count: 0,
                age: Duration::ZERO,
            },
            RetentionRule {
                pattern: "chat:*".into(),
                count: 3,
                age: Duration::from_secs(3600),
            },
        ],
        default_retention: (1000, Duration::from_secs(3600)),
        ..EngineConfig::default()
    }
}

fn append(channel: &ChannelName, epoch: u64, serial: u64, id: u64) -> StorageRequest {
    StorageRequest::Append {
        id: StorageRequestId(id),
        channel: channel.clone(),
        messages: vec![ChannelMessage {
            position: Position { epoch, serial },
            message: Message {
                id: MessageId::new(format!("{}-{serial}", channel.as_str())).expect("valid"),
                name: "n".into(),
                data: Bytes::from_static(b"x"),
            },
            publisher: ClientId::new("p").expect("valid"),
            timestamp_ms: now_ms(),
        }],
        origin: SessionId(1),
        outcome: None,
    }
}

#[test]
fn retention_follows_the_first_matching_pattern_across_a_restart() {
    let dir = tempfile::tempdir().expect("a directory");
    let channels: Vec<ChannelName> = ["chat:a", "cursor:x", "other"]
        .iter()
        .map(|n| ChannelName::new(*n).expect("valid"))
        .collect();
    {
        let engine = Engine::open(dir.path(), config()).expect("opens");
        let (done, answers) = mpsc::channel();
        let mut sink = engine
            .start(Box::new(move |c| {
                let _ = done.send(c);
            }))
            .expect("starts");
        let mut id = 0;
        for channel in &channels {
            for serial in 1..=5 {
                sink.request(append(channel, 7, serial, id));
                id += 1;
            }
        }
        // A hole is refused: serial 9 does not continue serial 5.
        sink.request(append(&channels[2], 7, 9, id));
        sink.close();
        let answers: Vec<StorageCompletion> = answers.try_iter().collect();
        assert_eq!(answers.len(), 16);
        assert!(
            answers[..15]
                .iter()
                .all(|a| matches!(a, StorageCompletion::Appended { .. }))
        );
        assert!(
            matches!(&answers[15], StorageCompletion::Failed { error, .. }
            if error.code == tether_core::ErrorCode::StorageFailed)
        );
    }
    let engine = Engine::open(dir.path(), config()).expect("opens again");
    assert!(!engine.unclean(), "closed cleanly");
    let state = engine.restore(now_ms()).expect("restores");
    let kept = |name: &str| -> (Position, Vec<u64>) {
        let channel = state
            .channels
            .iter()
            .find(|c| c.name.as_str() == name)
            .expect("the channel is restored");
        (
            channel.position,
            channel
                .recent
                .iter()
                .map(|m| m.message.position.serial)
                .collect(),
        )
    };
    assert_eq!(
        kept("chat:a"),
        (
            Position {
                epoch: 7,
                serial: 5
            },
            vec![3, 4, 5]
        )
    );
    assert_eq!(
        kept("cursor:x"),
        (
            Position {
                epoch: 7,
                serial: 5
            },
            vec![]
        )
    );
    assert_eq!(
        kept("other"),
        (
            Position {
                epoch: 7,
                serial: 5
            },
            vec![1, 2, 3, 4, 5]
        )
    );
}

/// Opens `dir` with `durability`, stores one message, and stops as a crash would.
fn crash_after_one_append(dir: &std::path::Path, durability: tether_engine::Durability) {
    let engine = Engine::open(
        dir,
        EngineConfig {
            durability,
            ..config()
        },
    )
    .expect("opens");
    let (done, answers) = mpsc::channel();
    let mut sink = engine
        .start(Box::new(move |c| {
            let _ = done.send(c);
        }))
        .expect("starts");
    let channel = ChannelName::new("chat:a").expect("valid");
    sink.request(append(&channel, 7, 1, 0));
    let _ = answers.recv_timeout(Duration::from_secs(10));
    sink.abandon();
}

/// Found by a helper trying `--data-dir`: whether a restart starts new epochs followed the
/// *new* run's `--sync`, so an interval run killed and restarted with `--sync batch` reused
/// positions a machine crash may have lost, and a batch run restarted with an interval
/// changed every epoch for nothing. It follows the mode the store was written in.
#[test]
fn regression_new_epochs_follow_the_mode_the_store_was_written_in() {
    use tether_engine::Durability;
    let interval = Durability::Interval(Duration::from_millis(10));
    let dir = tempfile::tempdir().expect("a directory");
    crash_after_one_append(dir.path(), interval);
    let engine = Engine::open(dir.path(), config()).expect("opens with sync: batch");
    assert!(engine.unclean() && engine.starts_new_epochs());
    assert!(engine.restore(now_ms()).expect("restores").positions_lost);

    let dir = tempfile::tempdir().expect("a directory");
    crash_after_one_append(dir.path(), Durability::Sync);
    let engine = Engine::open(
        dir.path(),
        EngineConfig {
            durability: interval,
            ..config()
        },
    )
    .expect("opens with an interval");
    assert!(engine.unclean() && !engine.starts_new_epochs());
    assert!(!engine.restore(now_ms()).expect("restores").positions_lost);
}
