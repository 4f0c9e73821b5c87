//! One priority queue of deadlines for the whole hub.
//!
//! Entries are never removed early: each names what it is for, and when it fires the hub
//! checks whether it still applies (the connection may be gone, or have been active since,
//! in which case a new entry is pushed for the new deadline). Pushing and popping cost
//! O(log n); nothing ever scans all sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Time;

/// A deadline queue of `T` (what each deadline is for).
#[derive(Debug)]
pub(crate) struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<(Time, u64, T)>>,
    /// Tie-breaker keeping equal deadlines in insertion order (determinism).
    sequence: u64,
    /// Pushes and pops so far, for tests and stats.
    operations: u64,
}

impl<T: Ord> Default for TimerQueue<T> {
    fn default() -> TimerQueue<T> {
        TimerQueue {
            heap: BinaryHeap::new(),
            sequence: 0,
            operations: 0,
        }
    }
}

impl<T: Ord + Copy> TimerQueue<T> {
    pub(crate) fn push(&mut self, at: Time, what: T) {
        self.sequence += 1;
        self.operations += 1;
        self.heap.push(Reverse((at, self.sequence, what)));
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<(Time, T)> {
        if self.next()? > now {
            return None;
        }
        self.operations += 1;
        self.heap.pop().map(|Reverse((at, _, what))| (at, what))
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    pub(crate) fn operations(&self) -> u64 {
        self.operations
    }
}
