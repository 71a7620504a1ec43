//! The HTTP interface: routes, shared state, body parsing and request metrics.

mod compat;
mod dead_letters;
pub mod error;
mod health;
mod messages;
pub mod openapi;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lettre::message::Mailbox;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::auth::TokenVerifier;
use crate::intake::Intake;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub intake: Intake,
    pub token: Arc<dyn TokenVerifier>,
    pub default_from: Option<Mailbox>,
    pub max_body_bytes: usize,
    pub idempotency_ttl: Duration,
    /// Reported by `/ready`; a shared limiter that is down pauses delivery, not the API.
    pub limiter: Option<Arc<dyn crate::limiter::RateLimiter>>,
    /// `None` when `/metrics` is served on its own port.
    pub metrics: Option<PrometheusHandle>,
    /// Reported by `/ready` when this process delivers: an account paused by its provider.
    pub delivery: Option<Arc<dyn crate::delivery::Delivery>>,
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let mut app = Router::new()
        .route("/api/email", post(compat::post_email))
        .route("/v1/messages", post(messages::create).get(messages::list))
        .route("/v1/messages/batch", post(messages::create_batch))
        .route("/v1/messages/{id}", get(messages::show))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/{id}/redrive", post(dead_letters::redrive))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi_json));
    if state.metrics.is_some() {
        app = app.route("/metrics", get(health::metrics));
    }
    app.fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(track))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .with_state(Arc::new(state))
}

/// The `/metrics` route alone, for `METRICS_PORT`.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics_only))
        .with_state(handle)
}

/// Counts and times every request by route template, method and status.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route)];
    metrics::histogram!("mailroom_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let mut labels = labels.to_vec();
    labels.push(("status", status));
    metrics::counter!("mailroom_http_requests_total", &labels).increment(1);
    response
}

/// A JSON body parsed into a value, with every rejection turned into an [`ApiError`] that says
/// what is wrong (wrong content type, too large, not JSON).
pub struct JsonBody {
    pub value: serde_json::Value,
    pub bytes: Bytes,
}

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.max_body_bytes)
            } else {
                ApiError::InvalidJson(e.body_text())
            }
        })?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        Ok(JsonBody { value, bytes })
    }
}

/// The token from `Authorization: Bearer ...`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks a presented token; 401 when missing or wrong.
pub async fn authenticate(state: &AppState, presented: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        return Err(ApiError::Unauthorized);
    };
    match state.token.verify(token).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::Unauthorized),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
