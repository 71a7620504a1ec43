//! Settling a message after its attempt: the outcome recorded in the store, the archive written,
//! then the lease acknowledged, retried or dead-lettered.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;

use super::Worker;
use super::hold::Claim;
use crate::archive::Outcome;
use crate::config::RetrySettings;
use crate::delivery::DeliveryError;
use crate::message::Status;
use crate::queue::{Lease, QueueError};
use crate::store::Transition;

/// How long the whole rate-limited schedule pauses when the provider throttles without saying
/// for how long.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// How long a delivery's outcome is tried again while the store cannot take it.
const RECORD_FOR: Duration = Duration::from_secs(600);

/// How long one try of that write may take: a store's own limits (PostgreSQL's statement timeout
/// and pool wait, 10 s each by default; SQLite's busy wait) end a slow one well before.
const RECORD_WITHIN: Duration = Duration::from_secs(30);

/// Delay before attempt `attempt + 1`: exponential from `base`, capped at `max`, with "equal
/// jitter" (half fixed, half random) so retries of one outage spread out.
pub fn backoff(retry: &RetrySettings, attempt: u32) -> Duration {
    let exp = retry
        .base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(31)));
    let capped = exp.min(retry.max);
    let half = capped / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// The status change of a message sent (`Delivered`), or archived only (`DELIVERY=none`).
fn sent(status: Status, attempts: u32, detail: String) -> Transition {
    match status {
        Status::Archived => Transition::Archived { attempts, detail },
        _ => Transition::Delivered { attempts, detail },
    }
}

impl Worker {
    /// Success: record, archive, ack.
    pub(super) async fn finish(
        &self,
        lease: Lease,
        status: Status,
        detail: String,
    ) -> Result<(), QueueError> {
        let id = lease.message.id;
        let attempts = lease.attempt;
        self.record_outcome(&lease, sent(status, attempts, detail.clone()))
            .await?;
        let outcome = Outcome {
            status,
            at: Utc::now(),
            attempts,
            detail,
        };
        if let Err(e) = self.archive(&lease, &outcome).await {
            // Already delivered: the next attempt sees that and only archives.
            return self.archive_failed(lease, e, outcome.at).await;
        }
        self.queue.ack(lease).await?;
        let outcome = status.as_str();
        tracing::info!(message_id = %id, attempts, outcome, "Message {outcome}.");
        metrics::counter!("mailroom_deliveries_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// A copy of a message already delivered (or archived): its record, history and delivery
    /// count stay as the attempt that sent it left them, and the copy is acknowledged unsent.
    /// That attempt may have stopped between its record and what follows it, so what follows
    /// is done again from the recorded outcome: the archive object is written (the same key and
    /// outcome, so where it was written nothing changes; asking the archive first would need
    /// more than writing does, as S3 answers a `HEAD` of a missing object with 403 to a role
    /// without `s3:ListBucket`), and the change's event is published again (events are at
    /// least once).
    pub(super) async fn sent_before(&self, lease: Lease, status: Status) -> Result<(), QueueError> {
        let id = lease.message.id;
        let outcome = match self.recorded_outcome(id, status, lease.attempt).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let delay = self.store_pause(1);
                tracing::warn!(message_id = %id, error = %e, "Could not read the outcome of a message sent before; will retry.");
                return self.queue.retry_sent(lease, delay).await;
            }
        };
        if let Err(e) = self.archive(&lease, &outcome).await {
            return self.archive_failed(lease, e, outcome.at).await;
        }
        let change = sent(status, outcome.attempts, outcome.detail);
        self.store.announce_again(id, change).await;
        tracing::info!(message_id = %id, status = status.as_str(), "Already sent: this copy is acknowledged unsent.");
        self.queue.ack(lease).await
    }

    /// The outcome the store recorded for a message that was sent or dead-lettered: the time and
    /// detail of its last event of that `status` (`delivered`, `archived`, `dead`), and its
    /// attempts.
    async fn recorded_outcome(
        &self,
        id: uuid::Uuid,
        status: Status,
        attempt: u32,
    ) -> Result<Outcome, crate::store::StoreError> {
        let attempts = self.store.get(id).await?.map_or(attempt, |r| r.attempts);
        let events = self.store.events(id).await?;
        let recorded = events.iter().rev().find(|e| e.kind == status.as_str());
        Ok(Outcome {
            status,
            at: recorded.map_or_else(Utc::now, |e| e.at),
            attempts,
            detail: recorded
                .and_then(|e| e.detail.clone())
                .unwrap_or_else(|| format!("{} in an earlier attempt", status.as_str())),
        })
    }

    /// The archive could not be written: the message goes back to the queue without spending a
    /// delivery attempt, and its next attempt, finding it sent, archives it. The wait doubles
    /// without counting attempts: it is as long as the write has been owed since the message
    /// was sent (`sent_at`), at least the attempt's backoff and at most `RETRY_MAX_MS`.
    async fn archive_failed(
        &self,
        lease: Lease,
        e: crate::archive::ArchiveError,
        sent_at: chrono::DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let owed = (Utc::now() - sent_at).to_std().unwrap_or_default();
        let delay = backoff(&self.retry, lease.attempt)
            .max(owed)
            .min(self.retry.max);
        tracing::error!(message_id = %lease.message.id, error = %e, retry_in_ms = delay.as_millis() as u64, "Archive write failed; will retry.");
        metrics::counter!("mailroom_archive_failures_total").increment(1);
        self.queue.retry_sent(lease, delay).await
    }

    /// Records a delivery's outcome. The message has gone out: a store that is briefly
    /// unreachable must not make it go out again, so the write is tried again, for up to
    /// [`RECORD_FOR`], with the lease kept alive meanwhile (not the claim: it is the same store,
    /// and the message is past cancelling). Should the lease be lost, the write still goes in:
    /// whoever takes the message next finds it delivered and does not send it again. Each try
    /// has [`RECORD_WITHIN`]: a connection that hangs (a half-open TCP link to a database that
    /// failed over) is given up and the write tried on another, and the lease is kept alive from
    /// the first try on, so a hung first write cannot let it run out under a sent message.
    async fn record_outcome(
        &self,
        lease: &Lease,
        transition: Transition,
    ) -> Result<(), QueueError> {
        let id = lease.message.id;
        let record = || async {
            match tokio::time::timeout(RECORD_WITHIN, self.store.record(id, transition.clone()))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(crate::store::StoreError::Unavailable(format!(
                    "no answer within {RECORD_WITHIN:?}"
                ))),
            }
        };
        let retried = async {
            let started = tokio::time::Instant::now();
            let mut failures = 0u32;
            loop {
                match record().await {
                    Ok(_) => return Ok(()),
                    Err(e) if started.elapsed() >= RECORD_FOR => {
                        tracing::error!(message_id = %id, error = %e, "Could not record a delivery; giving up, the message may be sent again.");
                        return Err(QueueError::from(e));
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let pause = self.store_pause(failures);
                        tracing::error!(message_id = %id, error = %e, retry_in_ms = pause.as_millis() as u64, "Could not record a delivery; trying again.");
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        };
        tokio::pin!(retried);
        tokio::select! {
            recorded = &mut retried => recorded,
            _ = self.keep_alive(lease, Claim::Unneeded) => {
                retried.await?;
                Err(QueueError::LeaseLost(id))
            }
        }
    }

    async fn archive(
        &self,
        lease: &Lease,
        outcome: &Outcome,
    ) -> Result<(), crate::archive::ArchiveError> {
        match &self.archive {
            Some(a) => a.put(&lease.message, outcome).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Failure: retry with backoff, or dead-letter.
    pub(super) async fn fail(&self, lease: Lease, error: DeliveryError) -> Result<(), QueueError> {
        let id = lease.message.id;
        let attempts = lease.attempt;
        let (temporary, label) = match &error {
            DeliveryError::Temporary(_) => (true, "deferred"),
            DeliveryError::Throttled { .. } => (true, "throttled"),
            DeliveryError::Permanent(_) => (false, "dead"),
            DeliveryError::Paused(reason) => {
                // Not this message's doing: give it back without using an attempt.
                tracing::warn!(message_id = %id, reason, "Delivery paused; lease released.");
                metrics::counter!("mailroom_deliveries_total", "outcome" => "paused").increment(1);
                return self.queue.release(lease).await;
            }
        };
        if let (DeliveryError::Throttled { retry_after, .. }, Some(limiter)) =
            (&error, &self.limiter)
        {
            // Everyone sharing the limiter slows down, not only this message.
            let pause = retry_after
                .unwrap_or(THROTTLE_PAUSE)
                .min(THROTTLE_PAUSE * 60);
            if let Err(e) = limiter.hold_off(pause).await {
                tracing::warn!(error = %e, "Could not pause the rate limiter after throttling.");
            }
        }
        if temporary && attempts < self.retry.max_attempts {
            let delay = match &error {
                DeliveryError::Throttled {
                    retry_after: Some(d),
                    ..
                } => (*d).max(backoff(&self.retry, attempts)),
                _ => backoff(&self.retry, attempts),
            };
            let text = error.to_string();
            self.store
                .record(
                    id,
                    Transition::Deferred {
                        attempts,
                        error: text.clone(),
                        retry_in: delay,
                    },
                )
                .await?;
            self.queue.retry(lease, delay).await?;
            tracing::warn!(message_id = %id, attempts, retry_in_ms = delay.as_millis() as u64, error = %text, "Delivery failed temporarily; will retry.");
            metrics::counter!("mailroom_deliveries_total", "outcome" => label).increment(1);
            metrics::histogram!("mailroom_retry_delay_seconds").record(delay.as_secs_f64());
            return Ok(());
        }
        let text = if temporary {
            format!("gave up after {attempts} attempts: {error}")
        } else {
            error.to_string()
        };
        self.dead_letter(lease, attempts, text).await
    }

    /// Archives the dead outcome, records it and takes the message off the queue.
    ///
    /// Unlike a sent message's, a dead letter's archive write is not retried by keeping it on
    /// the queue: on SQS or Kafka a copy kept there would outlive a redrive of the message and,
    /// past `MAX_ATTEMPTS` receives, dead-letter it again. A failed write is logged and counted
    /// (alert `MailroomArchiveFailing`); the next copy found dead writes it again.
    pub(super) async fn dead_letter(
        &self,
        lease: Lease,
        attempts: u32,
        text: String,
    ) -> Result<(), QueueError> {
        let id = lease.message.id;
        let outcome = Outcome {
            status: Status::Dead,
            at: Utc::now(),
            attempts,
            detail: text.clone(),
        };
        self.archive_dead(&lease, &outcome).await;
        self.store
            .record(
                id,
                Transition::Dead {
                    attempts,
                    error: text.clone(),
                },
            )
            .await?;
        self.queue.dead(lease, &text).await?;
        tracing::warn!(message_id = %id, attempts, error = %text, "Message dead-lettered.");
        metrics::counter!("mailroom_deliveries_total", "outcome" => "dead").increment(1);
        Ok(())
    }

    /// A copy of a message found dead-lettered (its attempt stopped after the record, or the
    /// queue delivered it twice): archived again from the record, when the record can be read,
    /// and taken off the queue, never sent.
    pub(super) async fn dead_before(&self, lease: Lease) -> Result<(), QueueError> {
        let id = lease.message.id;
        let detail = match self.recorded_outcome(id, Status::Dead, lease.attempt).await {
            Ok(outcome) => {
                self.archive_dead(&lease, &outcome).await;
                outcome.detail
            }
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "Could not read the outcome of a dead letter; not archived again.");
                "already dead-lettered".into()
            }
        };
        self.queue.dead(lease, &detail).await
    }

    async fn archive_dead(&self, lease: &Lease, outcome: &Outcome) {
        if let Err(e) = self.archive(lease, outcome).await {
            tracing::error!(message_id = %lease.message.id, error = %e, "Archive write for a dead letter failed.");
            metrics::counter!("mailroom_archive_failures_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff doubles per attempt within [d/2, d], and never passes the cap.
    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetrySettings {
            max_attempts: 8,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let d = backoff(&r, attempt).as_millis();
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d}");
        }
    }
}
