//! An axum application that serves its own routes and tether on one port (issue 19):
//! `GET /` is the application's page, `GET /api/hello` its API, `/realtime` is tether —
//! clients connect to `ws://127.0.0.1:7400/realtime` — and `/metrics`, `/health`, `/ready`
//! are tether's operator routes.
//!
//! ```sh
//! TETHER_SECRET=app-secret cargo run -p tether-tokio --example axum_app
//! ```
//!
//! Ctrl-C stops accepting, tells connected clients `server_shutting_down`, and exits.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tether_tokio::{ApiKey, Capabilities, HubConfig, ServerConfig, Service};

/// The application's router: its own routes, and tether at `/realtime`.
pub fn app(service: Service) -> Router {
    Router::new()
        .route("/", get(|| async { "the application's own page\n" }))
        .route(
            "/api/hello",
            get(|| async { "hello from the application's API\n" }),
        )
        .route("/realtime", tether_tokio::axum::websocket(service.clone()))
        // /metrics, /health and /ready for the operator.
        .merge(tether_tokio::axum::operator_routes(service))
}

/// A tether service with one API key, `app`, whose secret is `secret`.
pub fn service(secret: String) -> std::io::Result<Service> {
    let mut hub = HubConfig::default();
    hub.keys = vec![ApiKey {
        name: "app".into(),
        secret,
        capabilities: Capabilities::all(),
    }];
    Service::start(ServerConfig::new(hub))
}

#[allow(dead_code)] // the test includes this file for `app` and `service` only
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("TETHER_SECRET").unwrap_or_else(|_| "app-secret".into());
    let service = service(secret)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:7400").await?;
    println!(
        "the application and tether on http://{}/ (tether at /realtime)",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app(service.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        // Clients are told first (they resume elsewhere or later), then the HTTP server stops.
        service.shutdown().await;
    })
    .await
}
