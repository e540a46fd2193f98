//! The node's HTTP front end (default 127.0.0.1:9644): `/metrics` (OpenMetrics text, see
//! [`crate::metrics`]), `/healthz` (the process answers), `/readyz` (the node can serve:
//! [`Broker::ready`]) and the web console at `/` with its API under `/api/v1/`
//! ([`crate::console`]). A thin adapter: what it shows is computed by the core.
//!
//! Invariants: a request here never holds a lock produce or fetch wait on across an await
//! (the snapshot copies what it reads); an unknown path or method is a 404/405 with a text
//! body, never a hang.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP routes over `broker`; the console's SQL runs on `engine`.
pub fn router(
    broker: Broker,
    engine: Option<query::QueryEngine>,
    console: crate::console::ConsoleSettings,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(broker.clone())
        .merge(crate::console::router(broker, engine, console))
        .fallback(crate::console::not_found)
}

async fn metrics(State(broker): State<Broker>) -> Response {
    let snapshot = broker.metrics_snapshot().await;
    let body = broker.metrics().encode(&snapshot);
    ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
}

async fn ready(State(broker): State<Broker>) -> Response {
    match broker.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Serves HTTP on `listener` until `stop` is cancelled.
pub async fn serve(
    broker: Broker,
    engine: Option<query::QueryEngine>,
    console: crate::console::ConsoleSettings,
    listener: TcpListener,
    stop: CancellationToken,
) {
    let app = router(broker, engine, console);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(error = %e, "the HTTP listener stopped");
    }
}
