//! The database queue on SQLite: rows in the store's own database, leased by moving their due time to the
//! end of the visibility timeout (the same semantics as an SQS visibility timeout).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{Depth, Lease, Queue, QueueError, readable};
use crate::message::Message;
use crate::store::now_ms;
use crate::store::sqlite::{Db, Settle};

pub struct SqliteQueue {
    db: Arc<Db>,
    visibility: Duration,
}

impl SqliteQueue {
    pub fn new(db: Arc<Db>, visibility: Duration) -> Self {
        Self { db, visibility }
    }

    /// Gives back a row this release cannot read: uncounted, due after the visibility timeout.
    /// If that fails, the lease runs out by itself (and counts).
    async fn set_aside(&self, id: Uuid, token: &str) {
        let settle = Settle::Reschedule {
            available_at: now_ms() + self.visibility.as_millis() as i64,
            uncount: true,
        };
        if let Err(e) = self.db.settle(id, token.to_string(), settle).await {
            tracing::warn!(message_id = %id, error = %e, "Could not set an unreadable message aside; its lease will run out.");
        }
    }

    async fn settle(&self, lease: &Lease, settle: Settle) -> Result<(), QueueError> {
        let id = lease.message.id;
        if self.db.settle(id, lease.receipt.clone(), settle).await? {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(id))
        }
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        match self.db.enqueue(messages).await {
            Ok(()) => messages.iter().map(|_| Ok(())).collect(),
            Err(e) => messages
                .iter()
                .map(|_| Err(QueueError::Unavailable(e.to_string())))
                .collect(),
        }
    }

    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let token = Uuid::new_v4().to_string();
        let rows = self.db.lease(max, self.visibility, token.clone()).await?;
        let mut leases = Vec::with_capacity(rows.len());
        for (id, attempt, payload) in rows {
            match readable(id, &payload) {
                Some(message) => leases.push(Lease {
                    message,
                    attempt,
                    receipt: token.clone(),
                }),
                None => self.set_aside(id, &token).await,
            }
        }
        Ok(leases)
    }

    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        self.settle(&lease, Settle::Remove).await
    }

    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let available_at = now_ms() + delay.as_millis() as i64;
        self.settle(
            &lease,
            Settle::Reschedule {
                available_at,
                uncount: false,
            },
        )
        .await
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let available_at = now_ms() + delay.as_millis() as i64;
        self.settle(
            &lease,
            Settle::Reschedule {
                available_at,
                uncount: true,
            },
        )
        .await
    }

    async fn dead(&self, lease: Lease, _error: &str) -> Result<(), QueueError> {
        // The store keeps the dead letter (status dead, last error); the queue only lets go.
        self.settle(&lease, Settle::Remove).await
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let now = now_ms();
        let (messages, oldest, scheduled) = self.db.queue_depth(now).await?;
        let oldest_age_secs = oldest
            .map(|t| ((now - t).max(0) as f64) / 1000.0)
            .unwrap_or(0.0);
        Ok(Depth {
            messages,
            oldest_age_secs,
            scheduled,
        })
    }

    fn name(&self) -> &'static str {
        "database"
    }

    fn schedules(&self) -> bool {
        true
    }

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.visibility / 3)
    }

    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        let available_at = now_ms() + self.visibility.as_millis() as i64;
        self.settle(lease, Settle::Extend { available_at }).await
    }
}
