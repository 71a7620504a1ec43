//! The single writer of the SQLite database: callers send it [`Op`]s and wait for the answer;
//! it takes whatever is waiting (up to [`MAX_BATCH`]), applies it as one transaction with
//! set-based statements, commits once, and only then answers each caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::claimed;
use crate::store::{
    Accepted, CANCELLED_DETAIL, Cancel, Claimed, IDEMPOTENCY_TTL, IdempotencyRecord, NewRows,
    SENT_AGAIN, StoreError, Transition, answered_ids, cancel_refusal, event_row, now_ms,
};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Most bytes of rows bound in one transaction. A batch's rows go to SQLite as one JSON text,
/// which SQLite refuses past a billion bytes (`SQLITE_TOOBIG`, failing every write in the
/// batch), and which is copied a few times on the way: 1,024 acceptances of a 1 MiB body whose
/// quotes are escaped twice would bind about 2 GB. A batch is cut here instead; a single write
/// larger than this is a batch of its own.
const MAX_BATCH_BYTES: usize = 64 << 20;

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A row leased by the database queue: id, attempt, payload.
pub(crate) type LeasedRow = (Uuid, u32, String);

pub(crate) enum Settle {
    /// Ack or dead-letter: the row leaves the queue.
    Remove,
    /// Due again at this time; `uncount` gives the attempt back.
    Reschedule { available_at: i64, uncount: bool },
    /// Still held (a heartbeat): the lease lasts until this time.
    Extend { available_at: i64 },
}

pub(super) enum Op {
    Accept {
        idempotency: Option<IdempotencyRecord>,
        /// The messages, encoded by the caller.
        rows: NewRows,
        enqueue: bool,
        reply: Reply<Accepted>,
    },
    Record {
        id: Uuid,
        transition: Transition,
        /// The message's queue row, added if the change applies (a redrive).
        requeue: Option<NewRows>,
        reply: Reply<bool>,
    },
    Enqueue {
        rows: NewRows,
        reply: Reply<()>,
    },
    Lease {
        max: usize,
        visibility: Duration,
        token: String,
        reply: Reply<Vec<LeasedRow>>,
    },
    Settle {
        id: Uuid,
        token: String,
        settle: Settle,
        reply: Reply<bool>,
    },
    /// Deletes or settles idempotency keys; answers how many rows changed.
    Keys {
        change: KeyChange,
        reply: Reply<u64>,
    },
    Cancel {
        id: Uuid,
        reply: Reply<Cancel>,
    },
    /// A worker's claim on messages it took from an external queue (claim.sql), answered with
    /// what it found (claimed.sql).
    Claim {
        ids: Vec<Uuid>,
        owner: Uuid,
        until: i64,
        reply: Reply<Claimed>,
    },
}

/// A change to idempotency keys outside an acceptance.
pub(super) enum KeyChange {
    /// Deletes those claimed before this time (Unix ms): expired.
    PurgeBefore(i64),
    /// Deletes this one key: its acceptance was not queued after all.
    Forget(String),
    /// This key's messages were queued: it is no longer pending; with the request's final
    /// answer when the queue took only some of them.
    Settle(String, Option<(u16, String)>),
}

/// The writer task: one transaction per batch of waiting writes.
pub(super) async fn write_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Op>,
    commits: Arc<AtomicU64>,
    writing_since: Arc<AtomicI64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        writing_since.store(now_ms(), Ordering::Relaxed);
        for ops in in_order(std::mem::take(&mut batch))
            .into_iter()
            .flat_map(by_size)
        {
            metrics::histogram!("mailroom_store_writes_per_commit").record(ops.len() as f64);
            match apply(&mut conn, ops).await {
                Ok(()) => {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "Database write batch failed."),
            }
        }
        writing_since.store(0, Ordering::Relaxed);
    }
}

/// Splits a batch where applying it by kind would reverse two writes of one message: a batch
/// applies its status changes and cancels before its claims, so a claim renewal sent just
/// before its delivery's outcome (the renewal's future dropped with the op already sent) would
/// claim the message again after the outcome ended the claim, for an owner that has gone (a
/// cancel refused, the retry's copy set aside for a visibility timeout), and a cancel sent just
/// after a worker ended its claim would be refused. Such a status change or cancel starts a
/// batch of its own, committed after the claim's. Rare: almost every batch is one.
fn in_order(ops: Vec<Op>) -> Vec<Vec<Op>> {
    if !ops.iter().any(|op| matches!(op, Op::Claim { .. })) {
        return vec![ops];
    }
    let mut batches = vec![Vec::new()];
    let mut claimed: HashSet<Uuid> = HashSet::new();
    for op in ops {
        if let Op::Record { id, .. } | Op::Cancel { id, .. } = &op
            && claimed.contains(id)
        {
            claimed.clear();
            batches.push(Vec::new());
        }
        if let Op::Claim { ids, .. } = &op {
            claimed.extend(ids.iter().copied());
        }
        batches.last_mut().expect("one batch at least").push(op);
    }
    batches
}

/// Cuts a batch, in order, where its rows would bind more than [`MAX_BATCH_BYTES`].
fn by_size(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let mut batches = vec![Vec::new()];
    let mut size = 0;
    for op in ops {
        let bytes = match &op {
            Op::Accept { rows, .. } | Op::Enqueue { rows, .. } => rows.bytes(),
            Op::Record {
                requeue: Some(rows),
                ..
            } => rows.bytes(),
            _ => 0,
        };
        let last = batches.last_mut().expect("one batch at least");
        if size + bytes > MAX_BATCH_BYTES && !last.is_empty() {
            batches.push(Vec::new());
            size = 0;
        }
        size += bytes;
        batches.last_mut().expect("one batch at least").push(op);
    }
    batches
}

/// Each op's answer, kept until the commit succeeds.
enum Answer {
    Accept(Reply<Accepted>, Accepted),
    Bool(Reply<bool>, bool),
    Unit(Reply<()>),
    Leased(Reply<Vec<LeasedRow>>, Vec<LeasedRow>),
    Count(Reply<u64>, u64),
    Cancel(Reply<Cancel>, Cancel),
    Claimed(Reply<Claimed>, Claimed),
}

impl Answer {
    fn send(self) {
        // A caller that gave up (its request was cancelled) is no error.
        match self {
            Answer::Accept(r, v) => drop(r.send(Ok(v))),
            Answer::Bool(r, v) => drop(r.send(Ok(v))),
            Answer::Unit(r) => drop(r.send(Ok(()))),
            Answer::Leased(r, v) => drop(r.send(Ok(v))),
            Answer::Count(r, v) => drop(r.send(Ok(v))),
            Answer::Cancel(r, v) => drop(r.send(Ok(v))),
            Answer::Claimed(r, v) => drop(r.send(Ok(v))),
        }
    }

    fn fail(self, e: &str) {
        let err = || StoreError::Unavailable(e.to_string());
        match self {
            Answer::Accept(r, _) => drop(r.send(Err(err()))),
            Answer::Bool(r, _) => drop(r.send(Err(err()))),
            Answer::Unit(r) => drop(r.send(Err(err()))),
            Answer::Leased(r, _) => drop(r.send(Err(err()))),
            Answer::Count(r, _) => drop(r.send(Err(err()))),
            Answer::Cancel(r, _) => drop(r.send(Err(err()))),
            Answer::Claimed(r, _) => drop(r.send(Err(err()))),
        }
    }
}

async fn apply(conn: &mut SqliteConnection, ops: Vec<Op>) -> Result<(), StoreError> {
    let mut answers = Vec::with_capacity(ops.len());
    let result = apply_in_tx(conn, ops, &mut answers).await;
    match result {
        Ok(()) => {
            answers.into_iter().for_each(Answer::send);
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            answers.into_iter().for_each(|a| a.fail(&msg));
            Err(e)
        }
    }
}

async fn apply_in_tx(
    conn: &mut SqliteConnection,
    ops: Vec<Op>,
    answers: &mut Vec<Answer>,
) -> Result<(), StoreError> {
    let now = now_ms();
    // Sorted by kind so that each kind runs as one set-based statement.
    let mut new = NewRows::default();
    // Status changes in rounds: one UPDATE applies a row's change from one source row, so a
    // second change of the same message in the batch (two redrives at once, a stale worker's
    // deferral beside a delivery) waits for the next round and is checked against the first.
    let mut records: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut record_answers: Vec<Vec<_>> = Vec::new();
    let mut changes_of: HashMap<Uuid, usize> = HashMap::new();
    let mut removals = Vec::new();
    let mut reschedules = Vec::new();
    let mut extensions = Vec::new();
    let mut settle_answers = Vec::new();
    let mut leases = Vec::new();
    let mut claims = Vec::new();
    let mut purges = Vec::new();
    let mut cancels = Vec::new();
    let mut worker_claims = Vec::new();

    for op in ops {
        match op {
            Op::Accept {
                idempotency: None,
                rows,
                enqueue,
                reply,
            } => {
                new.extend(rows, enqueue);
                answers.push(Answer::Accept(reply, Accepted::Inserted));
            }
            Op::Accept {
                idempotency: Some(idempotency),
                rows,
                enqueue,
                reply,
            } => claims.push((idempotency, rows, enqueue, reply)),
            Op::Record {
                id,
                transition,
                requeue,
                reply,
            } => {
                let round = changes_of.entry(id).or_default();
                if *round == records.len() {
                    records.push(Vec::new());
                    record_answers.push(Vec::new());
                }
                records[*round].push(json!({
                    "id": id.to_string(),
                    "status": transition.status().as_str(),
                    "at": now,
                    "attempts": transition.attempts(),
                    "error": transition.error(),
                }));
                // Written only if the status change is applied (see record.sql's guard).
                let event = event_row(id, now, transition.event(), Some(&transition.detail()));
                record_answers[*round].push((id.to_string(), event, requeue, reply));
                *round += 1;
            }
            Op::Enqueue { rows, reply } => {
                new.extend(rows, true);
                answers.push(Answer::Unit(reply));
            }
            Op::Settle {
                id,
                token,
                settle,
                reply,
            } => {
                let id = id.to_string();
                match settle {
                    Settle::Remove => removals.push(json!({"id": id, "token": token})),
                    Settle::Reschedule {
                        available_at,
                        uncount,
                    } => reschedules.push(json!({
                        "id": id, "token": token,
                        "available_at": available_at, "uncount": i64::from(uncount), "keep": 0,
                    })),
                    Settle::Extend { available_at } => extensions.push(json!({
                        "id": id, "token": token,
                        "available_at": available_at, "uncount": 0, "keep": 1,
                    })),
                }
                settle_answers.push((id, reply));
            }
            Op::Lease {
                max,
                visibility,
                token,
                reply,
            } => leases.push((max, visibility, token, reply)),
            Op::Keys { change, reply } => purges.push((change, reply)),
            Op::Cancel { id, reply } => cancels.push((id.to_string(), reply)),
            Op::Claim {
                ids,
                owner,
                until,
                reply,
            } => worker_claims.push((ids, owner, until, reply)),
        }
    }

    if claims.is_empty()
        && records.is_empty()
        && settle_answers.is_empty()
        && leases.is_empty()
        && purges.is_empty()
        && cancels.is_empty()
        && worker_claims.is_empty()
    {
        return insert_alone(conn, &new, now).await;
    }

    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;

    // Idempotency keys are claimed one by one: a key already claimed (maybe in this very batch)
    // turns its request into a replay of the first answer.
    for (idem, rows, enqueue, reply) in claims {
        let stale: Option<String> = sqlx::query_scalar(query_file!("stale_pending"))
            .bind(&idem.key)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let claimed = sqlx::query(query_file!("claim_idempotency"))
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(i64::from(idem.status))
            .bind(&idem.response)
            .bind(now)
            .bind(now - IDEMPOTENCY_TTL.as_millis() as i64)
            .bind(idem.pending_until)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_some() {
            if let Some(response) = stale {
                // Taken over from a request that died mid-push: its copies go unsent.
                let ids: Vec<String> = answered_ids(&response)
                    .iter()
                    .map(Uuid::to_string)
                    .collect();
                let abandoned: Vec<String> = sqlx::query_scalar(query_file!("abandon_unpushed"))
                    .bind(
                        serde_json::to_string(&ids)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    )
                    .bind(now)
                    .bind(SENT_AGAIN)
                    .fetch_all(&mut *tx)
                    .await?;
                for id in abandoned {
                    let id =
                        Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    new.push_event(event_row(id, now, "abandoned", Some(SENT_AGAIN)));
                }
            }
            new.extend(rows, enqueue);
            answers.push(Answer::Accept(reply, Accepted::Inserted));
        } else {
            let row = sqlx::query(query_file!("select_idempotency"))
                .bind(&idem.key)
                .bind(i64::MIN)
                .bind(i64::MIN)
                .fetch_one(&mut *tx)
                .await?;
            answers.push(Answer::Accept(
                reply,
                Accepted::Replay(idempotency_row(&row)?),
            ));
        }
    }

    for (records, record_answers) in records.into_iter().zip(record_answers) {
        let updated: HashSet<String> = sqlx::query_scalar(query_file!("record"))
            .bind(serde_json::Value::Array(records).to_string())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        for (id, event, requeue, reply) in record_answers {
            let ok = updated.contains(&id);
            if ok {
                new.push_event(event);
                if let Some(rows) = requeue {
                    new.extend(rows, true);
                }
            }
            answers.push(Answer::Bool(reply, ok));
        }
    }
    if !new.is_empty() {
        bind_insert(sqlx::query(query_file!("insert")), &new, now)
            .execute(&mut *tx)
            .await?;
    }
    if !settle_answers.is_empty() {
        // A set: a batch settles up to MAX_BATCH leases, each looked up once below.
        let mut settled: HashSet<String> = HashSet::new();
        // Heartbeats first: one left over from a delivery that has just ended (its future was
        // dropped with the op already sent) must not undo the release or retry that follows it
        // in the same batch, as a second source row for one queue row in one UPDATE could.
        if !extensions.is_empty() {
            settled.extend(
                sqlx::query_scalar::<_, String>(query_file!("reschedule_leased"))
                    .bind(serde_json::Value::Array(extensions).to_string())
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        if !removals.is_empty() {
            settled.extend(
                sqlx::query_scalar::<_, String>(query_file!("delete_leased"))
                    .bind(serde_json::Value::Array(removals).to_string())
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        if !reschedules.is_empty() {
            settled.extend(
                sqlx::query_scalar::<_, String>(query_file!("reschedule_leased"))
                    .bind(serde_json::Value::Array(reschedules).to_string())
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        for (id, reply) in settle_answers {
            let ok = settled.contains(&id);
            answers.push(Answer::Bool(reply, ok));
        }
    }
    // After the inserts (a message accepted in this batch can be cancelled in it) and before
    // the leases (a cancelled message is not leased in the same batch).
    for (id, reply) in cancels {
        let state = sqlx::query(query_file!("cancel_state"))
            .bind(&id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match state {
            None => Cancel::NotFound,
            Some(row) => match cancel_refusal(&row.try_get::<String, _>(0)?, row.try_get(1)?) {
                Some(refused) => refused,
                None => {
                    sqlx::query(query_file!("cancel"))
                        .bind(&id)
                        .bind(now)
                        .bind(CANCELLED_DETAIL)
                        .execute(&mut *tx)
                        .await?;
                    Cancel::Cancelled
                }
            },
        };
        answers.push(Answer::Cancel(reply, outcome));
    }
    // After the cancels too: a message cancelled in this batch is not claimed, and its worker
    // reads `cancelled`.
    for (ids, owner, until, reply) in worker_claims {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let ids = serde_json::to_string(&ids).unwrap_or_default();
        let owner = owner.to_string();
        sqlx::query(query_file!("claim"))
            .bind(&ids)
            .bind(until)
            .bind(&owner)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(query_file!("claimed"))
            .bind(&ids)
            .bind(&owner)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
        answers.push(Answer::Claimed(reply, claimed(&rows)?));
    }
    for (max, visibility, token, reply) in leases {
        let rows = sqlx::query(query_file!("lease"))
            .bind(&token)
            .bind(now + visibility.as_millis() as i64)
            .bind(now)
            .bind(max as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut attempts = HashMap::with_capacity(rows.len());
        for row in &rows {
            attempts.insert(
                row.try_get::<String, _>(0)?,
                row.try_get::<i64, _>(1)? as u32,
            );
        }
        let mut leased = Vec::with_capacity(rows.len());
        if !attempts.is_empty() {
            let ids: Vec<&String> = attempts.keys().collect();
            let payloads = sqlx::query(query_file!("payloads"))
                .bind(serde_json::to_string(&ids).unwrap_or_default())
                .fetch_all(&mut *tx)
                .await?;
            for row in payloads {
                let id: String = row.try_get(0)?;
                let uuid = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                leased.push((uuid, attempts[&id], row.try_get(1)?));
            }
            // Oldest first, as the queue hands them out.
            leased.sort_by_key(|(id, _, _)| *id);
        }
        answers.push(Answer::Leased(reply, leased));
    }
    for (change, reply) in purges {
        let query = match change {
            KeyChange::PurgeBefore(before) => {
                sqlx::query(query_file!("purge_idempotency")).bind(before)
            }
            KeyChange::Forget(key) => sqlx::query(query_file!("forget_idempotency")).bind(key),
            KeyChange::Settle(key, answer) => {
                let (status, response) = answer.unzip();
                sqlx::query(query_file!("settle_idempotency"))
                    .bind(key)
                    .bind(status.map(i64::from))
                    .bind(response)
            }
        };
        let n = query.execute(&mut *tx).await?.rows_affected();
        answers.push(Answer::Count(reply, n));
    }
    tx.commit().await?;
    Ok(())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds the new rows to `insert.sql` (or a statement list that holds it).
fn bind_insert<'q>(query: Query<'q>, new: &NewRows, now: i64) -> Query<'q> {
    query
        .bind(new.messages())
        .bind(new.events())
        .bind(new.ids())
        .bind(now)
        .bind(new.scheduled())
}

/// A batch that only inserts, which is every batch of acceptances without an Idempotency-Key,
/// the usual batch under load, runs as one statement list with its BEGIN and COMMIT. Each
/// statement sent to sqlx's database thread is a round trip with two thread wake-ups, and
/// here that saves four of them per commit: in alternated trials on the benchmark machine the
/// median ingest rate went from about 20,100 to 23,200 requests/s.
async fn insert_alone(
    conn: &mut SqliteConnection,
    new: &NewRows,
    now: i64,
) -> Result<(), StoreError> {
    let list = concat!("BEGIN IMMEDIATE;\n", query_file!("insert"), "\nCOMMIT;");
    let result = bind_insert(sqlx::query(list), new, now)
        .execute(&mut *conn)
        .await;
    if let Err(e) = result {
        // A statement that failed left the transaction open. (If BEGIN itself failed, there is
        // none and this ROLLBACK's own error says so.)
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e.into());
    }
    Ok(())
}

pub(super) fn idempotency_row(row: &SqliteRow) -> Result<IdempotencyRecord, StoreError> {
    Ok(IdempotencyRecord {
        key: row.try_get(0)?,
        request_hash: row.try_get(1)?,
        status: row.try_get::<i64, _>(2)? as u16,
        response: row.try_get(3)?,
        pending_until: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueue(bytes: usize) -> Op {
        let rows = NewRows {
            messages: vec!["x".repeat(bytes - 1)],
            ..NewRows::default()
        };
        Op::Enqueue {
            rows,
            reply: oneshot::channel().0,
        }
    }

    fn sizes(batches: &[Vec<Op>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    /// A batch is cut, in order, before the write that would take it past the byte limit; a
    /// write over the limit alone is a batch of its own; writes without rows cost nothing.
    #[test]
    fn batches_are_cut_by_bytes() {
        let third = MAX_BATCH_BYTES / 3;
        let keys = || Op::Keys {
            change: KeyChange::PurgeBefore(0),
            reply: oneshot::channel().0,
        };
        let batches = by_size(vec![
            enqueue(third),
            keys(),
            enqueue(third),
            enqueue(third),
            enqueue(third),
            enqueue(MAX_BATCH_BYTES + 1),
            keys(),
            enqueue(10),
        ]);
        assert_eq!(sizes(&batches), [4, 1, 1, 2]);
        assert!(matches!(batches[0][1], Op::Keys { .. }), "in order");
        assert_eq!(sizes(&by_size(Vec::new())), [0]);
        assert_eq!(
            sizes(&by_size((0..1024).map(|_| enqueue(100)).collect())),
            [1024]
        );
    }
}
