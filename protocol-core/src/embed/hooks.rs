//! The application's hooks (`docs/protocol.md` §7.9) as adapters carry them: a callback
//! that answers each [`HookRequest`] asynchronously, and the sink the hub's outputs go to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::server::{HookAnswer, HookId, HookRequest};

/// The future a hook returns.
pub type HookFuture = Pin<Box<dyn Future<Output = HookAnswer> + Send + 'static>>;

/// The application's decision on attaches and publishes of the channels whose namespace asks
/// for a hook (`Namespace::attach_hook`, `Namespace::publish_hook`). Called once per request,
/// on the adapter's runtime; an answer later than `HubConfig::hook_timeout` is not waited
/// for (the hub refuses with `hook_timeout`, and the future is dropped).
///
/// ```
/// use tether_core::embed::Hooks;
/// use tether_core::server::{HookAnswer, HookRequest};
///
/// let hooks = Hooks::new(|request: HookRequest| async move {
///     match request {
///         HookRequest::Attach { client_id, .. } if client_id.as_str() == "banned" => {
///             HookAnswer::Refuse("not here".into())
///         }
///         _ => HookAnswer::Allow,
///     }
/// });
/// # let _ = hooks;
/// ```
#[derive(Clone)]
pub struct Hooks(Arc<dyn Fn(HookRequest) -> HookFuture + Send + Sync>);

impl Hooks {
    /// Hooks answered by `decide`.
    pub fn new<F, A>(decide: F) -> Hooks
    where
        F: Fn(HookRequest) -> A + Send + Sync + 'static,
        A: Future<Output = HookAnswer> + Send + 'static,
    {
        Hooks(Arc::new(move |request| Box::pin(decide(request))))
    }

    /// The application's answer to `request`.
    pub fn decide(&self, request: HookRequest) -> HookFuture {
        (self.0)(request)
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooks(..)")
    }
}

/// Where the hub's hook requests go (the adapter asks the application and gives the answer
/// back as [`ServerInput::Hook`](super::ServerInput::Hook)).
pub trait HookSink: Send {
    /// Ask about `request`, answering with `id`.
    fn request(&mut self, id: HookId, request: HookRequest);
}
