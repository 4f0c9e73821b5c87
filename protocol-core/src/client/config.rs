//! Client configuration, with the defaults of `docs/protocol.md` §5.

use std::fmt;
use std::time::Duration;

use crate::wire::{ClientId, Limits};

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// An API key (`name:secret`), for trusted servers only.
    ApiKey {
        /// The key's name.
        name: String,
        /// The key's secret.
        secret: String,
    },
    /// Tokens obtained from the application: the client emits
    /// [`Event::TokenRequired`](super::Event::TokenRequired) whenever it needs one.
    Token,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey { name, .. } => {
                write!(f, "ApiKey {{ name: {name:?}, secret: <redacted> }}")
            }
            Auth::Token => f.write_str("Token"),
        }
    }
}

/// How frames are delimited on the transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// One frame per transport message (WebSocket binary messages).
    #[default]
    Message,
    /// Length-prefixed frames on a byte stream.
    Stream,
}

/// When a client falls back from WebSocket to the HTTP binding (`docs/protocol.md` §6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// Whether a blocked WebSocket is replaced by an HTTP binding transport (default true;
    /// an adapter that cannot open [`TransportKind::HttpStream`](super::TransportKind)
    /// transports turns it off).
    pub enabled: bool,
    /// How long a WebSocket may take to open before it counts as blocked (default 5 s).
    pub websocket_timeout: Duration,
    /// How long the client keeps to the HTTP binding after falling back before it tries
    /// WebSocket again, at a reconnect (default 5 min).
    pub probe_interval: Duration,
    /// Use the HTTP binding only, never WebSocket (default false): for networks known to
    /// block WebSocket, and for comparing the two. Needs `enabled`.
    pub http_only: bool,
}

impl Default for Fallback {
    fn default() -> Fallback {
        Fallback {
            enabled: true,
            websocket_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(300),
            http_only: false,
        }
    }
}

/// Everything a [`Client`](super::Client) needs to know up front.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How to authenticate.
    pub auth: Auth,
    /// The client id to ask for (API keys may choose one; tokens carry their own).
    pub client_id: Option<ClientId>,
    /// The heartbeat interval to ask the hub for (`None`: the hub's default).
    pub heartbeat_interval: Option<Duration>,
    /// Deadline for connect, attach, detach, auth, close, ping and history (default 10 s).
    pub request_timeout: Duration,
    /// Session TTL assumed until the hub states its own (default 120 s).
    pub session_ttl: Duration,
    /// Upper bound of the first retry after losing a connected transport (default 1 s).
    pub first_retry_max: Duration,
    /// Backoff base (default 4 s): the ceiling of the delay after the first failed attempt.
    pub backoff_base: Duration,
    /// Backoff cap (default 30 s).
    pub backoff_cap: Duration,
    /// Smallest delay between two attempts after the first retry (default 100 ms).
    pub backoff_floor: Duration,
    /// Retry interval while Suspended (default 30 s), with ± `suspended_jitter_percent`.
    pub suspended_retry: Duration,
    /// Jitter of the suspended retry interval, in percent (default 20).
    pub suspended_jitter_percent: u32,
    /// How long a connection must stay up before the backoff resets (default 10 s).
    pub stable_after: Duration,
    /// Most unresolved publishes held at once (default 1,000); more are refused at once.
    pub max_pending_publishes: usize,
    /// Renew a token this long before it expires at the latest (default 30 s).
    pub renew_before_expiry: Duration,
    /// Renew a token after this percentage of its remaining lifetime at the latest (default 90).
    pub renew_at_percent: u32,
    /// Whether this client receives the messages it publishes itself (default true). When
    /// false it asks the hub not to echo them (`connect` options, §4.1): each arrives as its
    /// position only, so continuity holds, and nothing reaches the application.
    pub echo: bool,
    /// How frames are delimited on the transport.
    pub framing: Framing,
    /// Falling back to the HTTP binding when WebSocket is blocked (§6.10).
    pub fallback: Fallback,
    /// A deliberately broken behaviour, for checking the conformance checker.
    #[cfg(feature = "sabotage")]
    pub sabotage: crate::sabotage::Sabotage,
    /// Limits for decoding hub frames (the hub may exceed its own frame size by a fixed
    /// overhead, see [`Limits::for_hub_frames`]).
    pub limits: Limits,
}

impl ClientConfig {
    /// A configuration with the protocol defaults and the given authentication.
    pub fn new(auth: Auth) -> ClientConfig {
        ClientConfig {
            auth,
            client_id: None,
            heartbeat_interval: None,
            request_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(120),
            first_retry_max: Duration::from_secs(1),
            backoff_base: Duration::from_secs(4),
            backoff_cap: Duration::from_secs(30),
            backoff_floor: Duration::from_millis(100),
            suspended_retry: Duration::from_secs(30),
            suspended_jitter_percent: 20,
            stable_after: Duration::from_secs(10),
            max_pending_publishes: 1000,
            renew_before_expiry: Duration::from_secs(30),
            renew_at_percent: 90,
            echo: true,
            framing: Framing::Message,
            fallback: Fallback::default(),
            limits: Limits::DEFAULT.for_hub_frames(),
            #[cfg(feature = "sabotage")]
            sabotage: crate::sabotage::Sabotage::None,
        }
    }
}
