//! One deadline table for the whole hub.
//!
//! Each entry names what it is for (a [`Timer`](super::Timer) value) and there is at most
//! one deadline per name: setting a name again moves its deadline, and the hub cancels the
//! names of a connection, a session or a channel when it forgets them. So the table holds
//! at most a few entries per live connection, session and channel, whatever clients do
//! (renewing a token a million times leaves one entry). When an entry fires the hub still
//! checks whether it applies (the connection may have been active since, in which case it
//! sets the new deadline). Setting, cancelling and popping cost O(log n); nothing ever scans
//! all sessions.

use std::collections::BTreeMap;

use crate::time::Time;

/// A deadline table of `T` (what each deadline is for).
#[derive(Debug)]
pub(crate) struct TimerQueue<T> {
    /// Deadlines in firing order; the sequence number keeps equal deadlines in the order
    /// they were set (determinism).
    order: BTreeMap<(Time, u64), T>,
    /// Each name's entry in `order`.
    current: BTreeMap<T, (Time, u64)>,
    sequence: u64,
    /// Sets, cancels and pops so far, for tests and stats.
    operations: u64,
}

impl<T: Ord> Default for TimerQueue<T> {
    fn default() -> TimerQueue<T> {
        TimerQueue {
            order: BTreeMap::new(),
            current: BTreeMap::new(),
            sequence: 0,
            operations: 0,
        }
    }
}

impl<T: Ord + Copy> TimerQueue<T> {
    /// Sets the deadline of `what` to `at`, replacing the one it had.
    pub(crate) fn set(&mut self, at: Time, what: T) {
        self.sequence += 1;
        self.operations += 1;
        if let Some(old) = self.current.insert(what, (at, self.sequence)) {
            self.order.remove(&old);
        }
        self.order.insert((at, self.sequence), what);
    }

    /// Removes the deadline of `what`, if it has one.
    pub(crate) fn cancel(&mut self, what: T) {
        if let Some(old) = self.current.remove(&what) {
            self.operations += 1;
            self.order.remove(&old);
        }
    }

    /// The deadline of `what`, if it has one.
    pub(crate) fn deadline(&self, what: T) -> Option<Time> {
        self.current.get(&what).map(|(at, _)| *at)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.order.first_key_value().map(|((at, _), _)| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<(Time, T)> {
        if self.next()? > now {
            return None;
        }
        self.operations += 1;
        let ((at, _), what) = self.order.pop_first()?;
        self.current.remove(&what);
        Some((at, what))
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn operations(&self) -> u64 {
        self.operations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_name_again_moves_its_deadline_instead_of_adding_one() {
        let mut timers = TimerQueue::default();
        for at in [50, 40, 90, 70] {
            timers.set(Time::from_millis(at), 'a');
        }
        timers.set(Time::from_millis(60), 'b');
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(Time::from_millis(60)));
        assert_eq!(
            timers.pop_due(Time::from_millis(65)),
            Some((Time::from_millis(60), 'b'))
        );
        assert_eq!(timers.pop_due(Time::from_millis(65)), None);
        assert_eq!(timers.deadline('a'), Some(Time::from_millis(70)));
        timers.cancel('a');
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn equal_deadlines_fire_in_the_order_they_were_set() {
        let mut timers = TimerQueue::default();
        for name in ['c', 'a', 'b'] {
            timers.set(Time::from_millis(10), name);
        }
        let fired: Vec<char> = std::iter::from_fn(|| timers.pop_due(Time::from_millis(10)))
            .map(|(_, what)| what)
            .collect();
        assert_eq!(fired, vec!['c', 'a', 'b']);
    }
}
