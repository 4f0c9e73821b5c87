//! async-io, as the shared driver sees it: tasks go to the [`Spawner`], timers and TCP come
//! from async-io (through async-net), and applications watch the state with the driver's
//! own [`StateWatch`]. Everything else is `tether-driver`'s.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_net::{AsyncToSocketAddrs, TcpListener, TcpStream};
use tether_driver::{Bind, Runtime, StateWatch};

use crate::spawner::Spawner;

/// This adapter's own client options.
#[derive(Clone, Debug, Default)]
pub struct ClientTransport {
    /// TLS for `wss://` URLs; `None` trusts the bundled web PKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the client's tasks run (async-std's executor unless set).
    pub spawner: Spawner,
}

/// This adapter's own server options.
#[derive(Clone, Debug, Default)]
pub struct ServerTransport {
    /// TLS for `wss://` (see [`tls_from_pem`](crate::tls_from_pem)); `None` serves plain
    /// `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the server's tasks run (async-std's executor unless set).
    pub spawner: Spawner,
}

/// async-io's timer, fired as `()`.
pub struct Timer(async_io::Timer);

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for Spawner {
    type Tcp = TcpStream;
    type Listener = TcpListener;
    type Timer = Timer;
    type StateView = StateWatch;
    type ClientTransport = ClientTransport;
    type ServerTransport = ServerTransport;

    fn for_client(
        transport: &ClientTransport,
    ) -> io::Result<(Spawner, Option<Arc<rustls::ClientConfig>>)> {
        Ok((transport.spawner.clone(), transport.tls.clone()))
    }

    fn for_server(
        transport: &ServerTransport,
    ) -> io::Result<(Spawner, Option<Arc<rustls::ServerConfig>>)> {
        Ok((transport.spawner.clone(), transport.tls.clone()))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        Spawner::spawn(self, task);
    }

    fn timer(&self, at: Instant) -> Timer {
        Timer(async_io::Timer::at(at))
    }

    fn reset(timer: &mut Timer, at: Instant) {
        timer.0.set_at(at);
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let stream = TcpStream::connect((host, port)).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn state_view(state: &StateWatch) -> StateWatch {
        state.clone()
    }
}

impl<A: AsyncToSocketAddrs> Bind<A> for Spawner {
    async fn bind(address: A) -> io::Result<TcpListener> {
        TcpListener::bind(address).await
    }
}
