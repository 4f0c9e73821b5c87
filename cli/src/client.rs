//! `tether sub` and `tether pub`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tether_tokio::{
    ChannelEvent, ChannelMessage, Client, ClientOptions, ConnectionState, Credentials, ErrorCode,
    ErrorInfo, StateChanges,
};

use crate::{Connection, Failure, StopSignals, parse_key};

/// How long `pub` waits for its acknowledgement once connected.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Client options from the command line: credentials, and for `wss://` the trust roots.
fn options(connection: &Connection) -> Result<ClientOptions, Failure> {
    let mut options = match (&connection.key, &connection.token) {
        (_, Some(token)) => ClientOptions::new(Credentials::Token(token.clone())),
        (Some(key), None) => {
            let (name, secret) =
                parse_key(key).map_err(|e| Failure::usage(format!("--key: {e}")))?;
            ClientOptions::api_key(name, secret)
        }
        (None, None) => return Err(Failure::usage("give --key name:secret or --token")),
    };
    if connection.url.starts_with("wss://") {
        options.transport.tls = Some(match &connection.ca_file {
            Some(path) => from_ca_file(path)?,
            None => from_system_roots()?,
        });
    } else if let Some(path) = &connection.ca_file {
        tracing::warn!(ca_file = %path.display(), "--ca-file is only used with wss:// URLs");
    }
    Ok(options)
}

fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Failure::run(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts the CA certificates of a PEM file.
fn from_ca_file(path: &Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| Failure::usage(format!("--ca-file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certificates.is_empty() {
        return Err(bad(
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| bad(format!("a certificate rustls cannot use: {e}")))?;
    }
    tls_config(roots)
}

/// Trusts the operating system's certificate store.
fn from_system_roots() -> Result<Arc<rustls::ClientConfig>, Failure> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system certificate could not be loaded");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Failure::run(
            "no usable certificate in the system trust store: install ca-certificates, or give --ca-file",
        ));
    }
    tls_config(roots)
}

/// Why the first connection did not happen, in plain words.
fn explain(url: &str, state: ConnectionState, error: Option<ErrorInfo>) -> Failure {
    let Some(error) = error else {
        return Failure::run(format!("cannot connect to {url}: the client is {state}"));
    };
    match error.code {
        // The transport never came up: refused, unknown host, TLS.
        ErrorCode::TransportClosed | ErrorCode::RequestTimeout => {
            Failure::run(format!("cannot connect to {url}: {}", error.message))
        }
        _ => Failure::run(format!(
            "the server refused the connection: {} ({})",
            error.message, error.code
        )),
    }
}

/// Connects and waits for Connected; reports promptly when the first attempt fails (the
/// server cannot be reached, or refuses the credentials) instead of retrying in silence.
/// Returns the client and its state changes from Connected on (none missed in between).
async fn connect(connection: &Connection) -> Result<(Client, StateChanges), Failure> {
    let options = options(connection)?;
    let client = Client::connect(&connection.url, options)
        .map_err(|e| Failure::usage(format!("--url: {e}")))?;
    let mut changes = client.state_changes();
    let first = async {
        let mut state = *client.state().borrow();
        loop {
            match state {
                ConnectionState::Connected => return Ok(()),
                ConnectionState::Disconnected
                | ConnectionState::Suspended
                | ConnectionState::Failed
                | ConnectionState::Closed => {
                    return Err(explain(&connection.url, state, client.last_error()));
                }
                _ => {}
            }
            state = match changes.next().await {
                Some(change) => change.current,
                None => ConnectionState::Closed,
            };
        }
    };
    let limit = Duration::from_secs(connection.connect_timeout);
    match tokio::time::timeout(limit, first).await {
        Ok(Ok(())) => Ok((client, changes)),
        Ok(Err(failure)) => {
            client.close().await;
            Err(failure)
        }
        Err(_) => {
            client.close().await;
            Err(Failure::run(format!(
                "no connection to {} within {} s",
                connection.url, connection.connect_timeout
            )))
        }
    }
}

pub(crate) async fn publish(
    channel: &str,
    name: &str,
    data: &str,
    count: u64,
    connection: Connection,
) -> Result<(), Failure> {
    let data = if data == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::run(format!("reading stdin: {e}")))?;
        bytes
    } else {
        data.as_bytes().to_vec()
    };
    let (client, _) = connect(&connection).await?;
    let channel_handle = match client.channel(channel) {
        Ok(channel) => channel,
        Err(error) => {
            client.close().await;
            return Err(Failure::usage(format!("channel {channel:?}: {error}")));
        }
    };
    // `{n}` is replaced only when there are several messages to tell apart.
    let numbered = count > 1 && data.windows(3).any(|w| w == b"{n}");
    let payload = |n: u64| -> Vec<u8> {
        if !numbered {
            return data.clone();
        }
        String::from_utf8_lossy(&data)
            .replace("{n}", &n.to_string())
            .into_bytes()
    };
    let publishing = async {
        let mut pending = futures_util::stream::FuturesOrdered::new();
        for n in 0..count {
            pending.push_back(channel_handle.publish(name, payload(n)));
            if pending.len() >= 100 {
                if let Some(result) = futures_util::StreamExt::next(&mut pending).await {
                    result?;
                }
            }
        }
        while let Some(result) = futures_util::StreamExt::next(&mut pending).await {
            result?;
        }
        Ok::<(), tether_tokio::Error>(())
    };
    // The acknowledgement timeout is per message, as for one.
    let limit = ACK_TIMEOUT.saturating_mul(u32::try_from(count.min(1000)).unwrap_or(1000));
    let outcome = tokio::time::timeout(limit, publishing).await;
    client.close().await;
    match outcome {
        Ok(Ok(())) if count == 1 => {
            println!("published (acknowledged)");
            Ok(())
        }
        Ok(Ok(())) => {
            println!("published {count} messages (acknowledged)");
            Ok(())
        }
        Ok(Err(error)) => Err(Failure::run(format!(
            "publish failed: {error} ({})",
            error.code()
        ))),
        Err(_) => Err(Failure::run(format!(
            "connected, but not every acknowledgement came within {} s",
            limit.as_secs()
        ))),
    }
}

pub(crate) async fn subscribe(
    channel: &str,
    json: bool,
    connection: Connection,
    signals: &mut StopSignals,
) -> Result<(), Failure> {
    let (client, mut changes) = connect(&connection).await?;
    eprintln!("connected to {}", connection.url);
    let handle = client
        .channel(channel)
        .map_err(|e| Failure::usage(format!("channel {channel:?}: {e}")))?;
    let mut events = handle
        .subscribe()
        .await
        .map_err(|e| Failure::run(format!("subscribe to {channel} failed: {e} ({})", e.code())))?;
    eprintln!("subscribed to {channel}");
    // State changes to stderr while the subscription runs (from Connected on: none missed).
    let stats = client.clone();
    let watcher = tokio::spawn(async move {
        let mut failures = stats.stats().resume_failures.load(Ordering::Relaxed);
        while let Some(change) = changes.next().await {
            let mut line = format!("state: {} -> {}", change.previous, change.current);
            if let Some(reason) = &change.reason {
                line.push_str(&format!(" ({}: {})", reason.code, reason.message));
            }
            if change.current == ConnectionState::Connected {
                let now = stats.stats().resume_failures.load(Ordering::Relaxed);
                line.push_str(if now == failures {
                    " — session resumed"
                } else {
                    " — new session (the old one had expired)"
                });
                failures = now;
            }
            eprintln!("{line}");
        }
    });
    let outcome = loop {
        let event = tokio::select! {
            event = events.next() => event,
            signal = signals.next() => {
                eprintln!("{}: closing", signal?);
                break Ok(());
            }
        };
        match event {
            Some(ChannelEvent::Message(message)) => print_message(channel, &message, json),
            Some(ChannelEvent::Discontinuity {
                last,
                resumed_after,
                reason,
            }) => {
                let last = last.map_or_else(|| "nothing".to_owned(), |p| p.to_string());
                let why = reason.map_or_else(
                    || "messages were skipped".to_owned(),
                    |r| format!("{}: {}", r.code, r.message),
                );
                eprintln!(
                    "discontinuity on {channel}: after {last}, continuing after {resumed_after} ({why}); the history API may fill the gap"
                );
            }
            Some(ChannelEvent::Failed(error)) => {
                // connection_failed says only that it failed; the client knows why.
                let error = match client.last_error() {
                    Some(cause) if error.code == ErrorCode::ConnectionFailed => cause,
                    _ => error,
                };
                break Err(Failure::run(format!(
                    "subscription ended: {} ({})",
                    error.message, error.code
                )));
            }
            Some(_) => {} // attached again, or events of later versions
            None => break Err(Failure::run("subscription ended")),
        }
    };
    client.close().await;
    watcher.abort();
    outcome
}

/// One message on stdout: a readable line, or a JSON object.
fn print_message(channel: &str, message: &ChannelMessage, json: bool) {
    let data = std::str::from_utf8(&message.message.data);
    if json {
        let mut object = serde_json::json!({
            "channel": channel,
            // A decimal string, as in the HTTP API: epochs are 64-bit, beyond what JSON numbers
            // hold exactly.
            "epoch": message.position.epoch.to_string(),
            "serial": message.position.serial,
            "timestamp_ms": message.timestamp_ms,
            "id": message.message.id.as_str(),
            "name": message.message.name,
            "publisher": message.publisher.as_str(),
        });
        match data {
            Ok(text) => object["data"] = text.into(),
            Err(_) => {
                object["data_hex"] =
                    tether_tokio::tether_core::wire::hex::encode(&message.message.data).into()
            }
        }
        println!("{object}");
    } else {
        let time = UNIX_EPOCH + Duration::from_millis(message.timestamp_ms);
        let time = humantime::format_rfc3339_millis(time.max(SystemTime::UNIX_EPOCH));
        let data = match data {
            Ok(text) => printable(text),
            Err(_) => format!(
                "({} bytes, not UTF-8) {}",
                message.message.data.len(),
                tether_tokio::tether_core::wire::hex::encode(&message.message.data)
            ),
        };
        println!(
            "{time} {channel} {} {} from {}: {data}",
            message.position,
            if message.message.name.is_empty() {
                "-".to_owned()
            } else {
                printable(&message.message.name)
            },
            printable(message.publisher.as_str())
        );
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`, …): one message stays one
/// line, and what others publish cannot drive the terminal (colours, titles, cursor moves).
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("{\"t\":21}\n"), "{\"t\":21}\\n");
        assert_eq!(printable("a\u{1b}[31mRED\u{7}"), "a\\u{1b}[31mRED\\u{7}");
        assert_eq!(printable("héllo 👋\ttab"), "héllo 👋\\ttab");
    }
}
