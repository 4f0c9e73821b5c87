//! An observable connection state, without a runtime.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::Event;
use tether_core::ErrorInfo;
use tether_core::client::ConnectionState;

/// A callback told every new state (see [`StateWatch::observe`]).
type Observer = Box<dyn Fn(ConnectionState) + Send>;

struct Current {
    state: ConnectionState,
    last_error: Option<ErrorInfo>,
    /// Bumped on every change, so a waiter knows whether it missed one.
    version: u64,
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
        current.state = state;
        if reason.is_some() {
            current.last_error = reason;
        }
        current.version += 1;
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

    /// Why the connection last changed state because of an error, if it did.
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
