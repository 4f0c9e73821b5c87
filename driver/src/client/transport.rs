//! One WebSocket transport of the client: connect (TCP, TLS, upgrade), then write what the
//! core transmits; the reading half goes to the driver, which reads it itself (no task hop
//! per frame).

use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use bytes::Bytes;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::SinkExt;
use futures_util::stream::SplitStream;
use tether_core::client::TransportId;
use tether_core::embed::{Error, WRITE_BATCH};

use crate::runtime::Runtime;
use crate::tls::{web_pki_roots, websocket_config};

/// A byte stream: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The reading half of an open WebSocket.
pub(crate) type Source = SplitStream<WebSocketStream<Box<dyn Io>>>;

/// What a transport's task tells the driver.
pub(crate) enum TransportEvent {
    /// The WebSocket is open; its frames are read from `Source`.
    Opened(TransportId, Source),
    /// It could not open, or writing failed.
    Closed(TransportId, String),
}

/// Where to connect, read from a `ws://` or `wss://` URL.
pub(crate) struct Target {
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let bad = || Error::Url(url.to_owned());
        let request = url.into_client_request().map_err(|_| bad())?;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?;
        // An IPv6 literal comes bracketed; the socket address wants it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }
}

/// Everything a transport's task needs to connect.
pub(crate) struct Connector<R> {
    pub(crate) runtime: R,
    pub(crate) target: Target,
    /// `None` trusts the bundled web PKI roots.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) max_frame: usize,
}

impl<R: Runtime> Connector<R> {
    /// Starts transport `id`: it connects, tells `events` it opened (or why not), then sends
    /// what arrives on `outgoing`, what is queued with one flush. Dropping the sending half
    /// of `outgoing` gives the transport up: a connect still under way stops, an open
    /// WebSocket is closed in order after what was already queued.
    pub(crate) fn open(
        self: &Arc<Self>,
        id: TransportId,
        mut outgoing: UnboundedReceiver<Bytes>,
        events: UnboundedSender<TransportEvent>,
    ) {
        let this = self.clone();
        self.runtime.spawn(async move {
            // Nothing is sent on `outgoing` before the transport is open, so this only
            // ever ends by the queue closing.
            let gave_up = async {
                let _ = outgoing.next().await;
                Err("given up".to_owned())
            };
            // Boxed: the connect's state is large and needed once; inline, it would size
            // this long-lived writer task's allocation.
            let ws = match Box::pin(this.connect()).or(gave_up).await {
                Ok(ws) => ws,
                Err(reason) => {
                    let _ = events.unbounded_send(TransportEvent::Closed(id, reason));
                    return;
                }
            };
            drop(this);
            let (mut sink, source) = futures_util::StreamExt::split(ws);
            if events
                .unbounded_send(TransportEvent::Opened(id, source))
                .is_err()
            {
                return;
            }
            while let Some(first) = outgoing.next().await {
                let mut next = Some(first);
                let mut taken = 0;
                let mut written = true;
                while let Some(bytes) = next.take() {
                    if sink.feed(Message::Binary(bytes)).await.is_err() {
                        written = false;
                        break;
                    }
                    taken += 1;
                    if taken < WRITE_BATCH {
                        next = outgoing.try_recv().ok();
                    }
                }
                if !written || sink.flush().await.is_err() {
                    let _ =
                        events.unbounded_send(TransportEvent::Closed(id, "write failed".into()));
                    return;
                }
            }
            // The core gave the transport up: close it in order.
            let _ = sink.close().await;
        });
    }

    async fn connect(&self) -> Result<WebSocketStream<Box<dyn Io>>, String> {
        let target = &self.target;
        let tcp = self
            .runtime
            .connect(&target.host, target.port)
            .await
            .map_err(|e| e.to_string())?;
        let stream: Box<dyn Io> = if target.tls {
            let config = match self.tls.clone() {
                Some(config) => config,
                None => web_pki_roots()?,
            };
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| e.to_string())?;
            let tls = futures_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (ws, _) = async_tungstenite::client_async_with_config(
            target.url.as_str(),
            stream,
            Some(websocket_config(self.max_frame)),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(ws)
    }
}
