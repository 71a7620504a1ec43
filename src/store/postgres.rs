//! The store on PostgreSQL (RDS): the same tables as SQLite, for many `api` and `worker`
//! replicas. PostgreSQL already commits concurrent transactions together (its WAL flush covers
//! every transaction waiting for it), so each request simply runs its own short transaction.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::{
    Acceptance, Accepted, CANCELLED_DETAIL, Cancel, Claimed, Event, IDEMPOTENCY_TTL,
    IdempotencyRecord, ListFilter, NewRows, Record, SENT_AGAIN, Store, StoreError, Transition,
    answered_ids, cancel_refusal, event_row, json_array, ms_to_time, now_ms, record_from,
};
use crate::message::{Message, Status};

macro_rules! query_file {
    ($name:literal) => {
        include_str!(concat!("../../queries/postgres/", $name, ".sql"))
    };
}
pub(crate) use query_file;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    pub statement_timeout: Duration,
}

/// Connects (TLS as `sslmode` in the URL asks), runs the migrations (under PostgreSQL's advisory
/// lock, so replicas starting together do not race) and returns the pool.
pub async fn connect(settings: &PgSettings) -> Result<PgPool, StoreError> {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(&settings.url)?
        .application_name("mailroom")
        .options([("statement_timeout", timeout_ms.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.pool_size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    super::migrator(&[
        (
            "init",
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        (
            "claims",
            include_str!("../../migrations/postgres/0002_claims.sql"),
        ),
        (
            "pending keys",
            include_str!("../../migrations/postgres/0003_pending_keys.sql"),
        ),
        (
            "claim owner",
            include_str!("../../migrations/postgres/0004_claim_owner.sql"),
        ),
    ])
    .run(&pool)
    .await
    .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
    Ok(pool)
}

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Applies a status change and its event; with `requeue`, also puts the message back on the
    /// database queue, in the same transaction, when the change applies.
    async fn change(
        &self,
        id: Uuid,
        transition: Transition,
        requeue: Option<&Message>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(query_file!("record"))
            .bind(id)
            .bind(transition.status().as_str())
            .bind(now)
            .bind(transition.attempts().map(|a| a as i32))
            .bind(transition.error())
            .fetch_optional(&mut *tx)
            .await?;
        if updated.is_none() {
            tx.rollback().await?;
            tracing::warn!(message_id = %id, event = transition.event(), "Status change not applied: the message is unknown or already finished.");
            return Ok(false);
        }
        if let Some(message) = requeue {
            insert_messages(&mut tx, std::slice::from_ref(message), true).await?;
        }
        let event = event_row(id, now, transition.event(), Some(&transition.detail()));
        sqlx::query(query_file!("insert_events"))
            .bind(json_array(&[event]))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn idempotency_row(row: &PgRow) -> Result<IdempotencyRecord, StoreError> {
    Ok(IdempotencyRecord {
        key: row.try_get(0)?,
        request_hash: row.try_get(1)?,
        status: row.try_get::<i32, _>(2)? as u16,
        response: row.try_get(3)?,
        pending_until: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

/// `(id, status)` rows as a map, leaving out statuses this release does not know.
fn status_map(rows: &[PgRow]) -> Result<HashMap<Uuid, Status>, StoreError> {
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let st: String = r.try_get(1)?;
        if let Some(status) = super::known_status(&st) {
            out.insert(r.try_get(0)?, status);
        }
    }
    Ok(out)
}

fn record_row(row: &PgRow) -> Result<Record, StoreError> {
    let status: String = row.try_get(1)?;
    let payload: String = row.try_get(5)?;
    let attempts: i32 = row.try_get(2)?;
    record_from(
        &status,
        attempts.into(),
        row.try_get(3)?,
        row.try_get(4)?,
        &payload,
    )
}

/// Inserts messages (those not stored yet) and their queue rows (without `enqueue`, only those
/// of messages due later), in the caller's transaction.
pub(crate) async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: &[crate::message::Message],
    enqueue: bool,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut rows = NewRows::of(messages)?;
    sqlx::query(query_file!("insert_messages"))
        .bind(rows.messages())
        .execute(&mut *tx)
        .await?;
    if !enqueue {
        rows.hold_only();
    }
    if rows.queues_any() {
        sqlx::query(query_file!("enqueue"))
            .bind(rows.ids())
            .bind(rows.scheduled())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(idem) = &acceptance.idempotency {
            let stale: Option<String> = sqlx::query_scalar(query_file!("stale_pending"))
                .bind(&idem.key)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            // A concurrent claim of the same key waits here for the first one to commit, then
            // finds it and replays its answer.
            let claimed = sqlx::query(query_file!("claim_idempotency"))
                .bind(&idem.key)
                .bind(&idem.request_hash)
                .bind(i32::from(idem.status))
                .bind(&idem.response)
                .bind(now)
                .bind(now - IDEMPOTENCY_TTL.as_millis() as i64)
                .bind(idem.pending_until)
                .fetch_optional(&mut *tx)
                .await?;
            if claimed.is_none() {
                let row = sqlx::query(query_file!("select_idempotency"))
                    .bind(&idem.key)
                    .bind(i64::MIN)
                    .bind(i64::MIN)
                    .fetch_one(&mut *tx)
                    .await?;
                let first = idempotency_row(&row)?;
                tx.rollback().await?;
                return Ok(Accepted::Replay(first));
            }
            if let Some(response) = stale {
                // Taken over from a request that died mid-push: its copies go unsent.
                let abandoned: Vec<Uuid> = sqlx::query_scalar(query_file!("abandon_unpushed"))
                    .bind(answered_ids(&response))
                    .bind(now)
                    .bind(SENT_AGAIN)
                    .fetch_all(&mut *tx)
                    .await?;
                let events: Vec<String> = abandoned
                    .into_iter()
                    .map(|id| event_row(id, now, "abandoned", Some(SENT_AGAIN)))
                    .collect();
                sqlx::query(query_file!("insert_events"))
                    .bind(json_array(&events))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_messages(&mut tx, &acceptance.messages, enqueue).await?;
        tx.commit().await?;
        Ok(Accepted::Inserted)
    }

    async fn idempotency(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(query_file!("select_idempotency"))
            .bind(key)
            .bind(now_ms() - ttl.as_millis() as i64)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(idempotency_row).transpose()
    }

    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        self.change(id, transition, None).await
    }

    async fn redrive(&self, message: &Message) -> Result<bool, StoreError> {
        self.change(message.id, Transition::Redriven, Some(message))
            .await
    }

    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The message's row before its queue row, the order of a redrive (which records, then
        // enqueues): the other order could deadlock with a redrive of the same message. A lease
        // locks only queue rows, reading the message without a lock, so it never waits on this.
        let state: Option<(String, bool)> = sqlx::query_as(query_file!("cancel_state"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let leased: Option<bool> = sqlx::query_scalar(query_file!("cancel_lock"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((status, claimed)) = state else {
            return Ok(Cancel::NotFound);
        };
        if let Some(refused) = cancel_refusal(&status, leased.unwrap_or(false) || claimed) {
            return Ok(refused);
        }
        sqlx::query(query_file!("cancel"))
            .bind(id)
            .bind(CANCELLED_DETAIL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Cancel::Cancelled)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(query_file!("get"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_row).transpose()
    }

    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(query_file!("events"))
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: ms_to_time(r.try_get(0)?),
                    kind: r.try_get(1)?,
                    detail: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(query_file!("list"))
            .bind(filter.status.map(Status::as_str))
            .bind(filter.before)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record_row).collect()
    }

    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
        let rows = sqlx::query(query_file!("statuses"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        status_map(&rows)
    }

    async fn claim(&self, ids: &[Uuid], owner: Uuid, ttl: Duration) -> Result<Claimed, StoreError> {
        // In one order, so that two workers claiming overlapping sets do not deadlock.
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        let claimed = sqlx::query(query_file!("claim"))
            .bind(&ids)
            .bind(ttl.as_millis() as i64)
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Claimed {
            statuses: status_map(&claimed)?,
            ..Claimed::default()
        };
        // The rest were past sending, claimed by another owner, or unknown when the claim
        // looked: read them afresh. One still to be sent was held by another owner's claim
        // then, even if that claim has ended by now (a second statement reads a later state):
        // taking it as held costs a postponement, taking it as claimed could send it twice.
        let rest: Vec<Uuid> = ids
            .into_iter()
            .filter(|id| !out.statuses.contains_key(id))
            .collect();
        if !rest.is_empty() {
            let statuses = self.statuses(&rest).await?;
            out.elsewhere.extend(
                statuses
                    .iter()
                    .filter(|(_, s)| s.may_be_sent())
                    .map(|(id, _)| *id),
            );
            out.statuses.extend(statuses);
        }
        Ok(out)
    }

    async fn dead_letters(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(query_file!("dead_letters"))
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        let before = now_ms() - ttl.as_millis() as i64;
        Ok(sqlx::query(query_file!("purge_idempotency"))
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query(query_file!("forget_idempotency"))
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn settle_idempotency(
        &self,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        let (status, response) = answer.unzip();
        sqlx::query(query_file!("settle_idempotency"))
            .bind(key)
            .bind(status.map(i32::from))
            .bind(response)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
