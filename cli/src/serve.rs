//! `tether serve`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use tether_engine::{Durability, Engine, EngineConfig, RetentionRule};
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
    pub(crate) storage: Option<StorageOptions>,
}

/// `--data-dir` and its options, as given.
pub(crate) struct StorageOptions {
    pub(crate) dir: PathBuf,
    pub(crate) sync: String,
    pub(crate) retention: Vec<String>,
    pub(crate) default_retention: String,
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
    if let Some(storage) = &options.storage {
        let engine_config = engine_config(storage, &config.hub)?;
        let dir = &storage.dir;
        if dir.exists() && !dir.is_dir() {
            return Err(Failure::usage(format!(
                "--data-dir {}: not a directory",
                dir.display()
            )));
        }
        let engine = Engine::open(dir, engine_config).map_err(|e| {
            let why = e.to_string();
            let why = if why.contains("Locked") {
                "another process (a tether server?) is using it".to_owned()
            } else if e.kind() == std::io::ErrorKind::PermissionDenied
                || why.contains("PermissionDenied")
            {
                "permission denied".to_owned()
            } else {
                why
            };
            Failure::run(format!("cannot open the store in {}: {why}", dir.display()))
        })?;
        let state = if engine.starts_new_epochs() {
            "it was not stopped cleanly last time, syncing on an interval: recovered, and every \
             channel starts a new epoch (clients see epoch_changed)"
        } else if engine.unclean() {
            "it was not stopped cleanly last time; recovered"
        } else {
            "opened"
        };
        println!("store {} ({state})", storage.dir.display());
        config.store = Some(Arc::new(engine));
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

/// The engine's configuration from `--sync`, `--retention` and `--default-retention`.
fn engine_config(storage: &StorageOptions, hub: &HubConfig) -> Result<EngineConfig, Failure> {
    let mut config = EngineConfig::for_hub(hub);
    config.durability = match storage.sync.as_str() {
        "batch" => Durability::Sync,
        interval => {
            let interval = humantime::parse_duration(interval).map_err(|e| {
                Failure::usage(format!(
                    "--sync {interval:?}: `batch` or a duration such as 10ms ({e})"
                ))
            })?;
            if interval.is_zero() {
                Durability::Sync
            } else {
                Durability::Interval(interval)
            }
        }
    };
    config.default_retention = parse_retention(
        &format!("--default-retention {:?}", storage.default_retention),
        &storage.default_retention,
    )?;
    for rule in &storage.retention {
        let (pattern, retention) = rule.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--retention {rule:?}: pattern=count/age, e.g. chat:*=10000/24h"
            ))
        })?;
        if pattern.is_empty() {
            return Err(Failure::usage(format!(
                "--retention {rule:?}: the pattern is empty"
            )));
        }
        let (count, age) = parse_retention(&format!("--retention {rule:?}"), retention)?;
        config.retention.push(RetentionRule {
            pattern: pattern.to_owned(),
            count,
            age,
        });
    }
    Ok(config)
}

/// `count/age`, e.g. `10000/24h`; `flag` names the option and its whole value in errors.
fn parse_retention(flag: &str, text: &str) -> Result<(u64, Duration), Failure> {
    let usage = |why: String| Failure::usage(format!("{flag}: count/age, e.g. 10000/24h ({why})"));
    let (count, age) = text.split_once('/').ok_or_else(|| usage("no `/`".into()))?;
    let count = count
        .parse::<u64>()
        .map_err(|e| usage(format!("count: {e}")))?;
    let age = humantime::parse_duration(age).map_err(|e| usage(format!("age: {e}")))?;
    Ok((count, age))
}
