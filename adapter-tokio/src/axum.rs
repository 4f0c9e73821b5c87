//! tether inside an axum application: its connections on a route of the application's own
//! router, on the application's listener (and its TLS, if it terminates TLS), next to its
//! other routes.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tether_tokio::{HubConfig, Service, ServerConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let service = Service::start(ServerConfig::new(HubConfig::default()))?;
//! let app = Router::new()
//!     .route("/", get(|| async { "the application's own page" }))
//!     .route("/realtime", tether_tokio::axum::websocket(service.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7400").await?;
//! axum::serve(listener, app).await?;
//! service.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The route answers a WebSocket upgrade (`GET`, `Connection: Upgrade`, `Upgrade:
//! websocket`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`) with `101 Switching
//! Protocols` and hands the upgraded socket to [`Service::serve_upgraded`]; it serves the
//! HTTP binding (`docs/protocol.md` §2.5: `POST`, `OPTIONS`, `GET` with
//! `X-Tether-Transport`) for clients whose WebSocket is blocked, through
//! [`Service::serve_binding`]; anything else gets `405 Method Not Allowed`, `426 Upgrade
//! Required` (no upgrade asked) or `400 Bad Request` (no key, another version) — as
//! [`Server`](crate::Server) answers on its own listener. The socket limits and every
//! protocol rule are the service's.

use std::net::SocketAddr;

mod api;
pub use api::{KEY_HEADER, api_routes};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{MethodRouter, any, get};
use hyper_util::rt::TokioIo;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::Service;
use tether_core::wire::http as binding;

/// A route (any method; non-`GET` requests are answered 405) that serves tether
/// connections: mount it at any path of an axum router with `.route(path, …)`. The peer's
/// address reaches the logs when the application is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn websocket<S>(service: Service) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    any(upgrade).with_state(service)
}

/// The operator's routes, to merge into the application's router (or serve on a port of
/// their own): `GET /metrics` (OpenMetrics text, [`Service::metrics`]), `GET /health` (200
/// while the process answers) and `GET /ready` (200 when [`Service::ready`], else 503 with
/// the reason) — what [`Server`](crate::Server) answers on its own listener.
pub fn operator_routes<S>(service: Service) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(service)
}

fn text(code: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn metrics(State(service): State<Service>) -> Response {
    match service.metrics().await {
        Some(body) => {
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub has stopped\n".into(),
        ),
    }
}

async fn health(State(service): State<Service>) -> Response {
    match service.stats().await {
        Some(_) => text(StatusCode::OK, "ok\n".into()),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub has stopped\n".into(),
        ),
    }
}

async fn ready(State(service): State<Service>) -> Response {
    match service.ready().await {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Whether `name`'s comma-separated values contain `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    if code == StatusCode::UPGRADE_REQUIRED {
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    response
}

async fn upgrade(State(service): State<Service>, mut request: Request) -> Response {
    let transport = request.headers().contains_key(binding::TRANSPORT_HEADER);
    if request.method() == Method::OPTIONS {
        let mut response = status(StatusCode::NO_CONTENT);
        for (name, value) in tether_driver::PREFLIGHT_HEADERS {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        return response;
    }
    if request.method() == Method::POST || (request.method() == Method::GET && transport) {
        return serve_binding(service, request).await;
    }
    if request.method() != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let headers = request.headers();
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return status(StatusCode::UPGRADE_REQUIRED);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return status(StatusCode::BAD_REQUEST);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(upgraded) => {
                let stream = TokioIo::new(upgraded).compat();
                service.serve_upgraded(stream, peer).await;
            }
            Err(error) => tracing::debug!(%error, "the WebSocket upgrade did not complete"),
        }
    });
    let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// A request of the HTTP binding (§2.5) on the route: its body read within the service's
/// limit, answered by the service, the down body streamed.
async fn serve_binding(service: Service, request: Request) -> Response {
    let headers = request.headers();
    let text = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Ok(value.to_str().ok().map(str::to_owned)),
            (None, _) => Ok(None),
            // A repeated header is refused, as on the server's own listener.
            (Some(_), Some(_)) => Err(()),
        }
    };
    let (Ok(transport), Ok(seq), Ok(mode)) = (
        text(binding::TRANSPORT_HEADER),
        text(binding::SEQ_HEADER),
        text(binding::MODE_HEADER),
    ) else {
        return binding_status(StatusCode::BAD_REQUEST);
    };
    let binding_request = tether_driver::BindingRequest {
        method: request.method().as_str().to_owned(),
        transport,
        seq,
        mode,
    };
    let limit = service.binding_body_limit();
    let body = if request.method() == Method::GET {
        bytes::Bytes::new()
    } else {
        if has_token(headers, header::TRANSFER_ENCODING, "chunked") {
            return binding_status(StatusCode::BAD_REQUEST);
        }
        let Some(length) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            return binding_status(StatusCode::LENGTH_REQUIRED);
        };
        if length > limit {
            let answer = service.binding_too_large(&binding_request, length).await;
            return binding_response(answer);
        }
        match axum::body::to_bytes(request.into_body(), limit).await {
            Ok(body) => body,
            Err(_) => return binding_status(StatusCode::BAD_REQUEST),
        }
    };
    binding_response(service.serve_binding(binding_request, body).await)
}

fn binding_status(code: StatusCode) -> Response {
    let mut response = status(code);
    for (name, value) in tether_driver::BINDING_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

fn binding_response(answer: tether_driver::BindingAnswer) -> Response {
    let code = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = binding_status(code);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    if let Some(body) = answer.body {
        use futures_util::StreamExt;
        *response.body_mut() =
            Body::from_stream(body.map(Ok::<bytes::Bytes, std::convert::Infallible>));
    }
    response
}

/// Limits of [`serve_bounded`].
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once; beyond, new ones wait in the listener's backlog.
    pub max_connections: usize,
    /// Time a request's head may take to arrive.
    pub header_timeout: std::time::Duration,
    /// The longest a connection lives (keep-alive included): a client that sends slowly or
    /// never closes is cut then.
    pub connection_lifetime: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 256,
            header_timeout: std::time::Duration::from_secs(5),
            connection_lifetime: std::time::Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` (HTTP/1.1) with bounded resources — at most
/// `limits.max_connections` at once, request heads within `limits.header_timeout`, each
/// connection at most `limits.connection_lifetime` — until `stop` resolves; for the HTTP API
/// and operator routes on a port of their own, so idle or slow clients cannot hold the
/// process's file descriptors (`axum::serve` bounds none of these).
pub async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            () = &mut stop => return,
        };
        let Ok(permit) = permit else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed; backing off");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
        });
    }
}
