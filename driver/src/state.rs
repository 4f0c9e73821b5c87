//! An observable connection state, without a runtime.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};
use futures_lite::{FutureExt, Stream};
use tether_core::ErrorInfo;
use tether_core::client::ConnectionState;
use tether_core::embed::ConnectionStateChange;

/// State changes kept for [`StateChanges`] streams that fall behind: a stream that has not
/// read the last `CHANGES_KEPT` changes skips the older ones.
pub const CHANGES_KEPT: usize = 64;

/// A callback told every new state (see [`StateWatch::observe`]).
type Observer = Box<dyn Fn(ConnectionState) + Send>;

struct Current {
    state: ConnectionState,
    last_error: Option<ErrorInfo>,
    /// Bumped on every change, so a waiter knows whether it missed one.
    version: u64,
    /// The last changes (at most [`CHANGES_KEPT`]); the last one is change `version`.
    changes: VecDeque<ConnectionStateChange>,
    observers: Vec<Observer>,
}

struct Shared {
    current: Mutex<Current>,
    changed: Event,
}

/// The connection state of a client, observable: read it, or wait for it to change.
#[derive(Clone)]
pub struct StateWatch(Arc<Shared>);

impl StateWatch {
    pub(crate) fn new(initial: ConnectionState) -> StateWatch {
        StateWatch(Arc::new(Shared {
            current: Mutex::new(Current {
                state: initial,
                last_error: None,
                version: 0,
                changes: VecDeque::with_capacity(CHANGES_KEPT),
                observers: Vec::new(),
            }),
            changed: Event::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `observer` with every new state from now on (for adapters whose applications
    /// watch the state through a channel of their runtime). One per client, set at start:
    /// the list never grows after that.
    pub fn observe(&self, observer: impl Fn(ConnectionState) + Send + 'static) {
        self.lock().observers.push(Box::new(observer));
    }

    pub(crate) fn set(&self, state: ConnectionState, reason: Option<ErrorInfo>) {
        let mut current = self.lock();
        let previous = std::mem::replace(&mut current.state, state);
        if state == ConnectionState::Connected {
            current.last_error = None;
        } else if reason.is_some() {
            current.last_error = reason.clone();
        }
        current.version += 1;
        if current.changes.len() == CHANGES_KEPT {
            current.changes.pop_front();
        }
        current
            .changes
            .push_back(ConnectionStateChange::new(previous, state, reason));
        for observer in &current.observers {
            observer(state);
        }
        drop(current);
        self.0.changed.notify(usize::MAX);
    }

    /// The current state.
    pub fn get(&self) -> ConnectionState {
        self.lock().state
    }

    /// Why the connection last changed state because of an error, if it did since it was
    /// last Connected (cleared on Connected).
    pub fn last_error(&self) -> Option<ErrorInfo> {
        self.lock().last_error.clone()
    }

    /// Waits for the state to change from what it was when called, and returns the new one.
    pub async fn changed(&self) -> ConnectionState {
        let seen = self.lock().version;
        loop {
            let listener = self.0.changed.listen();
            let (state, version) = {
                let current = self.lock();
                (current.state, current.version)
            };
            if version != seen {
                return state;
            }
            listener.await;
        }
    }

    /// Waits until `done` holds for the state, and returns that state.
    pub async fn wait_for(&self, done: impl Fn(ConnectionState) -> bool) -> ConnectionState {
        loop {
            let listener = self.0.changed.listen();
            let current = self.get();
            if done(current) {
                return current;
            }
            listener.await;
        }
    }
}

impl StateWatch {
    /// Every state change from now on, as a stream; see [`StateChanges`].
    pub fn changes(&self) -> StateChanges {
        StateChanges {
            next: self.lock().version + 1,
            watch: self.clone(),
            listener: None,
            ended: false,
        }
    }
}

/// The connection's state changes (a `futures::Stream` of [`ConnectionStateChange`]), each
/// with the state before, the state after, and the error that caused it, if one did.
///
/// Starts with the first change after it was made; ends after a change to Failed or Closed
/// (the client does nothing more). Changes are kept for a stream that reads slowly, up to the
/// last [`CHANGES_KEPT`]; older ones are skipped, so memory stays bounded however far
/// behind it falls — `previous` of each change still tells where it came from.
pub struct StateChanges {
    watch: StateWatch,
    /// The version of the change to yield next.
    next: u64,
    listener: Option<EventListener>,
    ended: bool,
}

impl Stream for StateChanges {
    type Item = ConnectionStateChange;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ConnectionStateChange>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            {
                let current = self.watch.lock();
                if self.next <= current.version {
                    let oldest = current.version + 1 - current.changes.len() as u64;
                    let next = self.next.max(oldest);
                    let change = current.changes[(next - oldest) as usize].clone();
                    drop(current);
                    self.next = next + 1;
                    self.ended = matches!(
                        change.current,
                        ConnectionState::Failed | ConnectionState::Closed
                    );
                    self.listener = None;
                    return Poll::Ready(Some(change));
                }
            }
            match self.listener.as_mut() {
                // Listen, then look again: a change made in between is not missed.
                None => self.listener = Some(self.watch.0.changed.listen()),
                Some(listener) => {
                    if listener.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::StreamExt;
    use futures_lite::future::block_on;
    use tether_core::ErrorCode;

    use super::*;

    /// A stream that falls behind keeps only the last [`CHANGES_KEPT`] changes: memory stays
    /// bounded, and what it reads is still the changes in order.
    #[test]
    fn a_stream_behind_skips_to_the_last_changes_kept() {
        let watch = StateWatch::new(ConnectionState::Initialized);
        let mut changes = watch.changes();
        let states = [ConnectionState::Connecting, ConnectionState::Disconnected];
        let total = CHANGES_KEPT + 36;
        for n in 0..total {
            let reason = (n % 2 == 1).then(|| ErrorInfo::new(ErrorCode::TransportClosed, "cut"));
            watch.set(states[n % 2], reason);
        }
        assert_eq!(watch.lock().changes.len(), CHANGES_KEPT);
        let read: Vec<_> = block_on((&mut changes).take(CHANGES_KEPT).collect());
        // The oldest kept is change number 37 (1-based): index 36, Connecting after Disconnected.
        assert_eq!(read[0].previous, ConnectionState::Disconnected);
        assert_eq!(read[0].current, ConnectionState::Connecting);
        assert!(read.windows(2).all(|w| w[0].current == w[1].previous));
        watch.set(ConnectionState::Closed, None);
        let last: Vec<_> = block_on(changes.collect());
        assert_eq!(last.len(), 1, "the stream ends after Closed");
        assert_eq!(last[0].current, ConnectionState::Closed);
    }
}
