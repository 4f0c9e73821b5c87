//! Behaviour vectors: a scripted run of one client or one hub — configuration and seed, then
//! timed inputs, each with the exact outputs and next deadline it must produce. The format is
//! documented in `conformance/README.md`.

use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_core::client::{Auth, Client, ClientConfig, NewMessage, Output, TransportId};
use tether_core::server::{ApiKey, Capabilities, ConnectionId, Hub, HubConfig, HubOutput};
use tether_core::wire::{
    self, ChannelName, ClientFrame, HistoryQuery, Limits, MessageId, ServerFrame, hex,
};
use tether_core::{ErrorInfo, Time, Timestamp};

/// Which state machine a vector drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Machine {
    /// A `Client`.
    Client,
    /// A `Hub`.
    Hub,
}

/// Client settings a vector may change; the rest are the protocol defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `{"api_key": {"name", "secret"}}` or `"token"`.
    pub auth: VectorAuth,
    /// Requested heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Bound of unresolved publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_publishes: Option<usize>,
    /// Whether the client receives its own messages (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
}

/// How a vector's client authenticates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VectorAuth {
    /// An API key.
    ApiKey {
        /// Key name.
        name: String,
        /// Key secret.
        secret: String,
    },
    /// Tokens from the application.
    #[default]
    Token,
}

/// A key of a vector's hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorKey {
    /// Name (also the `kid` of its tokens).
    pub name: String,
    /// Secret.
    pub secret: String,
    /// Capabilities of clients using the key directly.
    pub capabilities: Capabilities,
}

/// Hub settings a vector may change; the rest are the protocol defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    /// Keys.
    pub keys: Vec<VectorKey>,
    /// Messages retained per channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_count: Option<usize>,
    /// Pending-bytes limit per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_bytes: Option<usize>,
    /// Connection cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Channels per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_channels_per_session: Option<usize>,
}

/// A message to publish: `id` null for a client-made id; `data` in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorMessage {
    /// The application's id, if any.
    pub id: Option<String>,
    /// Event name.
    pub name: String,
    /// Payload, hex.
    pub data: String,
}

/// An input to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientInput {
    /// `connect`.
    Connect,
    /// `retry_now`.
    RetryNow,
    /// `close`.
    Close,
    /// `handle_timeout`.
    Timeout,
    /// `ping`.
    Ping,
    /// `handle_transport_open`.
    TransportOpen {
        /// The transport.
        transport: u64,
    },
    /// `handle_transport_closed`.
    TransportClosed {
        /// The transport.
        transport: u64,
        /// Why.
        reason: String,
    },
    /// `handle_transport_blocked`: the WebSocket upgrade was answered by something other
    /// than the hub (§6.10).
    TransportBlocked {
        /// The transport.
        transport: u64,
        /// Why.
        reason: String,
    },
    /// `handle_transport_bytes`: `hex` is authoritative; `frame` its readable form, if any.
    Receive {
        /// The transport.
        transport: u64,
        /// The frame, readable.
        frame: Option<Value>,
        /// The bytes.
        hex: String,
    },
    /// `attach`.
    Attach {
        /// Channel.
        channel: String,
    },
    /// `detach`.
    Detach {
        /// Channel.
        channel: String,
    },
    /// `publish`.
    Publish {
        /// Channel.
        channel: String,
        /// Messages.
        messages: Vec<VectorMessage>,
    },
    /// `history`.
    History {
        /// Channel.
        channel: String,
        /// Query.
        query: HistoryQuery,
    },
    /// `provide_token`.
    ProvideToken {
        /// The token.
        token: String,
    },
    /// `token_unavailable`: no token now (retried).
    TokenUnavailable {
        /// Why.
        reason: String,
    },
    /// `token_refused`: the application refuses a token (Failed).
    TokenRefused {
        /// Why.
        reason: String,
    },
}

/// An input to a hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HubInput {
    /// `accept`: connection ids are given from 0 in order.
    Accept,
    /// `handle_timeout`.
    Timeout,
    /// `shutdown`.
    Shutdown,
    /// `handle_bytes`: `hex` is authoritative; `frame` its readable form, if any.
    Receive {
        /// The connection.
        connection: u64,
        /// The frame, readable.
        frame: Option<Value>,
        /// The bytes.
        hex: String,
    },
    /// `handle_written`.
    Written {
        /// The connection.
        connection: u64,
        /// Bytes written.
        bytes: usize,
    },
    /// `handle_closed`.
    Closed {
        /// The connection.
        connection: u64,
    },
}

/// One step: the time, the input, the outputs it must produce and the deadline after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step<I> {
    /// Monotonic time of the input, ms.
    pub at_ms: u64,
    /// Wall-clock time (hub vectors), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_ms: Option<u64>,
    /// The input.
    pub input: I,
    /// Every output, in order (drained right after the input).
    pub outputs: Vec<Value>,
    /// `poll_timeout` after draining, ms.
    pub next_deadline_ms: Option<u64>,
}

/// A behaviour vector file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourVector {
    /// What it shows.
    pub description: String,
    /// Which state machine.
    pub machine: Machine,
    /// The 32-byte seed, hex.
    pub seed: String,
    /// Client settings (client vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSettings>,
    /// Hub settings (hub vectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubSettings>,
    /// Client steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_steps: Vec<Step<ClientInput>>,
    /// Hub steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hub_steps: Vec<Step<HubInput>>,
}

fn seed_of(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|e| format!("seed: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "a seed is 32 bytes".to_string())
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("protocol values are JSON-serializable")
}

fn channel(name: &str) -> Result<ChannelName, String> {
    ChannelName::new(name).map_err(|e| e.to_string())
}

fn returned(result: Result<Value, ErrorInfo>) -> Value {
    match result {
        Ok(value) => serde_json::json!({"returned": {"ok": value}}),
        Err(error) => serde_json::json!({"returned": {"err": json(&error)}}),
    }
}

impl ClientSettings {
    fn config(&self) -> ClientConfig {
        let auth = match &self.auth {
            VectorAuth::ApiKey { name, secret } => Auth::ApiKey {
                name: name.clone(),
                secret: secret.clone(),
            },
            VectorAuth::Token => Auth::Token,
        };
        let mut config = ClientConfig::new(auth);
        config.heartbeat_interval = self
            .heartbeat_interval_ms
            .map(std::time::Duration::from_millis);
        if let Some(max) = self.max_pending_publishes {
            config.max_pending_publishes = max;
        }
        if let Some(echo) = self.echo {
            config.echo = echo;
        }
        config
    }
}

impl HubSettings {
    fn config(&self) -> HubConfig {
        let mut config = HubConfig::default();
        config.keys = self
            .keys
            .iter()
            .map(|k| ApiKey {
                name: k.name.clone(),
                secret: k.secret.clone(),
                capabilities: k.capabilities.clone(),
            })
            .collect();
        if let Some(v) = self.retention_count {
            config.retention_count = v;
        }
        if let Some(v) = self.max_pending_bytes {
            config.max_pending_bytes = v;
        }
        if let Some(v) = self.max_connections {
            config.max_connections = v;
        }
        if let Some(v) = self.max_channels_per_session {
            config.max_channels_per_session = v;
        }
        config
    }
}

fn apply_client(
    client: &mut Client,
    now: Time,
    input: &ClientInput,
) -> Result<Option<Value>, String> {
    Ok(match input {
        ClientInput::Connect => {
            client.connect(now);
            None
        }
        ClientInput::RetryNow => {
            client.retry_now(now);
            None
        }
        ClientInput::Close => {
            client.close(now);
            None
        }
        ClientInput::Timeout => {
            client.handle_timeout(now);
            None
        }
        ClientInput::Ping => Some(returned(client.ping(now).map(|id| json(&id)))),
        ClientInput::TransportOpen { transport } => {
            client.handle_transport_open(now, TransportId(*transport));
            None
        }
        ClientInput::TransportClosed { transport, reason } => {
            client.handle_transport_closed(now, TransportId(*transport), reason.clone());
            None
        }
        ClientInput::TransportBlocked { transport, reason } => {
            client.handle_transport_blocked(now, TransportId(*transport), reason.clone());
            None
        }
        ClientInput::Receive {
            transport,
            hex: bytes,
            ..
        } => {
            let bytes = hex::decode(bytes).map_err(|e| format!("hex: {e}"))?;
            client.handle_transport_bytes(now, TransportId(*transport), Bytes::from(bytes));
            None
        }
        ClientInput::Attach { channel: name } => Some(returned(
            client.attach(now, channel(name)?).map(|()| Value::Null),
        )),
        ClientInput::Detach { channel: name } => {
            client.detach(now, &channel(name)?);
            None
        }
        ClientInput::Publish {
            channel: name,
            messages,
        } => {
            let messages = messages
                .iter()
                .map(|m| {
                    Ok(NewMessage {
                        id: m
                            .id
                            .clone()
                            .map(MessageId::new)
                            .transpose()
                            .map_err(|e| e.to_string())?,
                        name: m.name.clone(),
                        data: Bytes::from(hex::decode(&m.data).map_err(|e| e.to_string())?),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Some(returned(
                client
                    .publish(now, channel(name)?, messages)
                    .map(|id| json(&id)),
            ))
        }
        ClientInput::History {
            channel: name,
            query,
        } => Some(returned(
            client
                .history(now, channel(name)?, *query)
                .map(|id| json(&id)),
        )),
        ClientInput::ProvideToken { token } => {
            client.provide_token(now, token.clone());
            None
        }
        ClientInput::TokenUnavailable { reason } => {
            client.token_unavailable(now, reason.clone());
            None
        }
        ClientInput::TokenRefused { reason } => {
            client.token_refused(now, reason.clone());
            None
        }
    })
}

fn client_output(output: Output) -> Value {
    match output {
        Output::OpenTransport { transport, kind } => {
            let kind = match kind {
                tether_core::client::TransportKind::WebSocket => "websocket",
                tether_core::client::TransportKind::HttpStream => "http_stream",
            };
            serde_json::json!({"open_transport": {"transport": transport, "kind": kind}})
        }
        Output::Transmit { transport, bytes } => {
            let frame = wire::decode::<ClientFrame>(&bytes, &Limits::PROTOCOL_MAX)
                .map(|f| json(&f))
                .unwrap_or(Value::Null);
            serde_json::json!({"transmit": {"transport": transport, "frame": frame, "hex": hex::encode(&bytes)}})
        }
        Output::CloseTransport { transport, reason } => {
            serde_json::json!({"close_transport": {"transport": transport, "reason": json(&reason)}})
        }
        Output::Event(event) => serde_json::json!({"event": json(&event)}),
    }
}

fn hub_output(output: HubOutput) -> Value {
    match output {
        HubOutput::Transmit { connection, bytes } => {
            let frame = wire::decode::<ServerFrame>(&bytes, &Limits::PROTOCOL_MAX)
                .map(|f| json(&f))
                .unwrap_or(Value::Null);
            serde_json::json!({"transmit": {"connection": connection, "frame": frame, "hex": hex::encode(&bytes)}})
        }
        HubOutput::Close { connection, reason } => {
            serde_json::json!({"close": {"connection": connection, "reason": json(&reason)}})
        }
        HubOutput::Event(event) => serde_json::json!({"event": json(&event)}),
        HubOutput::Storage(request) => serde_json::json!({"storage": format!("{request:?}")}),
        HubOutput::Api { id, answer } => {
            serde_json::json!({"api": format!("{id:?}: {answer:?}")})
        }
        HubOutput::Hook { id, request } => {
            serde_json::json!({"hook": format!("{id:?}: {request:?}")})
        }
    }
}

fn apply_hub(hub: &mut Hub, now: Timestamp, input: &HubInput) -> Result<Option<Value>, String> {
    Ok(match input {
        HubInput::Accept => Some(returned(Ok(json(&hub.accept(now))))),
        HubInput::Timeout => {
            hub.handle_timeout(now);
            None
        }
        HubInput::Shutdown => {
            hub.shutdown(now);
            None
        }
        HubInput::Receive {
            connection,
            hex: bytes,
            ..
        } => {
            let bytes = hex::decode(bytes).map_err(|e| format!("hex: {e}"))?;
            hub.handle_bytes(now, ConnectionId(*connection), Bytes::from(bytes));
            None
        }
        HubInput::Written { connection, bytes } => {
            hub.handle_written(now, ConnectionId(*connection), *bytes);
            None
        }
        HubInput::Closed { connection } => {
            hub.handle_closed(now, ConnectionId(*connection));
            None
        }
    })
}

impl BehaviourVector {
    /// Refuses a vector that would check nothing, or not what it says: settings and steps
    /// of the other machine, no steps, or steps that record neither an output nor a deadline.
    pub fn validate(&self) -> Result<(), String> {
        let (own_settings, own_steps, other_settings, other_steps, name) = match self.machine {
            Machine::Client => (
                self.client.is_some(),
                self.client_steps.len(),
                self.hub.is_some(),
                self.hub_steps.len(),
                "client",
            ),
            Machine::Hub => (
                self.hub.is_some(),
                self.hub_steps.len(),
                self.client.is_some(),
                self.client_steps.len(),
                "hub",
            ),
        };
        let other = if name == "client" { "hub" } else { "client" };
        if !own_settings {
            return Err(format!("a {name} vector needs `{name}` settings"));
        }
        if other_settings || other_steps > 0 {
            return Err(format!(
                "a {name} vector has `{other}` settings or `{other}_steps`: it would not check them (relabelled?)"
            ));
        }
        if own_steps == 0 {
            return Err(format!(
                "a {name} vector without `{name}_steps` checks nothing"
            ));
        }
        let checks_something = match self.machine {
            Machine::Client => self
                .client_steps
                .iter()
                .any(|s| !s.outputs.is_empty() || s.next_deadline_ms.is_some()),
            Machine::Hub => self
                .hub_steps
                .iter()
                .any(|s| !s.outputs.is_empty() || s.next_deadline_ms.is_some()),
        };
        if !checks_something {
            return Err(format!(
                "no step of this {name} vector records an output or a deadline: it checks nothing"
            ));
        }
        Ok(())
    }

    /// Runs the vector's inputs and returns it with the outputs and deadlines they produced.
    pub fn execute(&self) -> Result<BehaviourVector, String> {
        let seed = seed_of(&self.seed)?;
        let mut out = self.clone();
        match self.machine {
            Machine::Client => {
                let settings = self
                    .client
                    .as_ref()
                    .ok_or("a client vector needs client settings")?;
                let mut client = Client::new(settings.config(), seed);
                for step in &mut out.client_steps {
                    let now = Time::from_millis(step.at_ms);
                    let mut outputs: Vec<Value> = apply_client(&mut client, now, &step.input)?
                        .into_iter()
                        .collect();
                    while let Some(output) = client.poll_output() {
                        outputs.push(client_output(output));
                    }
                    step.outputs = outputs;
                    step.next_deadline_ms = client.poll_timeout().map(Time::as_millis);
                }
            }
            Machine::Hub => {
                let settings = self.hub.as_ref().ok_or("a hub vector needs hub settings")?;
                let mut hub = Hub::new(settings.config(), seed);
                for step in &mut out.hub_steps {
                    let unix_ms = step.unix_ms.ok_or("hub steps need unix_ms")?;
                    let now = Timestamp::new(Time::from_millis(step.at_ms), unix_ms);
                    let mut outputs: Vec<Value> =
                        apply_hub(&mut hub, now, &step.input)?.into_iter().collect();
                    while let Some(output) = hub.poll_output() {
                        outputs.push(hub_output(output));
                    }
                    step.outputs = outputs;
                    step.next_deadline_ms = hub.poll_timeout().map(Time::as_millis);
                }
            }
        }
        Ok(out)
    }

    /// Checks that running the inputs gives exactly the recorded outputs and deadlines.
    pub fn check(&self) -> Result<(), String> {
        self.validate()?;
        let actual = self.execute()?;
        let expected = self.recorded();
        let got = actual.recorded();
        for (index, (want, have)) in expected.iter().zip(&got).enumerate() {
            if want.1 != have.1 {
                return Err(format!(
                    "step {index} (at {} ms): expected outputs {}, got {}",
                    want.0,
                    serde_json::to_string(want.1).unwrap_or_default(),
                    serde_json::to_string(have.1).unwrap_or_default()
                ));
            }
            if want.2 != have.2 {
                return Err(format!(
                    "step {index} (at {} ms): expected next deadline {:?}, got {:?}",
                    want.0, want.2, have.2
                ));
            }
        }
        Ok(())
    }
}

/// What a step recorded: its time, outputs and next deadline.
type Recorded<'a> = (u64, &'a Vec<Value>, Option<u64>);

impl BehaviourVector {
    fn recorded(&self) -> Vec<Recorded<'_>> {
        match self.machine {
            Machine::Client => self
                .client_steps
                .iter()
                .map(|s| (s.at_ms, &s.outputs, s.next_deadline_ms))
                .collect(),
            Machine::Hub => self
                .hub_steps
                .iter()
                .map(|s| (s.at_ms, &s.outputs, s.next_deadline_ms))
                .collect(),
        }
    }
}

/// Reads one behaviour vector file.
pub fn load(path: &Path) -> Result<BehaviourVector, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a behaviour vector: {e}"))
}
