//! The embedded store and database queue: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so every write goes through one task that owns the write
//! connection. It takes whatever writes are waiting (requests, settlements, leases), runs them in
//! one transaction with set-based statements, commits once and then answers each caller: a group
//! commit. A 202 therefore costs a share of one fsync, and is sent only after the commit that
//! holds its message. Reads use a separate pool and never wait for the writer.
//!
//! Layout: this file opens the database and holds [`Db`] (the read pool and the handle to the
//! writer) and the [`Store`] over it; `writer.rs` holds the writer task, the writes it takes and
//! how one batch of them becomes one transaction.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Acceptance, Accepted, Cancel, Claimed, Event, IdempotencyRecord, ListFilter, NewRows, Record,
    Store, StoreError, Transition, ms_to_time, now_ms, record_from,
};
use crate::message::{Message, Status};

macro_rules! query_file {
    ($name:literal) => {
        include_str!(concat!("../../../queries/sqlite/", $name, ".sql"))
    };
}

mod writer;

use writer::{KeyChange, Op, Reply, idempotency_row, write_loop};
pub(crate) use writer::{LeasedRow, Settle};

/// The SQLite database: a read pool and the single writer.
pub struct Db {
    read: SqlitePool,
    writer: mpsc::Sender<Op>,
    /// Transactions committed by the writer; with group commit, fewer than the writes asked for.
    commits: Arc<AtomicU64>,
    /// When the writer began the batch it is applying (Unix ms), 0 while it waits for work.
    writing_since: Arc<AtomicI64>,
}

/// A batch of writes that has not committed after this long is stuck (another process holds
/// the database's lock), and `/ready` says so: batches take milliseconds.
const STALLED_AFTER: Duration = Duration::from_secs(5);

impl Db {
    /// Opens (creating if needed) the database at `url`, runs the migrations and starts the writer.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed message survives power loss, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            // Other processes (`mailroom send`, a separate api or worker) may hold the lock.
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = SqliteConnection::connect_with(&options).await?;
        migrate(&mut conn).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await?;
        let (tx, rx) = mpsc::channel(8192);
        let commits = Arc::new(AtomicU64::new(0));
        let writing_since = Arc::new(AtomicI64::new(0));
        tokio::spawn(write_loop(conn, rx, commits.clone(), writing_since.clone()));
        Ok(Db {
            read,
            writer: tx,
            commits,
            writing_since,
        })
    }

    /// How many write transactions have been committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .await
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        // A dropped reply means the batch holding this write failed (the cause is logged).
        rx.await
            .map_err(|_| StoreError::Unavailable("the database write failed".into()))?
    }

    pub(crate) async fn lease(
        &self,
        max: usize,
        visibility: Duration,
        token: String,
    ) -> Result<Vec<LeasedRow>, StoreError> {
        self.call(|reply| Op::Lease {
            max,
            visibility,
            token,
            reply,
        })
        .await
    }

    pub(crate) async fn settle(
        &self,
        id: Uuid,
        token: String,
        settle: Settle,
    ) -> Result<bool, StoreError> {
        self.call(|reply| Op::Settle {
            id,
            token,
            settle,
            reply,
        })
        .await
    }

    /// Puts messages on the database queue, storing any the store does not have yet.
    pub(crate) async fn enqueue(&self, messages: &[Message]) -> Result<(), StoreError> {
        let rows = NewRows::of(messages)?;
        self.call(|reply| Op::Enqueue { rows, reply }).await
    }

    /// Messages due or in flight, the oldest one's enqueue time, and messages due later.
    pub(crate) async fn queue_depth(
        &self,
        now: i64,
    ) -> Result<(u64, Option<i64>, u64), StoreError> {
        let row = sqlx::query(query_file!("depth"))
            .bind(now)
            .fetch_one(&self.read)
            .await?;
        Ok((
            row.try_get::<i64, _>(0)? as u64,
            row.try_get(1)?,
            row.try_get::<i64, _>(2)? as u64,
        ))
    }
}

/// Runs the migrations. Two processes starting at once may race on a fresh file; the loser
/// finds the schema in place on its second try.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let migrator = super::migrator(&[
        (
            "init",
            include_str!("../../../migrations/sqlite/0001_init.sql"),
        ),
        (
            "claims",
            include_str!("../../../migrations/sqlite/0002_claims.sql"),
        ),
        (
            "pending keys",
            include_str!("../../../migrations/sqlite/0003_pending_keys.sql"),
        ),
        (
            "claim owner",
            include_str!("../../../migrations/sqlite/0004_claim_owner.sql"),
        ),
    ]);
    if migrator.run(&mut *conn).await.is_err() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        migrator
            .run(&mut *conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
    }
    Ok(())
}

/// Rows of claimed.sql: id, status, whether another owner's claim holds it.
fn claimed(rows: &[SqliteRow]) -> Result<Claimed, StoreError> {
    let mut out = Claimed {
        statuses: status_map(rows)?,
        ..Claimed::default()
    };
    for r in rows {
        if r.try_get::<bool, _>(2)? {
            let id: String = r.try_get(0)?;
            out.elsewhere
                .insert(Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
    }
    Ok(out)
}

/// `(id, status)` rows as a map, leaving out statuses this release does not know.
fn status_map(rows: &[SqliteRow]) -> Result<HashMap<Uuid, Status>, StoreError> {
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get(0)?;
        let st: String = r.try_get(1)?;
        if let Some(status) = super::known_status(&st) {
            out.insert(
                Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                status,
            );
        }
    }
    Ok(out)
}

fn record_row(row: &SqliteRow) -> Result<Record, StoreError> {
    let status: String = row.try_get(1)?;
    let payload: String = row.try_get(5)?;
    record_from(
        &status,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        &payload,
    )
}

/// The [`Store`] over [`Db`].
pub struct SqliteStore {
    db: Arc<Db>,
}

impl SqliteStore {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError> {
        let rows = NewRows::of(&acceptance.messages)?;
        self.db
            .call(|reply| Op::Accept {
                idempotency: acceptance.idempotency,
                rows,
                enqueue,
                reply,
            })
            .await
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
            .fetch_optional(&self.db.read)
            .await?;
        row.as_ref().map(idempotency_row).transpose()
    }

    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        let updated = self
            .db
            .call(|reply| Op::Record {
                id,
                transition: transition.clone(),
                requeue: None,
                reply,
            })
            .await?;
        if !updated {
            tracing::warn!(message_id = %id, event = transition.event(), "Status change not applied: the message is unknown or already finished.");
        }
        Ok(updated)
    }

    async fn redrive(&self, message: &Message) -> Result<bool, StoreError> {
        let requeue = Some(NewRows::of(std::slice::from_ref(message))?);
        self.db
            .call(|reply| Op::Record {
                id: message.id,
                transition: Transition::Redriven,
                requeue,
                reply,
            })
            .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(query_file!("get"))
            .bind(id.to_string())
            .fetch_optional(&self.db.read)
            .await?;
        row.as_ref().map(record_row).transpose()
    }

    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(query_file!("events"))
            .bind(id.to_string())
            .fetch_all(&self.db.read)
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
            .bind(filter.before.map(|u| u.to_string()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.db.read)
            .await?;
        rows.iter().map(record_row).collect()
    }

    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let rows = sqlx::query(query_file!("statuses"))
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .fetch_all(&self.db.read)
            .await?;
        status_map(&rows)
    }

    async fn claim(&self, ids: &[Uuid], owner: Uuid, ttl: Duration) -> Result<Claimed, StoreError> {
        let ids = ids.to_vec();
        let until = now_ms() + ttl.as_millis() as i64;
        self.db
            .call(|reply| Op::Claim {
                ids,
                owner,
                until,
                reply,
            })
            .await
    }

    async fn dead_letters(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(query_file!("dead_letters"))
            .fetch_one(&self.db.read)
            .await?;
        Ok(n as u64)
    }

    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        let before = now_ms() - ttl.as_millis() as i64;
        self.db
            .call(|reply| Op::Keys {
                change: KeyChange::PurgeBefore(before),
                reply,
            })
            .await
    }

    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError> {
        self.db.call(|reply| Op::Cancel { id, reply }).await
    }

    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError> {
        let change = KeyChange::Forget(key.to_string());
        self.db
            .call(|reply| Op::Keys { change, reply })
            .await
            .map(|_| ())
    }

    async fn settle_idempotency(
        &self,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        let change = KeyChange::Settle(key.to_string(), answer);
        self.db
            .call(|reply| Op::Keys { change, reply })
            .await
            .map(|_| ())
    }

    /// Reads answer, and writes are not stuck behind a lock another process holds (a read
    /// would still answer then, while every write waits and then fails).
    async fn ping(&self) -> Result<(), StoreError> {
        let since = self.db.writing_since.load(Ordering::Relaxed);
        let waited = Duration::from_millis(now_ms().saturating_sub(since).max(0) as u64);
        if since != 0 && waited >= STALLED_AFTER {
            return Err(StoreError::Unavailable(format!(
                "writes have waited {} s for the database (another process may hold its lock)",
                waited.as_secs()
            )));
        }
        sqlx::query("SELECT 1").execute(&self.db.read).await?;
        Ok(())
    }
}
