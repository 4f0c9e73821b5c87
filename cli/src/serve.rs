//! `tether serve`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_tokio::{ApiKey, Capabilities, HubConfig, Server, ServerConfig};

use crate::{Failure, StopSignals, parse_key};

/// What `serve` was asked.
pub(crate) struct ServeOptions {
    pub(crate) listen: String,
    pub(crate) keys: Vec<String>,
    pub(crate) keys_file: Option<PathBuf>,
    /// Certificate chain and private key, PEM.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) handshake_timeout: u64,
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
}

/// One key as given, and where it came from (for errors).
struct KeySource {
    text: String,
    origin: String,
}

pub(crate) async fn run(options: ServeOptions, signals: &mut StopSignals) -> Result<(), Failure> {
    let mut sources: Vec<KeySource> = options
        .keys
        .into_iter()
        .map(|text| KeySource {
            text,
            origin: "--key".into(),
        })
        .collect();
    if let Some(path) = &options.keys_file {
        sources.extend(read_keys_file(path)?);
    }
    let keys = parse_keys(&sources)?;
    let mut config = ServerConfig::new({
        let mut config = HubConfig::default();
        config.keys = keys;
        config
    });
    config.sockets.handshake_timeout = Duration::from_secs(options.handshake_timeout);
    config.hub.tokens.audience = options.audience;
    config.hub.tokens.issuer = options.issuer;
    if let Some((cert, key)) = &options.tls {
        let chain = read(cert, "TLS certificate")?;
        let private = read(key, "TLS private key")?;
        config.transport.tls = Some(tether_tokio::tls_from_pem(&chain, &private).map_err(|e| {
            Failure::usage(format!(
                "TLS certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?);
    }
    raise_file_limit(&config);
    let scheme = if config.transport.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let server = Server::bind(options.listen.as_str(), config)
        .await
        .map_err(|e| Failure::run(format!("cannot listen on {}: {e}", options.listen)))?;
    println!(
        "tether server on {scheme}://{}/ (Ctrl-C or SIGTERM to stop)",
        server.local_addr()
    );
    let signal = signals.next().await?;
    eprintln!("{signal}: shutting down (clients are told server_shutting_down)");
    server.shutdown().await;
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::usage(format!("{what} {}: {e}", path.display())))
}

/// The keys of a keys file, each with its file and line.
fn read_keys_file(path: &Path) -> Result<Vec<KeySource>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("keys file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| KeySource {
            text: line.to_owned(),
            origin: format!("{}:{number}", path.display()),
        })
        .collect())
}

/// Every key, refusing empty names or secrets and a name given twice.
fn parse_keys(sources: &[KeySource]) -> Result<Vec<ApiKey>, Failure> {
    let mut names = HashSet::new();
    let mut keys = Vec::with_capacity(sources.len());
    for source in sources {
        let (name, secret) = parse_key(&source.text)
            .map_err(|e| Failure::usage(format!("{}: {e}", source.origin)))?;
        if !names.insert(name.clone()) {
            return Err(Failure::usage(format!(
                "{}: key {name:?} is given twice",
                source.origin
            )));
        }
        keys.push(ApiKey {
            name,
            secret,
            capabilities: Capabilities::all(),
        });
    }
    if keys.is_empty() {
        return Err(Failure::usage(
            "no API key: give --key name:secret or --keys-file",
        ));
    }
    Ok(keys)
}

/// Raises the soft limit on open files toward the hard limit, so the connection cap — not
/// the common default of 1,024 descriptors — bounds the server; warns when even the hard
/// limit is below what the cap and the pending handshakes need.
fn raise_file_limit(config: &ServerConfig) {
    let needed = (config.hub.max_connections + config.sockets.max_pending_handshakes + 64) as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open-file limit is below the connection cap: raise the hard limit (ulimit -Hn)"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}
