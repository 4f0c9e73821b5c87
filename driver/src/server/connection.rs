//! One connection's task: the WebSocket upgrade, then reading frames for the hub and
//! writing the hub's frames, until either side ends it.

use std::net::SocketAddr;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::SinkExt;
use tether_core::embed::{Outbound, WriteBatch, Writer, close_code};

use super::Input;
use crate::tls::websocket_config;

/// The queue of one connection's writer. Unbounded here; what the hub queues for a
/// connection is bounded by the hub's pending-bytes limit on deliveries.
pub(crate) struct Queue(async_channel::Sender<Outbound>);

impl Writer for Queue {
    fn send(&self, outbound: Outbound) {
        let _ = self.0.try_send(outbound);
    }
}

/// Serves one accepted stream (plain TCP or TLS) until the peer or the hub ends it.
pub(crate) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    inputs: async_channel::Sender<Input>,
    max_frame: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the handshake's state is large and needed only once; inline, it would size the
    // connection task's allocation for the connection's whole life.
    let handshake =
        async_tungstenite::accept_async_with_config(stream, Some(websocket_config(max_frame)));
    let ws = match Box::pin(handshake).await {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%peer, %error, "websocket handshake failed");
            return;
        }
    };
    let (mut sink, mut source) = futures_util::StreamExt::split(ws);
    let (writer, outbound) = async_channel::unbounded();
    let (reply, id) = oneshot::channel();
    if inputs
        .send(Input::Accept {
            writer: Queue(writer),
            reply,
        })
        .await
        .is_err()
    {
        return;
    }
    let Ok(connection) = id.await else {
        return;
    };
    tracing::debug!(%peer, connection = connection.0, "connection accepted");
    // Frames from the hub, in order: what is queued goes out with one flush and is reported
    // to the hub in one input, so it can pace replays and spot slow consumers.
    let writing = async {
        while let Ok(first) = outbound.recv().await {
            let batch = WriteBatch::take(first, || outbound.try_recv().ok());
            for frame in batch.frames {
                if sink.feed(Message::Binary(frame)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err()
                || (batch.written > 0
                    && inputs
                        .send(Input::Written(connection, batch.written))
                        .await
                        .is_err())
            {
                return;
            }
            if let Some(reason) = batch.close {
                let frame = CloseFrame {
                    code: CloseCode::from(close_code(&reason)),
                    reason: reason.code.name().into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                break;
            }
        }
        let _ = sink.close().await;
    };
    // Every binary message is one frame for the hub; a text message is not a tether frame,
    // and the hub answers it with its protocol error.
    let reading = async {
        while let Some(Ok(message)) = source.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if inputs.send(Input::Bytes(connection, bytes)).await.is_err() {
                break;
            }
        }
    };
    // Whichever ends first ends the connection: the peer went away, or the hub closed it.
    writing.or(reading).await;
    let _ = inputs.send(Input::Closed(connection)).await;
}
