//! What operators see of a running server: Prometheus metrics, liveness and readiness —
//! the hub's counters (asked of its task), the driver's own (bytes, disconnects by code),
//! and the store's health and sync times.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_channel::oneshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tether_core::ErrorCode;
use tether_core::server::{
    HubEvent, HubStats, PUBLISH_LATENCY_BOUNDS_MS, SYNC_BOUNDS_US, Store, SyncTimes,
};

use super::Input;

/// What the driver counts itself. Bounded: one entry per error code at most.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    disconnects: Mutex<BTreeMap<ErrorCode, u64>>,
    /// HTTP requests in front of the service refused for their credentials, by code.
    http_auth_failures: Mutex<BTreeMap<ErrorCode, u64>>,
}

impl Counters {
    /// Counts an HTTP request refused for its credentials (`code` one of the 401xx).
    pub(crate) fn http_auth_failure(&self, code: ErrorCode) {
        if is_auth_failure(code) {
            *self
                .http_auth_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(code)
                .or_default() += 1;
        }
    }

    /// Counts what an input to the hub carries.
    pub(crate) fn input(&self, input: &Input) {
        match input {
            Input::Bytes(_, bytes) => {
                self.bytes_received
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Input::Written(_, written) => {
                self.bytes_sent
                    .fetch_add(*written as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts what a hub event tells.
    pub(crate) fn event(&self, event: &HubEvent) {
        if let HubEvent::Disconnected { reason, .. } = event {
            *self
                .disconnects
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(reason.code)
                .or_default() += 1;
        }
    }
}

/// What the metrics and readiness endpoints need; cheap to clone.
#[derive(Clone)]
pub(crate) struct Observer {
    pub(crate) inputs: tokio::sync::mpsc::Sender<Input>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) store: Option<Arc<dyn Store>>,
    /// Cleared once the server is shutting down.
    pub(crate) serving: Arc<AtomicBool>,
}

/// Whether an error code is an authentication failure (the 401xx codes, §9).
fn is_auth_failure(code: ErrorCode) -> bool {
    (40100..40200).contains(&code.as_u32())
}

impl Observer {
    /// The hub's statistics, or `None` if its task is gone.
    pub(crate) async fn stats(&self) -> Option<HubStats> {
        let (reply, answer) = oneshot::channel();
        self.inputs.send(Input::Stats(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Whether the server takes connections and publishes now: serving, its hub answering,
    /// and its store (if any) taking writes; otherwise why not.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        if !self.serving.load(Ordering::Relaxed) {
            return Err("the server is shutting down".into());
        }
        if let Some(store) = &self.store {
            store
                .health()
                .map_err(|error| format!("the store failed: {error}"))?;
        }
        match self.stats().await {
            Some(_) => Ok(()),
            None => Err("the hub has stopped".into()),
        }
    }

    /// Every metric in the OpenMetrics text format (which Prometheus scrapes; counters end
    /// in `_total`): `None` if the hub's task is gone.
    pub(crate) async fn metrics(&self) -> Option<String> {
        let stats = self.stats().await?;
        let snapshot = Snapshot {
            stats,
            bytes_received: self.counters.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.counters.bytes_sent.load(Ordering::Relaxed),
            disconnects: self
                .counters
                .disconnects
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            http_auth_failures: self
                .counters
                .http_auth_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            syncs: self.store.as_ref().and_then(|store| store.sync_times()),
            store_healthy: self.store.as_ref().map(|store| store.health().is_ok()),
        };
        let mut registry = Registry::with_prefix("tether");
        registry.register_collector(Box::new(snapshot));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).ok()?;
        Some(text)
    }
}

/// One scrape's values.
#[derive(Debug)]
struct Snapshot {
    stats: HubStats,
    bytes_received: u64,
    bytes_sent: u64,
    disconnects: BTreeMap<ErrorCode, u64>,
    http_auth_failures: BTreeMap<ErrorCode, u64>,
    syncs: Option<SyncTimes>,
    store_healthy: Option<bool>,
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let value = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let value = ConstCounter::new(value);
    value.encode(encoder.encode_descriptor(name, help, None, value.metric_type())?)
}

/// A counter family with one label.
fn labelled(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram in seconds from per-bucket counts with bounds in `unit`s of a second.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[u64],
    unit: f64,
    counts: &[u64],
    sum: u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .map(|bound| *bound as f64 * unit)
        .chain(std::iter::once(f64::MAX))
        .zip(counts.iter().copied())
        .collect();
    let count = counts.iter().sum();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum as f64 * unit,
        count,
        &buckets,
        None,
    )
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        let totals = &stats.totals;
        gauge(
            &mut encoder,
            "connections",
            "Open connections.",
            stats.connections,
        )?;
        gauge(
            &mut encoder,
            "sessions",
            "Sessions, live or waiting to be resumed.",
            stats.sessions,
        )?;
        gauge(&mut encoder, "channels", "Channels held.", stats.channels)?;
        counter(
            &mut encoder,
            "messages_stored",
            "New messages stored in a channel (duplicates dropped by the dedupe window not counted).",
            totals.messages_stored,
        )?;
        counter(
            &mut encoder,
            "messages_delivered",
            "Message frames sent to subscribers, live and replayed.",
            totals.messages_delivered,
        )?;
        labelled(
            &mut encoder,
            "publishes",
            "New publishes (not resends) by outcome.",
            "outcome",
            &[
                ("acknowledged", totals.publishes_acknowledged),
                ("refused", totals.publishes_refused),
            ],
        )?;
        histogram(
            &mut encoder,
            "publish_ack_seconds",
            "Time from the hub taking a new publish to its acknowledgement (with a store: the store's answer), in seconds, millisecond resolution.",
            &PUBLISH_LATENCY_BOUNDS_MS,
            1e-3,
            &totals.publish_latency,
            totals.publish_latency_sum_ms,
        )?;
        counter(
            &mut encoder,
            "received_bytes",
            "Bytes of frames received from clients.",
            self.bytes_received,
        )?;
        counter(
            &mut encoder,
            "sent_bytes",
            "Bytes of frames written to clients.",
            self.bytes_sent,
        )?;
        counter(
            &mut encoder,
            "slow_consumers",
            "Connections closed because they fell too far behind.",
            totals.slow_consumers,
        )?;
        labelled(
            &mut encoder,
            "resumes",
            "Connects that asked to resume a session, by outcome.",
            "outcome",
            &[
                ("resumed", totals.resumes),
                ("session_not_found", totals.resumes_refused),
            ],
        )?;
        let named: Vec<(&str, u64)> = self
            .disconnects
            .iter()
            .map(|(code, count)| (code.name(), *count))
            .collect();
        let mut failures: BTreeMap<ErrorCode, u64> = self.http_auth_failures.clone();
        for (code, count) in &self.disconnects {
            if is_auth_failure(*code) {
                *failures.entry(*code).or_default() += count;
            }
        }
        let auth: Vec<(&str, u64)> = failures
            .iter()
            .map(|(code, count)| (code.name(), *count))
            .collect();
        labelled(
            &mut encoder,
            "auth_failures",
            "Connections closed and HTTP API requests refused for failed authentication, by error code.",
            "code",
            &auth,
        )?;
        labelled(
            &mut encoder,
            "disconnects",
            "Connections the hub closed, by error code.",
            "code",
            &named,
        )?;
        if let Some(syncs) = &self.syncs {
            histogram(
                &mut encoder,
                "store_sync_seconds",
                "Time the store took to sync to disk, in seconds.",
                &SYNC_BOUNDS_US,
                1e-6,
                &syncs.counts,
                syncs.sum_us,
            )?;
        }
        if let Some(healthy) = self.store_healthy {
            gauge(
                &mut encoder,
                "store_healthy",
                "1 while the store takes writes, 0 once it failed.",
                usize::from(healthy),
            )?;
        }
        Ok(())
    }
}

/// An HTTP/1.1 answer with a text body, closing the connection.
pub(crate) fn response(status: &str, content_type: &str, body: &str) -> String {
    let mut answer = String::new();
    let _ = write!(
        answer,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    answer
}
