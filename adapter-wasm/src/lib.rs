//! The tether browser client's core: `tether-core`'s client state machine, compiled to
//! wasm32 and driven by the TypeScript package in `adapter-wasm/js/` (`docs/protocol.md` §6).
//!
//! Like every adapter, this one only carries inputs in and outputs out: the TypeScript side
//! reads the clock (`performance.now()`), runs the timers (`setTimeout`), opens the
//! transports (the browser's `WebSocket`, or `fetch` for the HTTP binding of §2.5) and
//! hands the seed (`crypto.getRandomValues`) to [`Core::new`]. Every protocol decision —
//! authentication, heartbeats, acknowledgements, resume, backoff, the fallback choice — is
//! the core's, the very state machine the Rust clients run.
//!
//! Values cross to JavaScript as plain objects (see [`Core::take_outputs`]); 64-bit epochs
//! travel as decimal strings, serials and times as numbers (exact up to 2^53).

use bytes::{Bytes, BytesMut};
use js_sys::{Array, Object, Reflect, Uint8Array};
use tether_core::Seed;
use tether_core::client::{
    Auth, Client, ClientConfig, ConnectionState, Event, NewMessage, Output, TokenReason,
    TransportId, TransportKind,
};
use tether_core::embed::MillisOrigin;
use tether_core::error::ErrorInfo;
use tether_core::time::Time;
use tether_core::wire::http::{self as binding, DownDecoder, DownItem, Mark};
use tether_core::wire::{
    ChannelMessage, ChannelName, ClientId, Continuity, Direction, HistoryBound, HistoryQuery,
    Limits, MessageId, Position,
};
use wasm_bindgen::prelude::*;

/// A client connection's state machine, driven from JavaScript.
///
/// Every method takes `now`: a `performance.now()` reading in milliseconds. After any call,
/// the caller takes the outputs ([`take_outputs`](Core::take_outputs)) and carries them out,
/// then sleeps until [`timeout_in`](Core::timeout_in) and calls [`timeout`](Core::timeout).
#[wasm_bindgen]
pub struct Core {
    client: Client,
    origin: MillisOrigin,
}

/// An `Error` whose `code` is a stable tether error code (e.g. `invalid_channel_name`) and
/// whose `number` is its number (`docs/protocol.md` §8).
fn error_value(error: &ErrorInfo) -> JsValue {
    let value = js_sys::Error::new(&error.message);
    set(&value, "code", &JsValue::from_str(error.code.name()));
    set(&value, "number", &JsValue::from(error.code as u32));
    value.into()
}

/// `{ code, number, message }`: an error as data, inside events.
fn error_object(error: &ErrorInfo) -> JsValue {
    let value = Object::new();
    set(&value, "code", &JsValue::from_str(error.code.name()));
    set(&value, "number", &JsValue::from(error.code as u32));
    set(&value, "message", &JsValue::from_str(&error.message));
    value.into()
}

fn set(target: &JsValue, key: &str, value: &JsValue) {
    // Setting a property of a plain object made here cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

fn get(source: &JsValue, key: &str) -> JsValue {
    Reflect::get(source, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn object(pairs: &[(&str, JsValue)]) -> JsValue {
    let value: JsValue = Object::new().into();
    for (key, item) in pairs {
        set(&value, key, item);
    }
    value
}

fn bad_request(message: impl Into<String>) -> JsValue {
    error_value(&ErrorInfo::new(
        tether_core::error::ErrorCode::BadRequest,
        message,
    ))
}

/// `{ epoch: "decimal", serial }`.
fn position_value(position: Position) -> JsValue {
    object(&[
        ("epoch", JsValue::from_str(&position.epoch.to_string())),
        ("serial", JsValue::from(position.serial as f64)),
    ])
}

fn position_from(value: &JsValue) -> Result<Position, JsValue> {
    let epoch = get(value, "epoch")
        .as_string()
        .and_then(|e| e.parse::<u64>().ok())
        .ok_or_else(|| bad_request("a position's epoch is a decimal string"))?;
    let serial = get(value, "serial")
        .as_f64()
        .filter(|s| *s >= 0.0 && s.fract() == 0.0 && *s <= 9_007_199_254_740_991.0)
        .ok_or_else(|| bad_request("a position's serial is a whole number"))?;
    Ok(Position {
        epoch,
        serial: serial as u64,
    })
}

fn state_name(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Initialized => "initialized",
        ConnectionState::Connecting => "connecting",
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
        ConnectionState::Suspended => "suspended",
        ConnectionState::Closing => "closing",
        ConnectionState::Closed => "closed",
        ConnectionState::Failed => "failed",
        _ => "unknown",
    }
}

fn message_value(channel: &ChannelName, message: &ChannelMessage) -> JsValue {
    object(&[
        ("channel", JsValue::from_str(channel.as_str())),
        ("id", JsValue::from_str(message.message.id.as_str())),
        ("name", JsValue::from_str(&message.message.name)),
        (
            "data",
            Uint8Array::from(message.message.data.as_ref()).into(),
        ),
        ("publisher", JsValue::from_str(message.publisher.as_str())),
        ("position", position_value(message.position)),
        ("timestamp", JsValue::from(message.timestamp_ms as f64)),
    ])
}

fn bound_value(bound: HistoryBound) -> JsValue {
    match bound {
        HistoryBound::Position(position) => object(&[("position", position_value(position))]),
        HistoryBound::Time(ms) => object(&[("time", JsValue::from(ms as f64))]),
    }
}

fn bound_from(value: &JsValue) -> Result<Option<HistoryBound>, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let position = get(value, "position");
    if !position.is_undefined() {
        return Ok(Some(HistoryBound::Position(position_from(&position)?)));
    }
    let time = get(value, "time")
        .as_f64()
        .filter(|t| *t >= 0.0 && t.fract() == 0.0)
        .ok_or_else(|| bad_request("a history bound is { position } or { time } (Unix ms)"))?;
    Ok(Some(HistoryBound::Time(time as u64)))
}

/// `{ start?, end?, direction: "backwards" | "forwards", limit }`.
fn query_value(query: &HistoryQuery) -> JsValue {
    let value = object(&[
        (
            "direction",
            JsValue::from_str(match query.direction {
                Direction::Backwards => "backwards",
                Direction::Forwards => "forwards",
            }),
        ),
        ("limit", JsValue::from(query.limit)),
    ]);
    if let Some(start) = query.start {
        set(&value, "start", &bound_value(start));
    }
    if let Some(end) = query.end {
        set(&value, "end", &bound_value(end));
    }
    value
}

fn query_from(value: &JsValue) -> Result<HistoryQuery, JsValue> {
    let mut query = HistoryQuery::default();
    if value.is_undefined() || value.is_null() {
        return Ok(query);
    }
    query.start = bound_from(&get(value, "start"))?;
    query.end = bound_from(&get(value, "end"))?;
    query.direction = match get(value, "direction").as_string().as_deref() {
        None | Some("backwards") => Direction::Backwards,
        Some("forwards") => Direction::Forwards,
        Some(_) => return Err(bad_request("direction is \"backwards\" or \"forwards\"")),
    };
    let limit = get(value, "limit");
    if !limit.is_undefined() {
        query.limit = limit
            .as_f64()
            .filter(|l| *l >= 0.0 && l.fract() == 0.0 && *l <= f64::from(u32::MAX))
            .ok_or_else(|| bad_request("limit is a whole number"))? as u32;
    }
    Ok(query)
}

fn event_value(event: Event) -> JsValue {
    let with_type = |kind: &str, pairs: &[(&str, JsValue)]| {
        let value = object(pairs);
        set(&value, "type", &JsValue::from_str(kind));
        value
    };
    let optional_error =
        |error: Option<ErrorInfo>| error.as_ref().map_or(JsValue::UNDEFINED, error_object);
    match event {
        Event::StateChanged {
            previous,
            current,
            reason,
        } => with_type(
            "statechange",
            &[
                ("previous", JsValue::from_str(state_name(previous))),
                ("current", JsValue::from_str(state_name(current))),
                ("reason", optional_error(reason)),
            ],
        ),
        Event::Update { reason } => with_type("update", &[("reason", error_object(&reason))]),
        Event::TokenRequired { reason } => with_type(
            "token",
            &[(
                "reason",
                JsValue::from_str(match reason {
                    TokenReason::Initial => "initial",
                    TokenReason::Renewal => "renewal",
                    TokenReason::Expired => "expired",
                }),
            )],
        ),
        Event::PublishResolved { id, result } => with_type(
            "publish",
            &[
                ("id", JsValue::from(id.0 as f64)),
                ("error", optional_error(result.err())),
            ],
        ),
        Event::Attached {
            channel,
            position,
            continuity,
        } => with_type(
            "attached",
            &[
                ("channel", JsValue::from_str(channel.as_str())),
                ("position", position_value(position)),
                (
                    "continuity",
                    JsValue::from_str(match continuity {
                        Continuity::Fresh => "fresh",
                        Continuity::Continuous => "continuous",
                        _ => "gap",
                    }),
                ),
            ],
        ),
        Event::Detached { channel, error } => with_type(
            "detached",
            &[
                ("channel", JsValue::from_str(channel.as_str())),
                ("error", optional_error(error)),
            ],
        ),
        Event::Message { channel, message } => {
            with_type("message", &[("message", message_value(&channel, &message))])
        }
        Event::Discontinuity {
            channel,
            last,
            resumed_after,
            reason,
        } => with_type(
            "discontinuity",
            &[
                ("channel", JsValue::from_str(channel.as_str())),
                ("last", last.map_or(JsValue::UNDEFINED, position_value)),
                ("resumedAfter", position_value(resumed_after)),
                ("reason", optional_error(reason)),
            ],
        ),
        Event::HistoryPage {
            id,
            channel,
            result,
        } => {
            let value = with_type(
                "history",
                &[
                    ("id", JsValue::from(id.0 as f64)),
                    ("channel", JsValue::from_str(channel.as_str())),
                ],
            );
            match result {
                Ok(page) => {
                    let messages: Array = page
                        .messages
                        .iter()
                        .map(|m| message_value(&channel, m))
                        .collect();
                    set(&value, "messages", &messages);
                    if let Some(next) = page.next {
                        set(&value, "next", &query_value(&next));
                    }
                }
                Err(error) => set(&value, "error", &error_object(&error)),
            }
            value
        }
        Event::Pong { id, result } => with_type(
            "pong",
            &[
                ("id", JsValue::from(id.0 as f64)),
                (
                    "rtt",
                    result.as_ref().map_or(JsValue::UNDEFINED, |rtt| {
                        JsValue::from(rtt.as_millis() as f64)
                    }),
                ),
                ("error", optional_error(result.err())),
            ],
        ),
        _ => with_type("other", &[]),
    }
}

#[wasm_bindgen]
impl Core {
    /// A client in state `initialized`.
    ///
    /// - `seed`: 32 random bytes (`crypto.getRandomValues`); every random choice of the
    ///   client (backoff jitter, message ids) comes from it.
    /// - `now`: a `performance.now()` reading (ms); the core's time starts there.
    /// - `options`: `{ apiKey?: { name, secret }, clientId?, echo?, fallback?,
    ///   websocketTimeout?, probeInterval?, httpOnly? }` (durations in ms). Without an
    ///   `apiKey` the client uses tokens: it asks for them with `token` events.
    ///
    /// Throws an `Error` with `code` `bad_request` for a seed that is not 32 bytes or bad
    /// options.
    #[wasm_bindgen(constructor)]
    pub fn new(seed: &[u8], now: f64, options: JsValue) -> Result<Core, JsValue> {
        let seed: Seed = seed
            .try_into()
            .map_err(|_| bad_request("the seed is 32 bytes"))?;
        let key = get(&options, "apiKey");
        let auth = if key.is_undefined() || key.is_null() {
            Auth::Token
        } else {
            match (
                get(&key, "name").as_string(),
                get(&key, "secret").as_string(),
            ) {
                (Some(name), Some(secret)) => Auth::ApiKey { name, secret },
                _ => return Err(bad_request("apiKey is { name, secret }")),
            }
        };
        let mut config = ClientConfig::new(auth);
        if let Some(id) = get(&options, "clientId").as_string() {
            config.client_id = Some(ClientId::new(id).map_err(|e| error_value(&e))?);
        }
        if let Some(echo) = get(&options, "echo").as_bool() {
            config.echo = echo;
        }
        if let Some(enabled) = get(&options, "fallback").as_bool() {
            config.fallback.enabled = enabled;
        }
        if let Some(http_only) = get(&options, "httpOnly").as_bool() {
            config.fallback.http_only = http_only;
        }
        let millis = |key: &str| -> Result<Option<std::time::Duration>, JsValue> {
            let value = get(&options, key);
            if value.is_undefined() {
                return Ok(None);
            }
            value
                .as_f64()
                .filter(|ms| *ms > 0.0 && ms.fract() == 0.0)
                .map(|ms| Some(std::time::Duration::from_millis(ms as u64)))
                .ok_or_else(|| bad_request(format!("{key} is a whole number of milliseconds")))
        };
        if let Some(timeout) = millis("websocketTimeout")? {
            config.fallback.websocket_timeout = timeout;
        }
        if let Some(interval) = millis("probeInterval")? {
            config.fallback.probe_interval = interval;
        }
        Ok(Core {
            client: Client::new(config, seed),
            origin: MillisOrigin::new(now),
        })
    }

    fn at(&self, now: f64) -> Time {
        self.origin.time_at(now)
    }

    /// Starts connecting (also after `failed` or `closed`).
    pub fn connect(&mut self, now: f64) {
        let now = self.at(now);
        self.client.connect(now);
    }

    /// Retries at once instead of waiting for the backoff (the browser's `online` event).
    #[wasm_bindgen(js_name = retryNow)]
    pub fn retry_now(&mut self, now: f64) {
        let now = self.at(now);
        self.client.retry_now(now);
    }

    /// Closes the connection on the application's request.
    pub fn close(&mut self, now: f64) {
        let now = self.at(now);
        self.client.close(now);
    }

    /// Attaches a channel (answered by an `attached` or `detached` event). Throws for a bad
    /// channel name (`invalid_channel_name`) or a client that cannot attach now.
    pub fn attach(&mut self, now: f64, channel: &str) -> Result<(), JsValue> {
        let now = self.at(now);
        let name = ChannelName::new(channel).map_err(|e| error_value(&e))?;
        self.client.attach(now, name).map_err(|e| error_value(&e))
    }

    /// Detaches a channel.
    pub fn detach(&mut self, now: f64, channel: &str) -> Result<(), JsValue> {
        let now = self.at(now);
        let name = ChannelName::new(channel).map_err(|e| error_value(&e))?;
        self.client.detach(now, &name);
        Ok(())
    }

    /// Publishes one message; its id (a number) comes back in a `publish` event once the
    /// hub acknowledged it (no `error`) or it failed. `id` is the application's message id
    /// (stable across retries; the hub drops duplicates), or made by the client when absent.
    /// Throws for a bad channel name or id, or a full publish queue (`limit_exceeded`).
    pub fn publish(
        &mut self,
        now: f64,
        channel: &str,
        name: &str,
        data: &[u8],
        id: Option<String>,
    ) -> Result<f64, JsValue> {
        let now = self.at(now);
        let channel = ChannelName::new(channel).map_err(|e| error_value(&e))?;
        let mut message = NewMessage::new(name, Bytes::copy_from_slice(data));
        if let Some(id) = id {
            message.id = Some(MessageId::new(id).map_err(|e| error_value(&e))?);
        }
        self.client
            .publish(now, channel, vec![message])
            .map(|id| id.0 as f64)
            .map_err(|e| error_value(&e))
    }

    /// Asks for a page of history; its id (a number) comes back in a `history` event.
    /// `query`: `{ start?, end?, direction?, limit? }` (bounds are `{ position }` or
    /// `{ time }` in Unix ms; default: the newest 100, newest first).
    pub fn history(&mut self, now: f64, channel: &str, query: JsValue) -> Result<f64, JsValue> {
        let now = self.at(now);
        let channel = ChannelName::new(channel).map_err(|e| error_value(&e))?;
        let query = query_from(&query)?;
        self.client
            .history(now, channel, query)
            .map(|id| id.0 as f64)
            .map_err(|e| error_value(&e))
    }

    /// A token, answering a `token` event.
    #[wasm_bindgen(js_name = provideToken)]
    pub fn provide_token(&mut self, now: f64, token: String) {
        let now = self.at(now);
        self.client.provide_token(now, token);
    }

    /// No token could be had (the callback failed): the client retries later.
    #[wasm_bindgen(js_name = tokenUnavailable)]
    pub fn token_unavailable(&mut self, now: f64, reason: String) {
        let now = self.at(now);
        self.client.token_unavailable(now, reason);
    }

    /// The transport `transport` opened.
    #[wasm_bindgen(js_name = transportOpen)]
    pub fn transport_open(&mut self, now: f64, transport: f64) {
        let now = self.at(now);
        self.client
            .handle_transport_open(now, TransportId(transport as u64));
    }

    /// A frame (one WebSocket message, or one item of the HTTP binding) arrived.
    #[wasm_bindgen(js_name = transportBytes)]
    pub fn transport_bytes(&mut self, now: f64, transport: f64, bytes: &[u8]) {
        let now = self.at(now);
        self.client.handle_transport_bytes(
            now,
            TransportId(transport as u64),
            Bytes::copy_from_slice(bytes),
        );
    }

    /// The transport closed or failed (`reason`, for the logs and the state change).
    #[wasm_bindgen(js_name = transportClosed)]
    pub fn transport_closed(&mut self, now: f64, transport: f64, reason: String) {
        let now = self.at(now);
        self.client
            .handle_transport_closed(now, TransportId(transport as u64), reason);
    }

    /// The WebSocket transport was refused or did not open in time: the client may fall
    /// back to the HTTP binding (§6.10).
    #[wasm_bindgen(js_name = transportBlocked)]
    pub fn transport_blocked(&mut self, now: f64, transport: f64, reason: String) {
        let now = self.at(now);
        self.client
            .handle_transport_blocked(now, TransportId(transport as u64), reason);
    }

    /// Call when [`timeout_in`](Core::timeout_in) has passed.
    pub fn timeout(&mut self, now: f64) {
        let now = self.at(now);
        self.client.handle_timeout(now);
    }

    /// Milliseconds from `now` until the next call to [`timeout`](Core::timeout) is due
    /// (`undefined`: none).
    #[wasm_bindgen(js_name = timeoutIn)]
    pub fn timeout_in(&self, now: f64) -> Option<f64> {
        self.client
            .poll_timeout()
            .map(|deadline| self.origin.wait_ms(now, deadline))
    }

    /// The connection state: `initialized`, `connecting`, `connected`, `disconnected`,
    /// `suspended`, `closing`, `closed` or `failed` (§6.2).
    pub fn state(&self) -> String {
        state_name(self.client.state()).to_owned()
    }

    /// What to do now, in order:
    /// - `{ kind: "open", transport, http }`: open a transport (`http`: the HTTP binding,
    ///   §2.5; else a WebSocket) and report it with `transportOpen`/`transportClosed`;
    /// - `{ kind: "send", transport, bytes }`: send one frame;
    /// - `{ kind: "close", transport }`: close it, the client no longer uses it;
    /// - `{ kind: "event", event }`: tell the application (`event.type`: `statechange`,
    ///   `update`, `token`, `publish`, `attached`, `detached`, `message`, `discontinuity`,
    ///   `history`, `pong`).
    #[wasm_bindgen(js_name = takeOutputs)]
    pub fn take_outputs(&mut self) -> Array {
        let outputs = Array::new();
        while let Some(output) = self.client.poll_output() {
            let value = match output {
                Output::OpenTransport { transport, kind } => object(&[
                    ("kind", JsValue::from_str("open")),
                    ("transport", JsValue::from(transport.0 as f64)),
                    (
                        "http",
                        JsValue::from_bool(kind == TransportKind::HttpStream),
                    ),
                ]),
                Output::Transmit { transport, bytes } => object(&[
                    ("kind", JsValue::from_str("send")),
                    ("transport", JsValue::from(transport.0 as f64)),
                    ("bytes", Uint8Array::from(bytes.as_ref()).into()),
                ]),
                Output::CloseTransport { transport, reason } => object(&[
                    ("kind", JsValue::from_str("close")),
                    ("transport", JsValue::from(transport.0 as f64)),
                    ("reason", JsValue::from_str(&reason.message)),
                ]),
                Output::Event(event) => object(&[
                    ("kind", JsValue::from_str("event")),
                    ("event", event_value(event)),
                ]),
            };
            outputs.push(&value);
        }
        outputs
    }
}

/// The body of an up request of the HTTP binding (§2.5): `frames`, stream-framed, in order.
#[wasm_bindgen(js_name = upBody)]
pub fn up_body(frames: Array) -> Uint8Array {
    let mut body = BytesMut::new();
    for frame in frames.iter() {
        let frame = Uint8Array::new(&frame).to_vec();
        binding::put_frame(&mut body, &frame);
    }
    Uint8Array::from(body.as_ref())
}

/// Reads the items of down responses of the HTTP binding (§2.5) as their bytes come.
#[wasm_bindgen]
pub struct DownReader(DownDecoder);

impl Default for DownReader {
    fn default() -> DownReader {
        DownReader::new()
    }
}

#[wasm_bindgen]
impl DownReader {
    /// A reader for frames within the protocol's largest frame.
    #[wasm_bindgen(constructor)]
    pub fn new() -> DownReader {
        DownReader(DownDecoder::new(
            Limits::PROTOCOL_MAX.for_hub_frames().max_frame_size,
        ))
    }

    /// More bytes of the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.0.push(bytes);
    }

    /// The next whole item: a frame (`Uint8Array`), the string `"open"` or `"end"` (the
    /// binding's marks), or `undefined` until more bytes come. Throws (`malformed_frame`)
    /// for a body that breaks the framing.
    #[wasm_bindgen(js_name = next)]
    pub fn next_item(&mut self) -> Result<JsValue, JsValue> {
        match self.0.next_item() {
            Ok(Some(DownItem::Frame(frame))) => Ok(Uint8Array::from(frame.as_ref()).into()),
            Ok(Some(DownItem::Mark(Mark::Open))) => Ok(JsValue::from_str("open")),
            Ok(Some(DownItem::Mark(Mark::End))) => Ok(JsValue::from_str("end")),
            Ok(None) => Ok(JsValue::UNDEFINED),
            Err(error) => Err(error_value(&ErrorInfo::new(
                tether_core::error::ErrorCode::MalformedFrame,
                error.to_string(),
            ))),
        }
    }
}
