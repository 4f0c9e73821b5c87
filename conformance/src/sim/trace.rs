//! The trace of a simulation run: what every client's application saw, in order.

use tether_core::Time;
use tether_core::client::{ConnectionState, Event, PublishId};
use tether_core::wire::{ChannelName, MessageId, Position};

/// One thing that happened, as the checker needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The application called `publish` and it was accepted.
    Published {
        /// Which publish.
        id: PublishId,
        /// The channel.
        channel: ChannelName,
        /// The message ids.
        messages: Vec<MessageId>,
    },
    /// The application called `attach`.
    AttachCalled(ChannelName),
    /// The application called `detach`.
    DetachCalled(ChannelName),
    /// The application called `close`.
    CloseCalled,
    /// An event reached the application.
    Event(Event),
    /// The client's process died; the application kept its snapshot.
    Died,
    /// A new process continued the client from its snapshot: the ids under which the
    /// snapshot's unresolved publishes (their message ids) are now resolved, in order.
    Restored {
        /// New publish id and the message ids it carries.
        publishes: Vec<(PublishId, Vec<MessageId>)>,
    },
    /// Bytes of a transport that was no longer current reached the client, and the client
    /// produced this many outputs in response.
    StaleDelivery {
        /// Outputs produced.
        outputs: usize,
    },
}

/// A record with when and where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Virtual time.
    pub at: Time,
    /// Which client.
    pub client: usize,
    /// What.
    pub record: Record,
}

/// Every entry of a run, and the final state of each client.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Entries in order.
    pub entries: Vec<Entry>,
    /// Each client's state at the end.
    pub final_states: Vec<ConnectionState>,
    /// When the faults and the workload stopped.
    pub quiet_from: Time,
    /// Every message the hub stored, as seen by an observer attached to every channel on
    /// the hub itself (no network faults): the ground truth of positions.
    pub stored: Vec<(ChannelName, MessageId, Position)>,
    /// The hub ran on a store that was lost at least once (store mode).
    pub store_lost: bool,
    /// The hub ran on a store that was never lost: every restart continued every channel,
    /// so any discontinuity is a violation.
    pub store_kept: bool,
}

impl Trace {
    /// A 64-bit FNV-1a hash of the whole trace: equal runs give equal hashes.
    pub fn hash(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |text: &str| {
            for byte in text.as_bytes() {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for entry in &self.entries {
            feed(&format!(
                "{} {} {:?}\n",
                entry.at, entry.client, entry.record
            ));
        }
        for state in &self.final_states {
            feed(&format!("{state:?}\n"));
        }
        for (channel, id, position) in &self.stored {
            feed(&format!("{channel} {} {position}\n", id.as_str()));
        }
        hash
    }
}

/// Whether a discontinuity from `last` to `after` covers position `p`.
pub fn covers(last: Option<Position>, after: Position, p: Position) -> bool {
    match last {
        None => p.epoch == after.epoch && p.serial <= after.serial,
        Some(last) if last.epoch == after.epoch => {
            p.epoch == last.epoch && p.serial > last.serial && p.serial <= after.serial
        }
        Some(last) => {
            (p.epoch == last.epoch && p.serial > last.serial)
                || (p.epoch == after.epoch && p.serial <= after.serial)
                || (p.epoch != last.epoch && p.epoch != after.epoch)
        }
    }
}
