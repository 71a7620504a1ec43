//! The one error type of the HTTP API: 4xx bodies say exactly what is wrong and where; 5xx bodies
//! say little and the cause is logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::intake::IntakeError;
use crate::message::FieldError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("missing or invalid API token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("this route does not take this method")]
    MethodNotAllowed,
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// One message is larger than the queue can carry.
    #[error("{0}")]
    MessageTooLarge(FieldError),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    /// The request that holds the key is still being accepted: its answer is not final yet.
    #[error(
        "a request with this Idempotency-Key is still being accepted; send it again in a moment for its answer"
    )]
    IdempotencyInProgress,
    #[error("{0}")]
    Conflict(String),
    /// A backend is down: 503 with Retry-After, never a 202.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::MessageTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
            ApiError::IdempotencyMismatch => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::IdempotencyInProgress => {
                (StatusCode::CONFLICT, "idempotency_key_in_progress")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The JSON body: `{"error": {"code", "message", "field"?}}`.
    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.parts();
        let message = match self {
            ApiError::Unavailable(_) => crate::intake::UNAVAILABLE.to_string(),
            ApiError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let mut err = json!({"code": code, "message": message});
        if let ApiError::Invalid(f) | ApiError::MessageTooLarge(f) = self {
            err["field"] = json!(f.field);
            err["message"] = json!(format!("{}: {}", f.field, f.message));
        }
        json!({ "error": err })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Unavailable(s) => ApiError::Unavailable(s),
            IntakeError::NotFound(id) => ApiError::NotFound(format!("no message with id {id}")),
            e @ (IntakeError::NotDead(..)
            | IntakeError::NotCancellable(..)
            | IntakeError::InFlight(_)) => ApiError::Conflict(e.to_string()),
            IntakeError::TooLarge { field, detail } => {
                ApiError::MessageTooLarge(FieldError::new(field, detail))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.parts();
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "Request refused: a backend is unavailable.");
                metrics::counter!("mailroom_backend_unavailable_total").increment(1);
            }
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "Internal error."),
            _ => {}
        }
        let mut response = (status, Json(self.body())).into_response();
        match self {
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::IdempotencyInProgress => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
