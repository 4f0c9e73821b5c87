//! The client's HTTP binding transport (`docs/protocol.md` §2.5), for when WebSocket is
//! blocked: a `POST` opens it with the first frames (its answer names the transport and
//! brings the hub's first frames), `GET`s bring the hub's frames (streamed; polled when a
//! proxy buffers responses), `POST`s send ours, in order. HTTP/1.1 is hyper's.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
// Unbounded, both: the writer queue holds what the core transmits (bounded by its publish
// queue and one frame per request), and the event channel gets one event per transport (see
// `run`). The frames read ahead of the driver go through a bounded channel (`READ_AHEAD`).
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::client::conn::http1::SendRequest;
use tether_core::client::TransportId;
use tether_core::wire::http::{self as binding, DownDecoder, DownItem, Mark};

use super::transport::{Connector, Incoming, Io, TransportEvent};
use crate::runtime::Runtime;

/// How long a streaming down response has to show its first bytes (the `Open` mark) before
/// the client takes it that a proxy buffers responses and polls instead.
const PROBE: Duration = Duration::from_secs(2);
/// Frames sent in one up request at most.
const UP_BATCH: usize = 64;
/// Frames read from down responses ahead of the driver at most.
const READ_AHEAD: usize = 64;

/// Where the frames of down responses go, to the driver.
type Frames = async_channel::Sender<Incoming>;

/// hyper's I/O traits over a futures-io stream.
struct HyperIo(Box<dyn Io>);

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buffer: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 8192];
        let want = buffer.remaining().min(chunk.len());
        let read = ready!(Pin::new(&mut self.0).poll_read(cx, &mut chunk[..want]))?;
        buffer.put_slice(&chunk[..read]);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// One HTTP/1.1 connection to the target (its driving task spawned).
async fn connection<R: Runtime>(connector: &Connector<R>) -> Result<Sender, String> {
    let stream = connector.stream().await?;
    let (sender, driving) = hyper::client::conn::http1::handshake(HyperIo(stream))
        .await
        .map_err(|e| e.to_string())?;
    connector.runtime.spawn(async move {
        let _ = driving.await;
    });
    Ok(sender)
}

/// A request of the binding.
fn request<R>(
    connector: &Connector<R>,
    method: &str,
    transport: Option<&str>,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(connector.target.path.as_str())
        .header("host", connector.target.authority.as_str())
        .header("content-type", binding::CONTENT_TYPE);
    if let Some(transport) = transport {
        builder = builder.header(binding::TRANSPORT_HEADER, transport);
    }
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

/// Sends `request` on `sender` once it can take one.
async fn send(
    sender: &mut Sender,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Body>, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// How reading a down response ended.
enum Down {
    /// Its `End` mark: the next response follows.
    End,
    /// Cut, or refused: the transport is lost.
    Lost(String),
}

/// Reads a down body, handing its frames to `frames`, until its `End` mark.
async fn read_down(body: &mut Body, decoder: &mut DownDecoder, frames: &Frames) -> Down {
    loop {
        loop {
            match decoder.next_item() {
                Ok(Some(DownItem::Frame(frame))) => {
                    if frames.send(Incoming::Frame(frame)).await.is_err() {
                        return Down::Lost("given up".into());
                    }
                }
                Ok(Some(DownItem::Mark(Mark::End))) => return Down::End,
                Ok(Some(DownItem::Mark(Mark::Open))) => {}
                Ok(None) => break,
                Err(error) => return Down::Lost(format!("a bad down body: {error}")),
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(error)) => return Down::Lost(format!("the HTTP stream failed: {error}")),
            None => return Down::Lost("the HTTP stream was cut".into()),
        }
    }
}

/// Checks a down response's status and type.
fn accepted(response: &hyper::Response<Body>) -> Result<(), String> {
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("the HTTP binding answered {}", response.status()));
    }
    Ok(())
}

/// Runs transport `id` of the HTTP binding: opens it, then moves frames both ways until it
/// is lost or given up (`outgoing` closed). `outgoing` is the driver's unbounded writer queue,
/// bounded by what the core transmits (its bounded publish queue, one frame per request);
/// `events` gets one event from here (`Opened` or `Closed`, see [`TransportEvent`]).
pub(crate) async fn run<R: Runtime>(
    connector: Arc<Connector<R>>,
    id: TransportId,
    mut outgoing: UnboundedReceiver<Bytes>,
    events: UnboundedSender<TransportEvent>,
) {
    // The connection first: an unreachable server is a failed attempt like any other.
    let gave_up = async {
        let _ = outgoing.next().await;
        Err("given up".to_owned())
    };
    let down = match Box::pin(connection(&connector)).or(gave_up).await {
        Ok(sender) => sender,
        Err(reason) => {
            // This transport's one event (the core has one transport at a time).
            let _ = events.unbounded_send(TransportEvent::Closed(id, reason));
            return;
        }
    };
    // Bounded: the down responses are read only as fast as the driver takes their frames
    // (as a WebSocket's are read by the driver itself), so a slow application slows the
    // socket instead of filling memory.
    let (frames, source) = async_channel::bounded(READ_AHEAD);
    if events
        // This transport's one event: the frames come on the bounded `source` from here.
        .unbounded_send(TransportEvent::Opened(id, Box::pin(source)))
        .is_err()
    {
        return;
    }
    let reason = serve(&connector, down, &mut outgoing, &frames).await;
    let _ = frames.send(Incoming::Ended(reason)).await;
}

/// Opens the transport with the core's first frames, then moves frames both ways; why it
/// ended.
async fn serve<R: Runtime>(
    connector: &Connector<R>,
    mut down: Sender,
    outgoing: &mut UnboundedReceiver<Bytes>,
    frames: &Frames,
) -> String {
    // The core sends `connect` once told the transport is open: it opens the transport.
    let Some(first) = outgoing.next().await else {
        return "given up".into();
    };
    let body = batch(first, outgoing);
    let opening = match request(connector, "POST", None, &[], body) {
        Ok(request) => send(&mut down, request).await,
        Err(error) => Err(error),
    };
    let mut response = match opening.and_then(|r| accepted(&r).map(|()| r)) {
        Ok(response) => response,
        Err(reason) => return reason,
    };
    let Some(transport) = response
        .headers()
        .get(binding::TRANSPORT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return "the HTTP binding named no transport".into();
    };
    let mut decoder = DownDecoder::new(connector.max_frame);
    if let Down::Lost(reason) = read_down(response.body_mut(), &mut decoder, frames).await {
        return reason;
    }
    let reading = read_loop(connector, down, &transport, &mut decoder, frames);
    let writing = write_loop(connector, &transport, outgoing);
    reading.or(writing).await
}

/// The frames queued now (up to a batch), stream-framed, `first` first.
fn batch(first: Bytes, outgoing: &mut UnboundedReceiver<Bytes>) -> Bytes {
    let mut body = BytesMut::new();
    binding::put_frame(&mut body, &first);
    for _ in 1..UP_BATCH {
        match outgoing.try_recv() {
            Ok(frame) => binding::put_frame(&mut body, &frame),
            _ => break,
        }
    }
    body.freeze()
}

/// Sends what the core transmits, in order, one request at a time; why it stopped.
async fn write_loop<R: Runtime>(
    connector: &Connector<R>,
    transport: &str,
    outgoing: &mut UnboundedReceiver<Bytes>,
) -> String {
    let mut up: Option<Sender> = None;
    let mut seq: u64 = 0;
    while let Some(first) = outgoing.next().await {
        let body = batch(first, outgoing);
        let mut retried = false;
        loop {
            // The server closes a kept-alive socket that idles (between heartbeats): the
            // request goes on a new connection then.
            let sender = match up.as_mut().filter(|sender| !sender.is_closed()) {
                Some(sender) => sender,
                None => match connection(connector).await {
                    Ok(sender) => up.insert(sender),
                    Err(reason) => return reason,
                },
            };
            let headers = [(binding::SEQ_HEADER, seq.to_string())];
            let request = match request(connector, "POST", Some(transport), &headers, body.clone())
            {
                Ok(request) => request,
                Err(reason) => return reason,
            };
            match send(sender, request).await {
                Ok(response) if response.status() == hyper::StatusCode::NO_CONTENT => {
                    // Read to its end, so the connection takes the next request.
                    let _ = response.into_body().collect().await;
                    break;
                }
                Ok(response) => {
                    return format!("an up request was answered {}", response.status());
                }
                // The connection went before an answer (closed while idle, as the request
                // left): once more on a new one, with the same sequence number — a server
                // that did take it refuses the repeat (409), and the transport is lost.
                Err(_) if !retried => {
                    retried = true;
                    up = None;
                }
                Err(reason) => return reason,
            }
        }
        seq += 1;
    }
    "given up".into()
}

/// Asks for down responses one after another; why it stopped. Streams unless responses do
/// not come through in time (a buffering proxy): then it polls, for good.
async fn read_loop<R: Runtime>(
    connector: &Connector<R>,
    mut down: Sender,
    transport: &str,
    decoder: &mut DownDecoder,
    frames: &Frames,
) -> String {
    loop {
        let buffered = connector.buffered.load(Ordering::Relaxed);
        let mode = if buffered { "poll" } else { "stream" };
        let headers = [(binding::MODE_HEADER, mode.to_owned())];
        let request = match request(connector, "GET", Some(transport), &headers, Bytes::new()) {
            Ok(request) => request,
            Err(reason) => return reason,
        };
        if buffered {
            let mut response = match send(&mut down, request).await {
                Ok(response) => response,
                Err(reason) => return reason,
            };
            if let Err(reason) = accepted(&response) {
                return reason;
            }
            if let Down::Lost(reason) = read_down(response.body_mut(), decoder, frames).await {
                return reason;
            }
            continue;
        }
        // Streaming: the response and its `Open` mark must come through within the probe.
        let started = Instant::now();
        let probe = connector.runtime.timer(started + PROBE);
        let opening = async {
            let mut response = send(&mut down, request).await?;
            accepted(&response)?;
            loop {
                match decoder.next_item() {
                    Ok(Some(DownItem::Mark(Mark::Open))) => return Ok(response),
                    Ok(Some(_)) => return Err("a streaming response without its mark".to_owned()),
                    Ok(None) => {}
                    Err(error) => return Err(format!("a bad down body: {error}")),
                }
                match response.body_mut().frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            decoder.push(&data);
                        }
                    }
                    Some(Err(error)) => return Err(error.to_string()),
                    None => return Err("the HTTP stream was cut".into()),
                }
            }
        };
        let outcome = async { Some(opening.await) }
            .or(async {
                probe.await;
                None
            })
            .await;
        match outcome {
            Some(Ok(mut response)) => {
                if let Down::Lost(reason) = read_down(response.body_mut(), decoder, frames).await {
                    return reason;
                }
            }
            Some(Err(reason)) => return reason,
            None => {
                // Buffered somewhere on the way. Whatever the hub writes into this response
                // may never reach us: the transport is given up, and the client resumes on a
                // new one (nothing is lost: resume replays what was not received), which
                // polls from the start, as every later one does.
                tracing::info!("the HTTP binding's stream is buffered on the way: polling");
                connector.buffered.store(true, Ordering::Relaxed);
                return "the HTTP binding's stream is buffered on the way: polling from now on"
                    .into();
            }
        }
    }
}
