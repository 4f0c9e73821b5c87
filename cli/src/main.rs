//! `tether`: run a server, mint tokens, subscribe, publish, or watch the demo.
//!
//! Exit codes: 0 when the command did what it was asked; 1 when it failed at run time (the
//! server refused, could not be reached, a guarantee broke in the demo); 2 for bad
//! arguments (clap's usage errors, and values this tool refuses before doing anything).

mod client;
mod config;
mod demo;
mod revoke;
mod serve;
mod token;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "tether realtime pub/sub: server, tools and demo",
    after_help = "Exit codes: 0 done, 1 failed at run time, 2 bad arguments."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options of `sub` and `pub` for reaching a server.
#[derive(clap::Args)]
struct Connection {
    /// Server URL (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:7400/")]
    url: String,
    /// API key as name:secret (or use --token); also from TETHER_KEY.
    #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A token instead of a key; also from TETHER_TOKEN.
    #[arg(
        long,
        env = "TETHER_TOKEN",
        hide_env_values = true,
        conflicts_with = "key"
    )]
    token: Option<String>,
    /// For wss://: trust the CA certificates of this PEM file instead of the operating
    /// system's trust store.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Seconds to wait for the first connection before giving up (1 to 3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    connect_timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server.
    Serve {
        /// A TOML file with the whole configuration (every hub setting under `[hub]`, keys,
        /// TLS, the store, namespaces); `TETHER__<SECTION>__<KEY>` variables override it, and
        /// the options below override both. See docs/configuration.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the effective configuration (file, environment and options merged; secrets
        /// masked) as TOML and exit.
        #[arg(long)]
        print_config: bool,
        /// Address to listen on (default 127.0.0.1:7400).
        #[arg(long)]
        listen: Option<String>,
        /// Also serve the HTTP API (POST /api/publish, GET /api/history, GET /api/channels,
        /// POST /api/revoke, POST /api/disconnect, authenticated by `X-Tether-Key:
        /// name:secret`) and /metrics, /health, /ready on this address; keep it private
        /// (docs/http-api.md).
        #[arg(long)]
        api_listen: Option<String>,
        /// API keys as name:secret (repeatable); also from TETHER_KEYS, comma-separated.
        #[arg(
            long = "key",
            env = "TETHER_KEYS",
            hide_env_values = true,
            value_delimiter = ','
        )]
        keys: Vec<String>,
        /// A file of API keys, one name:secret per line (blank lines and # comments ignored).
        #[arg(long)]
        keys_file: Option<PathBuf>,
        /// PEM certificate chain, to serve wss:// (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key, to serve wss:// (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Seconds a new socket has to finish its TLS and WebSocket handshake (1 to 3600;
        /// default 5).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        handshake_timeout: Option<u64>,
        /// Require tokens whose `aud` is (or contains) this audience.
        #[arg(long)]
        audience: Option<String>,
        /// Require tokens whose `iss` is this issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Keep channel history and sessions in this directory (created if absent): with
        /// `--sync batch` a restart, even after kill -9, is invisible to clients. Without it
        /// (or a `[store]` in the configuration), everything is in memory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With a store: `batch` syncs every batch of publishes to disk before they are
        /// acknowledged (the default); a duration (e.g. `10ms`) syncs at most that often: a
        /// machine crash may lose that much, so after any unclean stop of such a run
        /// (kill -9 included) every channel starts a new epoch. `0s` means `batch`.
        #[arg(long)]
        sync: Option<String>,
        /// With a store: history kept per channel pattern, as
        /// `pattern=count/age` (e.g. `chat:*=10000/24h`, `cursor:*=0/0s`); first match wins,
        /// before the configuration's namespaces. A message goes when either bound is passed.
        #[arg(long = "retention")]
        retention: Vec<String>,
        /// With a store: history kept for channels no rule matches (default 10000/24h).
        #[arg(long)]
        default_retention: Option<String>,
    },
    /// Mint a token (JWT, HS256) signed with an API key.
    Token {
        /// The key as name:secret; also from TETHER_KEY.
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: String,
        /// The client id (`sub`): 1 to 128 bytes.
        #[arg(long)]
        client_id: String,
        /// Lifetime in seconds (at least 1).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: u64,
        /// Capabilities as pattern=op+op (e.g. `chat:*=subscribe+publish`; operations:
        /// subscribe, publish, history); repeatable; default: every operation on every
        /// channel.
        #[arg(long = "cap")]
        capabilities: Vec<String>,
    },
    /// Subscribe to a channel and print its messages, one line each on stdout (state
    /// changes and discontinuities go to stderr).
    Sub {
        /// The channel.
        channel: String,
        /// Print each message as a JSON object on one line: channel, epoch (a decimal
        /// string: 64 bits), serial, timestamp_ms, id, name, publisher, and data (text) or
        /// data_hex.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke tokens through a server's HTTP API (`serve --api-listen`): sessions holding
    /// one are disconnected with token_revoked, and such tokens are refused until the
    /// revocation ends.
    Revoke {
        /// The HTTP API's base URL.
        #[arg(long, default_value = "http://127.0.0.1:7401")]
        api: String,
        /// A key with every operation on `*`, as name:secret; also from TETHER_KEY.
        #[arg(long, env = "TETHER_KEY", hide_env_values = true)]
        key: String,
        /// Revoke the tokens of this client id.
        #[arg(long, conflicts_with_all = ["token_key", "all"], required_unless_present_any = ["token_key", "all"])]
        client_id: Option<String>,
        /// Revoke the tokens signed with this key (its name, the tokens' kid).
        #[arg(long, conflicts_with = "all")]
        token_key: Option<String>,
        /// Revoke every token.
        #[arg(long)]
        all: bool,
        /// Revoke tokens issued before this time (RFC 3339, e.g. 2026-12-03T10:00:00Z);
        /// default: now.
        #[arg(long)]
        issued_before: Option<String>,
        /// How long the revocation lasts (at least the revoked tokens' remaining lifetime);
        /// default 24h.
        #[arg(long, default_value = "24h")]
        lasts: String,
    },
    /// Publish a message and wait for its acknowledgement.
    Pub {
        /// The channel.
        channel: String,
        /// The payload; `-` reads it from stdin (bytes, as they are).
        data: String,
        /// The message's name.
        #[arg(long, default_value = "message")]
        name: String,
        /// Publish this many messages (1 to 1,000,000), up to 100 unacknowledged at a time,
        /// in order; `{n}` in the payload becomes each message's number, from 0.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        count: u64,
        #[command(flatten)]
        connection: Connection,
    },
    /// An embedded server and clients streaming through a proxy that cuts connections.
    Demo {
        /// Messages per publisher.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
    },
}

/// Why a command failed: bad arguments (exit 2) or a failure at run time (exit 1).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Run(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(message) | Failure::Run(message) => f.write_str(message),
        }
    }
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure::Usage(message.into())
    }

    fn run(message: impl Into<String>) -> Failure {
        Failure::Run(message.into())
    }
}

/// `name:secret`, both non-empty.
fn parse_key(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some(("", _)) => Err("a key's name is empty (name:secret)".into()),
        Some((_, "")) => Err("a key's secret is empty (name:secret)".into()),
        Some((name, secret)) => Ok((name.to_owned(), secret.to_owned())),
        None => Err("a key is name:secret".into()),
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    // `serve` and `sub` run until a signal: they watch for it from the start. The other
    // commands keep the default action (Ctrl-C ends them at once).
    let mut signals = match command {
        Command::Serve { .. } | Command::Sub { .. } => Some(StopSignals::watch()?),
        _ => None,
    };
    match command {
        Command::Serve {
            config,
            print_config,
            listen,
            api_listen,
            keys,
            keys_file,
            tls_cert,
            tls_key,
            handshake_timeout,
            audience,
            issuer,
            data_dir,
            sync,
            retention,
            default_retention,
        } => {
            serve::run(
                serve::ServeOptions {
                    config,
                    print_config,
                    listen,
                    api_listen,
                    keys,
                    keys_file,
                    tls: tls_cert.zip(tls_key),
                    handshake_timeout,
                    audience,
                    issuer,
                    data_dir,
                    sync,
                    retention,
                    default_retention,
                },
                signals.as_mut().expect("watched for serve"),
            )
            .await
        }
        Command::Token {
            key,
            client_id,
            ttl,
            capabilities,
        } => token::run(&key, client_id, ttl, &capabilities),
        Command::Revoke {
            api,
            key,
            client_id,
            token_key,
            all,
            issued_before,
            lasts,
        } => {
            let target = match (client_id, token_key) {
                (Some(id), _) => revoke::Target::ClientId(id),
                (None, Some(name)) => revoke::Target::Key(name),
                (None, None) if all => revoke::Target::All,
                (None, None) => {
                    return Err(Failure::usage("give --client-id, --token-key or --all"));
                }
            };
            tokio::task::spawn_blocking(move || {
                revoke::run(&api, &key, target, issued_before.as_deref(), &lasts)
            })
            .await
            .map_err(|e| Failure::run(format!("revoke: {e}")))?
        }
        Command::Sub {
            channel,
            json,
            connection,
        } => {
            let signals = signals.as_mut().expect("watched for sub");
            client::subscribe(&channel, json, connection, signals).await
        }
        Command::Pub {
            channel,
            data,
            name,
            count,
            connection,
        } => client::publish(&channel, &name, &data, count, connection).await,
        Command::Demo { messages } => demo::run(messages).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs each connection's life at info; the other commands only warnings.
    let default = match cli.command {
        Command::Serve { .. } => "warn,tether_driver=info,tether_tokio=info",
        _ => "warn",
    };
    // tungstenite traces whole frames (tokens included) at `trace`: cap it at `info`, whatever
    // RUST_LOG says, so credentials never reach the logs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default.into())
        .add_directive("tungstenite=info".parse().expect("a valid directive"))
        .add_directive("async_tungstenite=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Run(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from the start of the command: a signal that comes
/// before the command waits for it (e.g. right after `serve` printed its address) is kept,
/// not left to the default action that kills the process.
pub(crate) struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn watch() -> Result<StopSignals, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let failed = |e: std::io::Error| Failure::run(format!("cannot watch signals: {e}"));
            Ok(StopSignals {
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Waits for the next one; returns its name.
    pub(crate) async fn next(&mut self) -> Result<&'static str, Failure> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Ok("SIGINT"),
                _ = self.terminate.recv() => Ok("SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .map(|()| "Ctrl-C")
                .map_err(|e| Failure::run(format!("cannot watch signals: {e}")))
        }
    }
}
