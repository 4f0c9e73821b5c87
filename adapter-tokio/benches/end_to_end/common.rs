//! What every system's scenarios share: sizes, payloads with timestamps, results, processes.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

/// Payload size of every scenario's messages.
pub const PAYLOAD: usize = 100;

/// One measurement of one system in one scenario.
#[derive(Clone, Debug)]
pub enum Measure {
    /// Higher is better (messages or deliveries per second).
    Rate(f64),
    /// Latency percentiles in microseconds: p50, p99, p99.9.
    Latency(u64, u64, u64),
    /// Lower is better: bytes.
    Bytes(f64),
    /// Lower is better: milliseconds.
    Millis(f64),
    /// The system was not measured here, and why.
    Skipped(String),
}

/// A payload of [`PAYLOAD`] bytes starting with `stamp` (nanoseconds since the run began).
pub fn payload(stamp: u64) -> Bytes {
    let mut data = vec![0x5a; PAYLOAD];
    data[..8].copy_from_slice(&stamp.to_le_bytes());
    Bytes::from(data)
}

/// The stamp at the start of a payload.
pub fn stamp_of(data: &[u8]) -> u64 {
    data.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Nanoseconds since `base`.
pub fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A histogram of latencies in microseconds, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// p50 / p99 / p99.9 of a histogram.
pub fn percentiles(h: &Histogram<u64>) -> Measure {
    Measure::Latency(
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
    )
}

/// The resident set size of a process, in bytes (Linux).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A child process killed when dropped, so nothing the bench started outlives it.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this bench binary again as a server (`role`), listening on `port`.
pub fn spawn_self(role: &str, port: u16) -> std::io::Result<Guard> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe).arg(role).arg(port.to_string()).spawn()?;
    Ok(Guard(child))
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Idle connections' memory: the server's RSS after `count` connections minus before.
pub fn per_connection(before: u64, after: u64, count: usize) -> Measure {
    Measure::Bytes(after.saturating_sub(before) as f64 / count as f64)
}
