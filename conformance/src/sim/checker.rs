//! Checks the guarantees G1–G6 (`../shared/brief/testing.md`, `docs/protocol.md`) on a full
//! trace, in the style of Jepsen's queue checks: what was lost, duplicated, reordered,
//! left unresolved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tether_core::Time;
use tether_core::client::{ConnectionState, Event, PublishId};
use tether_core::wire::{ChannelName, Continuity, MessageId, Position};

use super::trace::{Record, Trace, covers};

/// A guarantee of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guarantee {
    /// No acknowledged publish is lost.
    G1,
    /// No duplicates.
    G2,
    /// Order.
    G3,
    /// Every publish resolves.
    G4,
    /// Old frames never act on new sessions.
    G5,
    /// Liveness after faults stop.
    G6,
}

/// One broken guarantee, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub guarantee: Guarantee,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.guarantee, self.detail)
    }
}

#[derive(Default)]
struct Subscription {
    /// When the current attachment was confirmed (after the last attach call).
    attached_since: Option<Time>,
    /// The attachment is wanted (attach called, no detach since).
    wanted: bool,
    delivered: BTreeSet<MessageId>,
    discontinuities: Vec<(Time, Option<Position>, Position)>,
}

/// A publish: client, process (0, then one more per restore from a snapshot), publish id.
type PublishKey = (usize, u32, PublishId);

/// Checks every guarantee; returns the violations (empty: the run was correct).
pub fn check(trace: &Trace) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut fail = |guarantee, detail: String| violations.push(Violation { guarantee, detail });

    let clients = trace.final_states.len();
    // Per publish: (client, process, id) → (time, channel, ids); resolutions counted. A
    // client restored from its snapshot is a new process whose publish ids start again;
    // the snapshot's publishes it resolves are aliases of the originals.
    let mut published: BTreeMap<PublishKey, (Time, ChannelName, Vec<MessageId>)> = BTreeMap::new();
    let mut resolutions: BTreeMap<PublishKey, Vec<bool>> = BTreeMap::new();
    let mut process = vec![0u32; clients];
    let mut aliases: BTreeMap<PublishKey, PublishKey> = BTreeMap::new();
    // Where each message id was stored: (channel, id) → positions seen by anyone.
    let mut positions: BTreeMap<(ChannelName, MessageId), BTreeSet<Position>> = BTreeMap::new();
    let mut subscriptions: BTreeMap<(usize, ChannelName), Subscription> = BTreeMap::new();
    let mut closed = vec![false; clients];
    // G3: the last delivered position per (client, channel), reset by gaps and re-attaches.
    let mut last_delivered: BTreeMap<(usize, ChannelName), Option<Position>> = BTreeMap::new();
    let mut seen_positions: BTreeMap<(usize, ChannelName), BTreeSet<Position>> = BTreeMap::new();
    // Every (client, channel, epoch, message id) delivered: one message once per epoch (G2).
    let mut delivered_ids: BTreeSet<(usize, ChannelName, u64, tether_core::wire::MessageId)> =
        BTreeSet::new();

    for entry in &trace.entries {
        let client = entry.client;
        match &entry.record {
            Record::Published {
                id,
                channel,
                messages,
            } => {
                published.insert(
                    (client, process[client], *id),
                    (entry.at, channel.clone(), messages.clone()),
                );
            }
            Record::Died => {}
            Record::Restored { publishes } => {
                process[client] += 1;
                for (new_id, messages) in publishes {
                    let original = published.iter().find(|((c, p, id), (_, _, ids))| {
                        *c == client
                            && *p < process[client]
                            && ids == messages
                            && !resolutions.contains_key(&(*c, *p, *id))
                    });
                    match original {
                        Some((key, _)) => {
                            aliases.insert((client, process[client], *new_id), *key);
                        }
                        None => fail(
                            Guarantee::G4,
                            format!(
                                "client {client}: a restored publish matches no unresolved publish"
                            ),
                        ),
                    }
                }
            }
            Record::AttachCalled(channel) => {
                let sub = subscriptions.entry((client, channel.clone())).or_default();
                if !sub.wanted {
                    sub.wanted = true;
                    sub.attached_since = None;
                }
            }
            Record::DetachCalled(channel) => {
                let sub = subscriptions.entry((client, channel.clone())).or_default();
                sub.wanted = false;
                sub.attached_since = None;
                last_delivered.insert((client, channel.clone()), None);
            }
            Record::CloseCalled => closed[client] = true,
            Record::StaleDelivery { outputs } => {
                if *outputs > 0 {
                    fail(
                        Guarantee::G5,
                        format!(
                            "client {client}: a frame of an old transport produced {outputs} outputs at {}",
                            entry.at
                        ),
                    );
                }
            }
            Record::Event(event) => match event {
                Event::PublishResolved { id, result } => {
                    // A refusal for a malformed request (400xx) means the client broke the
                    // protocol — a reused serial, say: the publish is lost for no fault.
                    if let Err(error) = result {
                        if error.code.status() == 400 {
                            fail(
                                Guarantee::G4,
                                format!(
                                    "client {client} publish {} refused as a bad request: {error}",
                                    id.0
                                ),
                            );
                        }
                    }
                    let key = (client, process[client], *id);
                    let key = aliases.get(&key).copied().unwrap_or(key);
                    resolutions.entry(key).or_default().push(result.is_ok());
                }
                Event::Attached {
                    channel,
                    continuity,
                    ..
                } => {
                    let sub = subscriptions.entry((client, channel.clone())).or_default();
                    if sub.wanted && sub.attached_since.is_none() {
                        sub.attached_since = Some(entry.at);
                    }
                    if *continuity == Continuity::Fresh {
                        last_delivered
                            .entry((client, channel.clone()))
                            .or_insert(None);
                    }
                }
                Event::Detached { channel, .. } => {
                    let sub = subscriptions.entry((client, channel.clone())).or_default();
                    sub.wanted = false;
                    sub.attached_since = None;
                    last_delivered.insert((client, channel.clone()), None);
                }
                Event::Discontinuity {
                    channel,
                    last,
                    resumed_after,
                    ..
                } => {
                    if trace.store_kept {
                        // The store kept every message and every epoch: nothing excuses a
                        // gap (issue 18).
                        fail(
                            Guarantee::G1,
                            format!(
                                "client {client} on {channel}: a discontinuity after {last:?} to {resumed_after} although the store kept everything"
                            ),
                        );
                    }
                    let sub = subscriptions.entry((client, channel.clone())).or_default();
                    sub.discontinuities.push((entry.at, *last, *resumed_after));
                    last_delivered.insert((client, channel.clone()), Some(*resumed_after));
                }
                Event::HistoryPage {
                    channel,
                    result: Ok(page),
                    ..
                } => {
                    // History tells where messages were stored, even those no one received.
                    for message in &page.messages {
                        positions
                            .entry((channel.clone(), message.message.id.clone()))
                            .or_default()
                            .insert(message.position);
                    }
                }
                Event::Message { channel, message } => {
                    let key = (client, channel.clone());
                    let position = message.position;
                    positions
                        .entry((channel.clone(), message.message.id.clone()))
                        .or_default()
                        .insert(position);
                    // G2: the application never sees a position twice.
                    if !seen_positions
                        .entry(key.clone())
                        .or_default()
                        .insert(position)
                    {
                        fail(
                            Guarantee::G2,
                            format!("client {client} saw {channel} {position} twice"),
                        );
                    }
                    // G3: strictly increasing and contiguous unless a discontinuity said so.
                    if let Some(Some(previous)) = last_delivered.get(&key) {
                        if previous.epoch != position.epoch
                            || position.serial != previous.serial + 1
                        {
                            fail(
                                Guarantee::G3,
                                format!(
                                    "client {client} on {channel}: {position} after {previous} without a discontinuity"
                                ),
                            );
                        }
                    }
                    last_delivered.insert(key.clone(), Some(position));
                    // G2 by message id: the application never gets one message twice in an
                    // epoch, even at another position (a resend stored again). Across epochs
                    // the hub lost its state, and with it what it had stored (§7.3).
                    subscriptions
                        .entry(key)
                        .or_default()
                        .delivered
                        .insert(message.message.id.clone());
                    if !delivered_ids.insert((
                        client,
                        channel.clone(),
                        position.epoch,
                        message.message.id.clone(),
                    )) {
                        fail(
                            Guarantee::G2,
                            format!(
                                "client {client} on {channel}: message {} delivered again, at {position}",
                                message.message.id.as_str()
                            ),
                        );
                    }
                }
                _ => {}
            },
        }
    }

    for (channel, id, position) in &trace.stored {
        positions
            .entry((channel.clone(), id.clone()))
            .or_default()
            .insert(*position);
    }

    // G2 at the hub: one id stored at one position per epoch.
    for ((channel, id), seen) in &positions {
        let mut epochs = BTreeMap::new();
        for position in seen {
            if let Some(other) = epochs.insert(position.epoch, position.serial) {
                fail(
                    Guarantee::G2,
                    format!(
                        "{channel}: message {} stored twice, at serials {other} and {}",
                        id.as_str(),
                        position.serial
                    ),
                );
            }
        }
    }

    // G4: every accepted publish resolved exactly once.
    for key in published.keys() {
        match resolutions.get(key).map(Vec::len) {
            Some(1) => {}
            Some(n) => fail(
                Guarantee::G4,
                format!("client {} publish {} resolved {n} times", key.0, key.2.0),
            ),
            None => fail(
                Guarantee::G4,
                format!("client {} publish {} never resolved", key.0, key.2.0),
            ),
        }
    }

    // G6: after the faults stop, every client that was not closed is connected again.
    for (client, state) in trace.final_states.iter().enumerate() {
        if !closed[client] && *state != ConnectionState::Connected {
            fail(
                Guarantee::G6,
                format!("client {client} ended {state:?}, not Connected"),
            );
        }
    }

    // G1: every acknowledged message reaches every subscriber attached since before it was
    // published and still attached at the end, or a discontinuity covers it.
    for ((publisher, process, id), (at, channel, ids)) in &published {
        if resolutions
            .get(&(*publisher, *process, *id))
            .is_none_or(|r| r != &vec![true])
        {
            continue;
        }
        for (subscriber, state) in trace.final_states.iter().enumerate() {
            if closed[subscriber] || *state != ConnectionState::Connected {
                continue;
            }
            let Some(sub) = subscriptions.get(&(subscriber, channel.clone())) else {
                continue;
            };
            let Some(since) = sub.attached_since.filter(|since| since < at && sub.wanted) else {
                continue;
            };
            for message in ids {
                if sub.delivered.contains(message) {
                    continue;
                }
                let known = positions.get(&(channel.clone(), message.clone()));
                let covered = sub.discontinuities.iter().any(|(when, last, after)| {
                    *when >= since
                        && match known {
                            Some(set) => set.iter().any(|p| covers(*last, *after, *p)),
                            // Stored by no one we saw: only a lost epoch can explain it.
                            None => last.is_none_or(|l| l.epoch != after.epoch),
                        }
                });
                if !covered {
                    fail(
                        Guarantee::G1,
                        format!(
                            "message {} acked to client {publisher} on {channel} never reached client {subscriber}",
                            message.as_str()
                        ),
                    );
                }
            }
        }
    }
    violations
}
