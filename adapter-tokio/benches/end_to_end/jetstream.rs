//! The durable baseline: NATS JetStream with file storage (the Debian `nats-server`, started
//! here on a loopback port with its own store directory and stopped after), publishes
//! acknowledged by the stream, from `async-nats`.

use std::process::{Command, Stdio};
use std::time::Instant;

use futures_util::StreamExt;

use crate::common::{Guard, Measure, free_port, payload, wait_for_port};

/// b″. Publish → ACK on one connection with `window` publishes in flight: messages/s.
pub async fn publish_ack(messages: usize, window: usize) -> Result<Measure, String> {
    let port = free_port();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spawn = |program: &str| {
        Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let child = spawn("nats-server")
        .or_else(|_| spawn("/usr/sbin/nats-server"))
        .or_else(|_| spawn("/usr/bin/nats-server"))
        .map_err(|e| format!("nats-server not runnable ({e}); apt-get install nats-server"))?;
    let _process = Guard(child);
    if !wait_for_port(port).await {
        return Err("nats-server did not start listening".into());
    }
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .map_err(|e| e.to_string())?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "bench".into(),
            subjects: vec!["bench".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut failed = None;
    futures_util::stream::iter(0..messages)
        .map(|n| {
            let jetstream = jetstream.clone();
            async move {
                let ack = jetstream
                    .publish("bench", payload(n as u64))
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(window)
        .for_each(|r| {
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
            async {}
        })
        .await;
    if let Some(error) = failed {
        return Err(format!("a JetStream publish failed: {error}"));
    }
    Ok(Measure::Rate(
        messages as f64 / started.elapsed().as_secs_f64(),
    ))
}
