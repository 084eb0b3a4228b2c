//! The HTTP server: `/metrics` and the JSON API.
//!
//! - `GET /metrics`: OpenMetrics text.
//! - `GET /api/v1/goroutines[?pid=N]`: one entry per goroutine seen.
//! - `GET /api/v1/processes`: the processes gort watches or watched.
//! - `GET /api/v1/leaks[?pid=N]`: goroutine leak suspect groups.
//! - `GET /api/v1/panics[?pid=N]`: panics and fatal errors, newest first.
//! - `GET /api/v1/requests[?pid=N][&trace_id=T]`: recent HTTP requests, newest first.
//! - `GET /healthz`.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::prometheus;
use crate::aggregate::QueryHandle;

pub fn router(handle: QueryHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/goroutines", get(goroutines))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/leaks", get(leaks))
        .route("/api/v1/panics", get(panics))
        .route("/api/v1/requests", get(requests))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(handle)
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "gort is shutting down\n").into_response()
}

async fn metrics(State(h): State<QueryHandle>) -> Response {
    match h.metrics().await {
        Some(view) => (
            [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
            prometheus::encode(view),
        )
            .into_response(),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
struct PidFilter {
    pid: Option<u32>,
}

async fn goroutines(State(h): State<QueryHandle>, Query(f): Query<PidFilter>) -> Response {
    match h.goroutines(f.pid).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

async fn leaks(State(h): State<QueryHandle>, Query(f): Query<PidFilter>) -> Response {
    match h.leaks(f.pid).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

async fn panics(State(h): State<QueryHandle>, Query(f): Query<PidFilter>) -> Response {
    match h.panics(f.pid).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

#[derive(Deserialize)]
struct RequestFilter {
    pid: Option<u32>,
    trace_id: Option<String>,
}

async fn requests(State(h): State<QueryHandle>, Query(f): Query<RequestFilter>) -> Response {
    match h.requests(f.pid, f.trace_id).await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}

async fn processes(State(h): State<QueryHandle>) -> Response {
    match h.processes().await {
        Some(list) => Json(list).into_response(),
        None => unavailable(),
    }
}
