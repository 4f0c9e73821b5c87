//! One WebSocket transport of the client: connect (TCP, TLS, upgrade), then write what the
//! core transmits; the reading half goes to the driver, which reads it itself (no task hop
//! per frame).

use std::pin::Pin;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use bytes::Bytes;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, Stream, StreamExt};
use futures_util::SinkExt;
use futures_util::stream::SplitStream;
use tether_core::client::{TransportId, TransportKind};
use tether_core::embed::{Error, WRITE_BATCH};

use crate::runtime::Runtime;
use crate::tls::{web_pki_roots, websocket_config};

/// A byte stream: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What an open transport gives the driver: a frame of the hub's, or the transport's end.
pub(crate) enum Incoming {
    Frame(Bytes),
    Ended(String),
}

/// The reading half of an open transport (ends after `Ended`, or without it when the
/// connection just ended).
pub(crate) type Source = Pin<Box<dyn Stream<Item = Incoming> + Send>>;

/// What a transport's task tells the driver, on the driver's unbounded event channel: at most
/// two per transport (`Opened` then `Closed`, or one of `Closed` and `Blocked`; the HTTP
/// binding's task sends `Opened` or `Closed`, and its end goes through the transport's own
/// bounded frame queue), and the core opens one transport at a time.
pub(crate) enum TransportEvent {
    /// The transport is open; its frames are read from `Source`.
    Opened(TransportId, Source),
    /// It could not open, or writing failed.
    Closed(TransportId, String),
    /// Its WebSocket upgrade was answered by something other than the hub (an HTTP status
    /// instead of 101): a proxy or firewall blocks WebSocket (§6.10).
    Blocked(TransportId, String),
}

/// The frames of a WebSocket's reading half.
fn websocket_source(source: SplitStream<WebSocketStream<Box<dyn Io>>>) -> Source {
    Box::pin(source.filter_map(|message| match message {
        Ok(Message::Binary(bytes)) => Some(Incoming::Frame(bytes)),
        Ok(Message::Close(frame)) => Some(Incoming::Ended(
            frame.map_or_else(|| "closed".to_owned(), |f| f.reason.to_string()),
        )),
        Ok(_) => None,
        Err(error) => Some(Incoming::Ended(error.to_string())),
    }))
}

/// Where to connect, read from a `ws://` or `wss://` URL.
pub(crate) struct Target {
    url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    tls: bool,
    /// The path and query, for the HTTP binding's requests.
    pub(crate) path: String,
    /// The `Host` header's value.
    pub(crate) authority: String,
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
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        Ok(Target {
            url: url.to_owned(),
            host,
            port,
            tls,
            path,
            authority,
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
    /// Set once a streaming down response of the HTTP binding did not get through in time
    /// (a proxy buffers responses): later transports poll.
    pub(crate) buffered: std::sync::atomic::AtomicBool,
}

impl<R: Runtime> Connector<R> {
    /// Starts transport `id`: it connects, tells `events` it opened (or why not), then sends
    /// what arrives on `outgoing`, what is queued with one flush. Dropping the sending half
    /// of `outgoing` gives the transport up: a connect still under way stops, an open
    /// WebSocket is closed in order after what was already queued.
    pub(crate) fn open(
        self: &Arc<Self>,
        id: TransportId,
        kind: TransportKind,
        mut outgoing: UnboundedReceiver<Bytes>,
        events: UnboundedSender<TransportEvent>,
    ) {
        if kind == TransportKind::HttpStream {
            self.runtime
                .spawn(super::http::run(self.clone(), id, outgoing, events));
            return;
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            // Nothing is sent on `outgoing` before the transport is open, so this only
            // ever ends by the queue closing.
            let gave_up = async {
                let _ = outgoing.next().await;
                Err(Failure::Other("given up".to_owned()))
            };
            // Boxed: the connect's state is large and needed once; inline, it would size
            // this long-lived writer task's allocation.
            let ws = match Box::pin(this.connect()).or(gave_up).await {
                Ok(ws) => ws,
                Err(Failure::Blocked(reason)) => {
                    let _ = events.unbounded_send(TransportEvent::Blocked(id, reason));
                    return;
                }
                Err(Failure::Other(reason)) => {
                    let _ = events.unbounded_send(TransportEvent::Closed(id, reason));
                    return;
                }
            };
            drop(this);
            let (mut sink, source) = futures_util::StreamExt::split(ws);
            if events
                .unbounded_send(TransportEvent::Opened(id, websocket_source(source)))
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

    /// A TCP connection to the target, with TLS for `wss://`.
    pub(crate) async fn stream(&self) -> Result<Box<dyn Io>, String> {
        let target = &self.target;
        let tcp = self
            .runtime
            .connect(&target.host, target.port)
            .await
            .map_err(|e| e.to_string())?;
        if !target.tls {
            return Ok(Box::new(tcp));
        }
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
        Ok(Box::new(tls))
    }

    async fn connect(&self) -> Result<WebSocketStream<Box<dyn Io>>, Failure> {
        let stream = self.stream().await.map_err(Failure::Other)?;
        let (ws, _) = async_tungstenite::client_async_with_config(
            self.target.url.as_str(),
            stream,
            Some(websocket_config(self.max_frame)),
        )
        .await
        .map_err(|error| match error {
            async_tungstenite::tungstenite::Error::Http(response) => Failure::Blocked(format!(
                "the WebSocket upgrade was answered {}",
                response.status()
            )),
            other => Failure::Other(other.to_string()),
        })?;
        Ok(ws)
    }
}

/// Why a WebSocket did not open.
enum Failure {
    /// Something other than the hub answered the upgrade.
    Blocked(String),
    Other(String),
}
