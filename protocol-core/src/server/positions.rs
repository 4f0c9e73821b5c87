//! Positions of freed channels, remembered so a channel used again continues where it was.
//!
//! A channel's state is freed as soon as nothing refers to it (§7.3); its position —
//! `(epoch, last serial)`, a few bytes — is kept far longer, in a bounded table whose oldest
//! entries are forgotten first. A subscriber back after a long absence from a channel on
//! which nothing was published is then continuous, not told of a gap that never was.

use std::collections::{BTreeMap, HashMap};

use crate::wire::{ChannelName, Position};

/// A bounded table of channel positions, oldest forgotten first.
#[derive(Debug)]
pub(crate) struct RememberedPositions {
    capacity: usize,
    /// Each name's position and when it was remembered.
    by_name: HashMap<ChannelName, (Position, u64)>,
    /// Names in the order they were remembered.
    order: BTreeMap<u64, ChannelName>,
    sequence: u64,
}

impl RememberedPositions {
    pub(crate) fn new(capacity: usize) -> RememberedPositions {
        RememberedPositions {
            capacity,
            by_name: HashMap::new(),
            order: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// Remembers where `name` was, forgetting the oldest entry beyond the capacity.
    pub(crate) fn remember(&mut self, name: ChannelName, position: Position) {
        if self.capacity == 0 {
            return;
        }
        self.sequence += 1;
        if let Some((_, old)) = self.by_name.insert(name.clone(), (position, self.sequence)) {
            self.order.remove(&old);
        }
        self.order.insert(self.sequence, name);
        while self.by_name.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_name.remove(&oldest);
        }
    }

    /// Where `name` was, if it is remembered; the entry is taken (the channel lives again).
    pub(crate) fn recall(&mut self, name: &ChannelName) -> Option<Position> {
        let (position, sequence) = self.by_name.remove(name)?;
        self.order.remove(&sequence);
        Some(position)
    }

    /// Where `name` was, if it is remembered (the entry stays).
    pub(crate) fn peek(&self, name: &ChannelName) -> Option<Position> {
        self.by_name.get(name).map(|(position, _)| *position)
    }

    /// How many positions are remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: u32) -> ChannelName {
        ChannelName::new(format!("c{n}")).expect("valid")
    }

    fn at(serial: u64) -> Position {
        Position { epoch: 7, serial }
    }

    #[test]
    fn the_oldest_are_forgotten_first_and_a_recall_takes_the_entry() {
        let mut positions = RememberedPositions::new(2);
        positions.remember(name(1), at(1));
        positions.remember(name(2), at(2));
        positions.remember(name(1), at(11)); // now the newest
        positions.remember(name(3), at(3));
        assert_eq!(positions.len(), 2);
        assert_eq!(positions.recall(&name(2)), None, "the oldest went");
        assert_eq!(positions.recall(&name(1)), Some(at(11)));
        assert_eq!(positions.recall(&name(1)), None, "taken");
        assert_eq!(positions.recall(&name(3)), Some(at(3)));
        assert_eq!(positions.len(), 0);
    }
}
