//! `/health`, `/ready` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::AppState;
use super::openapi::Readiness;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process answers: `{\"status\": \"ok\"}`")))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the store and the queue answer. A shared rate limiter that is down, a token source
/// that is down while its cached token works, or delivery paused by its provider, is reported
/// (`degraded`) without failing readiness: the API keeps accepting.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready, or degraded but accepting", body = Readiness),
        (status = 503, description = "The store or the queue is down", body = Readiness),
    ))]
pub async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let store = state.intake.store.ping().await.map_err(|e| e.to_string());
    let queue = state
        .intake
        .queue
        .depth()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let limiter = match &state.limiter {
        Some(l) => l.ping().await.map_err(|e| e.to_string()),
        None => Ok(()),
    };
    let token = state.token.health();
    let delivery = match state.delivery.as_ref().and_then(|d| d.paused()) {
        Some(reason) => Err(format!("paused: {reason}")),
        None => Ok(()),
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(e),
    };
    // A paused provider stops delivery, not acceptance: messages wait durably for it, so the
    // process stays in its load balancer (an orchestrator would otherwise replace it all day
    // long while a daily quota is used up).
    let ok = store.is_ok() && queue.is_ok();
    let status = match (ok, limiter.is_ok() && token.is_ok() && delivery.is_ok()) {
        (false, _) => "unavailable",
        (true, false) => "degraded",
        (true, true) => "ready",
    };
    let body = json!({
        "status": status,
        "checks": {
            "store": show(&store),
            "queue": show(&queue),
            "limiter": show(&limiter),
            "token": show(&token),
            "delivery": show(&delivery),
        },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format (on METRICS_PORT instead when it is set)", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    render(state.metrics.as_ref())
}

pub async fn metrics_only(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    render(Some(&handle))
}

fn render(handle: Option<&PrometheusHandle>) -> impl IntoResponse + use<> {
    let text = handle.map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
