//! Hub configuration, with the defaults of `docs/protocol.md` §5.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::{ApiKey, TokenRules};
use super::storage::StorageMode;
use crate::client::Framing;
use crate::wire::Limits;

/// Everything a [`Hub`](super::Hub) needs to know up front.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HubConfig {
    /// Keys for API-key auth and for verifying tokens (`kid` = key name).
    pub keys: Vec<ApiKey>,
    /// How tokens are checked.
    pub tokens: TokenRules,
    /// Frame and field limits for client frames.
    pub limits: Limits,
    /// Heartbeat interval when the client does not ask for one (default 15 s).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Smallest heartbeat interval a client may ask for (default 5 s).
    #[serde(with = "humantime_serde")]
    pub min_heartbeat_interval: Duration,
    /// Largest heartbeat interval a client may ask for (default 300 s).
    #[serde(with = "humantime_serde")]
    pub max_heartbeat_interval: Duration,
    /// Grace added to the heartbeat interval before an idle client is closed (default 10 s).
    #[serde(with = "humantime_serde")]
    pub idle_grace: Duration,
    /// Deadline for the first frame after a transport opens (default 5 s).
    #[serde(with = "humantime_serde")]
    pub first_frame_timeout: Duration,
    /// How long a dropped session is kept for resume (default 120 s).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Most channels one session may be attached to (default 100).
    pub max_channels_per_session: usize,
    /// Bytes sent to a connection but not reported written, beyond which it is a slow
    /// consumer (default 1 MiB).
    pub max_pending_bytes: usize,
    /// Most open connections (default 10,000).
    pub max_connections: usize,
    /// Most sessions, live or waiting to be resumed (default 20,000). At the limit the
    /// session dropped longest ago is freed to make room.
    pub max_sessions: usize,
    /// Most channels the hub holds (default 100,000); creating another is refused.
    pub max_channels: usize,
    /// Positions `(epoch, last serial)` of freed channels the hub remembers, so a channel
    /// used again continues where it was (default 100,000); the oldest are forgotten first.
    pub remembered_positions: usize,
    /// New channels one session may create per second (default 100); beyond, its attach or
    /// publish is refused with `limit_exceeded`.
    pub channel_creations_per_second: u32,
    /// Publish outcomes each session remembers, to answer a resent serial from its record
    /// for as long as the session lives (default 1,024; 24 bytes each). A resend older than
    /// that is refused with `publish_outcome_unknown`. Clients keep at most this many
    /// publishes unacknowledged (§6.5).
    pub publish_record: usize,
    /// Messages retained per channel for resume and history (default 1,000).
    pub retention_count: usize,
    /// How long messages are retained (default 120 s).
    #[serde(with = "humantime_serde")]
    pub retention_age: Duration,
    /// How long a message id is remembered to drop duplicates (default 120 s).
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Most message ids remembered per channel (default 100,000); the oldest go first.
    pub dedupe_capacity: usize,
    /// How long the application's hook has to answer an attach or publish (§7.9; default
    /// 5 s); after that it is refused with `hook_timeout`.
    #[serde(with = "humantime_serde")]
    pub hook_timeout: Duration,
    /// How frames are delimited on transports.
    pub framing: Framing,
    /// Options per channel pattern (§7.3): the first whose pattern matches a channel
    /// decides; a channel none matches has [`Namespace`]'s defaults. At most
    /// [`MAX_NAMESPACES`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    /// Where channel logs and sessions are kept (default: in memory; see
    /// [`storage`](super::storage)).
    #[serde(skip)]
    pub storage: StorageMode,
    /// A deliberately broken behaviour, for checking the conformance checker.
    #[cfg(feature = "sabotage")]
    #[serde(skip)]
    pub sabotage: crate::sabotage::Sabotage,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            keys: Vec::new(),
            tokens: TokenRules::default(),
            limits: Limits::DEFAULT,
            heartbeat_interval: Duration::from_secs(15),
            min_heartbeat_interval: Duration::from_secs(5),
            max_heartbeat_interval: Duration::from_secs(300),
            idle_grace: Duration::from_secs(10),
            first_frame_timeout: Duration::from_secs(5),
            session_ttl: Duration::from_secs(120),
            max_channels_per_session: 100,
            max_pending_bytes: 1024 * 1024,
            max_connections: 10_000,
            max_sessions: 20_000,
            max_channels: 100_000,
            remembered_positions: 100_000,
            channel_creations_per_second: 100,
            publish_record: 1024,
            retention_count: 1000,
            retention_age: Duration::from_secs(120),
            dedupe_window: Duration::from_secs(120),
            dedupe_capacity: 100_000,
            hook_timeout: Duration::from_secs(5),
            framing: Framing::Message,
            namespaces: Vec::new(),
            storage: StorageMode::Memory,
            #[cfg(feature = "sabotage")]
            sabotage: crate::sabotage::Sabotage::None,
        }
    }
}

/// The most namespaces a hub takes (each channel is matched against them in order).
pub const MAX_NAMESPACES: usize = 1000;

/// Options for the channels matching `pattern` (`docs/protocol.md` §7.3). Each option is
/// decided by the first namespace (in order) that matches the channel and sets it; one no
/// namespace sets has its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Namespace {
    /// A channel pattern (§8: `chat:*`, `*`).
    pub pattern: String,
    /// Whether clients may read the channels' history (`history` frames; default true).
    /// Off, a history request is refused with `forbidden`; messages are still retained for
    /// resume, and the server-side API still reads them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    /// Whether publishers get their own messages back (default true). Off, a publisher's
    /// session is sent `own_message` (§7.4) for its own messages, as if it had asked for no
    /// echo; a 1.0 client, which cannot read `own_message`, still gets them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Who may publish (default: any client whose capabilities allow it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<Publishers>,
    /// Whether the application's hook decides on each attach (§7.9; default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_hook: Option<bool>,
    /// Whether the application's hook decides on each new publish, and may replace its
    /// messages' names and data (§7.9; default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<bool>,
}

impl Namespace {
    /// A namespace for `pattern` setting no option.
    pub fn new(pattern: impl Into<String>) -> Namespace {
        Namespace {
            pattern: pattern.into(),
            ..Namespace::default()
        }
    }
}

/// The options a channel has under a hub's namespaces ([`HubConfig::channel_options`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Whether clients may read its history.
    pub history: bool,
    /// Whether publishers get their own messages back.
    pub echo: bool,
    /// Who may publish.
    pub publish: Publishers,
    /// Whether the application's hook decides on attaches.
    pub attach_hook: bool,
    /// Whether the application's hook decides on publishes.
    pub publish_hook: bool,
}

/// Who may publish on a namespace's channels (the server-side API always may, §7.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publishers {
    /// Any client whose capabilities allow it.
    #[default]
    Clients,
    /// A client whose capabilities allow it and whose session is attached to the channel.
    Subscribers,
    /// No client: only the server-side API.
    Server,
}

/// The longest duration a setting takes (a year): beyond, clocks and timers overflow.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

impl HubConfig {
    /// Checks that the settings make a usable hub; the first problem found, naming the
    /// setting (its configuration key), otherwise. Every server adapter refuses to start on
    /// a configuration this refuses.
    ///
    /// # Errors
    /// `key: why`, e.g. `min_heartbeat_interval: above max_heartbeat_interval`.
    pub fn validate(&self) -> Result<(), String> {
        let at_least = |name: &str, value: Duration, least: Duration| {
            if value < least {
                Err(format!("{name}: at least {least:?}"))
            } else if value > LONGEST {
                Err(format!("{name}: at most a year"))
            } else {
                Ok(())
            }
        };
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(format!("{name}: at least 1"))
            } else {
                Ok(())
            }
        };
        let second = Duration::from_secs(1);
        at_least("heartbeat_interval", self.heartbeat_interval, second)?;
        at_least(
            "min_heartbeat_interval",
            self.min_heartbeat_interval,
            second,
        )?;
        at_least(
            "max_heartbeat_interval",
            self.max_heartbeat_interval,
            second,
        )?;
        if self.min_heartbeat_interval > self.max_heartbeat_interval {
            return Err("min_heartbeat_interval: above max_heartbeat_interval".into());
        }
        if self.heartbeat_interval < self.min_heartbeat_interval
            || self.heartbeat_interval > self.max_heartbeat_interval
        {
            return Err(
                "heartbeat_interval: outside min_heartbeat_interval..max_heartbeat_interval".into(),
            );
        }
        at_least("idle_grace", self.idle_grace, Duration::from_millis(100))?;
        at_least(
            "first_frame_timeout",
            self.first_frame_timeout,
            Duration::from_millis(100),
        )?;
        at_least("session_ttl", self.session_ttl, second)?;
        at_least("retention_age", self.retention_age, Duration::ZERO)?;
        at_least("dedupe_window", self.dedupe_window, second)?;
        at_least("hook_timeout", self.hook_timeout, Duration::from_millis(1))?;
        at_least("tokens.leeway", self.tokens.leeway, Duration::ZERO)?;
        positive("max_channels_per_session", self.max_channels_per_session)?;
        positive("max_connections", self.max_connections)?;
        positive("max_sessions", self.max_sessions)?;
        positive("max_channels", self.max_channels)?;
        positive("publish_record", self.publish_record)?;
        positive("dedupe_capacity", self.dedupe_capacity)?;
        positive(
            "channel_creations_per_second",
            self.channel_creations_per_second as usize,
        )?;
        positive("limits.max_frame_size", self.limits.max_frame_size)?;
        positive(
            "limits.max_channel_name_len",
            self.limits.max_channel_name_len,
        )?;
        positive(
            "limits.max_messages_per_publish",
            self.limits.max_messages_per_publish,
        )?;
        let most = crate::wire::Limits::PROTOCOL_MAX;
        if self.limits.max_frame_size > most.max_frame_size {
            return Err(format!(
                "limits.max_frame_size: at most {}",
                most.max_frame_size
            ));
        }
        if self.limits.max_channel_name_len > most.max_channel_name_len {
            return Err(format!(
                "limits.max_channel_name_len: at most {}",
                most.max_channel_name_len
            ));
        }
        if self.limits.max_messages_per_publish > most.max_messages_per_publish {
            return Err(format!(
                "limits.max_messages_per_publish: at most {}",
                most.max_messages_per_publish
            ));
        }
        if self.max_pending_bytes < self.limits.max_frame_size {
            return Err("max_pending_bytes: at least limits.max_frame_size".into());
        }
        if self.namespaces.len() > MAX_NAMESPACES {
            return Err(format!("namespaces: at most {MAX_NAMESPACES}"));
        }
        for namespace in &self.namespaces {
            let pattern = &namespace.pattern;
            if pattern.is_empty()
                || pattern.len() > self.limits.max_channel_name_len
                || pattern.split(':').any(str::is_empty)
                || pattern.chars().any(char::is_control)
            {
                return Err(format!(
                    "namespaces: the pattern {pattern:?} is empty, too long or has an empty segment"
                ));
            }
        }
        for key in &self.keys {
            if key.name.is_empty() || key.name.contains(':') {
                return Err(format!(
                    "keys: the key name {:?} is empty or holds `:` (keys are given as name:secret)",
                    key.name
                ));
            }
            if key.secret.is_empty() {
                return Err(format!("keys: the key {:?} has an empty secret", key.name));
            }
        }
        Ok(())
    }
}

impl HubConfig {
    /// The options of `channel`: each from the first namespace that matches it and sets
    /// it, else the default (§7.3).
    pub fn channel_options(&self, channel: &str) -> ChannelOptions {
        let mut set = Namespace::default();
        for namespace in &self.namespaces {
            if super::auth::pattern_matches(&namespace.pattern, channel) {
                set.history = set.history.or(namespace.history);
                set.echo = set.echo.or(namespace.echo);
                set.publish = set.publish.or(namespace.publish);
                set.attach_hook = set.attach_hook.or(namespace.attach_hook);
                set.publish_hook = set.publish_hook.or(namespace.publish_hook);
            }
        }
        ChannelOptions {
            history: set.history.unwrap_or(true),
            echo: set.echo.unwrap_or(true),
            publish: set.publish.unwrap_or_default(),
            attach_hook: set.attach_hook.unwrap_or(false),
            publish_hook: set.publish_hook.unwrap_or(false),
        }
    }

    /// Whether a namespace asks for a hook (§7.9): a server adapter then needs the
    /// application's hooks.
    pub fn uses_hooks(&self) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.attach_hook == Some(true) || n.publish_hook == Some(true))
    }
}
