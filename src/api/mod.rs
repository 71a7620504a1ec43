//! The HTTP interface: routes, shared state, body parsing and request metrics.

mod compat;
mod dead_letters;
pub mod error;
mod health;
mod messages;
pub mod openapi;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lettre::message::Mailbox;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use messages::MAX_BATCH;

use crate::auth::TokenVerifier;
use crate::intake::Intake;
use crate::message::{LiveTemplates, NativeRules, Templates, strict_json};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub intake: Intake,
    pub token: Arc<dyn TokenVerifier>,
    pub default_from: Option<Mailbox>,
    pub templates: Arc<LiveTemplates>,
    pub max_body_bytes: usize,
    pub idempotency_ttl: Duration,
    /// Reported by `/ready`; a shared limiter that is down pauses delivery, not the API.
    pub limiter: Option<Arc<dyn crate::limiter::RateLimiter>>,
    /// `None` when `/metrics` is served on its own port.
    pub metrics: Option<PrometheusHandle>,
    /// Reported by `/ready` when this process delivers: an account paused by its provider.
    pub delivery: Option<Arc<dyn crate::delivery::Delivery>>,
}

impl AppState {
    /// What the native API checks a message against besides itself, with `templates` (the set
    /// current when the request began).
    pub fn native_rules<'a>(&'a self, templates: &'a Templates) -> NativeRules<'a> {
        NativeRules {
            default_from: self.default_from.as_ref(),
            templates,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let mut app = Router::new()
        .route("/api/email", post(compat::post_email))
        .route("/v1/messages", post(messages::create).get(messages::list))
        .route("/v1/messages/batch", post(messages::create_batch))
        .route("/v1/messages/{id}", get(messages::show))
        .route("/v1/messages/{id}/cancel", post(messages::cancel))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/{id}/redrive", post(dead_letters::redrive))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi_json));
    if state.metrics.is_some() {
        app = app.route("/metrics", get(health::metrics));
    }
    let routes = app
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // `track` labels by route template, which only exists once a route has matched, so it
        // is the one layer that wraps each route.
        .layer(middleware::from_fn(track))
        .with_state(Arc::new(state));
    // The layers every request passes, stacked once around the whole router: `Router::layer`
    // would wrap each route in each of them, and every request would then clone a boxed service
    // per layer (about 2 µs a request on the benchmark machine).
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // Inside the request id's layers, so that a 500 from a panic carries the id too.
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(DefaultBodyLimit::max(limit))
        .service(routes);
    Router::new().fallback_service(stack)
}

/// `/metrics` and `/health` alone: on `METRICS_PORT`, and on `PORT` for a worker without the API.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics_only))
        .route("/health", get(health::health))
        // Errors in the API's JSON here too: a client or probe that reaches a worker's PORT
        // (or METRICS_PORT) by mistake reads what is wrong.
        .fallback(|| async {
            ApiError::NotFound("no such route here: this port serves /health and /metrics".into())
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(handle)
}

/// Counts and times every request by route template, method and status.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (duration, requests) = request_metrics(&method, route, response.status().as_u16());
    duration.record(started.elapsed().as_secs_f64());
    requests.increment(1);
    response
}

/// The duration histogram and request counter of one method, route and status. The metrics
/// registry would build, hash and compare the key of labels on every request (about 1 µs each on
/// the benchmark machine); the handles, once registered, are kept here instead. The map holds
/// one entry per label set, as the registry itself does.
fn request_metrics(method: &Method, route: &str, status: u16) -> (Histogram, Counter) {
    type ByRoute = HashMap<Box<str>, HashMap<(Method, u16), (Histogram, Counter)>>;
    static HANDLES: LazyLock<RwLock<ByRoute>> = LazyLock::new(Default::default);
    let key = (method.clone(), status);
    let found = HANDLES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(route)
        .and_then(|by_status| by_status.get(&key))
        .cloned();
    if let Some(found) = found {
        return found;
    }
    let labels = [("method", method.to_string()), ("route", route.to_owned())];
    let duration = metrics::histogram!("mailroom_http_request_duration_seconds", &labels);
    let mut labels = labels.to_vec();
    labels.push(("status", status.to_string()));
    let requests = metrics::counter!("mailroom_http_requests_total", &labels);
    let found = (duration, requests);
    HANDLES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(route.into())
        .or_default()
        .insert(key, found.clone());
    found
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
            strict_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        Ok(JsonBody { value, bytes })
    }
}

/// The token of `Authorization: Bearer ...`, if any, for handlers that need no other header
/// (taking the whole `HeaderMap` would copy it for every request).
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Bearer(bearer(&parts.headers).map(str::to_owned)))
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
