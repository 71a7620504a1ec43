//! Scheduled messages (`send_at`) on an external queue. SQS delays a message 15 minutes at most
//! (and counts every early receive against its redrive policy), and Kafka not at all, so a
//! message due later waits in the store's own database queue, committed with the message (see
//! `Store::insert`). The scheduler leases what has come due there, pushes it to the external
//! queue and only then lets go of it: a crash in between leaves the lease to run out, and the
//! message is pushed again (at least once; the worker's look-up of the stored status does not
//! send a delivered message twice). Every worker process runs one; the leases keep them apart.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::message::Message;
use crate::queue::{Lease, Queue, QueueError};
use crate::store::{Store, Transition};

/// Most messages handed over in one round.
const BATCH: usize = 100;

/// How often the held messages are asked for what has come due: a `send_at` is kept to about a
/// second, and an idle scheduler costs one small query a second.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long the scheduler's lease on a held message lasts: twice the longest a push may take
/// (the SQS client's 60 s operation timeout; Kafka gives up after 15 s), so that a slow push is
/// not handed over a second time by another worker, and a scheduler that died mid-round delays
/// its messages by two minutes at most.
pub const HELD_VISIBILITY: Duration = Duration::from_secs(120);

/// The longest wait before a push that failed is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

pub struct Scheduler {
    /// The store's database queue, where messages wait for their time.
    pub held: Arc<dyn Queue>,
    /// The queue the workers pull from.
    pub queue: Arc<dyn Queue>,
    /// Where a message the queue can never carry is dead-lettered.
    pub store: Arc<dyn Store>,
    /// How long a round in progress at shutdown may still take.
    pub shutdown_grace: Duration,
}

impl Scheduler {
    /// Hands over what is due now, one batch; returns how many messages were handed over.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let leases = self.held.pull(BATCH).await?;
        if leases.is_empty() {
            return Ok(0);
        }
        // A message the queue can no longer carry (its size limit was lowered after the message
        // was accepted) never will be: it goes to the dead letters, where an operator sees it.
        let (fits, too_large): (Vec<_>, Vec<_>) = leases
            .into_iter()
            .map(|lease| {
                let fits = self.queue.check(&lease.message);
                (lease, fits)
            })
            .partition(|(_, fits)| fits.is_ok());
        let messages: Vec<Message> = fits.iter().map(|(l, _)| l.message.clone()).collect();
        let pushed = self.queue.push(&messages).await;
        let outcomes = fits
            .into_iter()
            .map(|(l, _)| l)
            .zip(pushed)
            .chain(too_large);
        // Settled together, so that the SQLite writer commits them as one transaction.
        let handed = join_all(outcomes.map(|(lease, pushed)| self.settle(lease, pushed))).await;
        let moved = handed.into_iter().filter(|h| *h).count();
        metrics::counter!("mailroom_scheduled_handed_over_total").increment(moved as u64);
        Ok(moved)
    }

    /// Lets go of a held message the queue took; dead-letters one it refused for good; gives
    /// one it could not take now back for a later round. Whether it was handed over.
    async fn settle(&self, lease: Lease, pushed: Result<(), QueueError>) -> bool {
        let id = lease.message.id;
        let (handed, settled) = match pushed {
            Ok(()) => (true, self.held.ack(lease).await),
            Err(QueueError::Rejected(e)) => {
                let error = format!("the queue refused it when its time came: {e}");
                tracing::error!(message_id = %id, error, "A scheduled message cannot go on the queue; dead-lettered.");
                let dead = Transition::Dead {
                    attempts: 0,
                    error: error.clone(),
                };
                if let Err(e) = self.store.record(id, dead).await {
                    // Its lease runs out, and the next round tries again.
                    tracing::warn!(message_id = %id, error = %e, "Could not dead-letter a scheduled message.");
                    return false;
                }
                (false, self.held.dead(lease, &error).await)
            }
            Err(e) => {
                let delay = POLL_INTERVAL
                    .saturating_mul(2u32.saturating_pow(lease.attempt.saturating_sub(1).min(16)))
                    .min(MAX_RETRY_DELAY);
                tracing::warn!(message_id = %id, error = %e, retry_in = ?delay, "Could not hand a scheduled message to the queue; trying again.");
                (false, self.held.retry(lease, delay).await)
            }
        };
        if let Err(e) = settled {
            // Its lease runs out, and it is handed over (or dead-lettered) again.
            tracing::warn!(message_id = %id, error = %e, "Could not settle a scheduled message's lease.");
        }
        handed
    }

    /// Runs until `shutdown`: a full batch is followed by the next at once, anything less by
    /// [`POLL_INTERVAL`]. A round in progress at shutdown has the grace period to finish; past
    /// it, its leases run out and its messages are handed over by another worker.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(
            held = self.held.name(),
            queue = self.queue.name(),
            "Scheduler started: messages due later wait in the database queue."
        );
        let past_grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.shutdown_grace).await;
        };
        tokio::pin!(past_grace);
        while !shutdown.is_cancelled() {
            let round = tokio::select! {
                r = self.run_once() => r,
                _ = &mut past_grace => break,
            };
            let pause = match round {
                Ok(BATCH) => continue,
                Ok(_) => POLL_INTERVAL,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not read the scheduled messages; retrying.");
                    POLL_INTERVAL * 5
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
}
