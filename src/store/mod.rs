//! Records, status events, idempotency keys and dead letters.
//!
//! A [`Store`] keeps what happened to every message. Dead letters are messages in status
//! [`Status::Dead`] with their last error; redriving one puts it back in the queue.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis_cache;
pub mod sqlite;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use uuid::Uuid;

use crate::message::{Message, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the work: try again later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that cannot be read back: a bug or a corrupt row.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// An idempotency key presented with a request, and what the first such request was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is a client error.
    pub request_hash: String,
    pub status: u16,
    pub response: String,
    /// With an external queue (SQS, Kafka) the key is committed before the queue takes its
    /// messages: until this time (Unix ms) that push may still be under way, and may yet fail
    /// (and its messages be abandoned). `None` once the queue took them, and always with a
    /// database queue.
    #[serde(default)]
    pub pending_until: Option<i64>,
    /// When the key was first used (Unix ms): it holds for [`IDEMPOTENCY_TTL`] from then.
    #[serde(default)]
    pub created_at: i64,
}

impl IdempotencyRecord {
    /// Whether the request that holds the key may still be pushing its messages at `now` (Unix
    /// ms): its answer is not one to give again yet. Once `pending_until` has passed, the
    /// process that held it is taken to have died mid-push, and the key is claimed afresh.
    pub fn pending(&self, now: i64) -> bool {
        self.pending_until.is_some_and(|until| until > now)
    }
}

/// Messages to accept in one request, with the idempotency key that guards them.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub messages: Vec<Message>,
    pub idempotency: Option<IdempotencyRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The messages are committed.
    Inserted,
    /// The idempotency key was used before (maybe concurrently): this is what it was answered.
    Replay(IdempotencyRecord),
    /// From the intake, never the store: all committed, but an external queue took only some of
    /// them. These were not queued (and are abandoned): the client is to send them again.
    Partly(Vec<(Uuid, String)>),
}

/// A change of status, with the event it records.
#[derive(Debug, Clone)]
pub enum Transition {
    Delivered {
        attempts: u32,
        detail: String,
    },
    Archived {
        attempts: u32,
        detail: String,
    },
    Deferred {
        attempts: u32,
        error: String,
        retry_in: Duration,
    },
    Dead {
        attempts: u32,
        error: String,
    },
    /// Back to the queue from the dead letters.
    Redriven,
    /// Accepted but could not be queued: the client was answered 503.
    Abandoned {
        error: String,
    },
}

impl Transition {
    pub fn status(&self) -> Status {
        match self {
            Transition::Delivered { .. } => Status::Delivered,
            Transition::Archived { .. } => Status::Archived,
            Transition::Deferred { .. } => Status::Deferred,
            Transition::Dead { .. } => Status::Dead,
            Transition::Abandoned { .. } => Status::Abandoned,
            Transition::Redriven => Status::Queued,
        }
    }

    /// The event name written to the history.
    pub fn event(&self) -> &'static str {
        match self {
            Transition::Delivered { .. } => "delivered",
            Transition::Archived { .. } => "archived",
            Transition::Deferred { .. } => "deferred",
            Transition::Dead { .. } => "dead",
            Transition::Redriven => "redriven",
            Transition::Abandoned { .. } => "abandoned",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Transition::Delivered { detail, .. } | Transition::Archived { detail, .. } => {
                detail.clone()
            }
            Transition::Deferred {
                error, retry_in, ..
            } => {
                format!("{error} (next attempt in {} ms)", retry_in.as_millis())
            }
            Transition::Dead { error, .. } | Transition::Abandoned { error } => error.clone(),
            Transition::Redriven => "redriven from the dead letters".into(),
        }
    }

    /// Attempts made so far, where the transition knows them.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Transition::Delivered { attempts, .. }
            | Transition::Archived { attempts, .. }
            | Transition::Deferred { attempts, .. }
            | Transition::Dead { attempts, .. } => Some(*attempts),
            Transition::Redriven => Some(0),
            Transition::Abandoned { .. } => None,
        }
    }

    /// The error to keep as `last_error`, if this transition is a failure.
    pub fn error(&self) -> Option<&str> {
        match self {
            Transition::Deferred { error, .. }
            | Transition::Dead { error, .. }
            | Transition::Abandoned { error } => Some(error),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A message and where it stands.
#[derive(Debug, Clone)]
pub struct Record {
    pub message: Message,
    pub status: Status,
    pub attempts: u32,
    pub updated_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// Only messages accepted before this one (ids are time-ordered): the next page.
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// What came of a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    Cancelled,
    NotFound,
    /// Past cancelling: sent, dead, abandoned, or cancelled already.
    Settled(Status),
    /// A worker holds its database-queue lease, or its claim (external queues): it may be being
    /// sent right now.
    InFlight,
}

/// What a worker's [`Store::claim`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The current status of each of the messages that the store knows.
    pub statuses: HashMap<Uuid, Status>,
    /// Those not sent yet that a live claim of another owner holds: SQS and Kafka deliver at
    /// least once, and another copy of the message is with another worker, or another pull.
    pub elsewhere: HashSet<Uuid>,
}

/// The history's note on a cancelled message.
pub const CANCELLED_DETAIL: &str = "cancelled before it was sent";

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits the messages (and their idempotency key) in one transaction. With `enqueue`, the
    /// store's own database queue receives them in the same transaction; without, it receives
    /// only those due later (`send_at`), to hold until their time (`crate::scheduler`).
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError>;

    /// The first answer given to this idempotency key, if it is younger than `ttl` and not left
    /// pending past its time (see [`IdempotencyRecord::pending`]): such a key is claimed afresh.
    async fn idempotency(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Applies a status change; `false` when it was not applied (the message is unknown, or
    /// finished and the change would take it back).
    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError>;

    /// Tells again of a status change already recorded, without recording it again: where
    /// changes are published (`EVENTS_TOPIC`), a worker that stopped between a record and its
    /// event leaves the event to the next holder of the message. Nothing elsewhere.
    async fn announce_again(&self, _id: Uuid, _transition: Transition) {}

    /// Puts a dead letter back ([`Transition::Redriven`]) on this store's database queue, in
    /// one transaction, so a crash cannot leave it `queued` with nothing to deliver it; with an
    /// external queue the scheduler hands it over from there. `false` when it is not a dead
    /// letter (any more).
    async fn redrive(&self, message: &Message) -> Result<bool, StoreError>;

    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError>;

    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError>;

    async fn list(&self, filter: ListFilter) -> Result<Vec<Record>, StoreError>;

    /// Withdraws a queued or deferred message before it is sent, in one transaction: its status
    /// becomes `cancelled` and its row leaves the database queue (when the queue is this
    /// store's). A message whose database-queue lease a worker holds is [`Cancel::InFlight`].
    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError>;

    /// The current status of each of these messages that the store knows.
    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError>;

    /// What a worker calls before sending messages it took from an external queue (SQS, Kafka),
    /// which a cancel cannot reach: claims those not sent yet for `ttl` for `owner` (one pull),
    /// so that a cancel meanwhile is [`Cancel::InFlight`] instead of answered while the message
    /// goes out, and so that another copy of it is not sent at the same time. A live claim of
    /// another owner is left alone ([`Claimed::elsewhere`]); `owner`'s own is renewed, and a
    /// `ttl` of zero ends it. Their next status change ends the claims. Answers with the
    /// statuses the claim saw (a message cancelled first is not claimed, and reads `cancelled`).
    async fn claim(&self, ids: &[Uuid], owner: Uuid, ttl: Duration) -> Result<Claimed, StoreError>;

    /// How many messages are dead-lettered now, for the `mailroom_dead_letters` gauge.
    async fn dead_letters(&self) -> Result<u64, StoreError>;

    /// Deletes idempotency keys older than `ttl`; returns how many.
    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError>;

    /// Lets an idempotency key go: its messages were stored but could not be queued, so the
    /// client's retry with the same key must be accepted afresh, not answered from the record.
    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError>;

    /// The queue took the messages this key guards: a retry with it is answered from the record
    /// from now on, no longer told to wait ([`IdempotencyRecord::pending`]). `answer` (status and
    /// body) replaces the recorded answer when the queue took only some of them.
    async fn settle_idempotency(
        &self,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;
}

/// A store's migrations. Those that a later release applied and this one does not know are
/// ignored rather than refused, so that after a rollback the previous image still starts on the
/// database the newer one migrated: `docs/deployment.md` keeps every release's migrations
/// additive for that reason. (sqlx refuses such a database by default.)
pub(crate) fn migrator(migrations: &[(&'static str, &'static str)]) -> Migrator {
    let mut migrator = Migrator::with_migrations(
        migrations
            .iter()
            .zip(1..)
            .map(|(&(name, sql), version)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    );
    migrator.set_ignore_missing(true);
    migrator
}

/// Idempotency keys are honoured this long (DESIGN.md: 24 h).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the messages of a request whose process died mid-push are abandoned once the request is
/// sent again with its Idempotency-Key (abandon_unpushed.sql).
pub(crate) const SENT_AGAIN: &str = "not sent: its request was sent again with the same Idempotency-Key after the process accepting it stopped while the queue was taking it; the new copy is sent instead";

/// The message ids a recorded answer gave its client: `message_id`, or each entry's in a
/// batch's `results`.
pub(crate) fn answered_ids(response: &str) -> Vec<Uuid> {
    let Ok(answer) = serde_json::from_str::<serde_json::Value>(response) else {
        return Vec::new();
    };
    let entries = match answer["results"].as_array() {
        Some(results) => results.iter().collect(),
        None => vec![&answer],
    };
    entries
        .into_iter()
        .filter_map(|e| e["message_id"].as_str())
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Whether a message with this status, on which a worker does or does not hold a live lease or
/// claim, can be cancelled: `None` when it can, else the answer.
pub(crate) fn cancel_refusal(status: &str, leased: bool) -> Option<Cancel> {
    match known_status(status) {
        Some(Status::Queued | Status::Deferred) if leased => Some(Cancel::InFlight),
        Some(Status::Queued | Status::Deferred) => None,
        Some(other) => Some(Cancel::Settled(other)),
        // A status a later release wrote (logged): not one this release may take back. It is
        // answered as `abandoned`, the nearest status this release knows that it cannot cancel.
        None => Some(Cancel::Settled(Status::Abandoned)),
    }
}

pub(crate) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn decode_message(payload: &str) -> Result<Message, StoreError> {
    serde_json::from_str(payload).map_err(|e| StoreError::Corrupt(format!("message payload: {e}")))
}

/// New messages as the set-based insert statements of both stores read them: each row is
/// already JSON text, so the request that brings the messages does the encoding and a batch of
/// requests is only a join of strings (the single SQLite writer is on every request's path).
#[derive(Debug, Default)]
pub(crate) struct NewRows {
    /// `{id, api, at, payload}`, the payload being the message's own JSON.
    messages: Vec<String>,
    /// Events of status changes. A message's `accepted` event is not among them: it is read
    /// from the message row (`events.sql`), which saves an event row and its index entry per
    /// accepted message.
    events: Vec<String>,
    /// Their ids, for the queue: due at once.
    ids: Vec<String>,
    /// `{id, at}` of those due later (`send_at`), for the queue.
    scheduled: Vec<String>,
}

impl NewRows {
    pub(crate) fn of(messages: &[Message]) -> Result<Self, StoreError> {
        let mut rows = NewRows::default();
        let encode =
            |e: serde_json::Error| StoreError::Corrupt(format!("cannot encode message: {e}"));
        for m in messages {
            let payload = serde_json::to_string(m).map_err(encode)?;
            let row = MessageRow {
                id: m.id,
                api: m.api(),
                at: m.accepted_at.timestamp_millis(),
                payload: &payload,
            };
            rows.messages
                .push(serde_json::to_string(&row).map_err(encode)?);
            // Held by the message alone (its `send_at` after its acceptance), so that the
            // intake, which pushes the others to an external queue, decides alike. Due no
            // earlier than now: a redriven message scheduled long ago is due at once (and does
            // not enter the queue aged from its old time).
            match m.due_later() {
                None => rows.ids.push(format!("\"{}\"", m.id)),
                Some(due) => rows.scheduled.push(
                    serde_json::json!({"id": m.id, "at": due.max(Utc::now()).timestamp_millis()})
                        .to_string(),
                ),
            }
        }
        Ok(rows)
    }

    /// About how many bytes these rows bind, for a batch's size limit.
    pub(crate) fn bytes(&self) -> usize {
        [&self.messages, &self.events, &self.ids, &self.scheduled]
            .iter()
            .flat_map(|rows| rows.iter())
            .map(|row| row.len() + 1)
            .sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.events.is_empty()
            && self.ids.is_empty()
            && self.scheduled.is_empty()
    }

    /// Adds `other`'s rows; `enqueue` says whether its messages due now go on the database
    /// queue (see [`NewRows::hold_only`]).
    pub(crate) fn extend(&mut self, mut other: NewRows, enqueue: bool) {
        if !enqueue {
            other.hold_only();
        }
        self.messages.extend(other.messages);
        self.events.extend(other.events);
        self.ids.extend(other.ids);
        self.scheduled.extend(other.scheduled);
    }

    /// For an external queue (SQS, Kafka), which the intake gives the messages due now: only
    /// those due later stay for the database queue, which holds them until their time for
    /// [`crate::scheduler`] to hand over.
    pub(crate) fn hold_only(&mut self) {
        self.ids.clear();
    }

    /// Whether any row goes on the database queue.
    #[cfg(feature = "postgres")]
    pub(crate) fn queues_any(&self) -> bool {
        !self.ids.is_empty() || !self.scheduled.is_empty()
    }

    /// Adds an event of a status change.
    pub(crate) fn push_event(&mut self, event: String) {
        self.events.push(event);
    }

    pub(crate) fn messages(&self) -> String {
        json_array(&self.messages)
    }

    pub(crate) fn events(&self) -> String {
        json_array(&self.events)
    }

    pub(crate) fn ids(&self) -> String {
        json_array(&self.ids)
    }

    pub(crate) fn scheduled(&self) -> String {
        json_array(&self.scheduled)
    }
}

/// A row of [`NewRows::messages`], serialized from borrowed fields (a `json!` value would copy
/// the payload into a map first: a third of the encoding's cost).
#[derive(Serialize)]
struct MessageRow<'a> {
    id: Uuid,
    api: &'a str,
    at: i64,
    payload: &'a str,
}

/// A JSON array of items that are JSON text already.
pub(crate) fn json_array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// An event row (JSON text) for the set-based event insert of both stores, serialized from
/// borrowed fields as [`MessageRow`] is.
pub(crate) fn event_row(id: Uuid, at: i64, kind: &str, detail: Option<&str>) -> String {
    #[derive(Serialize)]
    struct EventRow<'a> {
        id: Uuid,
        at: i64,
        kind: &'a str,
        detail: Option<&'a str>,
    }
    serde_json::to_string(&EventRow {
        id,
        at,
        kind,
        detail,
    })
    .expect("a struct of strings and numbers serializes")
}

/// A stored status this release knows, or `None` (logged) for one a later release wrote: the
/// worker's look-up before delivery then treats that message as not yet sent, as it would a
/// failed look-up, instead of failing the look-up of the whole batch.
pub(crate) fn known_status(stored: &str) -> Option<Status> {
    let known = Status::from_str(stored).ok();
    if known.is_none() {
        tracing::warn!(
            status = stored,
            "A message has a status this release does not know."
        );
    }
    known
}

/// A record from the columns both stores keep.
pub(crate) fn record_from(
    status: &str,
    attempts: i64,
    updated_at: i64,
    last_error: Option<String>,
    payload: &str,
) -> Result<Record, StoreError> {
    Ok(Record {
        status: Status::from_str(status).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        attempts: attempts as u32,
        updated_at: ms_to_time(updated_at),
        last_error,
        message: decode_message(payload)?,
    })
}
