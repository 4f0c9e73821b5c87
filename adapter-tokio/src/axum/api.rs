//! The server-side API over HTTP with JSON (`docs/http-api.md`, `openapi.yaml`): publish,
//! history and channels for backends in any language, authenticated by an API key in the
//! `X-Tether-Key: name:secret` header (never in the URL), with the key's capabilities.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};
use serde::{Deserialize, Serialize};
use tether_core::server::auth::constant_time_eq;

use crate::{
    ApiKey, ChannelMessage, Direction, Error, ErrorCode, ErrorInfo, HistoryBound, HistoryQuery,
    Message, MessageId, Operation, Position, Service,
};

/// Base64 as RFC 4648 with padding, not refusing non-zero bits after the last byte (as
/// most encoders' output is accepted elsewhere).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The header that carries the API key.
pub const KEY_HEADER: &str = "x-tether-key";
/// The largest request body taken, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// The server-side API's routes, to merge into an axum router: `POST /api/publish`,
/// `GET /api/history`, `GET /api/channels`, `POST /api/revoke`, `POST /api/disconnect` and
/// `GET /api/openapi.yaml` (the OpenAPI document). Each request needs
/// `X-Tether-Key: name:secret` naming one of `keys`; the key's capabilities decide what it
/// may publish to and read (`channels` lists what it has any capability on; `revoke` and
/// `disconnect` need every operation on `*`).
pub fn api_routes<S>(service: Service, keys: Vec<ApiKey>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let state = ApiState {
        service,
        keys: std::sync::Arc::new(keys),
    };
    axum::Router::new()
        .route("/api/publish", post(publish))
        .route("/api/history", get(history))
        .route("/api/channels", get(channels))
        .route("/api/revoke", post(revoke))
        .route("/api/disconnect", post(disconnect))
        .fallback(|| async {
            ApiError::new(ErrorCode::NotFound, "no such API route").into_response()
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(ErrorBody {
                    error: ErrorJson {
                        code: ErrorCode::BadRequest.as_u32(),
                        name: ErrorCode::BadRequest.name(),
                        message: "this route does not take that method",
                    },
                }),
            )
                .into_response()
        })
        // Bodies up to the API's own limit reach the handlers, which answer beyond it.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY + 1))
        .route(
            "/api/openapi.yaml",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/yaml")],
                    include_str!("../../openapi.yaml"),
                )
            }),
        )
        .with_state(state)
}

#[derive(Clone)]
struct ApiState {
    service: Service,
    keys: std::sync::Arc<Vec<ApiKey>>,
}

/// An error answer: `{"error": {"code", "name", "message"}}` with the HTTP status of the
/// code's class.
#[derive(Debug)]
struct ApiError(ErrorInfo);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorJson<'a>,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: u32,
    name: &'a str,
    message: &'a str,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ErrorInfo::new(code, message.into()))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Protocol(info) => ApiError(info),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code.as_u32() / 100 {
            401 => StatusCode::UNAUTHORIZED,
            403 => StatusCode::FORBIDDEN,
            404 => StatusCode::NOT_FOUND,
            // The channel's state does not allow it: its epoch changed, or history before
            // the position is no longer kept.
            410 => StatusCode::CONFLICT,
            413 => StatusCode::PAYLOAD_TOO_LARGE,
            429 => StatusCode::TOO_MANY_REQUESTS,
            500 => StatusCode::INTERNAL_SERVER_ERROR,
            503 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = ErrorBody {
            error: ErrorJson {
                code: self.0.code.as_u32(),
                name: self.0.code.name(),
                message: &self.0.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The key the request names, if its secret matches; a refusal is counted in the
/// `auth_failures` metric.
fn authenticate<'a>(state: &'a ApiState, headers: &HeaderMap) -> Result<&'a ApiKey, ApiError> {
    let refused = || {
        state
            .service
            .count_auth_failure(ErrorCode::InvalidCredentials);
        ApiError::new(
            ErrorCode::InvalidCredentials,
            "give one valid API key in the X-Tether-Key header, as name:secret",
        )
    };
    let mut values = headers.get_all(KEY_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(refused());
    };
    let Some((name, secret)) = value.to_str().ok().and_then(|v| v.split_once(':')) else {
        return Err(refused());
    };
    state
        .keys
        .iter()
        .find(|key| key.name == name && constant_time_eq(key.secret.as_bytes(), secret.as_bytes()))
        .ok_or_else(refused)
}

fn allow(key: &ApiKey, channel: &str, operation: Operation) -> Result<(), ApiError> {
    let name = crate::ChannelName::new(channel).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidChannelName,
            format!("channel {channel:?}: {e}"),
        )
    })?;
    if key.capabilities.allows(&name, operation) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the key may not {operation:?} on {channel:?}").to_lowercase(),
        ))
    }
}

/// How a message's `data` is written in JSON.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
enum Encoding {
    /// Text, as is.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// Bytes, base64 (RFC 4648, with padding).
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    #[serde(default = "default_publisher")]
    publisher: String,
    messages: Vec<NewMessageJson>,
}

fn default_publisher() -> String {
    "server".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessageJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Serialize)]
struct PositionJson {
    /// A decimal string: epochs are 64-bit, beyond what JSON numbers hold exactly.
    epoch: String,
    serial: u64,
}

impl From<Position> for PositionJson {
    fn from(position: Position) -> PositionJson {
        PositionJson {
            epoch: position.epoch.to_string(),
            serial: position.serial,
        }
    }
}

#[derive(Serialize)]
struct PublishedJson {
    id: String,
    /// `null` for a duplicate of a message stored within the dedupe window.
    position: Option<PositionJson>,
}

#[derive(Serialize)]
struct PublishAnswer {
    messages: Vec<PublishedJson>,
}

/// A random message id, for messages given without one (not idempotent, then).
fn fresh_id() -> Result<MessageId, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("no random id: {e}")))?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    MessageId::new(format!("api-{text}"))
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("id: {e}")))
}

/// The body, or the JSON error for one over the limit or cut short.
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::FrameTooLarge,
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    match body {
        Ok(body) if body.len() <= MAX_BODY => Ok(body),
        Ok(_) => Err(too_large()),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
        Err(rejection) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("the body: {}", rejection.body_text()),
        )),
    }
}

async fn publish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishAnswer>, ApiError> {
    let key = authenticate(&state, &headers)?;
    let body = body_of(body)?;
    let body: PublishBody = json_object(&body)?;
    allow(key, &body.channel, Operation::Publish)?;
    let mut messages = Vec::with_capacity(body.messages.len());
    for message in body.messages {
        let id = match message.id {
            Some(id) => MessageId::new(id.as_str()).map_err(|e| {
                ApiError::new(ErrorCode::InvalidMessage, format!("message id {id:?}: {e}"))
            })?,
            None => fresh_id()?,
        };
        let data = match message.encoding {
            Encoding::Utf8 => message.data.into_bytes(),
            Encoding::Base64 => LENIENT.decode(message.data.as_bytes()).map_err(|e| {
                ApiError::new(ErrorCode::InvalidMessage, format!("base64 data: {e}"))
            })?,
        };
        if message.name.len() > 256 {
            return Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "a message name is at most 256 bytes",
            ));
        }
        messages.push(Message {
            id,
            name: message.name,
            data: data.into(),
        });
    }
    let published = state
        .service
        .publish(&body.publisher, &body.channel, messages)
        .await?;
    Ok(Json(PublishAnswer {
        messages: published
            .into_iter()
            .map(|p| PublishedJson {
                id: p.id.as_str().to_owned(),
                position: p.position.map(PositionJson::from),
            })
            .collect(),
    }))
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    direction: Option<String>,
    /// `epoch:serial` or `@unix_ms` (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// Likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

/// `epoch:serial` (a position) or `@unix_ms` (a time), both inclusive.
fn bound(text: Option<&str>, which: &str) -> Result<Option<HistoryBound>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidHistoryQuery,
            format!("{which}: a position epoch:serial or a time @unix_ms"),
        )
    };
    let Some(text) = text else {
        return Ok(None);
    };
    if let Some(ms) = text.strip_prefix('@') {
        return Ok(Some(HistoryBound::Time(ms.parse().map_err(|_| bad())?)));
    }
    let (epoch, serial) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(HistoryBound::Position(Position {
        epoch: epoch.parse().map_err(|_| bad())?,
        serial: serial.parse().map_err(|_| bad())?,
    })))
}

fn bound_text(bound: Option<HistoryBound>) -> Option<String> {
    match bound? {
        HistoryBound::Position(p) => Some(p.to_string()),
        HistoryBound::Time(ms) => Some(format!("@{ms}")),
    }
}

fn params_of(channel: &str, query: &HistoryQuery) -> HistoryParams {
    HistoryParams {
        channel: channel.to_owned(),
        limit: Some(query.limit),
        direction: Some(
            match query.direction {
                Direction::Forwards => "forwards",
                Direction::Backwards => "backwards",
            }
            .into(),
        ),
        start: bound_text(query.start),
        end: bound_text(query.end),
    }
}

#[derive(Serialize)]
struct MessageJson {
    id: String,
    name: String,
    data: String,
    encoding: Encoding,
    publisher: String,
    position: PositionJson,
    timestamp_ms: u64,
}

impl From<ChannelMessage> for MessageJson {
    fn from(message: ChannelMessage) -> MessageJson {
        let (data, encoding) = match std::str::from_utf8(&message.message.data) {
            Ok(text) => (text.to_owned(), Encoding::Utf8),
            Err(_) => (BASE64.encode(&message.message.data), Encoding::Base64),
        };
        MessageJson {
            id: message.message.id.as_str().to_owned(),
            name: message.message.name,
            data,
            encoding,
            publisher: message.publisher.as_str().to_owned(),
            position: message.position.into(),
            timestamp_ms: message.timestamp_ms,
        }
    }
}

#[derive(Serialize)]
struct HistoryAnswer {
    messages: Vec<MessageJson>,
    /// The query parameters of the next page, or `null` when there is none.
    next: Option<HistoryParams>,
}

async fn history(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let key = authenticate(&state, &headers)?;
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidHistoryQuery,
            format!("the query: {}", e.body_text()),
        )
    })?;
    allow(key, &params.channel, Operation::History)?;
    let direction = match params.direction.as_deref() {
        None | Some("backwards") => Direction::Backwards,
        Some("forwards") => Direction::Forwards,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidHistoryQuery,
                format!("direction {other:?}: forwards or backwards"),
            ));
        }
    };
    let query = HistoryQuery {
        start: bound(params.start.as_deref(), "start")?,
        end: bound(params.end.as_deref(), "end")?,
        direction,
        limit: params
            .limit
            .unwrap_or(tether_core::wire::DEFAULT_HISTORY_LIMIT),
    };
    let (messages, next) = state.service.history(&params.channel, query).await?;
    Ok(Json(HistoryAnswer {
        messages: messages.into_iter().map(MessageJson::from).collect(),
        next: next.map(|next| params_of(&params.channel, &next)),
    }))
}

#[derive(Serialize)]
struct ChannelJson {
    channel: String,
    position: PositionJson,
    subscribers: usize,
}

#[derive(Serialize)]
struct ChannelsAnswer {
    channels: Vec<ChannelJson>,
}

async fn channels(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ChannelsAnswer>, ApiError> {
    let key = authenticate(&state, &headers)?;
    let mut channels: Vec<ChannelJson> = state
        .service
        .channels()
        .await?
        .into_iter()
        .filter(|c| {
            [Operation::Subscribe, Operation::Publish, Operation::History]
                .iter()
                .any(|op| key.capabilities.allows(&c.channel, *op))
        })
        .map(|c| ChannelJson {
            channel: c.channel.as_str().to_owned(),
            position: c.position.into(),
            subscribers: c.subscribers,
        })
        .collect();
    channels.sort_by(|a, b| a.channel.cmp(&b.channel));
    Ok(Json(ChannelsAnswer { channels }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    issued_before_ms: Option<u64>,
    #[serde(default)]
    expires_at_ms: Option<u64>,
}

#[derive(Serialize)]
struct RevokeAnswer {
    disconnected: usize,
    issued_before_ms: u64,
    expires_at_ms: u64,
}

async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let key = authenticate(&state, &headers)?;
    let body = body_of(body)?;
    administrator(key, "revoking")?;
    let body: RevokeBody = json_object(&body)?;
    let target = match (body.client_id, body.key, body.all) {
        (Some(id), None, false) => {
            crate::RevocationTarget::ClientId(crate::ClientId::new(id.as_str()).map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("client_id {id:?}: {e}"))
            })?)
        }
        (None, Some(name), false) if !name.is_empty() => crate::RevocationTarget::Key(name),
        (None, None, true) => crate::RevocationTarget::All,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "name exactly one of client_id, key (not empty) or all: true",
            ));
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let revocation =
        crate::Revocation::with_defaults(target, now_ms, body.issued_before_ms, body.expires_at_ms);
    let (issued_before_ms, expires_at_ms) = (revocation.issued_before_ms, revocation.expires_at_ms);
    let disconnected = state.service.revoke(revocation).await?;
    Ok(Json(RevokeAnswer {
        disconnected,
        issued_before_ms,
        expires_at_ms,
    }))
}

/// Refuses a key without every operation on `*`, which `what` needs.
fn administrator(key: &ApiKey, what: &str) -> Result<(), ApiError> {
    if key.capabilities.0.get("*").is_some_and(|ops| {
        [Operation::Subscribe, Operation::Publish, Operation::History]
            .iter()
            .all(|op| ops.contains(op))
    }) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{what} needs a key with every operation on `*`"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    client_id: String,
    #[serde(default)]
    reconnect: bool,
}

#[derive(Serialize)]
struct DisconnectAnswer {
    connections: usize,
    sessions: usize,
}

async fn disconnect(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DisconnectAnswer>, ApiError> {
    let key = authenticate(&state, &headers)?;
    let body = body_of(body)?;
    administrator(key, "disconnecting")?;
    let body: DisconnectBody = json_object(&body)?;
    let (connections, sessions) = state
        .service
        .disconnect(&body.client_id, body.reconnect)
        .await?;
    Ok(Json(DisconnectAnswer {
        connections,
        sessions,
    }))
}

/// A JSON object body as `T` (an array is not taken for a struct's fields).
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let refused = |why: String| ApiError::new(ErrorCode::BadRequest, format!("the body: {why}"));
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(refused("a JSON object is expected".into()));
    }
    serde_json::from_slice(body).map_err(|e| refused(e.to_string()))
}
