//! The HTTP server: `/metrics` and the JSON API.
//!
//! - `GET /metrics`: OpenMetrics text.
//! - `GET /api/v1/goroutines[?pid=N]`: one entry per goroutine seen.
//! - `GET /api/v1/processes`: the processes gort watches or watched.
//! - `GET /api/v1/leaks[?pid=N]`: goroutine leak suspect groups.
//! - `GET /api/v1/panics[?pid=N]`: panics and fatal errors, newest first.
//! - `GET /api/v1/requests[?pid=N][&trace_id=T]`: recent HTTP requests, newest first.
//! - `GET /debug/pprof/block?pid=N[&seconds=S][&runtime=1]`: blocking by stack as a gzipped
//!   pprof profile, over the next S seconds (default: since gort attached), like Go's own.
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
        .route("/api/v1/top", get(top))
        .route("/api/v1/leaks", get(leaks))
        .route("/api/v1/panics", get(panics))
        .route("/api/v1/requests", get(requests))
        .route("/debug/pprof/block", get(block_profile))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(handle)
}

/// Longest profile window accepted.
const MAX_PROFILE_SECONDS: u64 = 3600;

#[derive(Deserialize)]
struct ProfileQuery {
    pid: Option<u32>,
    seconds: Option<u64>,
    /// Also the stacks entirely inside the runtime (its own goroutines).
    #[serde(default)]
    runtime: u8,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

async fn block_profile(State(h): State<QueryHandle>, Query(q): Query<ProfileQuery>) -> Response {
    let pid = match q.pid {
        Some(pid) => pid,
        None => match h.processes().await.as_deref() {
            Some([one]) => one.pid,
            Some(_) => {
                return bad_request("pid=N is required: gort watches several processes".into());
            }
            None => return unavailable(),
        },
    };
    let seconds = q.seconds.unwrap_or(0);
    if seconds > MAX_PROFILE_SECONDS {
        return bad_request(format!("seconds={seconds}: at most {MAX_PROFILE_SECONDS}"));
    }
    let now_unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    };
    let (baseline, start) = if seconds > 0 {
        let Some(b) = h.profile_snapshot(pid).await else {
            return (
                StatusCode::NOT_FOUND,
                format!("gort does not watch pid {pid}\n"),
            )
                .into_response();
        };
        let start = now_unix();
        tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
        (Some(b), start)
    } else {
        (None, 0)
    };
    let end = now_unix();
    let window = if seconds > 0 {
        (start, end - start)
    } else {
        (end, 0)
    };
    match h.block_profile(pid, baseline, q.runtime != 0, window).await {
        Some(p) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"block.pb.gz\"",
                ),
            ],
            super::pprof::encode(&p),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("gort does not watch pid {pid}\n"),
        )
            .into_response(),
    }
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

#[derive(Deserialize)]
struct GoroutineFilter {
    pid: Option<u32>,
    /// Only the `top` most blocked.
    top: Option<usize>,
}

async fn goroutines(State(h): State<QueryHandle>, Query(f): Query<GoroutineFilter>) -> Response {
    match h.goroutines(f.pid).await {
        Some(mut list) => {
            if let Some(n) = f.top {
                list.sort_by(|a, b| b.blocked_ns.cmp(&a.blocked_ns).then(a.goid.cmp(&b.goid)));
                list.truncate(n);
            }
            Json(list).into_response()
        }
        None => unavailable(),
    }
}

/// What `gort top` shows: cumulative totals per process.
async fn top(State(h): State<QueryHandle>) -> Response {
    match h.metrics().await {
        Some(view) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            Json(crate::top::snapshot::TopSnapshot::of(&view, now)).into_response()
        }
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
