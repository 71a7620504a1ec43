//! `POST /api/email`: the compatibility contract of the reference API service.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::openapi::{AcceptedMessage, CompatRequest, NotStored, Refused};
use super::{ApiError, AppState, Bearer, JsonBody, authenticate};
use crate::message::{CompatEmail, Content, Message};
use crate::store::{Acceptance, Accepted};

/// Authenticates (token in the body, or a Bearer header), validates the four fields, and answers
/// 202 with the message id once the message is committed.
#[utoipa::path(post, path = "/api/email", tag = "compat",
    request_body = CompatRequest,
    // The token in the body, or else a Bearer header.
    security((), ("bearer" = [])),
    responses(
        (status = 202, description = "Accepted: the message is durable and queued", body = AcceptedMessage),
        Refused,
        NotStored,
    ))]
pub async fn post_email(
    State(state): State<Arc<AppState>>,
    Bearer(header_token): Bearer,
    body: JsonBody,
) -> Result<(StatusCode, Json<AcceptedMessage>), ApiError> {
    let (token, fields) = CompatEmail::parse(&body.value)?;
    // An empty body token is no token: the header's counts then, as it does for a missing one.
    let token = token.filter(|t| !t.is_empty()).or(header_token);
    authenticate(&state, token.as_deref()).await?;
    let email = fields.validate()?;
    let message = Message::new(Content::Compat(email));
    let id = message.id;
    let accepted = state
        .intake
        .accept(Acceptance {
            messages: vec![message],
            idempotency: None,
        })
        .await?;
    debug_assert_eq!(accepted, Accepted::Inserted);
    metrics::counter!("mailroom_messages_accepted_total", "api" => "compat").increment(1);
    Ok((StatusCode::ACCEPTED, Json(AcceptedMessage::queued(id))))
}
