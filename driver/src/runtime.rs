//! What a runtime must give the driver.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::state::StateWatch;

/// A background task of the driver.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An async runtime, as the driver sees it: tasks, timers, TCP, and how applications watch
/// the connection state. A `Runtime` value is cheap to clone (a handle or an executor).
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream in `futures-io` form.
    type Tcp: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A listening TCP socket.
    type Listener: Send + Sync + 'static;
    /// A resettable one-shot timer; once it fired it stays pending until reset.
    type Timer: Future<Output = ()> + Send + Unpin + 'static;
    /// What `Client::state` returns to applications (e.g. tokio's `watch::Receiver`).
    type StateView: Clone + Send + Sync + 'static;
    /// The adapter's client options (TLS, executor, …), `ClientOptions::transport`.
    type ClientTransport: Clone + Default + Send + 'static;
    /// The adapter's server options (TLS, executor, …), `ServerOptions::transport`.
    type ServerTransport: Clone + Default + Send + 'static;

    /// The runtime and the TLS configuration for a client with these options; an error
    /// when the runtime cannot be reached from here (e.g. no tokio runtime is running).
    fn for_client(
        transport: &Self::ClientTransport,
    ) -> io::Result<(Self, Option<Arc<rustls::ClientConfig>>)>;

    /// The runtime and the TLS configuration for a server with these options.
    fn for_server(
        transport: &Self::ServerTransport,
    ) -> io::Result<(Self, Option<Arc<rustls::ServerConfig>>)>;

    /// Runs `task` in the background, to completion. (Generic, so a runtime that can keep
    /// the future inline in its task, as tokio does, need not box it.)
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// A timer that fires at `at`.
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Moves `timer` to fire at `at` (whether or not it fired already).
    fn reset(timer: &mut Self::Timer, at: Instant);

    /// Opens a TCP connection to `host:port` (a name or an IP literal, unbracketed).
    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// The next connection of `listener`.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>> + Send;

    /// The address `listener` is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// A view of `watch` for applications, kept current as the state changes (register an
    /// observer with [`StateWatch::observe`] if the view is a separate channel).
    fn state_view(watch: &StateWatch) -> Self::StateView;
}

/// Binding a listener to an address of type `A` (so `Server::bind` takes the address types
/// the runtime's own API takes, e.g. tokio's `ToSocketAddrs`).
pub trait Bind<A>: Runtime {
    /// Binds a TCP listener to `address`. (Not required to be `Send`: some runtimes'
    /// address types resolve through iterators that are not; where the runtime's is, the
    /// future of `Server::bind` is too.)
    fn bind(address: A) -> impl Future<Output = io::Result<Self::Listener>>;
}
