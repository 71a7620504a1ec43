//! Scheduled messages (`send_at`) on an external queue. SQS delays a message 15 minutes at most
//! (and counts every early receive against its redrive policy), and Kafka not at all, so a
//! message due later waits in the store's own database queue, committed with the message (see
//! `Store::insert`). The scheduler leases what has come due there, pushes it to the external
//! queue and only then lets go of it: a crash in between leaves the lease to run out, and the
//! message is pushed again (at least once; the worker's look-up of the stored status does not
//! send a delivered message twice). Every worker process runs one; the leases keep them apart.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::message::Message;
use crate::queue::{Queue, QueueError};

/// Most messages handed over in one round.
const BATCH: usize = 100;

pub struct Scheduler {
    /// The store's database queue, where messages wait for their time.
    pub held: Arc<dyn Queue>,
    /// The queue the workers pull from.
    pub queue: Arc<dyn Queue>,
    /// How often the held queue is asked for what has come due.
    pub poll_interval: Duration,
}

impl Scheduler {
    /// Hands over what is due now, one batch; returns how many messages were handed over.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let leases = self.held.pull(BATCH).await?;
        if leases.is_empty() {
            return Ok(0);
        }
        let messages: Vec<Message> = leases.iter().map(|l| l.message.clone()).collect();
        let results = self.queue.push(&messages).await;
        let mut moved = 0;
        for (lease, pushed) in leases.into_iter().zip(results) {
            let id = lease.message.id;
            let settled = match pushed {
                Ok(()) => {
                    moved += 1;
                    self.held.ack(lease).await
                }
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "Could not hand a scheduled message to the queue; trying again.");
                    self.held.retry(lease, self.poll_interval * 5).await
                }
            };
            if let Err(e) = settled {
                // Its lease runs out and it is handed over again.
                tracing::warn!(message_id = %id, error = %e, "Could not settle a scheduled message's lease.");
            }
        }
        metrics::counter!("mailroom_scheduled_handed_over_total").increment(moved as u64);
        Ok(moved)
    }

    /// Runs until `shutdown`: a full batch is followed by the next at once, anything less by
    /// the poll interval.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(
            held = self.held.name(),
            queue = self.queue.name(),
            "Scheduler started: messages due later wait in the database queue."
        );
        while !shutdown.is_cancelled() {
            let pause = match self.run_once().await {
                Ok(BATCH) => continue,
                Ok(_) => self.poll_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read the scheduled messages; retrying.");
                    self.poll_interval * 5
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}
