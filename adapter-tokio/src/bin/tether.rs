//! `tether`: run a server, mint tokens, subscribe, publish, or watch the demo.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use tether_core::server::{ApiKey, Capabilities, Claims, HubConfig, Operation, mint_token};
use tether_tokio::demo::{self, DemoOptions};
use tether_tokio::{ChannelEvent, Client, ClientOptions, Credentials, Server, ServerConfig};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "tether realtime pub/sub: server, tools and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
        /// API keys as name:secret (repeatable); also from TETHER_KEYS, comma-separated.
        #[arg(
            long = "key",
            env = "TETHER_KEYS",
            value_delimiter = ',',
            required_unless_present = "keys_file"
        )]
        keys: Vec<String>,
        /// A file of API keys, one name:secret per line (blank lines and # comments ignored).
        #[arg(long)]
        keys_file: Option<std::path::PathBuf>,
        /// PEM certificate chain, to serve wss:// (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// PEM private key, to serve wss:// (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Seconds a new socket has to finish its TLS and WebSocket handshake (1 to 3600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        handshake_timeout: u64,
        /// Require tokens whose `aud` is (or contains) this audience.
        #[arg(long)]
        audience: Option<String>,
        /// Require tokens whose `iss` is this issuer.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Mint a token (JWT, HS256) signed with an API key.
    Token {
        /// The key as name:secret; also from TETHER_KEY.
        #[arg(long, env = "TETHER_KEY")]
        key: String,
        /// The client id (`sub`).
        #[arg(long)]
        client_id: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Capabilities as pattern=op+op (e.g. `chat:*=subscribe+publish`); default: all.
        #[arg(long = "cap")]
        capabilities: Vec<String>,
    },
    /// Subscribe to a channel and print its messages.
    Sub {
        /// The channel.
        channel: String,
        /// Server URL.
        #[arg(long, default_value = "ws://127.0.0.1:7400/")]
        url: String,
        /// API key as name:secret (or use --token); also from TETHER_KEY.
        #[arg(long, env = "TETHER_KEY")]
        key: Option<String>,
        /// A token instead of a key.
        #[arg(long, env = "TETHER_TOKEN")]
        token: Option<String>,
    },
    /// Publish a message and wait for its acknowledgement.
    Pub {
        /// The channel.
        channel: String,
        /// The payload (text).
        data: String,
        /// Server URL.
        #[arg(long, default_value = "ws://127.0.0.1:7400/")]
        url: String,
        /// API key as name:secret (or use --token); also from TETHER_KEY.
        #[arg(long, env = "TETHER_KEY")]
        key: Option<String>,
        /// A token instead of a key.
        #[arg(long, env = "TETHER_TOKEN")]
        token: Option<String>,
    },
    /// An embedded server and clients streaming through a proxy that cuts connections.
    Demo {
        /// Messages per publisher.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
    },
}

fn parse_key(text: &str) -> Result<(String, String), String> {
    text.split_once(':')
        .map(|(name, secret)| (name.to_owned(), secret.to_owned()))
        .ok_or_else(|| "a key is name:secret".to_owned())
}

fn options(key: Option<String>, token: Option<String>) -> Result<ClientOptions, String> {
    match (key, token) {
        (_, Some(token)) => Ok(ClientOptions::new(Credentials::Token(token))),
        (Some(key), None) => {
            let (name, secret) = parse_key(&key)?;
            Ok(ClientOptions::api_key(name, secret))
        }
        (None, None) => Err("give --key name:secret or --token".into()),
    }
}

fn capabilities(specs: &[String]) -> Result<Capabilities, String> {
    if specs.is_empty() {
        return Ok(Capabilities::all());
    }
    let mut caps = Capabilities::default();
    for spec in specs {
        let (pattern, ops) = spec
            .split_once('=')
            .ok_or("a capability is pattern=op+op")?;
        let ops = ops
            .split('+')
            .map(|op| match op {
                "subscribe" => Ok(Operation::Subscribe),
                "publish" => Ok(Operation::Publish),
                "history" => Ok(Operation::History),
                other => Err(format!("unknown operation {other}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        caps = caps.with(pattern, &ops);
    }
    Ok(caps)
}

async fn run(command: Command) -> Result<bool, String> {
    match command {
        Command::Serve {
            listen,
            mut keys,
            keys_file,
            tls_cert,
            tls_key,
            handshake_timeout,
            audience,
            issuer,
        } => {
            if let Some(path) = keys_file {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                keys.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty() && !line.starts_with('#'))
                        .map(str::to_owned),
                );
            }
            let keys = keys
                .iter()
                .map(|k| {
                    parse_key(k).map(|(name, secret)| ApiKey {
                        name,
                        secret,
                        capabilities: Capabilities::all(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut config = ServerConfig::new(HubConfig {
                keys,
                ..HubConfig::default()
            });
            config.sockets.handshake_timeout = Duration::from_secs(handshake_timeout);
            config.hub.tokens.audience = audience;
            config.hub.tokens.issuer = issuer;
            raise_file_limit(&config);
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                let cert = std::fs::read(cert).map_err(|e| format!("certificate: {e}"))?;
                let key = std::fs::read(key).map_err(|e| format!("private key: {e}"))?;
                config.transport.tls =
                    Some(tether_tokio::tls_from_pem(&cert, &key).map_err(|e| e.to_string())?);
            }
            let scheme = if config.transport.tls.is_some() {
                "wss"
            } else {
                "ws"
            };
            let server = Server::bind(listen.as_str(), config)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "tether server on {scheme}://{}/ (Ctrl-C to stop)",
                server.local_addr()
            );
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
            server.shutdown().await;
            Ok(true)
        }
        Command::Token {
            key,
            client_id,
            ttl,
            capabilities: caps,
        } => {
            let (name, secret) = parse_key(&key)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let claims = Claims {
                sub: client_id,
                exp: now + ttl,
                iat: now,
                nbf: None,
                aud: None,
                iss: None,
                cap: capabilities(&caps)?,
            };
            let key = ApiKey {
                name,
                secret,
                capabilities: Capabilities::default(),
            };
            println!("{}", mint_token(&key, &claims).map_err(|e| e.to_string())?);
            Ok(true)
        }
        Command::Sub {
            channel,
            url,
            key,
            token,
        } => {
            let client = Client::connect(&url, options(key, token)?).map_err(|e| e.to_string())?;
            let mut events = client
                .channel(&channel)
                .map_err(|e| e.to_string())?
                .subscribe()
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("subscribed to {channel}");
            while let Some(event) = events.next().await {
                match event {
                    ChannelEvent::Message(m) => println!(
                        "{} {}",
                        m.position,
                        String::from_utf8_lossy(&m.message.data)
                    ),
                    ChannelEvent::Discontinuity {
                        last,
                        resumed_after,
                        ..
                    } => eprintln!("discontinuity: {last:?} .. {resumed_after}"),
                    ChannelEvent::Attached { .. } => {}
                    ChannelEvent::Failed(error) => return Err(error.to_string()),
                }
            }
            Ok(true)
        }
        Command::Pub {
            channel,
            data,
            url,
            key,
            token,
        } => {
            let client = Client::connect(&url, options(key, token)?).map_err(|e| e.to_string())?;
            let channel = client.channel(&channel).map_err(|e| e.to_string())?;
            let outcome =
                tokio::time::timeout(Duration::from_secs(30), channel.publish("message", data))
                    .await;
            client.close().await;
            match outcome {
                Ok(Ok(())) => {
                    println!("published (acknowledged)");
                    Ok(true)
                }
                Ok(Err(error)) => Err(format!(
                    "publish failed: {error} (code {})",
                    error.code().as_u32()
                )),
                Err(_) => Err("no acknowledgement within 30 s".into()),
            }
        }
        Command::Demo { messages } => {
            let options = DemoOptions {
                messages,
                ..DemoOptions::default()
            };
            println!(
                "demo: {} publishers x {} messages, {} subscribers, through a proxy cutting every connection after 0.3-1.5 s",
                options.publishers, options.messages, options.subscribers
            );
            let report = demo::run(options).await.map_err(|e| e.to_string())?;
            println!("  publishes acknowledged : {}", report.acked);
            println!("  publishes failed       : {}", report.failed.len());
            for (index, count) in report.received.iter().enumerate() {
                println!("  subscriber {index} received : {count}");
            }
            println!("  connections cut        : {}", report.cuts);
            println!(
                "  reconnects             : {} ({} resumed the session)",
                report.reconnects, report.resumed
            );
            println!("  tokens renewed in-band : {}", report.renewals);
            println!("  discontinuities        : {}", report.discontinuities);
            println!(
                "  lost {}, duplicated {}, out of order {}",
                report.lost, report.duplicated, report.reordered
            );
            println!("  took {:.1} s", report.elapsed.as_secs_f64());
            for failure in report.failed.iter().take(5) {
                println!("  failure: {failure}");
            }
            for stalled in &report.stalled {
                println!("  stalled: {stalled}");
            }
            println!(
                "{}",
                if report.ok() {
                    "every guarantee held"
                } else {
                    "A GUARANTEE BROKE"
                }
            );
            Ok(report.ok())
        }
    }
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

fn main() -> ExitCode {
    // tungstenite traces whole frames (tokens included) at `trace`: cap it at `info`, whatever
    // RUST_LOG says, so credentials never reach the logs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn".into())
        .add_directive("tungstenite=info".parse().expect("a valid directive"))
        .add_directive("async_tungstenite=info".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
