//! The hub's task: inputs from the accept loop and the connections, in bursts, and one
//! timer for the hub's deadline.

use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime};

use futures_lite::FutureExt;
use tether_core::embed::{Connections, Flow, INPUT_BATCH, Origin, handle_batch};
use tether_core::server::{Hub, HubEvent, RestoredState, Severity, StorageSink};

use super::Input;
use super::observe::Counters;
use crate::runtime::Runtime;

/// Drives `hub` until it is shut down or every sender of `inputs` is gone.
pub(crate) async fn drive<R: Runtime>(
    runtime: R,
    mut hub: Hub,
    mut inputs: tokio::sync::mpsc::Receiver<Input>,
    storage: Option<(RestoredState, Box<dyn StorageSink>)>,
    counters: Arc<Counters>,
) {
    let log_event = |event: HubEvent| {
        counters.event(&event);
        log_event(event);
    };
    let origin = Origin::new(Instant::now());
    let mut connections = Connections::new();
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
