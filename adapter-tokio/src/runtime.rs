//! tokio, as the shared driver sees it: tasks, timers, TCP and a `watch` channel for the
//! connection state. Everything else is `tether-driver`'s.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tether_core::client::ConnectionState;
use tether_driver::{Bind, Runtime, StateWatch};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// The tokio client's own options.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// TLS for `wss://` URLs; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The tokio server's own options.
#[derive(Clone, Debug, Default)]
pub struct ServerTransport {
    /// TLS for `wss://` (see [`tls_from_pem`](crate::tls_from_pem)); `None` serves plain
    /// `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The tokio runtime a client or server runs on: the one current where it was started.
#[derive(Clone, Debug)]
pub struct Tokio(Handle);

impl Tokio {
    /// The runtime of the calling context.
    ///
    /// # Errors
    /// When called outside a tokio runtime.
    fn current() -> io::Result<Tokio> {
        Handle::try_current().map(Tokio).map_err(|_| {
            io::Error::other("no tokio runtime is running here: start the client or server inside one (e.g. #[tokio::main])")
        })
    }
}

/// tokio's sleep, moved in place.
pub struct Timer(Pin<Box<tokio::time::Sleep>>);

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Runtime for Tokio {
    type Tcp = Compat<TcpStream>;
    type Listener = TcpListener;
    type Timer = Timer;
    type StateView = watch::Receiver<ConnectionState>;
    type ClientTransport = ClientTransport;
    type ServerTransport = ServerTransport;

    fn for_client(
        transport: &ClientTransport,
    ) -> io::Result<(Tokio, Option<Arc<rustls::ClientConfig>>)> {
        Ok((Tokio::current()?, transport.tls.clone()))
    }

    fn for_server(
        transport: &ServerTransport,
    ) -> io::Result<(Tokio, Option<Arc<rustls::ServerConfig>>)> {
        Ok((Tokio::current()?, transport.tls.clone()))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(task);
    }

    fn timer(&self, at: Instant) -> Timer {
        let _entered = self.0.enter();
        Timer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    fn reset(timer: &mut Timer, at: Instant) {
        timer.0.as_mut().reset(at.into());
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<Compat<TcpStream>> {
        let stream = TcpStream::connect((host, port)).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream.compat())
    }

    async fn accept(listener: &TcpListener) -> io::Result<(Compat<TcpStream>, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream.compat(), peer))
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn state_view(state: &StateWatch) -> watch::Receiver<ConnectionState> {
        let (sender, receiver) = watch::channel(state.get());
        state.observe(move |current| {
            sender.send_replace(current);
        });
        receiver
    }
}

impl<A: ToSocketAddrs> Bind<A> for Tokio {
    async fn bind(address: A) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }
}
