//! `/health`, `/ready` and `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::AppState;

/// Liveness: the process answers.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store and the queue answer.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.intake.store.ping().await;
    let queue = state.intake.queue.depth().await;
    let show = |r: Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(e),
    };
    let ok = store.is_ok() && queue.is_ok();
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": {
            "store": show(store.map_err(|e| e.to_string())),
            "queue": show(queue.map(|_| ()).map_err(|e| e.to_string())),
        }
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    render(state.metrics.as_ref())
}

pub async fn metrics_only(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    render(Some(&handle))
}

fn render(handle: Option<&PrometheusHandle>) -> impl IntoResponse + use<> {
    let text = handle.map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
