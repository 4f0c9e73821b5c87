//! An observable connection state, without a runtime.

use std::sync::{Arc, Mutex, PoisonError};

use event_listener::Event;
use tether_core::ErrorInfo;
use tether_core::client::ConnectionState;

struct Shared {
    current: Mutex<(ConnectionState, Option<ErrorInfo>, u64)>,
    changed: Event,
}

/// The connection state of a client, observable: read it, or wait for it to change.
#[derive(Clone)]
pub struct StateWatch(Arc<Shared>);

impl StateWatch {
    pub(crate) fn new(initial: ConnectionState) -> StateWatch {
        StateWatch(Arc::new(Shared {
            current: Mutex::new((initial, None, 0)),
            changed: Event::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (ConnectionState, Option<ErrorInfo>, u64)> {
        self.0
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set(&self, state: ConnectionState, reason: Option<ErrorInfo>) {
        let mut current = self.lock();
        current.0 = state;
        if reason.is_some() {
            current.1 = reason;
        }
        current.2 += 1;
        drop(current);
        self.0.changed.notify(usize::MAX);
    }

    /// The current state.
    pub fn get(&self) -> ConnectionState {
        self.lock().0
    }

    /// Why the connection last changed state because of an error, if it did.
    pub fn last_error(&self) -> Option<ErrorInfo> {
        self.lock().1.clone()
    }

    /// Waits for the state to change from what it was when called, and returns the new one.
    pub async fn changed(&self) -> ConnectionState {
        let seen = self.lock().2;
        loop {
            let listener = self.0.changed.listen();
            let (state, version) = {
                let current = self.lock();
                (current.0, current.2)
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
