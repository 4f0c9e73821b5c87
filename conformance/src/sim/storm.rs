//! The reconnect storm: many clients dropped at once by a hub restart, and how their
//! reconnect attempts spread over time.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_core::client::{Auth, Client, ClientConfig, ConnectionState, Event, Output};
use tether_core::server::{ApiKey, Capabilities, Hub, HubConfig, HubOutput};
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

/// Connects `clients` clients to one hub, restarts the hub (every transport drops at once,
/// state kept), and measures the reconnection.
pub fn run(clients: usize, seed: u64) -> StormReport {
    let mut rng = Rng::from_u64(seed);
    let key = ApiKey {
        name: "app".into(),
        secret: "storm".into(),
        capabilities: Capabilities::all(),
    };
    let config = HubConfig {
        keys: vec![key],
        max_connections: clients + 10,
        max_sessions: 2 * clients + 10,
        ..HubConfig::default()
    };
    let mut hub_seed = [0u8; 32];
    rng.fill(&mut hub_seed);
    let mut hub = Hub::new(config, hub_seed);
    let mut now = Time::from_millis(1_000);
    let unix = |t: Time| 1_767_225_600_000 + t.as_millis();
    let mut peers: Vec<Client> = (0..clients)
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed);
            Client::new(
                ClientConfig::new(Auth::ApiKey {
                    name: "app".into(),
                    secret: "storm".into(),
                }),
                seed,
            )
        })
        .collect();
    // transport per client → hub connection, and back.
    let mut links: Vec<
        Option<(
            tether_core::client::TransportId,
            tether_core::server::ConnectionId,
        )>,
    > = vec![None; clients];
    let mut owner = BTreeMap::new();
    let mut attempts: Vec<Time> = Vec::new();
    let mut storm_started: Option<Time> = None;

    // Moves bytes until quiet; connections open instantly and frames arrive at once.
    let pump = |hub: &mut Hub,
                peers: &mut Vec<Client>,
                links: &mut Vec<
        Option<(
            tether_core::client::TransportId,
            tether_core::server::ConnectionId,
        )>,
    >,
                owner: &mut BTreeMap<tether_core::server::ConnectionId, usize>,
                attempts: &mut Vec<Time>,
                counting: bool,
                now: Time| {
        loop {
            let mut moved = false;
            for index in 0..peers.len() {
                while let Some(output) = peers[index].poll_output() {
                    moved = true;
                    match output {
                        Output::OpenTransport { transport } => {
                            if counting {
                                attempts.push(now);
                            }
                            let connection = hub.accept(Timestamp::new(now, unix(now)));
                            owner.insert(connection, index);
                            links[index] = Some((transport, connection));
                            peers[index].handle_transport_open(now, transport);
                        }
                        Output::Transmit { bytes, .. } => {
                            if let Some((_, connection)) = links[index] {
                                hub.handle_bytes(Timestamp::new(now, unix(now)), connection, bytes);
                            }
                        }
                        Output::CloseTransport { .. }
                        | Output::Event(Event::Update { .. })
                        | Output::Event(_) => {}
                    }
                }
            }
            while let Some(output) = hub.poll_output() {
                moved = true;
                if let HubOutput::Transmit { connection, bytes } = output {
                    let written = bytes.len();
                    if let Some(&index) = owner.get(&connection) {
                        if let Some((transport, _)) = links[index] {
                            peers[index].handle_transport_bytes(now, transport, bytes);
                        }
                    }
                    hub.handle_written(Timestamp::new(now, unix(now)), connection, written);
                }
            }
            if !moved {
                return;
            }
        }
    };

    for client in &mut peers {
        client.connect(now);
    }
    pump(
        &mut hub,
        &mut peers,
        &mut links,
        &mut owner,
        &mut attempts,
        false,
        now,
    );
    assert!(
        peers
            .iter()
            .all(|c| c.state() == ConnectionState::Connected),
        "all connected before the storm"
    );
    // Stay up long enough to count as stable connections, with heartbeats flowing.
    let stable = now.saturating_add(Duration::from_secs(11));
    while now < stable {
        let next = peers
            .iter()
            .filter_map(Client::poll_timeout)
            .chain(hub.poll_timeout())
            .min();
        let Some(next) = next.filter(|n| *n <= stable) else {
            break;
        };
        now = next;
        hub.handle_timeout(Timestamp::new(now, unix(now)));
        for client in &mut peers {
            if client.poll_timeout().is_some_and(|d| d <= now) {
                client.handle_timeout(now);
            }
        }
        pump(
            &mut hub,
            &mut peers,
            &mut links,
            &mut owner,
            &mut attempts,
            false,
            now,
        );
    }
    now = stable;

    // The hub restarts: every transport drops at the same instant.
    storm_started.get_or_insert(now);
    for index in 0..clients {
        if let Some((transport, connection)) = links[index].take() {
            hub.handle_closed(Timestamp::new(now, unix(now)), connection);
            peers[index].handle_transport_closed(now, transport, "hub restarted");
        }
    }
    let start = now;
    pump(
        &mut hub,
        &mut peers,
        &mut links,
        &mut owner,
        &mut attempts,
        true,
        now,
    );
    let limit = start.saturating_add(Duration::from_secs(120));
    let mut all_connected_after = Duration::MAX;
    while now < limit {
        if peers
            .iter()
            .all(|c| c.state() == ConnectionState::Connected)
        {
            all_connected_after = now.since(start);
            break;
        }
        let next = peers
            .iter()
            .filter_map(Client::poll_timeout)
            .chain(hub.poll_timeout())
            .min();
        let Some(next) = next else { break };
        now = next.max(now);
        hub.handle_timeout(Timestamp::new(now, unix(now)));
        for client in &mut peers {
            if client.poll_timeout().is_some_and(|d| d <= now) {
                client.handle_timeout(now);
            }
        }
        pump(
            &mut hub,
            &mut peers,
            &mut links,
            &mut owner,
            &mut attempts,
            true,
            now,
        );
    }
    let mut attempts_per_window = BTreeMap::new();
    for at in &attempts {
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
