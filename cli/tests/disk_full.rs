//! `tether serve --data-dir` on a filesystem that fills up (issue 18, store errors): the
//! data directory is a tiny tmpfs. Publishes are acknowledged while there is room; once the
//! store cannot write they are refused with `storage_failed` (50001) and a log line — the
//! server neither panics nor acknowledges what it did not store. Given room and a restart
//! on the same directory, history holds every acknowledged message exactly once, and a
//! resend of the refused publishes with their message ids is stored once each.
//!
//! Mounting needs `CAP_SYS_ADMIN`: as root the test mounts directly; otherwise it runs
//! itself again inside a user and mount namespace (`unshare -rm`, util-linux), where it may.
//! Linux only; loopback only; bounded in count and time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tether_tokio::tether_core::ErrorCode;
use tether_tokio::tether_core::client::NewMessage;
use tether_tokio::tether_core::wire::{Direction, HistoryQuery, MessageId};
use tether_tokio::{Client, ClientOptions};

const CHANNEL: &str = "ledger";
/// Set in the copy of this test that runs inside the namespace.
const INSIDE: &str = "TETHER_DISK_FULL_INSIDE";
/// The tmpfs: room for the store's files and some dozens of the messages below.
const SMALL: &str = "size=4m";
const LARGE: &str = "size=512m";
/// Each message's payload: the tmpfs fills after some dozens.
const PAYLOAD: usize = 60 * 1024;
/// Publishes tried at most (far more than the small tmpfs holds).
const ATTEMPTS: usize = 400;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if status.success() {
            Some(Tmpfs { dir })
        } else {
            None
        }
    }

    fn resize(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("remount,{options}"), "tmpfs"])
            .arg(self.dir.path())
            .status()
            .expect("runs mount");
        assert!(status.success(), "the tmpfs is resized");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A server process, killed when dropped; its log goes to a file.
struct Served {
    child: Child,
    log: PathBuf,
}

impl Served {
    fn start(port: u16, data: &Path, log: PathBuf) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--key", "app:app-secret", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .args(["--default-retention", "1000000/1h"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("starts tether serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let started = Instant::now();
        let mut line = String::new();
        while !line.contains("tether server on") {
            line.clear();
            let read = stdout.read_line(&mut line).expect("reads stdout");
            assert!(
                read > 0,
                "tether serve ended before listening: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no listen line"
            );
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stdout.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Served { child, log }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("waits").is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn client(url: &str) -> Client {
    Client::connect(url, ClientOptions::api_key("app", "app-secret")).expect("a valid url")
}

fn message(index: usize) -> NewMessage {
    // Incompressible (the store compresses its blocks).
    let mut data = format!("m-{index:04}:").into_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ index as u64;
    while data.len() < PAYLOAD {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(PAYLOAD);
    let mut message = NewMessage::new("n", data);
    message.id = Some(MessageId::new(format!("m-{index:04}")).expect("a valid id"));
    message
}

/// Every message id in the channel's history, oldest first.
async fn history(client: &Client) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(10), client.connected())
        .await
        .expect("connected within 10 s")
        .expect("connects");
    let channel = client.channel(CHANNEL).expect("a valid name");
    let mut query = HistoryQuery {
        direction: Direction::Forwards,
        limit: 100,
        ..HistoryQuery::default()
    };
    let mut ids = Vec::new();
    let mut serials = Vec::new();
    loop {
        let page = tokio::time::timeout(Duration::from_secs(10), channel.history(query))
            .await
            .expect("a history page within 10 s")
            .expect("a history page");
        for message in &page.messages {
            ids.push(message.message.id.as_str().to_owned());
            serials.push(message.position.serial);
        }
        match page.next {
            Some(next) => query = next,
            None => break,
        }
    }
    assert!(
        serials.windows(2).all(|w| w[1] == w[0] + 1),
        "history has a hole or a repeat: {serials:?}"
    );
    ids
}

#[test]
fn a_full_disk_refuses_publishes_with_storage_failed_and_loses_nothing_acknowledged() {
    let Some(tmpfs) = Tmpfs::mount(SMALL) else {
        assert!(
            std::env::var_os(INSIDE).is_none(),
            "cannot mount a tmpfs even inside a user and mount namespace"
        );
        // Not allowed to mount here: run this test again where it may.
        let status = Command::new("unshare")
            .args(["--map-root-user", "--mount"])
            .arg(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "a_full_disk_refuses_publishes_with_storage_failed_and_loses_nothing_acknowledged",
                "--nocapture",
            ])
            .env(INSIDE, "1")
            .status()
            .expect("runs unshare (util-linux)");
        assert!(status.success(), "the test failed inside the namespace");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(fill_and_recover(tmpfs));
}

async fn fill_and_recover(tmpfs: Tmpfs) {
    let logs = tempfile::tempdir().expect("a log directory");
    let data = tmpfs.path().join("data");
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let mut server = Served::start(port, &data, logs.path().join("first.log"));

    // Publish one at a time until the store is full, then a few more.
    let publisher = client(&url);
    let channel = publisher.channel(CHANNEL).expect("a valid name");
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for index in 0..ATTEMPTS {
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            channel.publish_all(vec![message(index)]),
        )
        .await
        .expect("every publish resolves within 30 s");
        match outcome {
            Ok(()) if refused.is_empty() => acked.push(format!("m-{index:04}")),
            Ok(()) => panic!("m-{index:04} acknowledged after the store refused a write"),
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::StorageFailed, "{error}");
                refused.push(index);
                if refused.len() == 5 {
                    break;
                }
            }
        }
    }
    eprintln!(
        "{} acknowledged, then {} refused with storage_failed",
        acked.len(),
        refused.len()
    );
    assert!(!acked.is_empty(), "nothing fit on the tmpfs");
    assert_eq!(refused.len(), 5, "the tmpfs never filled");
    assert!(server.running(), "the server died: {}", server.log());
    let log = server.log();
    assert!(
        log.contains("the store could not"),
        "no log line about the store: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Still serving: history answers from a full store.
    assert_eq!(history(&publisher).await, acked);
    publisher.close().await;

    // Room again, and a restart on the same directory (a hard one: the store's last write
    // failed, so it does not close cleanly either way).
    drop(server);
    tmpfs.resize(LARGE);
    let server = Served::start(port, &data, logs.path().join("second.log"));
    let reader = client(&url);
    let recovered = history(&reader).await;
    eprintln!(
        "after the restart: {} in history ({} of the refused writes kept by the journal)",
        recovered.len(),
        recovered.len() - acked.len().min(recovered.len())
    );
    // Whatever of the refused writes the journal kept is never an acknowledged message's
    // place: the acknowledged ones are all there, once each, first.
    assert_eq!(
        &recovered[..acked.len().min(recovered.len())],
        &acked[..],
        "history after the restart: {recovered:?}"
    );
    // The refused publishes are resent with their message ids: each is stored once.
    let channel = reader.channel(CHANNEL).expect("a valid name");
    for &index in &refused {
        tokio::time::timeout(
            Duration::from_secs(30),
            channel.publish_all(vec![message(index)]),
        )
        .await
        .expect("resolves within 30 s")
        .expect("stored once there is room");
    }
    let after = history(&reader).await;
    let mut expected = acked.clone();
    expected.extend(refused.iter().map(|i| format!("m-{i:04}")));
    assert_eq!(after, expected, "every message once, in order");
    reader.close().await;
    assert!(!server.log().contains("panicked"));
}
