//! The HTTP interface (axum).

pub mod error;
mod ledger;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::log::Ledger;
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/readyz", get(|| async { "ready" }))
        .route("/api/v1/ledger/head", get(ledger::head))
        .route("/api/v1/ledger/keys", get(ledger::keys))
        .route("/api/v1/ledger/checkpoint", get(ledger::checkpoint))
        .route("/api/v1/ledger/events", get(ledger::events))
        .route("/api/v1/ledger/events/{position}", get(ledger::event))
        .route("/api/v1/ledger/events/by-id/{id}", get(ledger::event_by_id))
        .route("/api/v1/ledger/streams/{stream}", get(ledger::stream))
        .route("/api/v1/ledger/proofs/inclusion", get(ledger::inclusion))
        .route(
            "/api/v1/ledger/proofs/consistency",
            get(ledger::consistency),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
