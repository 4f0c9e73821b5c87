//! The hub's task: inputs from the accept loop and the connections, in bursts, and one
//! timer for the hub's deadline.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use futures_lite::FutureExt;
use tether_core::embed::{Connections, Flow, HookSink, Hooks, INPUT_BATCH, Origin, handle_batch};
use tether_core::server::{
    HookAnswer, HookId, HookRequest, Hub, HubEvent, RestoredState, Severity, StorageSink,
};

use super::Input;
use super::observe::Counters;
use crate::runtime::Runtime;

/// Drives `hub` until it is shut down or every sender of `inputs` is gone.
pub(crate) async fn drive<R: Runtime>(
    runtime: R,
    mut hub: Hub,
    mut inputs: tokio::sync::mpsc::Receiver<Input>,
    storage: Option<(RestoredState, Box<dyn StorageSink>)>,
    hooks: Option<Box<dyn HookSink>>,
    counters: Arc<Counters>,
) {
    let log_event = |event: HubEvent| {
        counters.event(&event);
        log_event(event);
    };
    let origin = Origin::new(Instant::now());
    let mut connections = Connections::new();
    if let Some(sink) = hooks {
        connections = connections.with_hooks(sink);
    }
    if let Some((restored, sink)) = storage {
        let now = origin.stamp_at(Instant::now(), SystemTime::now());
        hub.restore(now, restored);
        connections = connections.with_storage(sink);
        connections.drain(&mut hub, log_event);
    }
    // One timer, moved only when the hub's deadline moves.
    let mut timer = runtime.timer(Instant::now());
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = hub.poll_timeout().map(|d| origin.instant(d));
        if let Some(deadline) = deadline {
            if armed != Some(deadline) {
                R::reset(&mut timer, deadline);
                armed = Some(deadline);
            }
        }
        let input = std::future::poll_fn(|cx| {
            if deadline.is_some() && timer.poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            inputs.poll_recv(cx).map(Some)
        })
        .await;
        let now = origin.stamp_at(Instant::now(), SystemTime::now());
        match input {
            Some(Some(input)) => {
                // Whatever else is already queued is handled in the same wake-up (bounded, so
                // timers still run), with one clock reading.
                let flow = handle_batch(
                    input,
                    INPUT_BATCH,
                    || inputs.try_recv().ok(),
                    |input| {
                        counters.input(&input);
                        connections.input(&mut hub, now, input, log_event)
                    },
                );
                if flow == Flow::Stop {
                    break;
                }
            }
            Some(None) => break,
            None => {
                armed = None;
                connections.timeout(&mut hub, now, log_event);
            }
        }
    }
    // What is queued for the store is stored and synced before the server is gone (the
    // input queue goes first, so the store's thread never waits for it meanwhile).
    drop(inputs);
    connections.close_storage();
}

/// Operator logs. Events never carry credentials, so nothing here can leak a token.
fn log_event(event: HubEvent) {
    match event.severity() {
        Severity::Debug => tracing::debug!("{event}"),
        Severity::Info => tracing::info!("{event}"),
        Severity::Warn => tracing::warn!("{event}"),
    }
}

/// Asks the application's hooks on the runtime, one task per request, and gives each answer
/// back to the hub's task. A hook that has not answered by its time bound is dropped (the
/// hub has refused with `hook_timeout` by then), so at most one task per request the hub
/// has waiting runs.
pub(crate) struct HookRunner<R> {
    pub(crate) runtime: R,
    pub(crate) hooks: Hooks,
    /// Weak: hooks under way do not keep the hub's task alive.
    pub(crate) inputs: tokio::sync::mpsc::WeakSender<Input>,
    /// `HubConfig::hook_timeout`.
    pub(crate) bound: std::time::Duration,
}

impl<R: Runtime> HookSink for HookRunner<R> {
    fn request(&mut self, id: HookId, request: HookRequest) {
        let hooks = self.hooks.clone();
        let timer = self.runtime.timer(Instant::now() + self.bound);
        let inputs = self.inputs.clone();
        // On its own task, the call included: a hook that panics fails its request (refused
        // with `internal`), never the hub's task.
        self.runtime.spawn(async move {
            let failed = || HookAnswer::Fail("the application's hook panicked".into());
            let answer = match catch_unwind(AssertUnwindSafe(|| hooks.decide(request))) {
                Err(_) => Some(failed()),
                Ok(decision) => {
                    async {
                        Some(
                            futures_util::FutureExt::catch_unwind(AssertUnwindSafe(decision))
                                .await
                                .unwrap_or_else(|_| failed()),
                        )
                    }
                    .or(async {
                        timer.await;
                        None
                    })
                    .await
                }
            };
            if let (Some(answer), Some(inputs)) = (answer, inputs.upgrade()) {
                let _ = inputs.send(Input::Hook { id, answer }).await;
            }
        });
    }
}
