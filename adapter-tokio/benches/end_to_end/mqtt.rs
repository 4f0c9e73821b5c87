//! The MQTT baseline: mosquitto (the Debian package, started here on a loopback port and
//! stopped after) driven by rumqttc with QoS 1 — every publish acknowledged by the broker,
//! every delivery acknowledged by the subscriber.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

use crate::common::{
    Guard, Measure, free_port, histogram, nanos_since, payload, per_connection, percentiles, rss,
    stamp_of, wait_for_port,
};

const TOPIC: &str = "bench";

/// A running broker.
pub struct Broker {
    port: u16,
    process: Guard,
    _dir: TempDir,
}

/// A scratch directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Broker {
    /// Starts mosquitto on a free loopback port, or says why it cannot.
    pub async fn start() -> Result<Broker, String> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tether-bench-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let dir = TempDir(dir);
        let config = dir.0.join("mosquitto.conf");
        // No queue limit and a window of 100 in flight per client, like tether's run.
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 100\nset_tcp_nodelay true\n\
                 log_dest none\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        // Debian installs it in /usr/sbin, which is not on every PATH.
        let spawn = |program: &str| {
            Command::new(program)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = spawn("mosquitto")
            .or_else(|_| spawn("/usr/sbin/mosquitto"))
            .map_err(|e| format!("mosquitto not runnable ({e}); apt-get install mosquitto"))?;
        let process = Guard(child);
        if !wait_for_port(port).await {
            return Err("mosquitto did not start listening".into());
        }
        Ok(Broker {
            port,
            process,
            _dir: dir,
        })
    }

    fn client(&self, id: &str) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(60));
        options.set_inflight(100);
        AsyncClient::new(options, 1000)
    }

    fn rss(&self) -> Option<u64> {
        rss(self.process.0.id())
    }
}

/// Polls `events` until the broker's CONNACK (and SUBACK when `subscribed`).
async fn ready(events: &mut EventLoop, subscribed: bool) {
    let mut connected = false;
    let mut acked = !subscribed;
    while !(connected && acked) {
        match events.poll().await.expect("broker reachable") {
            Event::Incoming(Packet::ConnAck(_)) => connected = true,
            Event::Incoming(Packet::SubAck(_)) => acked = true,
            _ => {}
        }
    }
}

/// a. One publisher, `subscribers` subscribers, `messages` messages: deliveries per second.
pub async fn fan_out(broker: &Broker, subscribers: usize, messages: usize) -> Measure {
    let done = Arc::new((AtomicUsize::new(subscribers), Notify::new()));
    let mut clients = Vec::new();
    for n in 0..subscribers {
        let (client, mut events) = broker.client(&format!("s{n}"));
        client
            .subscribe(TOPIC, QoS::AtLeastOnce)
            .await
            .expect("queued");
        ready(&mut events, true).await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => seen += 1,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            if done.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                done.1.notify_one();
            }
            // Keep acknowledging until dropped.
            while events.poll().await.is_ok() {}
        });
        clients.push(client);
    }
    let (publisher, mut events) = broker.client("publisher");
    ready(&mut events, false).await;
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let waiting = done.1.notified();
    let started = Instant::now();
    for n in 0..messages {
        publisher
            .publish(TOPIC, QoS::AtLeastOnce, false, payload(n as u64).to_vec())
            .await
            .expect("queued");
    }
    if done.0.load(Ordering::Acquire) > 0 {
        tokio::time::timeout(Duration::from_secs(120), waiting)
            .await
            .expect("every subscriber got every message");
    }
    let elapsed = started.elapsed();
    for client in clients {
        let _ = client.try_disconnect();
    }
    let _ = publisher.try_disconnect();
    Measure::Rate((subscribers * messages) as f64 / elapsed.as_secs_f64())
}

/// b. QoS 1 publishes on one connection, 100 in flight, until `messages` PUBACKs: messages/s.
pub async fn publish_ack(broker: &Broker, messages: usize) -> Measure {
    let (publisher, mut events) = broker.client("acker");
    ready(&mut events, false).await;
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < messages {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("broker") {
                acked += 1;
            }
        }
    });
    let started = Instant::now();
    for n in 0..messages {
        publisher
            .publish(TOPIC, QoS::AtLeastOnce, false, payload(n as u64).to_vec())
            .await
            .expect("queued");
    }
    tokio::time::timeout(Duration::from_secs(120), acks)
        .await
        .expect("every publish acknowledged")
        .expect("acks");
    let elapsed = started.elapsed();
    let _ = publisher.try_disconnect();
    Measure::Rate(messages as f64 / elapsed.as_secs_f64())
}

/// c. One publisher at `rate` messages/s for `count` messages, one subscriber.
pub async fn latency(broker: &Broker, rate: u64, count: usize) -> Measure {
    let (subscriber, mut sub_events) = broker.client("latency-sub");
    subscriber
        .subscribe(TOPIC, QoS::AtLeastOnce)
        .await
        .expect("queued");
    ready(&mut sub_events, true).await;
    let (publisher, mut pub_events) = broker.client("latency-pub");
    ready(&mut pub_events, false).await;
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });
    let base = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut h = histogram();
        let mut seen = 0;
        while seen < count {
            if let Ok(Event::Incoming(Packet::Publish(p))) = sub_events.poll().await {
                let micros = nanos_since(base).saturating_sub(stamp_of(&p.payload)) / 1000;
                h.saturating_record(micros.max(1));
                seen += 1;
            }
        }
        h
    });
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for _ in 0..count {
        ticks.tick().await;
        publisher
            .publish(
                TOPIC,
                QoS::AtLeastOnce,
                false,
                payload(nanos_since(base)).to_vec(),
            )
            .await
            .expect("queued");
    }
    let h = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("all delivered")
        .expect("receiver");
    let _ = publisher.try_disconnect();
    let _ = subscriber.try_disconnect();
    percentiles(&h)
}

/// d. The broker's memory per idle connection with `count` connected clients.
pub async fn idle_memory(broker: &Broker, count: usize) -> Measure {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = broker.rss().expect("rss");
    let mut clients = Vec::with_capacity(count);
    for n in 0..count {
        let (client, mut events) = broker.client(&format!("idle{n}"));
        ready(&mut events, false).await;
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = broker.rss().expect("rss");
    for client in clients {
        let _ = client.try_disconnect();
    }
    per_connection(before, after, count)
}
