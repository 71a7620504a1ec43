//! `GET /v1/dead-letters` and `POST /v1/dead-letters/{id}/redrive`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::messages::{ListQuery, list_filter, page, parse_id};
use super::{ApiError, AppState, authenticate, bearer};
use crate::message::Status;

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, bearer(&headers)).await?;
    page(&state, list_filter(q, Some(Status::Dead))?, "dead_letters").await
}

pub async fn redrive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authenticate(&state, bearer(&headers)).await?;
    let id = parse_id(&id)?;
    state.intake.redrive(id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message_id": id, "status": "queued"})),
    ))
}
