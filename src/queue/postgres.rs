//! The database queue on PostgreSQL: a batch is leased in one statement with
//! `FOR UPDATE SKIP LOCKED`, and a lease is a visibility deadline (no transaction is held across
//! a delivery). `LISTEN/NOTIFY` wakes idle workers as soon as a message is queued.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Depth, Lease, Queue, QueueError, readable};
use crate::message::Message;
use crate::store::postgres::{insert_messages, query_file};

/// The channel `enqueue.sql` notifies.
const CHANNEL: &str = "mailroom_queue";

pub struct PostgresQueue {
    pool: PgPool,
    visibility: Duration,
}

impl PostgresQueue {
    pub fn new(pool: PgPool, visibility: Duration) -> Self {
        Self { pool, visibility }
    }

    /// Rings `wake` whenever any replica queues a message. Runs until the process ends;
    /// `PgListener` reconnects by itself after a connection loss.
    pub async fn listen(&self, wake: Arc<Notify>) -> Result<(), QueueError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(unavailable)?;
        listener.listen(CHANNEL).await.map_err(unavailable)?;
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "Queue notifications interrupted; polling meanwhile.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }

    async fn settle(
        &self,
        lease: Lease,
        sql: &'static str,
        delay: Option<(Duration, i32)>,
    ) -> Result<(), QueueError> {
        let id = lease.message.id;
        let token = Uuid::parse_str(&lease.receipt).map_err(|_| QueueError::LeaseLost(id))?;
        self.settle_row(id, token, sql, delay).await
    }

    /// Gives back a row this release cannot read: uncounted, due after the visibility timeout.
    /// If that fails, the lease runs out by itself (and counts).
    async fn set_aside(&self, id: Uuid, token: Uuid) {
        let delay = Some((self.visibility, 1));
        let sql = query_file!("reschedule_leased");
        if let Err(e) = self.settle_row(id, token, sql, delay).await {
            tracing::warn!(message_id = %id, error = %e, "Could not set an unreadable message aside; its lease will run out.");
        }
    }

    async fn settle_row(
        &self,
        id: Uuid,
        token: Uuid,
        sql: &'static str,
        delay: Option<(Duration, i32)>,
    ) -> Result<(), QueueError> {
        let mut q = sqlx::query(sql).bind(id).bind(token);
        if let Some((delay, uncount)) = delay {
            q = q.bind(delay.as_millis() as i64).bind(uncount);
        }
        match q.fetch_optional(&self.pool).await.map_err(unavailable)? {
            Some(_) => Ok(()),
            None => Err(QueueError::LeaseLost(id)),
        }
    }
}

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

#[async_trait]
impl Queue for PostgresQueue {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            insert_messages(&mut tx, messages, true).await?;
            tx.commit().await?;
            Ok::<_, crate::store::StoreError>(())
        }
        .await;
        messages
            .iter()
            .map(|_| {
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| QueueError::Unavailable(e.to_string()))
            })
            .collect()
    }

    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = Uuid::new_v4();
        let rows = sqlx::query(query_file!("lease"))
            .bind(token)
            .bind(self.visibility.as_millis() as i64)
            .bind(max as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get(0).map_err(unavailable)?;
            let attempts: i32 = row.try_get(1).map_err(unavailable)?;
            let payload: Option<String> = row.try_get(2).map_err(unavailable)?;
            let Some(payload) = payload else {
                // A queue row without its message (nothing ties the two): there is nothing to
                // send, now or later. Removed, not an error that would leave the batch's other
                // leases to run out unattempted.
                tracing::error!(message_id = %id, "A queued message has no stored payload; removing its queue row.");
                metrics::counter!("mailroom_queue_poison_messages_total").increment(1);
                if let Err(e) = self
                    .settle_row(id, token, query_file!("delete_leased"), None)
                    .await
                {
                    tracing::warn!(message_id = %id, error = %e, "Could not remove a queue row without its message; its lease will run out.");
                }
                continue;
            };
            let Some(message) = readable(id, &payload) else {
                self.set_aside(id, token).await;
                continue;
            };
            leases.push(Lease {
                message,
                attempt: attempts as u32,
                receipt: token.to_string(),
            });
        }
        leases.sort_by_key(|l| l.message.id);
        Ok(leases)
    }

    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        self.settle(lease, query_file!("delete_leased"), None).await
    }

    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.settle(lease, query_file!("reschedule_leased"), Some((delay, 0)))
            .await
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.settle(lease, query_file!("reschedule_leased"), Some((delay, 1)))
            .await
    }

    async fn dead(&self, lease: Lease, _error: &str) -> Result<(), QueueError> {
        // The store keeps the dead letter (status dead, last error); the queue only lets go.
        self.settle(lease, query_file!("delete_leased"), None).await
    }

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.visibility / 3)
    }

    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        let id = lease.message.id;
        let token = Uuid::parse_str(&lease.receipt).map_err(|_| QueueError::LeaseLost(id))?;
        sqlx::query(query_file!("extend_leased"))
            .bind(id)
            .bind(token)
            .bind(self.visibility.as_millis() as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|_| ())
            .ok_or(QueueError::LeaseLost(id))
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let row = sqlx::query(query_file!("depth"))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let messages: i64 = row.try_get(0).map_err(unavailable)?;
        let oldest: Option<i64> = row.try_get(1).map_err(unavailable)?;
        let now: i64 = row.try_get(2).map_err(unavailable)?;
        let scheduled: i64 = row.try_get(3).map_err(unavailable)?;
        Ok(Depth {
            messages: messages as u64,
            oldest_age_secs: oldest
                .map(|t| (now - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            scheduled: scheduled as u64,
        })
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn schedules(&self) -> bool {
        true
    }
}
