//! `GET /v1/dead-letters` and `POST /v1/dead-letters/{id}/redrive`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::Value;

use super::messages::{ListQuery, list_filter, page, path_id};
use super::openapi::{AcceptedMessage, DeadLetterPage, ErrorBody, Refused};
use super::{ApiError, AppState, Bearer, authenticate};
use crate::message::Status;

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", operation_id = "list_dead_letters",
    params(
        ("status" = Option<String>, Query, description = "`dead` or absent: the dead letters are the messages of that one status; another is a 400"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("before" = Option<uuid::Uuid>, Query, description = "`next_before` of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of dead letters, newest first", body = DeadLetterPage),
        Refused,
        (status = 503, description = "The store is unavailable: retry after `Retry-After`", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Bearer(token): Bearer,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, token.as_deref()).await?;
    let q = ListQuery::parse(query)?;
    page(&state, list_filter(q, Some(Status::Dead))?, "dead_letters").await
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/redrive", tag = "dead letters", operation_id = "redrive_dead_letter",
    params(("id" = uuid::Uuid, Path, description = "The dead letter's message id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Back in the queue, attempts reset", body = AcceptedMessage),
        Refused,
        (status = 404, description = "No message with this id", body = ErrorBody),
        (status = 409, description = "The message is not dead-lettered", body = ErrorBody),
        (status = 503, description = "The store or the queue is unavailable: retry after `Retry-After`; never a 202 that cannot be kept", body = ErrorBody),
    ))]
pub async fn redrive(
    State(state): State<Arc<AppState>>,
    Bearer(token): Bearer,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<AcceptedMessage>), ApiError> {
    authenticate(&state, token.as_deref()).await?;
    let id = path_id(id)?;
    state.intake.redrive(id).await?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedMessage::queued(id))))
}
