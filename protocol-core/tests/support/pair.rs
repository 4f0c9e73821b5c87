//! Clients and a hub together in memory, with a virtual clock that jumps to the next
//! deadline and a bounded drive loop that fails on livelock.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tether_core::client::{Client, ClientConfig, Event, Output, TransportId};
use tether_core::server::{ConnectionId, Hub, HubConfig, HubOutput};
use tether_core::{Time, Timestamp};

pub const UNIX_START_MS: u64 = 1_767_225_600_000;

/// One client and what it saw.
pub struct Peer {
    pub client: Client,
    pub events: Vec<Event>,
    /// The client's transport and the hub connection behind it.
    link: Option<(TransportId, ConnectionId)>,
    /// Transports the client asked for that are not open yet.
    opening: Vec<TransportId>,
}

pub struct World {
    pub hub: Hub,
    pub now: Time,
    pub peers: Vec<Peer>,
    /// Frames in flight, delivered on the next step (in order).
    to_hub: VecDeque<(ConnectionId, Bytes)>,
    to_client: VecDeque<(usize, TransportId, Bytes)>,
    by_connection: BTreeMap<ConnectionId, usize>,
    /// While false, transport open requests are refused (the hub is unreachable).
    pub reachable: bool,
}

impl World {
    pub fn new(config: HubConfig, seed: u8) -> World {
        World {
            hub: Hub::new(config, [seed; 32]),
            now: Time::from_millis(1_000),
            peers: Vec::new(),
            to_hub: VecDeque::new(),
            to_client: VecDeque::new(),
            by_connection: BTreeMap::new(),
            reachable: true,
        }
    }

    pub fn stamp(&self) -> Timestamp {
        Timestamp::new(self.now, UNIX_START_MS + self.now.as_millis())
    }

    pub fn add_client(&mut self, config: ClientConfig, seed: u8) -> usize {
        self.peers.push(Peer {
            client: Client::new(config, [seed; 32]),
            events: Vec::new(),
            link: None,
            opening: Vec::new(),
        });
        self.peers.len() - 1
    }

    pub fn client(&mut self, index: usize) -> &mut Client {
        &mut self.peers[index].client
    }

    /// Moves every output until nothing is left to move (bounded).
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step_once() {
                return;
            }
        }
        panic!("outputs never settled: livelock");
    }

    fn step_once(&mut self) -> bool {
        let mut moved = false;
        let stamp = self.stamp();
        for index in 0..self.peers.len() {
            while let Some(output) = self.peers[index].client.poll_output() {
                moved = true;
                match output {
                    Output::OpenTransport { transport, .. } => {
                        self.peers[index].opening.push(transport)
                    }
                    Output::Transmit { transport, bytes } => {
                        if let Some((t, connection)) = self.peers[index].link {
                            if t == transport {
                                self.to_hub.push_back((connection, bytes));
                            }
                        }
                    }
                    Output::CloseTransport { transport, .. } => {
                        if let Some((t, connection)) = self.peers[index].link {
                            if t == transport {
                                self.peers[index].link = None;
                                self.by_connection.remove(&connection);
                                self.hub.handle_closed(stamp, connection);
                            }
                        }
                    }
                    Output::Event(event) => self.peers[index].events.push(event),
                }
            }
            let opening = std::mem::take(&mut self.peers[index].opening);
            for transport in opening {
                moved = true;
                if self.reachable {
                    let connection = self.hub.accept(stamp);
                    self.by_connection.insert(connection, index);
                    self.peers[index].link = Some((transport, connection));
                    self.peers[index]
                        .client
                        .handle_transport_open(self.now, transport);
                } else {
                    self.peers[index].client.handle_transport_closed(
                        self.now,
                        transport,
                        "unreachable",
                    );
                }
            }
        }
        while let Some(output) = self.hub.poll_output() {
            moved = true;
            match output {
                HubOutput::Transmit { connection, bytes } => {
                    let written = bytes.len();
                    if let Some(&index) = self.by_connection.get(&connection) {
                        if let Some((transport, _)) = self.peers[index].link {
                            self.to_client.push_back((index, transport, bytes));
                        }
                    }
                    self.hub.handle_written(stamp, connection, written);
                }
                HubOutput::Close { connection, .. } => {
                    if let Some(index) = self.by_connection.remove(&connection) {
                        if let Some((transport, c)) = self.peers[index].link {
                            if c == connection {
                                self.peers[index].link = None;
                                self.peers[index].client.handle_transport_closed(
                                    self.now,
                                    transport,
                                    "closed by the hub",
                                );
                            }
                        }
                    }
                }
                HubOutput::Event(_) => {}
                HubOutput::Storage(request) => {
                    panic!("an in-memory hub asked its store: {request:?}")
                }
                HubOutput::Api { id, .. } => panic!("an API answer nobody asked for: {id:?}"),
                HubOutput::Hook { id, .. } => {
                    panic!("a hook request with no hook configured: {id:?}")
                }
            }
        }
        while let Some((connection, bytes)) = self.to_hub.pop_front() {
            moved = true;
            self.hub.handle_bytes(stamp, connection, bytes);
        }
        while let Some((index, transport, bytes)) = self.to_client.pop_front() {
            moved = true;
            self.peers[index]
                .client
                .handle_transport_bytes(self.now, transport, bytes);
        }
        moved
    }

    /// Cuts a client's transport on both sides at once.
    pub fn cut(&mut self, index: usize) {
        if let Some((transport, connection)) = self.peers[index].link.take() {
            self.by_connection.remove(&connection);
            let stamp = self.stamp();
            self.hub.handle_closed(stamp, connection);
            self.peers[index]
                .client
                .handle_transport_closed(self.now, transport, "cut");
        }
        self.settle();
    }

    /// Advances the clock to `until`, firing every deadline on the way.
    pub fn run_until(&mut self, until: Time) {
        self.settle();
        for _ in 0..1_000_000 {
            let next = self
                .peers
                .iter()
                .filter_map(|peer| peer.client.poll_timeout())
                .chain(self.hub.poll_timeout())
                .min();
            match next {
                Some(deadline) if deadline <= until => {
                    self.now = self.now.max(deadline);
                    let stamp = self.stamp();
                    self.hub.handle_timeout(stamp);
                    for peer in &mut self.peers {
                        if peer.client.poll_timeout().is_some_and(|d| d <= self.now) {
                            peer.client.handle_timeout(self.now);
                        }
                    }
                    self.settle();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("more than a million timer firings: livelock");
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now.saturating_add(duration);
        self.run_until(until);
    }
}
