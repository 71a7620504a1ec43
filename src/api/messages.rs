//! The native API: `POST /v1/messages`, `POST /v1/messages/batch`, `GET /v1/messages[/{id}]`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::openapi::{
    AcceptedMessage, BatchRefusal, BatchRequest, BatchResult, ErrorBody, MessageDetail,
    MessagePage, NotStored, Refused,
};
use super::{ApiError, AppState, Bearer, JsonBody, authenticate, bearer};
use crate::message::{Content, FieldError, Message, NativeEmail, Status};
use crate::store::{Acceptance, Accepted, IdempotencyRecord, ListFilter, Record, now_ms};

/// Most messages in one batch request.
pub const MAX_BATCH: usize = 100;
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(post, path = "/v1/messages", tag = "messages", operation_id = "create_message",
    request_body = NativeEmail,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1 to 255 printable ASCII characters, no spaces; the same key and body (the same JSON: key order and spacing aside) within 24 h answer the first response again (header `idempotent-replayed: true`), another body with it is a 422")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted: the message is durable and queued", body = AcceptedMessage),
        (status = 422, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still being accepted (its queue has not taken the messages yet): send it again after Retry-After", body = ErrorBody),
        Refused,
        NotStored,
    ))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (key, hash) = match begin(&state, &headers, "/v1/messages", &body).await? {
        Begin::Replay(r) => return Ok(r),
        Begin::New { key, hash } => (key, hash),
    };
    let email = parse_native(&state, body.value, String::new()).await?;
    let message = Message::new(Content::Native(Box::new(email)));
    let response = json!(AcceptedMessage::queued(message.id));
    accept(
        &state,
        vec![message],
        key,
        hash,
        StatusCode::ACCEPTED,
        response,
        1,
    )
    .await
}

#[utoipa::path(post, path = "/v1/messages/batch", tag = "messages", operation_id = "create_messages",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "1 to 255 printable ASCII characters, no spaces; the same key and body (the same JSON: key order and spacing aside) within 24 h answer the first response again (header `idempotent-replayed: true`), another body with it is a 422")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "At least one message accepted; one result per message, in order: a message id, or an error (its field, or `unavailable` for one an external queue did not take: send that one again)", body = BatchResult),
        (status = 422, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still being accepted (its queue has not taken the messages yet): send it again after Retry-After", body = ErrorBody),
        (status = 400, description = "A field is missing, mistyped or invalid (`error.field` names it); or every message of the batch is, and the answer is the batch's `BatchResult` with `accepted: 0`", body = BatchRefusal),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        NotStored,
    ))]
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let (key, hash) = match begin(&state, &headers, "/v1/messages/batch", &body).await? {
        Begin::Replay(r) => return Ok(r),
        Begin::New { key, hash } => (key, hash),
    };
    let Value::Object(mut obj) = body.value else {
        return Err(FieldError::new("body", "must be an object {\"messages\": [...]}").into());
    };
    let entries = match obj.remove("messages") {
        Some(Value::Array(a)) => a,
        None => return Err(FieldError::new("messages", "is required").into()),
        Some(_) => return Err(FieldError::new("messages", "must be an array").into()),
    };
    // As a message refuses a field it does not know, so does the batch: a `template` or
    // `send_at` meant for every message would otherwise be dropped without a word.
    if let Some(other) = obj.keys().next() {
        let detail = "is not a field of a batch, which is {\"messages\": [...]} alone (each message carries its own fields)";
        return Err(FieldError::new(other.clone(), detail).into());
    }
    if entries.is_empty() {
        return Err(FieldError::new("messages", "must not be empty").into());
    }
    if entries.len() > MAX_BATCH {
        return Err(FieldError::new(
            "messages",
            format!(
                "{} messages; the limit is {MAX_BATCH} per batch",
                entries.len()
            ),
        )
        .into());
    }
    let mut messages = Vec::new();
    let mut results = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        match parse_native(&state, entry, format!("messages[{i}].")).await {
            Ok(email) => {
                let m = Message::new(Content::Native(Box::new(email)));
                // Over the queue's size limit (SQS, Kafka): refused as this entry, by its index.
                if let Err(e) = state.intake.queue.check(&m) {
                    let e = FieldError::new(format!("messages[{i}]"), e.to_string());
                    let error = ApiError::MessageTooLarge(e).body()["error"].clone();
                    results.push(json!({"index": i, "error": error}));
                    continue;
                }
                results.push(json!({"index": i, "message_id": m.id, "status": "queued"}));
                messages.push(m);
            }
            Err(e) => {
                results.push(json!({"index": i, "error": ApiError::Invalid(e).body()["error"]}))
            }
        }
    }
    let accepted = messages.len();
    let status = if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    let response =
        json!({"accepted": accepted, "rejected": results.len() - accepted, "results": results});
    if accepted == 0 {
        return Ok((status, Json(response)).into_response());
    }
    accept(
        &state,
        messages,
        key,
        hash,
        status,
        response,
        accepted as u64,
    )
    .await
}

/// Parses a native message. One that names a template is rendered on a blocking thread: a
/// template may run for a while (its fuel bounds it), and the runtime threads serve every other
/// request meanwhile.
async fn parse_native(
    state: &Arc<AppState>,
    value: Value,
    prefix: String,
) -> Result<NativeEmail, FieldError> {
    let templates = state.templates.current();
    if value.get("template").is_none_or(Value::is_null) {
        return NativeEmail::parse(value, &prefix, state.native_rules(&templates));
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        NativeEmail::parse(value, &prefix, state.native_rules(&templates))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Where a create request stands after authentication and its idempotency key.
enum Begin {
    /// The key was used before with this body: the first answer, again.
    Replay(Response),
    New {
        key: Option<String>,
        hash: BodyHash,
    },
}

async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    body: &JsonBody,
) -> Result<Begin, ApiError> {
    authenticate(state, bearer(headers)).await?;
    let key = idempotency_key(headers)?;
    // Only a request with a key is ever compared with another.
    let hash = match key {
        Some(_) => BodyHash::of(route, body),
        None => BodyHash::default(),
    };
    match replay(state, key.as_deref(), &hash).await? {
        Some(r) => Ok(Begin::Replay(r)),
        None => Ok(Begin::New { key, hash }),
    }
}

async fn accept(
    state: &AppState,
    messages: Vec<Message>,
    key: Option<String>,
    hash: BodyHash,
    status: StatusCode,
    response: Value,
    count: u64,
) -> Result<Response, ApiError> {
    let idempotency = key.map(|key| IdempotencyRecord {
        key,
        request_hash: hash.canonical.clone(),
        status: status.as_u16(),
        response: response.to_string(),
        // The intake sets it when an external queue is to take the messages.
        pending_until: None,
        // The store keeps its own time of the claim; this one is the cache's (within
        // milliseconds of it).
        created_at: now_ms(),
    });
    match state
        .intake
        .accept(Acceptance {
            messages,
            idempotency,
        })
        .await?
    {
        Accepted::Inserted => {
            metrics::counter!("mailroom_messages_accepted_total", "api" => "native")
                .increment(count);
            Ok((status, Json(response)).into_response())
        }
        // The same key was claimed concurrently: answer as the first request was answered.
        Accepted::Replay(first) => replayed(first, &hash),
        // The intake has settled the key with the same answer.
        Accepted::Partly(failed) => {
            let response = crate::intake::without_unqueued(response, &failed);
            metrics::counter!("mailroom_messages_accepted_total", "api" => "native")
                .increment(count.saturating_sub(failed.len() as u64));
            Ok((status, Json(response)).into_response())
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .ok_or_else(|| {
            FieldError::new(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
            )
        })?;
    Ok(Some(key.to_string()))
}

/// What identifies a request's body for its Idempotency-Key: the route and the JSON it holds,
/// written again with sorted keys and no spaces, so a client that rebuilds the same body on its
/// retry (keys in another order, other spacing) gets its first answer again, not a 422.
#[derive(Default)]
struct BodyHash {
    canonical: String,
    /// Of the bytes as sent: what keys stored before the canonical form were compared with,
    /// still accepted while they live (24 h after an upgrade).
    raw: String,
}

impl BodyHash {
    fn of(route: &str, body: &JsonBody) -> Self {
        let digest = |bytes: &[u8]| {
            let mut h = Sha256::new();
            h.update(route.as_bytes());
            h.update([0]);
            h.update(bytes);
            hex::encode(h.finalize())
        };
        // serde_json's maps are sorted by key; writing a parsed value cannot fail.
        let canonical = serde_json::to_vec(&body.value).unwrap_or_default();
        Self {
            canonical: format!("c1:{}", digest(&canonical)),
            raw: digest(&body.bytes),
        }
    }

    fn matches(&self, stored: &str) -> bool {
        stored == self.canonical || stored == self.raw
    }
}

async fn replay(
    state: &AppState,
    key: Option<&str>,
    hash: &BodyHash,
) -> Result<Option<Response>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    match state
        .intake
        .store
        .idempotency(key, state.idempotency_ttl)
        .await?
    {
        Some(first) => replayed(first, hash).map(Some),
        None => Ok(None),
    }
}

fn replayed(first: IdempotencyRecord, hash: &BodyHash) -> Result<Response, ApiError> {
    if !hash.matches(&first.request_hash) {
        return Err(ApiError::IdempotencyMismatch);
    }
    if first.pending(now_ms()) {
        // Its messages may yet be abandoned: a 202 now could be for mail that never goes.
        return Err(ApiError::IdempotencyInProgress);
    }
    let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::ACCEPTED);
    let body: Value = serde_json::from_str(&first.response)
        .map_err(|e| ApiError::Internal(format!("stored idempotent response: {e}")))?;
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// The `{id}` of a route, as a message id. Taken as a `Result` so that a path that is not even
/// UTF-8 gets the same JSON 400 (after authentication), not axum's plain-text rejection.
pub fn path_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let not_an_id = || FieldError::new("id", "is not a message id (a UUID)");
    let Path(raw) = path.map_err(|_| not_an_id())?;
    Ok(Uuid::parse_str(&raw).map_err(|_| not_an_id())?)
}

/// A message as the API shows it.
pub fn summary(r: &Record) -> Value {
    let m = &r.message;
    let mut v = json!({
        "id": m.id,
        "status": r.status,
        "api": m.api(),
        "accepted_at": m.accepted_at,
        "updated_at": r.updated_at,
        "attempts": r.attempts,
        "subject": m.subject(),
        "sender": m.sender(),
        "archive_key": m.archive_key(),
    });
    if let Some(e) = &r.last_error {
        v["last_error"] = json!(e);
    }
    if !m.tags().is_empty() {
        v["tags"] = json!(m.tags());
    }
    if let Some(due) = m.due_later() {
        v["send_at"] = json!(due);
    }
    v
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", operation_id = "get_message",
    params(("id" = uuid::Uuid, Path, description = "The message id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message, its status and its event history", body = MessageDetail),
        Refused,
        (status = 404, description = "No message with this id", body = ErrorBody),
        (status = 503, description = "The store is unavailable: retry after `Retry-After`", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Bearer(token): Bearer,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, token.as_deref()).await?;
    let id = path_id(id)?;
    detail(&state, id).await.map(Json)
}

/// The message's summary and its event history.
async fn detail(state: &AppState, id: Uuid) -> Result<Value, ApiError> {
    let store = &state.intake.store;
    let record = store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message with id {id}")))?;
    let mut v = summary(&record);
    v["events"] = json!(store.events(id).await?);
    Ok(v)
}

#[utoipa::path(post, path = "/v1/messages/{id}/cancel", tag = "messages", operation_id = "cancel_message",
    params(("id" = uuid::Uuid, Path, description = "The message id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled: it will not be sent. The message, now `cancelled`, and its history", body = MessageDetail),
        Refused,
        (status = 404, description = "No message with this id", body = ErrorBody),
        (status = 409, description = "Too late: the message is sent, dead, abandoned or cancelled already, or a worker is delivering it right now", body = ErrorBody),
        (status = 503, description = "The store is unavailable: retry after `Retry-After`", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Bearer(token): Bearer,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, token.as_deref()).await?;
    let id = path_id(id)?;
    state.intake.cancel(id).await?;
    detail(&state, id).await.map(Json)
}

/// The parameters of a list: `status`, `limit`, `before`.
#[derive(Default)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

impl ListQuery {
    /// Reads the raw query string by hand rather than with axum's `Query`, whose rejections are
    /// plain text, and which ignores a misspelt parameter (`?stauts=dead` would list every
    /// message): an unknown or repeated parameter is a 400 naming it.
    pub fn parse(raw: Option<String>) -> Result<Self, FieldError> {
        let mut q = ListQuery::default();
        let raw = raw.unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let slot = match name.as_ref() {
                "status" => &mut q.status,
                "limit" => &mut q.limit,
                "before" => &mut q.before,
                other => {
                    return Err(FieldError::new(
                        other,
                        "is not a parameter of this list (status, limit, before)",
                    ));
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(FieldError::new(name, "is given more than once"));
            }
        }
        Ok(q)
    }
}

/// Parses `status`, `limit` (1 to 500, default 50) and `before` (a message id).
pub fn list_filter(q: ListQuery, status: Option<Status>) -> Result<ListFilter, ApiError> {
    let status = match (status, q.status.as_deref()) {
        // A list of one status (the dead letters) names no other.
        (Some(s), Some(given)) if !given.is_empty() && given != s.as_str() => {
            return Err(FieldError::new(
                "status",
                format!("this list holds only `{}` messages", s.as_str()),
            )
            .into());
        }
        (Some(s), _) => Some(s),
        (None, None | Some("")) => None,
        (None, Some(s)) => Some(s.parse::<Status>()?),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| FieldError::new("limit", "must be a whole number from 1 to 500"))?,
    };
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(
            Uuid::parse_str(b).map_err(|_| FieldError::new("before", "must be a message id"))?,
        ),
    };
    Ok(ListFilter {
        status,
        before,
        limit,
    })
}

#[utoipa::path(get, path = "/v1/messages", tag = "messages", operation_id = "list_messages",
    params(
        ("status" = Option<crate::message::Status>, Query, description = "Only messages with this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("before" = Option<uuid::Uuid>, Query, description = "`next_before` of the previous page"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page, newest first", body = MessagePage),
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
    page(&state, list_filter(q, None)?, "messages").await
}

/// One page of records under `name`, with the id to pass as `before` for the next page.
pub async fn page(
    state: &AppState,
    filter: ListFilter,
    name: &str,
) -> Result<Json<Value>, ApiError> {
    let limit = filter.limit as usize;
    let records = state.intake.store.list(filter).await?;
    let next = (records.len() == limit)
        .then(|| records.last().map(|r| r.message.id))
        .flatten();
    Ok(Json(json!({
        name: records.iter().map(summary).collect::<Vec<_>>(),
        "next_before": next,
    })))
}
