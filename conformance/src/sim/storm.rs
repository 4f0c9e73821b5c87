//! The reconnect storm: many clients dropped at once by a hub restart, and how their
//! reconnect attempts spread over time.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_core::client::{Auth, Client, ClientConfig, ConnectionState, Output, TransportId};
use tether_core::server::{ApiKey, Capabilities, ConnectionId, Hub, HubConfig, HubOutput};
use tether_core::{Rng, Time, Timestamp};

/// What the storm measured.
#[derive(Clone, Debug)]
pub struct StormReport {
    /// Clients dropped.
    pub clients: usize,
    /// Reconnect attempts (transports asked for) per 100 ms window after the drop.
    pub attempts_per_window: BTreeMap<u64, usize>,
    /// The largest share of clients attempting within one 100 ms window.
    pub peak_share: f64,
    /// Time from the drop until every client was Connected again.
    pub all_connected_after: Duration,
}

/// Clients and a hub on an ideal network: transports open at once, frames arrive at once.
struct Storm {
    hub: Hub,
    peers: Vec<Client>,
    links: Vec<Option<(TransportId, ConnectionId)>>,
    owner: BTreeMap<ConnectionId, usize>,
    /// When each transport was asked for, once counting started.
    attempts: Vec<Time>,
    counting: bool,
    /// Until then the hub is down: every transport asked for is refused at once.
    down_until: Option<Time>,
}

fn stamp(now: Time) -> Timestamp {
    Timestamp::new(now, 1_767_225_600_000 + now.as_millis())
}

impl Storm {
    /// Moves every output until nothing moves.
    fn pump(&mut self, now: Time) {
        loop {
            let mut moved = false;
            for index in 0..self.peers.len() {
                while let Some(output) = self.peers[index].poll_output() {
                    moved = true;
                    match output {
                        Output::OpenTransport { transport, .. } => {
                            if self.counting {
                                self.attempts.push(now);
                            }
                            if self.down_until.is_some_and(|until| now < until) {
                                self.peers[index].handle_transport_closed(
                                    now,
                                    transport,
                                    "connection refused",
                                );
                                continue;
                            }
                            let connection = self.hub.accept(stamp(now));
                            self.owner.insert(connection, index);
                            self.links[index] = Some((transport, connection));
                            self.peers[index].handle_transport_open(now, transport);
                        }
                        Output::Transmit { bytes, .. } => {
                            if let Some((_, connection)) = self.links[index] {
                                self.hub.handle_bytes(stamp(now), connection, bytes);
                            }
                        }
                        Output::CloseTransport { .. } | Output::Event(_) => {}
                    }
                }
            }
            while let Some(output) = self.hub.poll_output() {
                moved = true;
                if let HubOutput::Transmit { connection, bytes } = output {
                    let written = bytes.len();
                    if let Some(&index) = self.owner.get(&connection) {
                        if let Some((transport, _)) = self.links[index] {
                            self.peers[index].handle_transport_bytes(now, transport, bytes);
                        }
                    }
                    self.hub.handle_written(stamp(now), connection, written);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        self.peers
            .iter()
            .filter_map(Client::poll_timeout)
            .chain(self.hub.poll_timeout())
            .min()
    }

    /// Fires every deadline due at `now`, then moves the outputs.
    fn fire(&mut self, now: Time) {
        self.hub.handle_timeout(stamp(now));
        for client in &mut self.peers {
            if client.poll_timeout().is_some_and(|d| d <= now) {
                client.handle_timeout(now);
            }
        }
        self.pump(now);
    }

    fn all_connected(&self) -> bool {
        self.peers
            .iter()
            .all(|c| c.state() == ConnectionState::Connected)
    }
}

/// Connects `clients` clients to one hub, restarts the hub (every transport drops at once,
/// state kept) after being down for `downtime` (every attempt meanwhile refused at once), and
/// measures the reconnection.
pub fn run(clients: usize, seed: u64, downtime: Duration) -> StormReport {
    let mut rng = Rng::from_u64(seed);
    let key = ApiKey {
        name: "app".into(),
        secret: "storm".into(),
        capabilities: Capabilities::all(),
    };
    let config = {
        let mut config = HubConfig::default();
        config.keys = vec![key];
        config.max_connections = clients + 10;
        config.max_sessions = 2 * clients + 10;
        config
    };
    let mut hub_seed = [0u8; 32];
    rng.fill(&mut hub_seed);
    let peers = (0..clients)
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed);
            let auth = Auth::ApiKey {
                name: "app".into(),
                secret: "storm".into(),
            };
            Client::new(ClientConfig::new(auth), seed)
        })
        .collect();
    let mut storm = Storm {
        hub: Hub::new(config, hub_seed),
        peers,
        links: vec![None; clients],
        owner: BTreeMap::new(),
        attempts: Vec::new(),
        counting: false,
        down_until: None,
    };
    let mut now = Time::from_millis(1_000);
    for client in &mut storm.peers {
        client.connect(now);
    }
    storm.pump(now);
    assert!(storm.all_connected(), "all connected before the storm");
    // Stay up long enough to count as stable connections, with heartbeats flowing.
    let stable = now.saturating_add(Duration::from_secs(11));
    while let Some(next) = storm.next_deadline().filter(|n| *n <= stable) {
        now = next;
        storm.fire(now);
    }
    now = stable;

    // The hub restarts: every transport drops at the same instant.
    for index in 0..clients {
        if let Some((transport, connection)) = storm.links[index].take() {
            storm.hub.handle_closed(stamp(now), connection);
            storm.peers[index].handle_transport_closed(now, transport, "hub restarted");
        }
    }
    let start = now;
    storm.down_until = Some(start.saturating_add(downtime));
    storm.counting = true;
    storm.pump(now);
    let limit = start.saturating_add(Duration::from_secs(120));
    let mut all_connected_after = Duration::MAX;
    while now < limit {
        if storm.all_connected() {
            all_connected_after = now.since(start);
            break;
        }
        let Some(next) = storm.next_deadline() else {
            break;
        };
        now = next.max(now);
        storm.fire(now);
    }
    let mut attempts_per_window = BTreeMap::new();
    for at in &storm.attempts {
        *attempts_per_window
            .entry(at.since(start).as_millis() as u64 / 100)
            .or_insert(0) += 1;
    }
    let peak = attempts_per_window.values().copied().max().unwrap_or(0);
    StormReport {
        clients,
        attempts_per_window,
        peak_share: peak as f64 / clients as f64,
        all_connected_after,
    }
}
