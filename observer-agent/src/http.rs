//! The agent's HTTP endpoint (axum), on `--listen`: `/metrics` (Prometheus text format),
//! `/healthz` (the process serves), `/readyz` (attached and inventory synced; 503 with the
//! reason otherwise), `/findings` (current findings, the `diagnose --output json` schema). No
//! packet payload is ever served.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use bytes::Bytes;

use crate::state::Shared;

/// The routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/findings", get(findings))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = Bytes::from(shared.metrics.render(&shared));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let attached = shared.session.attached.load(std::sync::atomic::Ordering::Relaxed);
    let synced = shared.feed.synced();
    if attached && synced {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: attached={attached} inventory_synced={synced}\n"))
    }
}

async fn findings(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], Bytes::from(shared.findings_json()))
}
