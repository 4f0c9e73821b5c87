//! Raw HTTP/1.1 over loopback for the adapter's HTTP tests: one request per connection
//! (`Connection: close`), read to the end within [`LIMIT`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// How long any single step of a test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Sends `request` as written on a fresh connection; the whole answer as text.
pub async fn http(address: SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut answer = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path`; the whole answer.
pub async fn get(address: SocketAddr, path: &str) -> String {
    http(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The status code of an answer.
pub fn status(answer: &str) -> u16 {
    answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// `method path` with a JSON `body` and, if given, `X-Tether-Key: key`; the status and the
/// JSON body (`Null` when there is none).
pub async fn call(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let key = key
        .map(|k| format!("X-Tether-Key: {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = http(address, &request).await;
    let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
    // Bodies come whole or chunked; take the JSON object in it.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (
        status(&answer),
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}
pub mod proxy;

/// The data of the next `count` messages on `events`, as text, within [`LIMIT`] each; fails
/// on a discontinuity or the end of the subscription.
pub async fn texts(events: &mut tether_tokio::Subscription, count: usize) -> Vec<String> {
    use futures_util::StreamExt;
    let mut received = Vec::new();
    while received.len() < count {
        match timeout(LIMIT, events.next())
            .await
            .expect("a message in time")
        {
            Some(tether_tokio::ChannelEvent::Message(m)) => {
                received.push(String::from_utf8_lossy(&m.message.data).into_owned())
            }
            Some(tether_tokio::ChannelEvent::Discontinuity { .. }) => panic!("a discontinuity"),
            Some(_) => {}
            None => panic!("the subscription ended"),
        }
    }
    received
}
