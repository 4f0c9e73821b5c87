//! `tether serve`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use tether_engine::{Durability, Engine, EngineConfig, RetentionRule};
use tether_tokio::{ApiKey, Capabilities, HubConfig, Server, ServerConfig};

use crate::config::{self, ConfigFile, Namespace, StoreSection, TlsFiles};
use crate::{Failure, StopSignals, parse_key};

/// What `serve` was asked on the command line.
pub(crate) struct ServeOptions {
    pub(crate) config: Option<PathBuf>,
    pub(crate) print_config: bool,
    pub(crate) listen: Option<String>,
    pub(crate) api_listen: Option<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) keys_file: Option<PathBuf>,
    /// Certificate chain and private key, PEM.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    pub(crate) handshake_timeout: Option<u64>,
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) sync: Option<String>,
    pub(crate) retention: Vec<String>,
    pub(crate) default_retention: Option<String>,
}

/// The store's options, merged from the configuration and the command line.
pub(crate) struct StorageOptions {
    pub(crate) dir: PathBuf,
    pub(crate) sync: String,
    /// Where `sync` was given, for errors.
    pub(crate) sync_origin: String,
    /// `pattern=count/age` rules, each with where it came from.
    pub(crate) retention: Vec<(String, String)>,
    pub(crate) default_retention: (String, String),
}

/// One key as given, and where it came from (for errors).
struct KeySource {
    text: String,
    origin: String,
}

/// The configuration file and environment, with the command line's options over them.
fn merge(options: ServeOptions) -> Result<(ConfigFile, Vec<KeySource>), Failure> {
    let mut file = config::load(options.config.as_deref(), std::env::vars())?;
    if let Some(listen) = options.listen {
        file.listen = Some(listen);
    }
    if let Some(api_listen) = options.api_listen {
        file.api_listen = Some(api_listen);
    }
    if let Some(seconds) = options.handshake_timeout {
        file.handshake_timeout = Some(Duration::from_secs(seconds));
    }
    if let Some(audience) = options.audience {
        file.hub.tokens.audience = Some(audience);
    }
    if let Some(issuer) = options.issuer {
        file.hub.tokens.issuer = Some(issuer);
    }
    if let Some((cert, key)) = options.tls {
        file.tls = Some(TlsFiles { cert, key });
    }
    if let Some(dir) = options.data_dir {
        match &mut file.store {
            Some(store) => store.data_dir = dir,
            None => {
                file.store = Some(StoreSection {
                    data_dir: dir,
                    sync: None,
                    default_retention: None,
                    default_retention_flag: false,
                    sync_flag: false,
                });
            }
        }
    }
    let store_option = |flag: &str| {
        Failure::usage(format!(
            "{flag} needs a store: give --data-dir or a [store] in the configuration"
        ))
    };
    if let Some(sync) = options.sync {
        let store = file.store.as_mut().ok_or_else(|| store_option("--sync"))?;
        store.sync = Some(sync);
        store.sync_flag = true;
    }
    if let Some(retention) = options.default_retention {
        let store = file
            .store
            .as_mut()
            .ok_or_else(|| store_option("--default-retention"))?;
        store.default_retention = Some(retention);
        store.default_retention_flag = true;
    }
    if !options.retention.is_empty() && file.store.is_none() {
        return Err(store_option("--retention"));
    }
    // Command-line rules first: the first match wins.
    let mut namespaces = Vec::new();
    for rule in options.retention {
        let (pattern, retention) = rule.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--retention {rule:?}: pattern=count/age, e.g. chat:*=10000/24h"
            ))
        })?;
        namespaces.push(Namespace {
            pattern: pattern.to_owned(),
            retention: Some(retention.to_owned()),
            history: None,
            echo: None,
            publish: None,
            origin: Some(format!("--retention {rule:?}")),
        });
    }
    namespaces.append(&mut file.namespaces);
    file.namespaces = namespaces;
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
    Ok((file, sources))
}

pub(crate) async fn run(options: ServeOptions, signals: &mut StopSignals) -> Result<(), Failure> {
    let print_config = options.print_config;
    let (file, sources) = merge(options)?;
    let keys = parse_keys(&file.hub.keys, &sources)?;
    let mut hub = file.hub_config();
    hub.keys = keys;
    if print_config {
        let mut effective = file;
        effective.hub.keys = hub.keys.clone();
        effective
            .hub_config()
            .validate()
            .map_err(|why| Failure::usage(format!("configuration: {why}")))?;
        effective
            .listen
            .get_or_insert_with(|| "127.0.0.1:7400".into());
        effective
            .handshake_timeout
            .get_or_insert(Duration::from_secs(5));
        if let Some(store) = &mut effective.store {
            store.sync.get_or_insert_with(|| "batch".into());
            store
                .default_retention
                .get_or_insert_with(|| "10000/24h".into());
        }
        // The store's settings are checked as a start would check them.
        if let Some(storage) = storage_options(&effective) {
            engine_config(&storage, &effective.hub)?;
        } else if effective.namespaces.iter().any(|n| n.retention.is_some()) {
            return Err(Failure::usage(
                "a namespace's retention needs a store: give --data-dir or a [store]",
            ));
        }
        print!("{}", config::print(&effective)?);
        return Ok(());
    }
    let listen = file
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:7400".to_owned());
    let api_keys = hub.keys.clone();
    let mut config = ServerConfig::new(hub);
    config.sockets.handshake_timeout = file.handshake_timeout.unwrap_or(Duration::from_secs(5));
    if let Some(TlsFiles { cert, key }) = &file.tls {
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
    if let Some(storage) = storage_options(&file) {
        let engine_config = engine_config(&storage, &config.hub)?;
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
    } else if file.namespaces.iter().any(|n| n.retention.is_some()) {
        return Err(Failure::usage(
            "a namespace's retention needs a store: give --data-dir or a [store]",
        ));
    }
    raise_file_limit(&config);
    let scheme = if config.transport.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let server = Server::bind(listen.as_str(), config)
        .await
        .map_err(|e| Failure::run(format!("cannot listen on {listen}: {e}")))?;
    println!(
        "tether server on {scheme}://{}/ (Ctrl-C or SIGTERM to stop; /metrics, /health, /ready)",
        server.local_addr()
    );
    let api = match &file.api_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address.as_str())
                .await
                .map_err(|e| Failure::run(format!("cannot listen on {address}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| Failure::run(format!("--api-listen {address}: {e}")))?;
            let service = server.service().clone();
            let router = tether_tokio::axum::api_routes(service.clone(), api_keys)
                .merge(tether_tokio::axum::operator_routes(service));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(tether_tokio::axum::serve_bounded(
                listener,
                router,
                tether_tokio::axum::HttpLimits::default(),
                async {
                    let _ = stopped.await;
                },
            ));
            println!("HTTP API on http://{local}/api/ (X-Tether-Key: name:secret)");
            Some((stop, task))
        }
        None => None,
    };
    let signal = signals.next().await?;
    eprintln!("{signal}: shutting down (clients are told server_shutting_down)");
    server.shutdown().await;
    if let Some((stop, task)) = api {
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// The store's options as the configuration gives them, if it has a store.
fn storage_options(file: &ConfigFile) -> Option<StorageOptions> {
    let section = file.store.as_ref()?;
    Some(StorageOptions {
        dir: section.data_dir.clone(),
        sync: section.sync.clone().unwrap_or_else(|| "batch".into()),
        sync_origin: if section.sync_flag {
            "--sync".into()
        } else {
            file.whereabouts(
                "store.sync",
                "sync",
                section.sync.as_deref().unwrap_or("batch"),
            )
        },
        retention: file
            .namespaces
            .iter()
            .filter_map(|n| {
                n.retention.as_ref().map(|r| {
                    let origin = n.origin.clone().unwrap_or_else(|| {
                        format!(
                            "{} (namespace {:?})",
                            file.whereabouts("namespaces.retention", "retention", r),
                            n.pattern
                        )
                    });
                    (format!("{}={r}", n.pattern), origin)
                })
            })
            .collect(),
        default_retention: match &section.default_retention {
            Some(r) if section.default_retention_flag => {
                (r.clone(), format!("--default-retention {r:?}"))
            }
            Some(r) => (
                r.clone(),
                file.whereabouts("store.default_retention", "default_retention", r),
            ),
            None => ("10000/24h".into(), "default retention".into()),
        },
    })
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

/// Every key — the configuration's, then the command line's — refusing empty names or
/// secrets and a name given twice.
fn parse_keys(from_file: &[ApiKey], sources: &[KeySource]) -> Result<Vec<ApiKey>, Failure> {
    let mut names = HashSet::new();
    let mut keys = Vec::with_capacity(from_file.len() + sources.len());
    for key in from_file {
        if key.name.is_empty() || key.secret.is_empty() {
            return Err(Failure::usage(format!(
                "configuration: key {:?} has an empty name or secret",
                key.name
            )));
        }
        if !names.insert(key.name.clone()) {
            return Err(Failure::usage(format!(
                "configuration: key {:?} is given twice",
                key.name
            )));
        }
        keys.push(key.clone());
    }
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
            "no API key: give --key name:secret, --keys-file, or [[hub.keys]] in --config",
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
                    "{} {interval:?}: `batch` or a duration such as 10ms ({e})",
                    storage.sync_origin
                ))
            })?;
            if interval.is_zero() {
                Durability::Sync
            } else {
                Durability::Interval(interval)
            }
        }
    };
    config.default_retention =
        parse_retention(&storage.default_retention.1, &storage.default_retention.0)?;
    for (rule, origin) in &storage.retention {
        let (pattern, retention) = rule.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "{origin}: pattern=count/age, e.g. chat:*=10000/24h"
            ))
        })?;
        if pattern.is_empty() {
            return Err(Failure::usage(format!("{origin}: the pattern is empty")));
        }
        let (count, age) = parse_retention(origin, retention)?;
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
