//! A fault-injecting TCP proxy for tests and the demo: it forwards loopback connections and,
//! on a seeded schedule, cuts them, stalls them and delays their bytes.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Live connections, each with the switch that cuts it.
type Live = Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>;

/// What the proxy does to the connections through it.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where connections go. Must be a loopback address.
    pub target: SocketAddr,
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Each connection is cut after a uniform random time in this range (`None`: never).
    pub cut_after: Option<(Duration, Duration)>,
    /// One live connection, chosen at random, is cut after each uniform random interval in
    /// this range (`None`: never).
    pub cut_every: Option<(Duration, Duration)>,
    /// Chance, in percent, that a chunk of bytes is held back for a stall.
    pub stall_percent: u64,
    /// How long a stall lasts.
    pub stall: (Duration, Duration),
    /// Extra latency added to every chunk (`None`: none).
    pub delay: Option<(Duration, Duration)>,
}

impl ProxyConfig {
    /// A proxy to `target` that only forwards.
    pub fn new(target: SocketAddr) -> ProxyConfig {
        ProxyConfig {
            target,
            seed: 1,
            cut_after: None,
            cut_every: None,
            stall_percent: 0,
            stall: (Duration::ZERO, Duration::ZERO),
            delay: None,
        }
    }
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections forwarded.
    pub connections: AtomicU64,
    /// Connections cut.
    pub cuts: AtomicU64,
    /// Stalls injected.
    pub stalls: AtomicU64,
}

/// A running proxy.
pub struct Proxy {
    local_addr: SocketAddr,
    stats: Arc<ProxyStats>,
    task: JoinHandle<()>,
    chaos: Option<JoinHandle<()>>,
    /// Set by [`Proxy::stop_faults`]: no fault from then on.
    calm: Arc<AtomicBool>,
    live: Live,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub async fn start(config: ProxyConfig) -> io::Result<Proxy> {
        if !config.target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the proxy only forwards to loopback addresses",
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let rng = Arc::new(Mutex::new(Rng::from_u64(config.seed)));
        let live: Live = Arc::default();
        let calm = Arc::new(AtomicBool::new(false));
        let chaos = config.cut_every.map(|range| {
            tokio::spawn(cut_randomly(
                range,
                live.clone(),
                stats.clone(),
                rng.clone(),
            ))
        });
        let task = tokio::spawn(accept(
            listener,
            config,
            stats.clone(),
            rng,
            live.clone(),
            calm.clone(),
        ));
        Ok(Proxy {
            local_addr,
            stats,
            task,
            chaos,
            calm,
            live,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Stops the periodic cuts of `cut_every`, and keeps forwarding: clients can reconnect
    /// (the faults of `cut_after`, stalls and delays stay, as they belong to each connection).
    pub fn stop_cutting(&self) {
        if let Some(chaos) = &self.chaos {
            chaos.abort();
        }
    }

    /// Cuts every live connection now; returns how many.
    pub fn cut_all(&self) -> usize {
        let cut: Vec<_> = std::mem::take(
            &mut *self
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_values()
        .collect();
        let mut count = 0;
        for each in cut {
            if each.send(()).is_ok() {
                self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                count += 1;
            }
        }
        count
    }

    /// Stops every fault and keeps forwarding: no more periodic cuts, connections accepted
    /// from now on are never cut, and no stall or delay is added to any connection.
    /// Connections already scheduled for a `cut_after` cut still get it.
    pub fn stop_faults(&self) {
        self.calm.store(true, Ordering::Relaxed);
        self.stop_cutting();
    }

    /// Stops accepting and injecting faults (connections in progress carry on).
    pub fn stop(&self) {
        self.task.abort();
        if let Some(chaos) = &self.chaos {
            chaos.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Cuts one random live connection after each random interval.
async fn cut_randomly(
    range: (Duration, Duration),
    live: Live,
    stats: Arc<ProxyStats>,
    rng: Arc<Mutex<Rng>>,
) {
    loop {
        tokio::time::sleep(uniform(&rng, range)).await;
        let mut live = live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.is_empty() {
            continue;
        }
        let index = rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .between(0, live.len() as u64 - 1) as usize;
        let Some(id) = live.keys().nth(index).copied() else {
            continue;
        };
        if let Some(cut) = live.remove(&id) {
            if cut.send(()).is_ok() {
                stats.cuts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn uniform(rng: &Mutex<Rng>, range: (Duration, Duration)) -> Duration {
    let mut rng = rng
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    rng.duration_between(range.0, range.1)
}

fn chance(rng: &Mutex<Rng>, percent: u64) -> bool {
    percent > 0
        && rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .between(0, 99)
            < percent
}

async fn accept(
    listener: TcpListener,
    config: ProxyConfig,
    stats: Arc<ProxyStats>,
    rng: Arc<Mutex<Rng>>,
    live: Live,
    calm: Arc<AtomicBool>,
) {
    let mut next_id = 0u64;
    while let Ok((inbound, _)) = listener.accept().await {
        let _ = inbound.set_nodelay(true);
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let id = next_id;
        next_id += 1;
        let (cut_tx, cut_rx) = oneshot::channel();
        live.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, cut_tx);
        let cut_after = config
            .cut_after
            .filter(|_| !calm.load(Ordering::Relaxed))
            .map(|range| uniform(&rng, range));
        let (config, stats, rng, live, calm) = (
            config.clone(),
            stats.clone(),
            rng.clone(),
            live.clone(),
            calm.clone(),
        );
        tokio::spawn(async move {
            if let Ok(outbound) = TcpStream::connect(config.target).await {
                let _ = outbound.set_nodelay(true);
                let (client_read, client_write) = inbound.into_split();
                let (server_read, server_write) = outbound.into_split();
                let up = pump(client_read, server_write, &config, &stats, &rng, &calm);
                let down = pump(server_read, client_write, &config, &stats, &rng, &calm);
                let both = async { tokio::join!(up, down) };
                let timer = async {
                    match cut_after {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = both => {}
                    () = timer => {
                        stats.cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = cut_rx => {}
                }
                // Dropping the halves closes both sockets: a cut, as the peers see it.
            }
            live.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    config: &ProxyConfig,
    stats: &ProxyStats,
    rng: &Mutex<Rng>,
    calm: &AtomicBool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !calm.load(Ordering::Relaxed) {
            if chance(rng, config.stall_percent) {
                stats.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(uniform(rng, config.stall)).await;
            }
            if let Some(delay) = config.delay {
                tokio::time::sleep(uniform(rng, delay)).await;
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
