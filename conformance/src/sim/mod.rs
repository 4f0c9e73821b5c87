//! The deterministic simulator: many clients and one hub on a simulated network with a
//! seeded fault schedule — connection drops, links that die silently or half, stalls
//! released in random order, hub restarts (state kept, or state lost → new epochs),
//! unreachable periods, wall-clock jumps that expire tokens, client processes that die and
//! come back from their snapshot after a long gap, and connections the hub drops as slow
//! consumers (writes are reported to the hub only as the client reads them) — under a random
//! attach / publish / detach / close workload.
//! After the faults stop it lets the system settle (once more if a client is still
//! recovering from a late effect of a fault), then checks G1–G6 on the full trace.
//!
//! The same seed gives the same trace, byte for byte ([`Trace::hash`]).

pub mod checker;
pub mod storm;
pub mod trace;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tether_core::client::{
    Auth, Client, ClientConfig, ClientSnapshot, Event, NewMessage, Output, TransportId,
};
use tether_core::sabotage::Sabotage;
use tether_core::server::{
    ApiKey, Capabilities, Claims, ConnectionId, Hub, HubConfig, HubEvent, HubOutput, ModelStore,
    StorageMode, StorageRequest, mint_token,
};
use tether_core::time::millis;
use tether_core::wire::{
    self, ChannelName, ClientFrame, ClientId, Credentials, HistoryQuery, Limits, PROTOCOL_VERSION,
    ServerFrame,
};
use tether_core::{Rng, Time, Timestamp};

pub use self::checker::{Guarantee, Violation, check};
pub use self::trace::{Entry, Record, Trace};

const CHANNELS: [&str; 3] = ["a", "b", "c:d"];
const UNIX_START_MS: u64 = 1_767_225_600_000;
/// The hub's pending-bytes limit in the simulation: above a history page of 20 small
/// messages and a resume's replay budget, below what a subscriber that stops reading
/// accumulates within half a minute.
const SIM_MAX_PENDING_BYTES: usize = 4 * 1024;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of clients.
    pub clients: usize,
    /// How long faults and the workload last.
    pub active: Duration,
    /// How long the system then runs without faults before the check.
    pub settle: Duration,
    /// A broken behaviour to switch on, to show the checker catches it.
    pub sabotage: Sabotage,
    /// The hub keeps its channels and sessions in a store ([`ModelStore`], the port's
    /// reference) answering after scripted delays, with store faults: slow syncs, a store
    /// that fails for a while, a crash between sync and acknowledgement with a restart on
    /// the store kept, and (rarely) a store lost. Without a store lost, any discontinuity
    /// is a violation (issue 18).
    pub store: bool,
    /// A third of the WebSocket transports clients open are blocked (as by a proxy that
    /// answers the upgrade `403`): the clients fall back to the HTTP binding and, after the
    /// probe interval (shortened to 20 s here), try WebSocket again (§6.10). The links of
    /// both kinds are alike to the hub.
    pub blocked_websockets: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            clients: 5,
            active: Duration::from_secs(120),
            // Longer than the longest liveness (300 s heartbeat + 10 s) plus a reconnect, so
            // a link that died silently at the end of the active phase is noticed in time.
            settle: Duration::from_secs(480),
            sabotage: Sabotage::None,
            store: false,
            blocked_websockets: false,
        }
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of the full trace.
    pub trace_hash: u64,
    /// Broken guarantees (empty: correct).
    pub violations: Vec<Violation>,
    /// The trace.
    pub trace: Trace,
    /// Counts of what happened, for reports.
    pub stats: SimStats,
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Publishes accepted.
    pub publishes: u64,
    /// Messages delivered to applications.
    pub deliveries: u64,
    /// Faults injected.
    pub faults: u64,
    /// Hub restarts that lost state.
    pub state_losses: u64,
    /// Client processes that died and were restored from their snapshot.
    pub restores: u64,
    /// Connections the hub closed as slow consumers.
    pub slow_consumer_drops: u64,
    /// Hub restarts on the store kept (store mode).
    pub store_restarts: u64,
    /// Appends the store refused (store mode).
    pub store_failures: u64,
    /// WebSocket transports blocked, each replaced by an HTTP binding one.
    pub blocked_websockets: u64,
    /// Transports of the HTTP binding opened.
    pub http_transports: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    ToHub,
    ToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deliver(u64, Dir),
    Workload(usize),
    ProvideToken(usize),
    Fault,
    Reachable,
    ObserverHeartbeat,
    Restore(usize),
    /// The store carries out what is due.
    Store,
    /// The store works again.
    StoreRecovers,
}

#[derive(Debug)]
struct Link {
    client: usize,
    transport: TransportId,
    connection: ConnectionId,
    up: bool,
    /// In-flight frames per direction, delivered in order.
    to_hub: VecDeque<Bytes>,
    to_client: VecDeque<Bytes>,
    /// The latest delivery time scheduled per direction (keeps each direction FIFO).
    last_to_hub: Time,
    last_to_client: Time,
    stalled_until: Option<Time>,
    /// Once cut, frames still in flight to the client arrive as stale frames.
    deliver_stale: bool,
    /// Half dead: frames to the client are lost, frames to the hub still arrive, and
    /// neither side is told (the client notices by its liveness timer).
    to_client_lost: bool,
    /// The client's process died: nothing reaches it any more.
    client_gone: bool,
}

struct Peer {
    client: Client,
    /// Its configuration, to restore it from a snapshot.
    config: ClientConfig,
    link: Option<u64>,
    closed: bool,
    token_pending: bool,
    /// The process died: what it had, waiting to be restored.
    dead: Option<ClientSnapshot>,
}

struct World {
    config: SimConfig,
    rng: Rng,
    /// Decides which WebSocket transports are blocked (its own stream, so the faults of a
    /// seed stay those of the runs without blocking).
    block_rng: Rng,
    now: Time,
    wall_offset_ms: u64,
    hub: Hub,
    hub_config: HubConfig,
    peers: Vec<Peer>,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    by_connection: BTreeMap<ConnectionId, u64>,
    queue: BinaryHeap<Reverse<(Time, u64, Action)>>,
    sequence: u64,
    reachable: bool,
    /// The observer's connection on the current hub.
    observer: Option<ConnectionId>,
    trace: Trace,
    stats: SimStats,
    /// Store mode: the store, and the requests it has not carried out yet (each with when).
    store: Option<ModelStore>,
    store_queue: VecDeque<(Time, StorageRequest)>,
    published: u64,
}

fn key() -> ApiKey {
    ApiKey {
        name: "app".into(),
        secret: "sim-secret".into(),
        capabilities: Capabilities::all(),
    }
}

fn channel(rng: &mut Rng) -> ChannelName {
    let name = CHANNELS[rng.between(0, CHANNELS.len() as u64 - 1) as usize];
    ChannelName::new(name).expect("valid names")
}

impl World {
    fn new(seed: u64, config: SimConfig) -> World {
        let mut rng = Rng::from_u64(seed);
        let mut hub_config = HubConfig::default();
        hub_config.keys = vec![key()];
        hub_config.sabotage = config.sabotage;
        // Writes are reported to the hub only as the client reads them (no socket buffer is
        // modelled), so a small limit stands in for a large one under heavy traffic: a
        // client that stops reading — a stall, a half-dead link, a dead process — is
        // dropped as a slow consumer within the simulation's modest traffic.
        hub_config.max_pending_bytes = SIM_MAX_PENDING_BYTES;
        if config.store {
            hub_config.storage = StorageMode::External;
        }
        let mut hub_seed = [0u8; 32];
        rng.fill(&mut hub_seed);
        let hub = Hub::new(hub_config.clone(), hub_seed);
        let peers = (0..config.clients)
            .map(|index| {
                let uses_token = index % 2 == 1;
                let auth = if uses_token {
                    Auth::Token
                } else {
                    Auth::ApiKey {
                        name: "app".into(),
                        secret: "sim-secret".into(),
                    }
                };
                let mut client_config = ClientConfig::new(auth);
                client_config.client_id = None;
                client_config.fallback.probe_interval = Duration::from_secs(20);
                client_config.sabotage = config.sabotage;
                // Heartbeats up to the hub's maximum: a silent link is then noticed minutes
                // late, long after the dedupe window of what was in flight (issue 20).
                client_config.heartbeat_interval = match index % 3 {
                    0 => None,
                    1 => Some(Duration::from_secs(60)),
                    _ => Some(Duration::from_secs(300)),
                };
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                Peer {
                    client: Client::new(client_config.clone(), seed),
                    config: client_config,
                    link: None,
                    closed: false,
                    token_pending: false,
                    dead: None,
                }
            })
            .collect();
        let store = config.store.then(ModelStore::new);
        let mut block_seed = [0u8; 32];
        block_seed[..8].copy_from_slice(&seed.to_le_bytes());
        block_seed[8] = 0xb1;
        World {
            config,
            rng,
            block_rng: Rng::from_seed(block_seed),
            now: Time::from_millis(0),
            wall_offset_ms: 0,
            hub,
            hub_config,
            peers,
            links: BTreeMap::new(),
            next_link: 0,
            by_connection: BTreeMap::new(),
            queue: BinaryHeap::new(),
            sequence: 0,
            reachable: true,
            observer: None,
            trace: Trace::default(),
            stats: SimStats::default(),
            store,
            store_queue: VecDeque::new(),
            published: 0,
        }
    }

    fn stamp(&self) -> Timestamp {
        Timestamp::new(
            self.now,
            UNIX_START_MS + self.now.as_millis() + self.wall_offset_ms,
        )
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, action)));
    }

    fn record(&mut self, client: usize, record: Record) {
        if let Record::Event(Event::Message { .. }) = record {
            self.stats.deliveries += 1;
        }
        self.trace.entries.push(Entry {
            at: self.now,
            client,
            record,
        });
    }

    fn active(&self) -> bool {
        self.now < Time::ZERO.saturating_add(self.config.active)
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(self.rng.between(1, 50))
    }

    /// Queues bytes on a link and schedules their delivery, keeping each direction in order.
    fn send_on(&mut self, link_id: u64, dir: Dir, bytes: Bytes) {
        let latency = self.latency();
        let now = self.now;
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        if !link.up {
            // A dead link carries nothing sent after it died (only what was already in
            // flight may still arrive): TCP never delivers a later frame after losing an
            // earlier one.
            return;
        }
        let last = match dir {
            Dir::ToHub => {
                link.to_hub.push_back(bytes);
                &mut link.last_to_hub
            }
            Dir::ToClient => {
                link.to_client.push_back(bytes);
                &mut link.last_to_client
            }
        };
        let at = now.saturating_add(latency).max(*last);
        *last = at;
        self.schedule(at, Action::Deliver(link_id, dir));
    }

    /// Moves every output of every state machine until none is left.
    fn settle_outputs(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            for index in 0..self.peers.len() {
                while let Some(output) = self.peers[index].client.poll_output() {
                    moved = true;
                    self.client_output(index, output);
                }
            }
            while let Some(output) = self.hub.poll_output() {
                moved = true;
                self.hub_output(output);
            }
            if !moved {
                return;
            }
        }
        panic!("outputs never settled");
    }

    fn client_output(&mut self, index: usize, output: Output) {
        match output {
            Output::OpenTransport { transport, kind } => {
                if kind == tether_core::client::TransportKind::HttpStream {
                    self.stats.http_transports += 1;
                }
                if self.config.blocked_websockets
                    && self.reachable
                    && kind == tether_core::client::TransportKind::WebSocket
                    && self.block_rng.between(0, 2) == 0
                {
                    self.stats.blocked_websockets += 1;
                    let now = self.now;
                    self.peers[index].client.handle_transport_blocked(
                        now,
                        transport,
                        "the WebSocket upgrade was answered 403 Forbidden",
                    );
                    return;
                }
                if !self.reachable {
                    let now = self.now;
                    self.peers[index]
                        .client
                        .handle_transport_closed(now, transport, "unreachable");
                    return;
                }
                let stamp = self.stamp();
                let connection = self.hub.accept(stamp);
                let id = self.next_link;
                self.next_link += 1;
                self.links.insert(
                    id,
                    Link {
                        client: index,
                        transport,
                        connection,
                        up: true,
                        to_hub: VecDeque::new(),
                        to_client: VecDeque::new(),
                        last_to_hub: self.now,
                        last_to_client: self.now,
                        stalled_until: None,
                        deliver_stale: false,
                        to_client_lost: false,
                        client_gone: false,
                    },
                );
                self.by_connection.insert(connection, id);
                self.peers[index].link = Some(id);
                let now = self.now;
                self.peers[index]
                    .client
                    .handle_transport_open(now, transport);
            }
            Output::Transmit { transport, bytes } => {
                if let Some(link_id) = self.peers[index].link {
                    if self
                        .links
                        .get(&link_id)
                        .is_some_and(|l| l.transport == transport && l.up)
                    {
                        self.send_on(link_id, Dir::ToHub, bytes);
                    }
                }
            }
            Output::CloseTransport { transport, .. } => {
                if let Some(link_id) = self.peers[index].link {
                    if self
                        .links
                        .get(&link_id)
                        .is_some_and(|l| l.transport == transport)
                    {
                        self.peers[index].link = None;
                        self.close_link(link_id, false, true);
                    }
                }
            }
            Output::Event(event) => {
                if let Event::TokenRequired { .. } = event {
                    if !self.peers[index].token_pending {
                        self.peers[index].token_pending = true;
                        let delay = Duration::from_millis(self.rng.between(0, 2000));
                        let at = self.now.saturating_add(delay);
                        self.schedule(at, Action::ProvideToken(index));
                    }
                }
                self.record(index, Record::Event(event));
            }
        }
    }

    /// Connects the observer to the current hub and attaches it to every channel. It sits
    /// on the hub itself, outside the faulty network, and records where every message is
    /// stored.
    fn attach_observer(&mut self) {
        let stamp = self.stamp();
        let connection = self.hub.accept(stamp);
        self.observer = Some(connection);
        let mut frames = vec![ClientFrame::Connect {
            version: PROTOCOL_VERSION,
            credentials: Credentials::ApiKey {
                name: "app".into(),
                secret: "sim-secret".into(),
            },
            client_id: Some(ClientId::new("observer").expect("valid")),
            resume: None,
            heartbeat_interval_ms: Some(300_000),
            options: None,
        }];
        for name in CHANNELS {
            frames.push(ClientFrame::Attach {
                channel: ChannelName::new(name).expect("valid"),
                from: None,
            });
        }
        for frame in frames {
            let bytes = wire::encode(&frame, &Limits::DEFAULT).expect("encodes");
            self.hub.handle_bytes(stamp, connection, bytes);
        }
    }

    fn observe(&mut self, bytes: &Bytes) {
        if let Ok(ServerFrame::Message { channel, message }) =
            wire::decode::<ServerFrame>(bytes, &Limits::PROTOCOL_MAX)
        {
            self.trace
                .stored
                .push((channel, message.message.id, message.position));
        }
    }

    fn hub_output(&mut self, output: HubOutput) {
        match output {
            HubOutput::Transmit { connection, bytes } if Some(connection) == self.observer => {
                self.observe(&bytes);
                let stamp = self.stamp();
                self.hub.handle_written(stamp, connection, bytes.len());
            }
            HubOutput::Transmit { connection, bytes } => {
                // Reported written when the client reads it (see `deliver`).
                if let Some(&link_id) = self.by_connection.get(&connection) {
                    self.send_on(link_id, Dir::ToClient, bytes);
                }
            }
            HubOutput::Close { connection, .. } => {
                if let Some(link_id) = self.by_connection.remove(&connection) {
                    // The client learns of it after the frames already sent arrive.
                    if let Some(link) = self.links.get_mut(&link_id) {
                        link.up = false;
                        link.deliver_stale = false;
                    }
                    let at = self
                        .links
                        .get(&link_id)
                        .map_or(self.now, |l| l.last_to_client)
                        .saturating_add(Duration::from_millis(1));
                    self.schedule(at, Action::Deliver(link_id, Dir::ToClient));
                }
            }
            HubOutput::Event(HubEvent::SlowConsumer { .. }) => {
                self.stats.slow_consumer_drops += 1;
            }
            HubOutput::Event(HubEvent::StorageFailed { .. }) => self.stats.store_failures += 1,
            HubOutput::Event(_) | HubOutput::Api { .. } => {}
            HubOutput::Hook { id, .. } => panic!("a hook request with no hook configured: {id:?}"),
            HubOutput::Storage(request) => {
                // A sync takes 1-5 ms mostly, up to 50 ms often, up to 2 s now and then;
                // the store answers in order.
                let delay = match self.rng.between(0, 99) {
                    0..=79 => self.rng.between(1, 5),
                    80..=96 => self.rng.between(5, 50),
                    _ => self.rng.between(200, 2000),
                };
                let at = self
                    .now
                    .saturating_add(Duration::from_millis(delay))
                    .max(self.store_queue.back().map_or(Time::ZERO, |(at, _)| *at));
                self.store_queue.push_back((at, request));
                self.schedule(at, Action::Store);
            }
        }
    }

    /// The store carries out every request due by now and answers the hub.
    fn store_due(&mut self) {
        while self
            .store_queue
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            let Some((_, request)) = self.store_queue.pop_front() else {
                break;
            };
            let stamp = self.stamp();
            let Some(store) = self.store.as_mut() else {
                return;
            };
            if let Some(completion) = store.apply(request, stamp.unix_ms) {
                self.hub.handle_storage(stamp, completion);
            }
        }
    }

    /// The hub's process dies and a new one starts on the store. What the store had not
    /// carried out yet is partly synced (a random prefix, whose answers the dead hub never
    /// sent: a crash between sync and acknowledgement) and partly lost (never acknowledged).
    fn restart_on_store(&mut self, live: Vec<u64>) {
        self.stats.store_restarts += 1;
        for link_id in live {
            self.close_link(link_id, true, true);
        }
        let synced = self.rng.between(0, self.store_queue.len() as u64) as usize;
        let stamp = self.stamp();
        let queued: Vec<StorageRequest> = self.store_queue.drain(..).map(|(_, r)| r).collect();
        let Some(store) = self.store.as_mut() else {
            return;
        };
        for request in queued.into_iter().take(synced) {
            let _ = store.apply(request, stamp.unix_ms);
        }
        let config = &self.hub_config;
        let state = store.restored(
            stamp.unix_ms,
            config.retention_count,
            millis(config.retention_age),
            millis(config.dedupe_window),
            config.publish_record,
        );
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        self.hub = Hub::new(self.hub_config.clone(), seed);
        self.hub.restore(stamp, state);
        self.by_connection.clear();
        self.attach_observer();
    }

    /// Ends a link. `tell_hub` / `tell_client` say which side has not heard of it yet.
    fn close_link(&mut self, link_id: u64, tell_client: bool, tell_hub: bool) {
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        link.up = false;
        link.to_hub.clear();
        let (client, transport, connection) = (link.client, link.transport, link.connection);
        if !link.deliver_stale {
            link.to_client.clear();
        }
        if tell_hub && self.by_connection.remove(&connection).is_some() {
            let stamp = self.stamp();
            self.hub.handle_closed(stamp, connection);
        }
        if tell_client && self.peers[client].link == Some(link_id) {
            self.peers[client].link = None;
            let now = self.now;
            self.peers[client]
                .client
                .handle_transport_closed(now, transport, "connection lost");
        }
    }

    fn deliver(&mut self, link_id: u64, dir: Dir) {
        let now = self.now;
        let Some(link) = self.links.get_mut(&link_id) else {
            return;
        };
        if let Some(until) = link.stalled_until.filter(|until| *until > now) {
            // Held by the stall; released when it ends, after this link's other frames.
            let at = until.max(match dir {
                Dir::ToHub => link.last_to_hub,
                Dir::ToClient => link.last_to_client,
            });
            match dir {
                Dir::ToHub => link.last_to_hub = at,
                Dir::ToClient => link.last_to_client = at,
            }
            self.schedule(at, Action::Deliver(link_id, dir));
            return;
        }
        match dir {
            Dir::ToHub => {
                let Some(bytes) = link.to_hub.pop_front() else {
                    return;
                };
                if link.up {
                    let connection = link.connection;
                    let stamp = self.stamp();
                    self.hub.handle_bytes(stamp, connection, bytes);
                }
            }
            Dir::ToClient => {
                let (client, transport, up) = (link.client, link.transport, link.up);
                if link.to_client_lost || link.client_gone {
                    // Lost on the way: never acknowledged, so never reported written.
                    link.to_client.pop_front();
                    return;
                }
                match link.to_client.pop_front() {
                    Some(bytes) => {
                        let connection = link.connection;
                        if up && self.by_connection.get(&connection) == Some(&link_id) {
                            let stamp = self.stamp();
                            self.hub.handle_written(stamp, connection, bytes.len());
                        }
                        let current = self.peers[client].link == Some(link_id);
                        self.peers[client]
                            .client
                            .handle_transport_bytes(now, transport, bytes);
                        if !current {
                            let mut outputs = Vec::new();
                            while let Some(output) = self.peers[client].client.poll_output() {
                                outputs.push(output);
                            }
                            self.record(
                                client,
                                Record::StaleDelivery {
                                    outputs: outputs.len(),
                                },
                            );
                            for output in outputs {
                                self.client_output(client, output);
                            }
                        }
                    }
                    None if !up && self.peers[client].link == Some(link_id) => {
                        // The hub closed this link: the client hears of it now.
                        self.peers[client].link = None;
                        self.peers[client].client.handle_transport_closed(
                            now,
                            transport,
                            "closed by the hub",
                        );
                    }
                    None => {}
                }
            }
        }
    }

    fn provide_token(&mut self, index: usize) {
        self.peers[index].token_pending = false;
        if self.peers[index].dead.is_some() {
            return;
        }
        let unix_ms = self.stamp().unix_ms;
        let lifetime = self.rng.between(30, 300);
        let claims = Claims {
            sub: format!("token-client-{index}"),
            exp: unix_ms / 1000 + lifetime,
            iat: unix_ms / 1000,
            nbf: None,
            aud: None,
            iss: None,
            cap: Capabilities::all(),
        };
        let token = mint_token(&key(), &claims).expect("the simulation key signs");
        let now = self.now;
        self.peers[index].client.provide_token(now, token);
    }

    fn workload(&mut self, index: usize) {
        if self.peers[index].closed {
            return;
        }
        let now = self.now;
        let roll = if self.peers[index].dead.is_some() {
            // The process is down: nothing is called until it is restored.
            100
        } else {
            self.rng.between(0, 99)
        };
        match roll {
            0..=49 => {
                let channel = channel(&mut self.rng);
                let count = self.rng.between(1, 3);
                let messages: Vec<NewMessage> = (0..count)
                    .map(|_| {
                        self.published += 1;
                        NewMessage::new("m", format!("payload-{}", self.published))
                    })
                    .collect();
                if let Ok(id) = self.peers[index]
                    .client
                    .publish(now, channel.clone(), messages)
                {
                    self.stats.publishes += 1;
                    let ids = self.peers[index]
                        .client
                        .snapshot()
                        .publishes
                        .iter()
                        .last()
                        .map(|p| p.messages.iter().map(|m| m.id.clone()).collect())
                        .unwrap_or_default();
                    self.record(
                        index,
                        Record::Published {
                            id,
                            channel,
                            messages: ids,
                        },
                    );
                }
            }
            50..=74 => {
                let channel = channel(&mut self.rng);
                if self.peers[index]
                    .client
                    .attach(now, channel.clone())
                    .is_ok()
                {
                    self.record(index, Record::AttachCalled(channel));
                }
            }
            75..=80 => {
                let channel = channel(&mut self.rng);
                self.record(index, Record::DetachCalled(channel.clone()));
                self.peers[index].client.detach(now, &channel);
            }
            81..=85 => {
                let _ = self.peers[index].client.ping(now);
            }
            86..=89 => {
                let channel = channel(&mut self.rng);
                // Pages of at most 20 small messages stay well under the hub's pending
                // limit here, so asking for history never makes a slow consumer.
                let query = HistoryQuery {
                    limit: 20,
                    ..HistoryQuery::default()
                };
                let _ = self.peers[index].client.history(now, channel, query);
            }
            90 if index == 0 => {
                self.record(index, Record::CloseCalled);
                self.peers[index].closed = true;
                self.peers[index].client.close(now);
            }
            _ => {}
        }
        let next = now.saturating_add(Duration::from_millis(self.rng.between(200, 3000)));
        if next < Time::ZERO.saturating_add(self.config.active) {
            self.schedule(next, Action::Workload(index));
        }
    }

    fn fault(&mut self) {
        if !self.active() {
            return;
        }
        self.stats.faults += 1;
        let roll = self.rng.between(0, 99);
        let live: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.up)
            .map(|(id, _)| *id)
            .collect();
        let pick = |rng: &mut Rng, ids: &[u64]| {
            (!ids.is_empty()).then(|| ids[rng.between(0, ids.len() as u64 - 1) as usize])
        };
        match roll {
            0..=39 => {
                if let Some(link_id) = pick(&mut self.rng, &live) {
                    let stale = self.rng.between(0, 1) == 1;
                    if let Some(link) = self.links.get_mut(&link_id) {
                        link.deliver_stale = stale;
                    }
                    self.close_link(link_id, true, true);
                }
            }
            40..=44 => {
                // A link dies silently (a NAT forgets it): what is in flight is lost and
                // neither side is told — each notices only when its liveness timer runs out
                // (minutes with a long heartbeat), long after the dedupe window of an
                // acknowledgement lost on the way (issue 20).
                if let Some(link_id) = pick(&mut self.rng, &live) {
                    if self.rng.between(0, 1) == 0 {
                        if let Some(link) = self.links.get_mut(&link_id) {
                            link.deliver_stale = false;
                        }
                        self.close_link(link_id, false, false);
                    } else if let Some(link) = self.links.get_mut(&link_id) {
                        // Half dead: what the client sends is stored and acknowledged, and
                        // every acknowledgement is lost until the client gives up.
                        link.to_client_lost = true;
                    }
                }
            }
            45..=59 => {
                // Stall up to three links; each is released at its own random moment, so held
                // frames come back in a random order across links (in order within a link).
                let length = Duration::from_millis(self.rng.between(500, 20_000));
                let count = self.rng.between(1, 3);
                for _ in 0..count {
                    if let Some(link_id) = pick(&mut self.rng, &live) {
                        let jitter = Duration::from_millis(self.rng.between(0, 2_000));
                        let until = self.now.saturating_add(length + jitter);
                        if let Some(link) = self.links.get_mut(&link_id) {
                            link.stalled_until = Some(until);
                        }
                    }
                }
            }
            60..=67 => {
                for link_id in live {
                    self.close_link(link_id, true, true);
                }
            }
            68..=71 if self.store.is_some() => self.restart_on_store(live),
            72..=73 if self.store.is_some() => {
                // The disk fails for a while: appends are refused with storage_failed.
                if let Some(store) = self.store.as_mut() {
                    store.failing = true;
                }
                let at = self
                    .now
                    .saturating_add(Duration::from_millis(self.rng.between(500, 5000)));
                self.schedule(at, Action::StoreRecovers);
            }
            68..=74 => {
                self.stats.state_losses += 1;
                if self.store.is_some() {
                    // The store is lost too: every epoch changes (discontinuities allowed).
                    self.store = Some(ModelStore::new());
                    self.store_queue.clear();
                    self.trace.store_lost = true;
                }
                for link_id in live {
                    self.close_link(link_id, true, true);
                }
                let mut seed = [0u8; 32];
                self.rng.fill(&mut seed);
                self.hub = Hub::new(self.hub_config.clone(), seed);
                self.by_connection.clear();
                self.attach_observer();
            }
            75..=84 => {
                self.wall_offset_ms += self.rng.between(60_000, 900_000);
            }
            85..=89 => self.kill_client(),
            _ => {
                self.reachable = false;
                let length = Duration::from_millis(self.rng.between(1000, 30_000));
                let at = self.now.saturating_add(length);
                self.schedule(at, Action::Reachable);
            }
        }
        let next = self
            .now
            .saturating_add(Duration::from_millis(self.rng.between(1000, 8000)));
        self.schedule(next, Action::Fault);
    }

    /// A client's process dies: the application kept its snapshot (taken after every event
    /// it handled), its sockets close — or, when its machine vanished, its connection is left
    /// for the hub to notice — and it is restored after a gap of 1 to 200 s: within or past
    /// the session TTL and the dedupe window of what it had in flight (issue 20).
    fn kill_client(&mut self) {
        let candidates: Vec<usize> = (0..self.peers.len())
            .filter(|&i| !self.peers[i].closed && self.peers[i].dead.is_none())
            .collect();
        if candidates.is_empty() {
            return;
        }
        let index = candidates[self.rng.between(0, candidates.len() as u64 - 1) as usize];
        let tell_hub = self.rng.between(0, 1) == 0;
        // Half come back soon (the session still there, the workload still running), half
        // after a long gap.
        let gap = if self.rng.between(0, 1) == 0 {
            Duration::from_millis(self.rng.between(1_000, 30_000))
        } else {
            Duration::from_millis(self.rng.between(30_000, 200_000))
        };
        let snapshot = self.peers[index].client.snapshot();
        let links: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, link)| link.client == index)
            .map(|(id, _)| *id)
            .collect();
        for link_id in links {
            if let Some(link) = self.links.get_mut(&link_id) {
                link.client_gone = true;
                link.deliver_stale = false;
            }
            self.close_link(link_id, false, tell_hub);
        }
        let peer = &mut self.peers[index];
        peer.link = None;
        peer.token_pending = false;
        peer.dead = Some(snapshot);
        self.record(index, Record::Died);
        let at = self.now.saturating_add(gap);
        self.schedule(at, Action::Restore(index));
    }

    /// A new process continues the dead client's session from its snapshot.
    fn restore_client(&mut self, index: usize) {
        let Some(snapshot) = self.peers[index].dead.take() else {
            return;
        };
        self.stats.restores += 1;
        let messages: Vec<_> = snapshot
            .publishes
            .iter()
            .map(|p| p.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>())
            .collect();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let config = self.peers[index].config.clone();
        let (client, ids) =
            Client::from_snapshot(config, seed, snapshot).expect("the client's own snapshot");
        self.peers[index].client = client;
        self.record(
            index,
            Record::Restored {
                publishes: ids.into_iter().zip(messages).collect(),
            },
        );
        let now = self.now;
        self.peers[index].client.connect(now);
    }

    fn all_connected(&self) -> bool {
        self.peers.iter().all(|p| {
            p.closed
                || (p.dead.is_none()
                    && p.client.state() == tether_core::client::ConnectionState::Connected)
        })
    }

    fn run_body(&mut self) -> Trace {
        let start = self.now;
        self.attach_observer();
        self.schedule(
            start.saturating_add(Duration::from_secs(60)),
            Action::ObserverHeartbeat,
        );
        for index in 0..self.peers.len() {
            self.peers[index].client.connect(start);
            let at = start.saturating_add(Duration::from_millis(self.rng.between(0, 1000)));
            self.schedule(at, Action::Workload(index));
        }
        self.schedule(start.saturating_add(Duration::from_secs(2)), Action::Fault);
        self.settle_outputs();
        let quiet = Time::ZERO.saturating_add(self.config.active);
        let mut end = quiet.saturating_add(self.config.settle);
        let mut extended = false;
        let mut quiet_started = false;
        for _ in 0..5_000_000 {
            if !quiet_started && self.now >= quiet {
                quiet_started = true;
                self.reachable = true;
                for link in self.links.values_mut() {
                    link.stalled_until = None;
                }
            }
            let timer = self
                .peers
                .iter()
                .filter(|p| p.dead.is_none())
                .filter_map(|p| p.client.poll_timeout())
                .chain(self.hub.poll_timeout())
                .min();
            let action = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let next = match (timer, action) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(next) = next.filter(|next| *next <= end) else {
                // A fault's late effect (a token that a clock jump made expire early, say) may
                // still be recovering: give every client one more bounded window to connect.
                if !extended && !self.all_connected() {
                    extended = true;
                    end = end.saturating_add(self.config.settle);
                    continue;
                }
                break;
            };
            if !quiet_started && next >= quiet {
                self.now = quiet;
                continue;
            }
            self.now = self.now.max(next);
            if action == Some(next) {
                if let Some(Reverse((_, _, action))) = self.queue.pop() {
                    match action {
                        Action::Deliver(link, dir) => self.deliver(link, dir),
                        Action::Workload(index) => self.workload(index),
                        Action::ProvideToken(index) => self.provide_token(index),
                        Action::Fault => self.fault(),
                        Action::Reachable => self.reachable = true,
                        Action::Restore(index) => self.restore_client(index),
                        Action::Store => self.store_due(),
                        Action::StoreRecovers => {
                            if let Some(store) = self.store.as_mut() {
                                store.failing = false;
                            }
                        }
                        Action::ObserverHeartbeat => {
                            if let Some(connection) = self.observer {
                                let bytes = wire::encode(&ClientFrame::Heartbeat, &Limits::DEFAULT)
                                    .expect("encodes");
                                let stamp = self.stamp();
                                self.hub.handle_bytes(stamp, connection, bytes);
                            }
                            let at = self.now.saturating_add(Duration::from_secs(60));
                            self.schedule(at, Action::ObserverHeartbeat);
                        }
                    }
                }
            } else {
                let stamp = self.stamp();
                if self.hub.poll_timeout().is_some_and(|d| d <= self.now) {
                    self.hub.handle_timeout(stamp);
                }
                for peer in &mut self.peers {
                    if peer.dead.is_none()
                        && peer.client.poll_timeout().is_some_and(|d| d <= self.now)
                    {
                        peer.client.handle_timeout(self.now);
                    }
                }
            }
            self.settle_outputs();
        }
        self.trace.final_states = self.peers.iter().map(|p| p.client.state()).collect();
        self.trace.store_kept = self.config.store && !self.trace.store_lost;
        self.trace.quiet_from = quiet;
        std::mem::take(&mut self.trace)
    }
}

/// Runs one seed and checks it.
pub fn run(seed: u64, config: &SimConfig) -> SimReport {
    let mut world = World::new(seed, config.clone());
    let trace = world.run_body();
    let violations = check(&trace);
    SimReport {
        seed,
        trace_hash: trace.hash(),
        violations,
        trace,
        stats: world.stats,
    }
}

/// Fuzz target `sim`: the fuzzer's bytes choose the seed (and so the fault schedule and the
/// workload), the number of clients and how long faults last; every guarantee must hold.
pub fn fuzz(data: &[u8]) {
    let mut seed = [0u8; 8];
    for (slot, byte) in seed.iter_mut().zip(data) {
        *slot = *byte;
    }
    let clients = 2 + usize::from(data.get(8).copied().unwrap_or(0) % 5);
    let active = Duration::from_secs(20 + u64::from(data.get(9).copied().unwrap_or(0) % 100));
    let config = SimConfig {
        clients,
        active,
        ..SimConfig::default()
    };
    let report = run(u64::from_le_bytes(seed), &config);
    assert!(
        report.violations.is_empty(),
        "{:?}",
        &report.violations[..report.violations.len().min(3)]
    );
}
