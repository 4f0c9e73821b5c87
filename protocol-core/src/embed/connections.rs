//! The server side's routing of hub outputs to the tasks that write to each connection.

#[cfg(feature = "server")]
use std::collections::HashMap;

use bytes::Bytes;

use crate::ErrorInfo;
#[cfg(feature = "server")]
use crate::embed::Plumbing;
#[cfg(feature = "server")]
use crate::server::{
    ApiAnswer, ApiRequest, ApiRequestId, ConnectionId, HookAnswer, HookId, Hub, HubEvent,
    HubOutput, HubStats, StorageCompletion, StorageSink, TransportViolation,
};
#[cfg(feature = "server")]
use crate::time::Timestamp;

/// What a connection's writer is asked to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send one transport message, then report its length with `Hub::handle_written`.
    Frame(Bytes),
    /// Send a close (see [`close_code`](crate::embed::close_code)) and end the connection.
    Close(ErrorInfo),
}

/// The most frames a connection writer takes from its queue for one flush.
pub const WRITE_BATCH: usize = 64;

/// What a connection writer does with one batch: send `frames` with one flush, report their
/// total length (`written`) to the hub in one input, then close if `close` says so.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The frames, in order.
    pub frames: Vec<Bytes>,
    /// Their total length.
    pub written: usize,
    /// Close after them, with this reason.
    pub close: Option<ErrorInfo>,
}

impl WriteBatch {
    /// Starts from `first` and takes what is already queued (`try_next`), up to
    /// [`WRITE_BATCH`] items and never past a close.
    pub fn take(first: Outbound, mut try_next: impl FnMut() -> Option<Outbound>) -> WriteBatch {
        let mut batch = WriteBatch::default();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(item) = next.take() {
            taken += 1;
            match item {
                Outbound::Frame(bytes) => {
                    batch.written += bytes.len();
                    batch.frames.push(bytes);
                }
                Outbound::Close(reason) => {
                    batch.close = Some(reason);
                    break;
                }
            }
            if taken < WRITE_BATCH {
                next = try_next();
            }
        }
        batch
    }
}

/// The most queued inputs a hub task handles per wake-up (with [`handle_batch`]) before it
/// looks at its timer again.
pub const INPUT_BATCH: usize = 256;

/// Handles `first`, then whatever `try_next` has ready, up to `limit` items in all (`first`
/// is always handled), until `handle` says [`Flow::Stop`]; returns [`Flow::Stop`] if it did.
///
/// For an adapter's event loop that drains a queue in bounded bursts (so timers still run):
/// an item is taken from the queue only when it will be handled in this burst, so nothing is
/// ever taken and then dropped at the end of one.
pub fn handle_batch<T>(
    first: T,
    limit: usize,
    mut try_next: impl FnMut() -> Option<T>,
    mut handle: impl FnMut(T) -> Flow,
) -> Flow {
    let mut next = Some(first);
    let mut handled = 0;
    while let Some(item) = next.take() {
        if handle(item) == Flow::Stop {
            return Flow::Stop;
        }
        handled += 1;
        if handled < limit {
            next = try_next();
        }
    }
    Flow::Continue
}

/// The sending half of a connection writer's queue.
pub trait Writer {
    /// Queues `outbound`; a writer that has gone away ignores it.
    fn send(&self, outbound: Outbound);

    /// The hub accepted the connection's `connect`: from here it is an established session,
    /// no longer a client in its handshake (an adapter that bounds handshakes under way
    /// stops counting it). Called once at most.
    fn established(&mut self) {}
}

#[cfg(feature = "server")]
/// An input for the task that owns the hub, from the adapter's accept loop and connection
/// tasks; `P` gives the reply type, `W` the writer type.
pub enum ServerInput<P: Plumbing, W> {
    /// A new connection whose frames go to `writer`; `reply` gets its id.
    Accept {
        /// The connection's writer.
        writer: W,
        /// Answered with the connection's id.
        reply: P::Reply<ConnectionId>,
    },
    /// One transport message from the connection.
    Bytes(ConnectionId, Bytes),
    /// The transport refused what the connection sent (see [`Hub::handle_violation`]).
    Violation(ConnectionId, TransportViolation),
    /// The writer wrote this many bytes of the connection's frames.
    Written(ConnectionId, usize),
    /// The connection's transport ended.
    Closed(ConnectionId),
    /// The store answered a request.
    Storage(StorageCompletion),
    /// Shut the hub down; answered once every close is queued.
    Shutdown(P::Reply<()>),
    /// Stop at once, as a crash would: no client is told, the store is abandoned (see
    /// [`StorageSink::abandon`]); answered once it is released.
    Abort(P::Reply<()>),
    /// Answered with the hub's [`HubStats`] (for metrics and readiness).
    Stats(P::Reply<HubStats>),
    /// A request of the server-side API (§7.8); `reply` is called with its answer (now, or
    /// once the store answered; never if the hub stops first).
    Api {
        /// The request.
        request: ApiRequest,
        /// Takes the answer.
        reply: ApiReply,
    },
    /// The application's answer to a hook request (§7.9).
    Hook {
        /// The request's id.
        id: HookId,
        /// The answer.
        answer: HookAnswer,
    },
}

#[cfg(feature = "server")]
/// Takes the answer to a server-side API request.
pub type ApiReply = Box<dyn FnOnce(ApiAnswer) + Send>;

/// Whether the hub's task goes on after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// The hub shut down: stop.
    Stop,
}

#[cfg(feature = "server")]
/// The writers of the hub's live connections.
pub struct Connections<W: Writer> {
    writers: HashMap<ConnectionId, W>,
    /// Where storage requests go, when the hub has a store.
    storage: Option<Box<dyn StorageSink>>,
    /// Where hook requests go, when the application gave hooks.
    hooks: Option<Box<dyn super::HookSink>>,
    /// Server-side API requests waiting for their answer (at most what the callers have
    /// waiting: each caller waits for its answer).
    api: HashMap<ApiRequestId, ApiReply>,
    next_api: u64,
}

#[cfg(feature = "server")]
impl<W: Writer> Default for Connections<W> {
    fn default() -> Self {
        Connections {
            writers: HashMap::new(),
            storage: None,
            hooks: None,
            api: HashMap::new(),
            next_api: 0,
        }
    }
}

#[cfg(feature = "server")]
impl<W: Writer> Connections<W> {
    /// No connections.
    pub fn new() -> Connections<W> {
        Connections::default()
    }

    /// Hands the hub's storage requests to `sink` (a hub with
    /// [`StorageMode::External`](crate::server::StorageMode::External) needs one: without
    /// it, its publishes would never be answered).
    pub fn with_storage(mut self, sink: Box<dyn StorageSink>) -> Connections<W> {
        self.storage = Some(sink);
        self
    }

    /// Hands the hub's hook requests to `sink` (§7.9). Without one, a hook request is not
    /// asked and is refused with `hook_timeout` at its time bound.
    pub fn with_hooks(mut self, sink: Box<dyn super::HookSink>) -> Connections<W> {
        self.hooks = Some(sink);
        self
    }

    /// Closes the storage sink, if any: what is queued is stored and synced before this
    /// returns (blocking: call it when the hub's task ends).
    pub fn close_storage(&mut self) {
        if let Some(sink) = self.storage.take() {
            sink.close();
        }
    }

    /// A new connection whose frames go to `writer`.
    pub fn accept(&mut self, hub: &mut Hub, now: Timestamp, writer: W) -> ConnectionId {
        let id = hub.accept(now);
        self.writers.insert(id, writer);
        id
    }

    /// Carries out one input, then hands the hub's outputs to the writers.
    pub fn input<P: Plumbing>(
        &mut self,
        hub: &mut Hub,
        now: Timestamp,
        input: ServerInput<P, W>,
        mut log: impl FnMut(HubEvent),
    ) -> Flow {
        match input {
            ServerInput::Accept { writer, reply } => {
                let id = self.accept(hub, now, writer);
                P::reply(reply, id);
            }
            ServerInput::Bytes(id, bytes) => hub.handle_bytes(now, id, bytes),
            ServerInput::Violation(id, violation) => hub.handle_violation(now, id, violation),
            ServerInput::Written(id, len) => hub.handle_written(now, id, len),
            ServerInput::Closed(id) => self.closed(hub, now, id),
            ServerInput::Storage(completion) => hub.handle_storage(now, completion),
            ServerInput::Hook { id, answer } => hub.handle_hook(now, id, answer),
            ServerInput::Abort(reply) => {
                self.writers.clear();
                if let Some(sink) = self.storage.take() {
                    sink.abandon();
                }
                P::reply(reply, ());
                return Flow::Stop;
            }
            ServerInput::Stats(reply) => {
                P::reply(reply, hub.stats());
                return Flow::Continue;
            }
            ServerInput::Api { request, reply } => {
                let id = ApiRequestId(self.next_api);
                self.next_api += 1;
                self.api.insert(id, reply);
                hub.handle_api(now, id, request);
            }
            ServerInput::Shutdown(reply) => {
                self.shutdown(hub, now, &mut log);
                P::reply(reply, ());
                return Flow::Stop;
            }
        }
        self.drain(hub, log);
        Flow::Continue
    }

    /// The hub's next deadline passed.
    pub fn timeout(&mut self, hub: &mut Hub, now: Timestamp, log: impl FnMut(HubEvent)) {
        hub.handle_timeout(now);
        self.drain(hub, log);
    }

    /// The transport of `connection` ended.
    pub fn closed(&mut self, hub: &mut Hub, now: Timestamp, connection: ConnectionId) {
        hub.handle_closed(now, connection);
        self.writers.remove(&connection);
    }

    /// Hands every pending output of the hub to its writer; events go to `log`.
    pub fn drain(&mut self, hub: &mut Hub, mut log: impl FnMut(HubEvent)) {
        while let Some(output) = hub.poll_output() {
            match output {
                HubOutput::Transmit { connection, bytes } => {
                    if let Some(writer) = self.writers.get(&connection) {
                        writer.send(Outbound::Frame(bytes));
                    }
                }
                HubOutput::Close { connection, reason } => {
                    if let Some(writer) = self.writers.remove(&connection) {
                        writer.send(Outbound::Close(reason));
                    }
                }
                HubOutput::Event(event) => {
                    if let HubEvent::Connected { connection, .. } = &event {
                        if let Some(writer) = self.writers.get_mut(connection) {
                            writer.established();
                        }
                    }
                    log(event)
                }
                HubOutput::Storage(request) => match self.storage.as_mut() {
                    Some(sink) => sink.request(request),
                    None => debug_assert!(false, "a storage request and no store: {request:?}"),
                },
                HubOutput::Hook { id, request } => {
                    if let Some(sink) = self.hooks.as_mut() {
                        sink.request(id, request);
                    }
                }
                HubOutput::Api { id, answer } => {
                    if let Some(reply) = self.api.remove(&id) {
                        reply(answer);
                    }
                }
            }
        }
    }

    /// Shuts the hub down: every connection is told to go away, then its writer is dropped
    /// so the writer's task ends once the close is sent.
    pub fn shutdown(&mut self, hub: &mut Hub, now: Timestamp, log: impl FnMut(HubEvent)) {
        hub.shutdown(now);
        self.drain(hub, log);
        self.writers.clear();
    }

    /// How many connections have a writer.
    pub fn len(&self) -> usize {
        self.writers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.writers.is_empty()
    }
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n; usize::from(n)]))
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_a_close() {
        let mut queue = vec![
            frame(2),
            Outbound::Close(ErrorInfo::new(ErrorCode::Internal, "x")),
            frame(9),
        ]
        .into_iter();
        let batch = WriteBatch::take(frame(1), || queue.next());
        assert_eq!(batch.frames.len(), 2);
        assert_eq!(batch.written, 3);
        assert_eq!(batch.close.map(|r| r.code), Some(ErrorCode::Internal));
        assert!(
            matches!(queue.next(), Some(Outbound::Frame(_))),
            "nothing after the close is taken"
        );
    }

    /// Runs one burst of `limit` over `0` then `1..=queued`, stopping at `stop_at`; returns
    /// the flow, what was handled, and what is left in the queue.
    fn burst(queued: u32, limit: usize, stop_at: Option<u32>) -> (Flow, Vec<u32>, Vec<u32>) {
        let mut queue: std::collections::VecDeque<u32> = (1..=queued).collect();
        let mut handled = Vec::new();
        let flow = handle_batch(
            0,
            limit,
            || queue.pop_front(),
            |n| {
                handled.push(n);
                if Some(n) == stop_at {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        );
        (flow, handled, queue.into())
    }

    #[test]
    fn a_handled_batch_takes_only_what_it_handles() {
        // 300 queued behind the first, a burst of 256: the 256 are handled in order and
        // the other 45 stay queued, none taken and lost.
        let (flow, handled, left) = burst(300, 256, None);
        assert_eq!(flow, Flow::Continue);
        assert_eq!(handled, (0..256).collect::<Vec<_>>());
        assert_eq!(left, (256..=300).collect::<Vec<_>>());
    }

    #[test]
    fn a_handled_batch_stops_when_told_and_takes_nothing_more() {
        let (flow, handled, left) = burst(10, 256, Some(3));
        assert_eq!(flow, Flow::Stop);
        assert_eq!(handled, vec![0, 1, 2, 3]);
        assert_eq!(left, (4..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_bounded() {
        let mut taken = 0;
        let batch = WriteBatch::take(frame(1), || {
            taken += 1;
            Some(frame(1))
        });
        assert_eq!(batch.frames.len(), WRITE_BATCH);
        assert_eq!(taken, WRITE_BATCH - 1);
        assert_eq!(batch.close, None);
    }
}
