//! `tether serve --config FILE`: the server's whole configuration in one TOML file — every
//! `HubConfig` setting under `[hub]` (durations human-readable: `15s`, `2m`), keys, TLS,
//! the listener, the store and per-pattern namespaces — with environment overrides
//! (`TETHER__HUB__SESSION_TTL=5m`), errors that name the file, line and key, and the
//! effective configuration printed with secrets masked (`--print-config`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether_tokio::HubConfig;

use crate::Failure;

/// Environment variables overriding the file start with this; `__` separates the levels of
/// the key's path (`TETHER__HUB__LIMITS__MAX_FRAME_SIZE`).
pub(crate) const ENV_PREFIX: &str = "TETHER__";

/// What a configuration file holds. Every field is optional; what is absent takes the
/// command-line value, else the default.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Address to listen on (default `127.0.0.1:7400`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listen: Option<String>,
    /// Serve the HTTP API (`/api/…`) and the operator's routes on this address too (keep it
    /// private); default: no HTTP API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_listen: Option<String>,
    /// Time a new socket has to finish its TLS and WebSocket handshake (default 5 s).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub(crate) handshake_timeout: Option<Duration>,
    /// The hub: every `HubConfig` setting, keys (`[[hub.keys]]`) and token rules
    /// (`[hub.tokens]`) included.
    pub(crate) hub: HubConfig,
    /// Serve `wss://` with this certificate chain and key (PEM files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<TlsFiles>,
    /// Keep history and sessions on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) store: Option<StoreSection>,
    /// Options per channel pattern, first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) namespaces: Vec<Namespace>,
    /// The file it was read from and its text, for errors found later.
    #[serde(skip)]
    pub(crate) source: Option<(String, String)>,
}

impl ConfigFile {
    /// The hub's configuration: `[hub]` with the namespaces' options.
    pub(crate) fn hub_config(&self) -> HubConfig {
        let mut hub = self.hub.clone();
        hub.namespaces = self
            .namespaces
            .iter()
            .filter(|n| n.history.is_some() || n.echo.is_some() || n.publish.is_some())
            .map(|n| {
                let mut namespace = tether_tokio::tether_core::server::Namespace::new(&n.pattern);
                namespace.history = n.history;
                namespace.echo = n.echo;
                namespace.publish = n.publish;
                namespace
            })
            .collect();
        hub
    }
}

/// `[tls]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFiles {
    /// PEM certificate chain.
    pub(crate) cert: PathBuf,
    /// PEM private key.
    pub(crate) key: PathBuf,
}

/// `[store]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSection {
    /// The data directory (created if absent).
    pub(crate) data_dir: PathBuf,
    /// `batch` (the default) or an interval such as `10ms` (see `--sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sync: Option<String>,
    /// History kept for channels no namespace matches, `count/age` (default `10000/24h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default_retention: Option<String>,
    /// Whether `default_retention` came from `--default-retention`, for errors.
    #[serde(skip)]
    pub(crate) default_retention_flag: bool,
    /// Whether `sync` came from `--sync`, for errors.
    #[serde(skip)]
    pub(crate) sync_flag: bool,
}

/// `[[namespaces]]`: options for the channels matching `pattern`; each option is decided by
/// the first namespace that matches a channel and sets it (`docs/protocol.md` §7.3).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Namespace {
    /// A channel pattern (`chat:*`).
    pub(crate) pattern: String,
    /// History kept, `count/age` (`10000/24h`; `0/0s` for none), with a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retention: Option<String>,
    /// Whether clients may read history (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) history: Option<bool>,
    /// Whether publishers get their own messages back (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) echo: Option<bool>,
    /// Who may publish: `clients` (the default: as their capabilities allow),
    /// `subscribers` (attached sessions only) or `server` (the server-side API only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publish: Option<tether_tokio::tether_core::server::Publishers>,
    /// Where it was given, for errors (`--retention "…"`); `None` for the file's.
    #[serde(skip)]
    pub(crate) origin: Option<String>,
}

/// Reads `path` and applies the `TETHER__…` variables of `env` over it (also without a
/// file: then they apply over the defaults).
///
/// # Errors
/// The file cannot be read, or a value in it or in the environment is refused: the message
/// names the file, line and key, or the variable.
pub(crate) fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ConfigFile, Failure> {
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("config file {}: {e}", path.display())))?,
            path.display().to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let mut table: toml::Table = match toml::from_str::<ConfigFile>(&text) {
        Ok(_) => toml::from_str(&text).map_err(|e| Failure::usage(locate(&origin, &text, &e)))?,
        Err(error) => return Err(Failure::usage(locate(&origin, &text, &error))),
    };
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (name, value) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(Failure::usage(format!(
                "environment {name}: an empty level in the key's path"
            )));
        }
        set(&mut table, &path, parse_value(&value))
            .map_err(|why| Failure::usage(format!("environment {name}: {why}")))?;
        ConfigFile::deserialize(table.clone()).map_err(|e| {
            let message = if path.iter().any(|p| p == "keys" || p == "secret") {
                "invalid value (not shown: it may be a secret)"
            } else {
                e.message()
            };
            Failure::usage(format!(
                "environment {name} ({}): {message}",
                path.join(".")
            ))
        })?;
    }
    let mut config =
        ConfigFile::deserialize(table).map_err(|e| Failure::usage(e.message().to_owned()))?;
    if !origin.is_empty() {
        config.source = Some((origin.clone(), text.clone()));
    }
    if !config.hub.namespaces.is_empty() {
        return Err(Failure::usage(place(
            &origin,
            &text,
            "namespaces: give them as [[namespaces]] at the top level (where retention is set too)",
        )));
    }
    if let Err(why) = config.hub_config().validate() {
        return Err(Failure::usage(place(&origin, &text, &why)));
    }
    if config
        .handshake_timeout
        .is_some_and(|t| t < Duration::from_secs(1) || t > Duration::from_secs(3600))
    {
        return Err(Failure::usage(place(
            &origin,
            &text,
            "handshake_timeout: 1s to 1h",
        )));
    }
    Ok(config)
}

/// A semantic error `key: why` (a path under `[hub]` unless top-level), with the file and
/// line that set the key when the file did.
pub(crate) fn place(origin: &str, text: &str, why: &str) -> String {
    let key = why.split(':').next().unwrap_or("");
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let path = if key == "handshake_timeout" || key == "namespaces" {
        key.to_owned()
    } else {
        format!("hub.{key}")
    };
    let line = if key == "namespaces" {
        // `namespaces: the pattern "a::b" …`: the line of that pattern.
        let quoted = why.split('"').nth(1).unwrap_or("");
        text.lines().position(|line| {
            let line = line.trim_start();
            line.starts_with("pattern") && line.contains(&format!("\"{quoted}\""))
        })
    } else {
        text.lines().position(|line| {
            let line = line.trim_start();
            line.strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    match line {
        Some(index) if !origin.is_empty() => {
            format!("{origin}:{}, key `{path}`: {why}", index + 1)
        }
        _ => format!("configuration, key `{path}`: {why}"),
    }
}

/// A variable's value as TOML (a number, a boolean, an array…), else as a string.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets `path` in `table`, creating the tables on the way.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("no key".into());
    };
    let mut at = table;
    for key in parents {
        let entry = at
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table"))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

/// A parse or value error with its file, line, and the key's full path.
fn locate(origin: &str, text: &str, error: &toml::de::Error) -> String {
    let message = mask(error.message(), text, error.span());
    let Some(span) = error.span() else {
        return format!("{origin}: {message}");
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    // The key: what the line assigns, under the last table header above it.
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_owned());
    let section = text
        .lines()
        .take(line - 1)
        .filter_map(|l| {
            let l = l.trim();
            l.starts_with('[')
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
        })
        .last();
    let path = match (section, key) {
        (Some(section), Some(key)) => format!(", key `{section}.{key}`"),
        (None, Some(key)) => format!(", key `{key}`"),
        (Some(section), None) => format!(", in `[{section}]`"),
        (None, None) => String::new(),
    };
    format!("{origin}:{line}{path}: {message}")
}

/// An error message without the value it quotes when that value sits in a key's secret
/// (or anywhere under `keys`): secrets never reach the terminal or logs.
fn mask(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let secret = span.is_some_and(|span| {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        let in_keys = text[..start]
            .lines()
            .rfind(|l| l.trim_start().starts_with('['))
            .is_some_and(|header| header.contains("keys"));
        line.trim_start().starts_with("secret") || in_keys
    });
    if secret {
        "invalid value (not shown: it may be a secret)".to_owned()
    } else {
        message.to_owned()
    }
}

/// The configuration as TOML, with every key's secret masked.
pub(crate) fn print(config: &ConfigFile) -> Result<String, Failure> {
    let mut table = toml::Table::try_from(config)
        .map_err(|e| Failure::run(format!("the configuration cannot be printed: {e}")))?;
    if let Some(keys) = table
        .get_mut("hub")
        .and_then(|hub| hub.get_mut("keys"))
        .and_then(toml::Value::as_array_mut)
    {
        for key in keys {
            if let Some(secret) = key.get_mut("secret") {
                *secret = toml::Value::String("********".into());
            }
        }
    }
    toml::to_string_pretty(&table)
        .map_err(|e| Failure::run(format!("the configuration cannot be printed: {e}")))
}

impl ConfigFile {
    /// Where a value the file gave is, for an error found after loading: `file:line, key
    /// `path`` for the first line setting `leaf` to `value`, or `key `path`` alone.
    pub(crate) fn whereabouts(&self, path: &str, leaf: &str, value: &str) -> String {
        let quoted = format!("\"{value}\"");
        let line = self.source.as_ref().and_then(|(origin, text)| {
            text.lines()
                .position(|line| {
                    let line = line.trim_start();
                    line.strip_prefix(leaf)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                        && line.contains(&quoted)
                })
                .map(|index| format!("{origin}:{}, ", index + 1))
        });
        format!("{}key `{path}`", line.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("tether.toml");
        std::fs::write(&path, text).expect("writes");
        (dir, path)
    }

    /// Every `HubConfig` field has a key: the printed defaults name each field of its
    /// `Debug` form but the two set elsewhere (`storage`: by the store's presence;
    /// `sabotage`: tests only), and read back unchanged.
    #[test]
    fn every_hub_config_field_has_a_config_file_key() {
        let defaults = HubConfig::default();
        let debug = format!("{defaults:#?}");
        let fields: Vec<&str> = debug
            .lines()
            .filter(|line| line.starts_with("    ") && !line.starts_with("     "))
            .filter_map(|line| line.trim().split_once(':').map(|(name, _)| name))
            // Namespaces are the top-level `[[namespaces]]` (namespaces_set_the_hubs_options).
            .filter(|name| !["storage", "sabotage", "namespaces"].contains(name))
            .collect();
        assert!(fields.len() >= 20, "{fields:?}");
        let mut with_key = defaults.clone();
        with_key.keys = vec![tether_tokio::ApiKey {
            name: "app".into(),
            secret: "s".into(),
            capabilities: tether_tokio::Capabilities::all(),
        }];
        with_key.tokens.audience = Some("aud".into());
        with_key.tokens.issuer = Some("iss".into());
        let printed = toml::to_string(&with_key).expect("prints");
        let table: toml::Table = toml::from_str(&printed).expect("parses");
        for field in &fields {
            assert!(
                table.contains_key(*field),
                "no key for HubConfig::{field}:\n{printed}"
            );
        }
        let back: HubConfig = toml::from_str(&printed).expect("reads back");
        assert_eq!(format!("{back:?}"), format!("{with_key:?}"));
    }

    #[test]
    fn durations_are_human_readable_and_env_overrides_the_file() {
        let (_dir, path) = file(
            "listen = \"0.0.0.0:9000\"\n[hub]\nsession_ttl = \"5m\"\nmax_connections = 10\n\
             [hub.limits]\nmax_frame_size = 131072\n",
        );
        let config = load(
            Some(&path),
            env(&[
                ("TETHER__HUB__MAX_CONNECTIONS", "20"),
                ("TETHER__HUB__HEARTBEAT_INTERVAL", "20s"),
                ("TETHER_KEYS", "not:ours"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(config.hub.session_ttl, Duration::from_secs(300));
        assert_eq!(config.hub.max_connections, 20);
        assert_eq!(config.hub.heartbeat_interval, Duration::from_secs(20));
        assert_eq!(config.hub.limits.max_frame_size, 131_072);
        assert_eq!(config.hub.retention_count, 1000, "untouched: the default");
    }

    #[test]
    fn bad_values_name_the_file_line_and_key() {
        let (_dir, path) =
            file("listen = \"x\"\n\n[hub]\nretention_count = 5\nsession_ttl = \"soon\"\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        let expected = format!("{}:5, key `hub.session_ttl`", path.display());
        assert!(error.contains(&expected), "{error}");
        let (_dir, path) = file("[hub]\nno_such_setting = 1\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains(":2") && error.contains("no_such_setting"),
            "{error}"
        );
        let (_dir, path) = file("[hub.limits]\nmax_frame_size = \"big\"\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains(":2, key `hub.limits.max_frame_size`"),
            "{error}"
        );
        let error = load(None, env(&[("TETHER__HUB__SESSION_TTL", "soon")]))
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("environment TETHER__HUB__SESSION_TTL (hub.session_ttl)"),
            "{error}"
        );
    }

    #[test]
    fn printed_configuration_masks_secrets() {
        let (_dir, path) = file("[[hub.keys]]\nname = \"app\"\nsecret = \"very-secret\"\n");
        let config = load(Some(&path), env(&[])).expect("loads");
        assert_eq!(
            config.hub.keys[0].capabilities,
            tether_tokio::Capabilities::all()
        );
        let printed = print(&config).expect("prints");
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("********"), "{printed}");
        assert!(printed.contains("session_ttl = \"2m\""), "{printed}");
    }

    /// Found by a reviewer: `min_heartbeat_interval` above the maximum was taken and the
    /// first client's connect panicked the hub; zero durations flooded clients. Settings
    /// that make an unusable hub are refused with file, line and key.
    #[test]
    fn regression_unusable_settings_are_refused_with_file_line_and_key() {
        for (text, key, line) in [
            (
                "[hub]\nmin_heartbeat_interval = \"10m\"\n",
                "hub.min_heartbeat_interval",
                2,
            ),
            (
                "\n[hub]\nheartbeat_interval = \"0s\"\n",
                "hub.heartbeat_interval",
                3,
            ),
            ("[hub]\nmax_connections = 0\n", "hub.max_connections", 2),
            ("[hub]\nmax_pending_bytes = 0\n", "hub.max_pending_bytes", 2),
            (
                "[hub]\nsession_ttl = \"100000000000h\"\n",
                "hub.session_ttl",
                2,
            ),
            ("handshake_timeout = \"0s\"\n", "handshake_timeout", 1),
        ] {
            let (_dir, path) = file(text);
            let error = load(Some(&path), env(&[])).expect_err(text).to_string();
            let expected = format!("{}:{line}, key `{key}`", path.display());
            assert!(error.contains(&expected), "{text}: {error}");
        }
        let (_dir, path) = file("[[hub.keys]]\nname = \"c:d\"\nsecret = \"x\"\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("holds `:`"), "{error}");
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let (_dir, path) = file("[[hub.keys]]\nname = \"app\"\nsecret = 98765432\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(
            !error.contains("98765432") && error.contains(":3"),
            "{error}"
        );
        let error = load(None, env(&[("TETHER__HUB__KEYS", "app:mysecret")]))
            .expect_err("refused")
            .to_string();
        assert!(!error.contains("mysecret"), "{error}");
    }

    #[test]
    fn values_checked_after_loading_name_their_file_line_and_key() {
        let (_dir, path) = file(
            "[store]\ndata_dir = \"/tmp/x\"\nsync = \"fast\"\n\n[[namespaces]]\npattern = \"c:*\"\nretention = \"lots\"\n",
        );
        let config = load(Some(&path), env(&[])).expect("loads");
        let sync = config.whereabouts("store.sync", "sync", "fast");
        assert_eq!(sync, format!("{}:3, key `store.sync`", path.display()));
        let retention = config.whereabouts("namespaces.retention", "retention", "lots");
        assert_eq!(
            retention,
            format!("{}:7, key `namespaces.retention`", path.display())
        );
        assert_eq!(
            config.whereabouts("store.sync", "sync", "batch"),
            "key `store.sync`",
            "a default the file did not give"
        );
    }

    #[test]
    fn namespaces_set_the_hubs_options() {
        use tether_tokio::tether_core::server::Publishers;
        let (_dir, path) = file(
            "[[namespaces]]\npattern = \"feed:*\"\npublish = \"server\"\nhistory = false\n\n\
             [[namespaces]]\npattern = \"*\"\necho = false\npublish = \"subscribers\"\n",
        );
        let config = load(Some(&path), env(&[])).expect("loads");
        let hub = config.hub_config();
        let feed = hub.channel_options("feed:news");
        assert_eq!(
            (feed.history, feed.echo, feed.publish),
            (false, false, Publishers::Server)
        );
        let chat = hub.channel_options("chat");
        assert_eq!(
            (chat.history, chat.echo, chat.publish),
            (true, false, Publishers::Subscribers)
        );
        // Bad values name the line; namespaces under [hub] are refused.
        let (_dir, path) = file("[[namespaces]]\npattern = \"x\"\npublish = \"anyone\"\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(error.contains(":3") && error.contains("publish"), "{error}");
        let (_dir, path) = file("[[namespaces]]\npattern = \"a::b\"\necho = false\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("namespaces: the pattern"), "{error}");
        assert!(error.contains(":2, key `namespaces`"), "{error}");
        let (_dir, path) = file("[[hub.namespaces]]\npattern = \"x\"\necho = false\n");
        let error = load(Some(&path), env(&[]))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("[[namespaces]] at the top level"), "{error}");
    }
}
