//! The worker: pulls leases, waits for the global rate limit, delivers, archives, settles.
//!
//! Per message: the store is told first (delivered, deferred, dead), then the archive is written,
//! then the lease is settled. A crash anywhere in between leaves the lease to expire; the next
//! attempt finds the stored status and does not send a delivered message again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::archive::{Archive, Outcome};
use crate::config::RetrySettings;
use crate::delivery::mime::{self, MimeSettings};
use crate::delivery::{Delivery, DeliveryError};
use crate::limiter::{self, RateLimiter};
use crate::message::Status;
use crate::queue::{Lease, Queue, QueueError};
use crate::store::{Claimed, Store, Transition};

/// Everything the worker needs, built by `startup`.
pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    pub delivery: Arc<dyn Delivery>,
    pub archive: Option<Archive>,
    /// `None`: no ceiling.
    pub limiter: Option<Arc<dyn RateLimiter>>,
    pub mime: MimeSettings,
    pub retry: RetrySettings,
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// Rung by the intake after a commit, so a new message does not wait for the poll interval.
    pub wake: Arc<Notify>,
    pub shutdown_grace: Duration,
    /// How long a lease lasts (`VISIBILITY_TIMEOUT_SECS`), and with it a store claim.
    pub visibility: Duration,
    /// With an external queue (SQS, Kafka), which a cancel cannot reach: the store claims a
    /// pulled message for the pull that took it ([`Store::claim`]), so that a cancel while it
    /// waits for the rate limit or is being sent is refused, and a second copy of it (those
    /// queues deliver at least once) waits instead of going out too. Not with the database
    /// queue, whose lease a cancel and every other worker already see.
    pub claims: bool,
}

/// How often a paused delivery backend is asked whether it may send again.
const PAUSED_RECHECK: Duration = Duration::from_secs(30);

/// How long the whole rate-limited schedule pauses when the provider throttles without saying
/// for how long.
const THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// What came of waiting for the limiter and handing the message to the delivery backend.
enum Sent {
    Done(Result<crate::delivery::Receipt, DeliveryError>),
    /// Shutdown came before the message was handed over: the lease goes back.
    Stopped,
    /// The shutdown's grace ran out while the relay had the message: the lease goes back, and
    /// with an external queue the claim is left to run out, since the message may have gone.
    Cut,
    /// The lease or the claim was lost before the message was handed over: not sent.
    Lost(Lost),
}

/// How long a delivery's outcome is tried again while the store cannot take it.
const RECORD_FOR: Duration = Duration::from_secs(600);

/// A pulled message, with what the store said of it before it is sent.
struct Pulled {
    lease: Lease,
    /// `None`: the store does not know the message (it was never accepted here).
    status: Option<Status>,
    claim: Claim,
}

/// Where a message taken from an external queue (SQS, Kafka) is claimed for sending.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// Not claimed: the database queue's own lease is what a cancel sees.
    Unneeded,
    /// By this pull, under this owner.
    Ours(uuid::Uuid),
    /// By another pull (of this worker or another): another copy of the message, which SQS and
    /// Kafka may deliver twice, is with it. This copy waits until that one is settled.
    Elsewhere,
}

/// What came of renewing a claim.
enum Renewed {
    Yes,
    /// The store could not be reached: tried again at the next beat.
    No,
    /// It had run out, and another pull claimed the message since, or settled it.
    Taken,
}

/// How long a shutdown waits for the store to end a claim on a message it gives back.
const END_CLAIM_WITHIN: Duration = Duration::from_secs(1);

/// Why a lease kept alive ended.
enum Lost {
    /// The lease ran out or went to another consumer: the message is no longer this worker's.
    Lease,
    /// The store's claim ran out (SQS, Kafka): a cancel may have been answered 200 since.
    Claim,
}

/// The longest pause between two tries to write a delivery's outcome to the store, or to read
/// the statuses of a pulled batch, while the store is unreachable.
const STORE_PAUSE_MAX: Duration = Duration::from_secs(10);

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

/// A delivery task that panicked left its lease unsettled: the lease runs out and the message
/// is taken again (dead-lettered once its attempts are used up). Said in the logs, with why.
fn reap(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "A delivery task panicked; its message will be taken again when its lease runs out.");
    }
}

impl Worker {
    /// Runs until `shutdown` is cancelled: then stops pulling, lets in-flight deliveries finish
    /// within the grace period, and releases the leases of those that do not.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let hard_stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut pull_errors = 0u32;
        let mut store_errors = 0u32;
        tracing::info!(
            queue = self.queue.name(),
            delivery = self.delivery.name(),
            concurrency = self.concurrency,
            "Worker started."
        );
        while !shutdown.is_cancelled() {
            while let Some(joined) = tasks.try_join_next() {
                reap(joined);
            }
            let room = self.concurrency.saturating_sub(tasks.len());
            if room == 0 {
                tokio::select! {
                    Some(joined) = tasks.join_next() => reap(joined),
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            if let Some(reason) = self.delivery.paused() {
                // The provider stopped the account: pull nothing until it may send again.
                tracing::warn!(
                    reason,
                    "Delivery paused; asking again in {PAUSED_RECHECK:?}."
                );
                tokio::select! {
                    _ = tokio::time::sleep(PAUSED_RECHECK) => {}
                    _ = shutdown.cancelled() => break,
                }
                if let Err(e) = self.delivery.check().await {
                    tracing::warn!(error = %e, "Delivery still unavailable.");
                }
                continue;
            }
            // Owned (boxed, holding its own queue handle) so that a shutdown can hand it over.
            let queue = self.queue.clone();
            let mut pull = Box::pin(async move { queue.pull(room).await });
            let pulled = tokio::select! {
                p = &mut pull => p,
                _ = shutdown.cancelled() => {
                    // A pull in progress may already hold leases (a committed database lease,
                    // an SQS receive on its way back, up to its long-poll wait): it ends beside
                    // the in-flight deliveries, within the same grace period, and gives them back.
                    let queue = self.queue.clone();
                    tasks.spawn(async move {
                        for lease in pull.await.unwrap_or_default() {
                            if let Err(e) = queue.release(lease).await {
                                tracing::warn!(error = %e, "Could not release a lease at shutdown.");
                            }
                        }
                    });
                    break;
                }
            };
            let leases = match pulled {
                Ok(l) => {
                    pull_errors = 0;
                    l
                }
                Err(e) => {
                    pull_errors = pull_errors.saturating_add(1);
                    tracing::error!(error = %e, "Queue pull failed; retrying.");
                    let pause = self.poll_interval * pull_errors.min(25);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            if leases.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let pulled = match self.look_up(leases).await {
                Ok(pulled) => pulled,
                Err(leases) => {
                    self.give_back(leases).await;
                    store_errors = store_errors.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(self.store_pause(store_errors)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            store_errors = 0;
            for p in pulled {
                let this = self.clone();
                let (soft, hard) = (shutdown.clone(), hard_stop.clone());
                tasks.spawn(async move { this.process(p, &soft, &hard).await });
            }
        }
        let in_flight = tasks.len();
        tracing::info!(
            in_flight,
            "Worker stopping: no more pulls; finishing in-flight deliveries."
        );
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while let Some(joined) = tasks.join_next().await {
                reap(joined);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "Grace period over; releasing the remaining leases."
            );
            hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(joined) = tasks.join_next().await {
                    reap(joined);
                }
            })
            .await;
        }
        tracing::info!("Worker stopped.");
    }

    /// Pulls one batch and processes it to the end. For tests:
    /// returns how many leases were processed.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, QueueError> {
        let leases = self.queue.pull(self.concurrency).await?;
        let n = leases.len();
        let pulled = match self.look_up(leases).await {
            Ok(pulled) => pulled,
            Err(leases) => {
                self.give_back(leases).await;
                return Ok(0);
            }
        };
        let never = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for p in pulled {
            let this = self.clone();
            let never = never.clone();
            tasks.spawn(async move { this.process(p, &never, &never).await });
        }
        while let Some(joined) = tasks.join_next().await {
            reap(joined);
        }
        Ok(n)
    }

    /// What the store already knows of a pulled batch: a delivered, cancelled, abandoned or
    /// dead message is not sent (again). With an external queue the store claims them for this
    /// pull at the same time, and a second copy of a message (in this batch, or claimed by
    /// another pull) waits. The leases back when the store cannot be reached.
    async fn look_up(&self, leases: Vec<Lease>) -> Result<Vec<Pulled>, Vec<Lease>> {
        let mut leases = leases;
        // Of two copies in one batch, the one with attempts left is the one claimed.
        leases.sort_by_key(|l| l.attempt);
        let ids: Vec<_> = leases.iter().map(|l| l.message.id).collect();
        let owner = uuid::Uuid::new_v4();
        let known = if self.claims {
            self.store.claim(&ids, owner, self.visibility).await
        } else {
            self.store.statuses(&ids).await.map(|statuses| Claimed {
                statuses,
                ..Claimed::default()
            })
        };
        let known = match known {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read message statuses before delivery; giving the messages back.");
                return Err(leases);
            }
        };
        let mut seen = HashSet::with_capacity(leases.len());
        let pulled = leases.into_iter().map(|lease| {
            let id = lease.message.id;
            let claim = match self.claims {
                false => Claim::Unneeded,
                true if known.elsewhere.contains(&id) || !seen.insert(id) => Claim::Elsewhere,
                true => Claim::Ours(owner),
            };
            let status = known.statuses.get(&id).copied();
            Pulled {
                lease,
                status,
                claim,
            }
        });
        Ok(pulled.collect())
    }

    /// Gives leases back unsent and uncounted. Without the store a message's status is unknown
    /// (it may be cancelled, or sent already) and its outcome could not be recorded: sending it
    /// would break a cancel and, at each visibility timeout, send it again.
    async fn give_back(&self, leases: Vec<Lease>) {
        for lease in leases {
            if let Err(e) = self.queue.release(lease).await {
                tracing::warn!(error = %e, "Could not give a lease back; it will run out.");
            }
        }
    }

    /// How long to wait before the `n`th try after the store failed: the retry backoff, at
    /// most [`STORE_PAUSE_MAX`].
    fn store_pause(&self, n: u32) -> Duration {
        backoff(&self.retry, n).min(STORE_PAUSE_MAX)
    }

    async fn process(
        &self,
        pulled: Pulled,
        soft_stop: &CancellationToken,
        hard_stop: &CancellationToken,
    ) {
        let id = pulled.lease.message.id;
        let result = self.attempt(pulled, soft_stop, hard_stop).await;
        if let Err(e) = result {
            match e {
                QueueError::LeaseLost(_) => {
                    tracing::warn!(message_id = %id, "Lease expired before it was settled; another attempt will follow.")
                }
                e => {
                    tracing::error!(message_id = %id, error = %e, "Could not settle a lease; it will be retried when it expires.")
                }
            }
        }
    }

    async fn attempt(
        &self,
        pulled: Pulled,
        soft_stop: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> Result<(), QueueError> {
        let Pulled {
            lease,
            status,
            claim,
        } = pulled;
        if let Some(done) = status.filter(|s| s.is_final()) {
            // Sent before, then interrupted before the lease was settled: finish the bookkeeping.
            let detail = "already sent in an earlier attempt".to_string();
            return self.finish(lease, done, detail).await;
        }
        if status == Some(Status::Dead) {
            // Dead-lettered, then interrupted before the lease was let go: do not send again.
            return self.queue.dead(lease, "already dead-lettered").await;
        }
        if status == Some(Status::Cancelled) {
            // Withdrawn by its sender on a queue that could not take it back (SQS, Kafka), or
            // a lease that ran out while it was being cancelled.
            tracing::info!(message_id = %lease.message.id, "Not delivered: the message was cancelled.");
            return self.queue.ack(lease).await;
        }
        if status == Some(Status::Abandoned) {
            // The queue reported the push failed but took it after all; its client was answered
            // 503 and may have sent it again: sending this copy could make a duplicate.
            tracing::warn!(message_id = %lease.message.id, "Not delivered: the message was abandoned when it was accepted (its client was answered 503).");
            return self.queue.ack(lease).await;
        }
        if let Claim::Elsewhere = claim {
            // Its claim ends with its status change, or a visibility timeout after its worker
            // last renewed it: by then this copy has nothing left to do, or is sent.
            tracing::info!(message_id = %lease.message.id, "Another copy of this message is being sent; this one waits for it.");
            metrics::counter!("mailroom_duplicate_copies_total").increment(1);
            return self.queue.postpone(lease, self.visibility).await;
        }
        if lease.attempt > self.retry.max_attempts {
            // Every attempt settles its lease, so only leases that ran out unsettled get here:
            // their worker was killed, or failed, while it held the message. One that makes
            // each attempt fail that way must not be taken again and again, for ever.
            let used = lease.attempt - 1;
            let error = format!(
                "gave up after {used} attempts: the last ones never finished (the worker holding the message stopped or failed; see its logs)"
            );
            return self.dead_letter(lease, used, error).await;
        }
        let email = match mime::build(&lease.message, &self.mime) {
            Ok(e) => e,
            Err(e) => return self.fail(lease, e).await,
        };
        let Some(email) = email.filter(|_| self.delivery.name() != "none") else {
            let detail = if self.delivery.name() == "none" {
                "not sent (DELIVERY=none)"
            } else {
                "no recipient (COMPAT_RECIPIENT is not set): archived only"
            };
            return self.finish(lease, Status::Archived, detail.into()).await;
        };
        let sent = {
            // Kept alive from here to the end of the send; it ends only if the lease is lost.
            let kept = self.keep_alive(&lease, claim);
            tokio::pin!(kept);
            self.send(&email, kept, soft_stop, hard_stop).await
        };
        match sent {
            Sent::Stopped => {
                if let Claim::Ours(owner) = claim {
                    // Ended, so that the copy given back is not set aside as another's.
                    self.end_claim(&lease, owner).await;
                }
                self.queue.release(lease).await
            }
            Sent::Cut => self.queue.release(lease).await,
            Sent::Lost(Lost::Lease) => {
                // Another worker may hold the message now, and a cancel may have been answered
                // 200: its next holder decides, without waiting for this claim to run out.
                tracing::warn!(message_id = %lease.message.id, "Lease lost while waiting for the rate limit; not sent by this worker.");
                if let Claim::Ours(owner) = claim {
                    self.end_claim(&lease, owner).await;
                }
                Ok(())
            }
            Sent::Lost(Lost::Claim) => {
                // Still this worker's, but a cancel may have been answered 200 meanwhile: back
                // to the queue, uncounted, for an attempt that reads the status afresh.
                tracing::warn!(message_id = %lease.message.id, "Claim lost while waiting for the rate limit; not sent, given back.");
                self.queue.release(lease).await
            }
            Sent::Done(Ok(receipt)) => self.finish(lease, Status::Delivered, receipt.detail).await,
            Sent::Done(Err(e)) => {
                if let (DeliveryError::Paused(_), Claim::Ours(owner)) = (&e, claim) {
                    // Given back unsent, as at shutdown.
                    self.end_claim(&lease, owner).await;
                }
                self.fail(lease, e).await
            }
        }
    }

    /// Waits for a slot of the global rate, then delivers, unless the lease `kept` alive is
    /// lost before the message is handed over.
    async fn send(
        &self,
        email: &lettre::Message,
        mut kept: std::pin::Pin<&mut impl std::future::Future<Output = Lost>>,
        soft_stop: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> Sent {
        if let Some(limiter) = &self.limiter {
            let waited = tokio::select! {
                w = limiter::acquire(limiter.as_ref()) => w,
                _ = soft_stop.cancelled() => return Sent::Stopped,
                lost = &mut kept => return Sent::Lost(lost),
            };
            metrics::histogram!("mailroom_rate_limit_wait_seconds").record(waited.as_secs_f64());
        }
        let started = Instant::now();
        let deliver = self.delivery.deliver(email);
        tokio::pin!(deliver);
        let result = tokio::select! {
            r = &mut deliver => r,
            _ = hard_stop.cancelled() => return Sent::Cut,
            // Lost while the relay has it: cutting the session off now could not take the
            // message back. It finishes; settling then finds the lease gone.
            _ = &mut kept => tokio::select! {
                r = &mut deliver => r,
                _ = hard_stop.cancelled() => return Sent::Cut,
            },
        };
        metrics::histogram!("mailroom_delivery_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Sent::Done(result)
    }

    /// Keeps the lease from expiring while its message waits for a slot and is delivered, and,
    /// with `claim`, the store's claim with it (SQS, Kafka). Returns only when one is lost: the
    /// queue says the lease is gone, or a lease or claim was not renewed in time (a call that
    /// hangs past the end of what it renews counts as not renewed).
    async fn keep_alive(&self, lease: &Lease, claim: Claim) -> Lost {
        let Some(every) = self.queue.heartbeat() else {
            return std::future::pending().await;
        };
        let id = lease.message.id;
        let owner = match claim {
            Claim::Ours(owner) => Some(owner),
            Claim::Unneeded | Claim::Elsewhere => None,
        };
        let claim = owner.is_some();
        let started = tokio::time::Instant::now();
        let (mut lease_until, mut claim_until) =
            (started + self.visibility, started + self.visibility);
        loop {
            tokio::time::sleep(every).await;
            let beat = tokio::time::Instant::now();
            match tokio::time::timeout_at(lease_until, self.queue.extend(lease)).await {
                Ok(Ok(())) => lease_until = beat + self.visibility,
                Ok(Err(e @ QueueError::LeaseLost(_))) => {
                    tracing::warn!(message_id = %id, error = %e, "Lease lost while delivering.");
                    return Lost::Lease;
                }
                Ok(Err(e)) => {
                    tracing::warn!(message_id = %id, error = %e, "Could not extend a lease; trying again.")
                }
                Err(_) => {}
            }
            // The claim is a store write: renewed once a third of it has passed, however often
            // the queue's heartbeat comes (Kafka's is a quarter of a second).
            if let Some(owner) = owner.filter(|_| beat + self.visibility * 2 / 3 >= claim_until) {
                let renewed = self.renew_claim(lease, owner);
                match tokio::time::timeout_at(claim_until, renewed).await {
                    Ok(Renewed::Yes) => claim_until = beat + self.visibility,
                    Ok(Renewed::Taken) => {
                        tracing::warn!(message_id = %id, "The claim ran out, and another worker claimed or settled the message since; not sent by this one.");
                        return Lost::Claim;
                    }
                    Ok(Renewed::No) | Err(_) => {}
                }
            }
            // The next beat would come after the lease (or the claim) has run out.
            let next = tokio::time::Instant::now() + every;
            if next >= lease_until {
                tracing::warn!(message_id = %id, "The lease could not be renewed for a visibility timeout; taking it as lost.");
                return Lost::Lease;
            }
            if claim && next >= claim_until {
                tracing::warn!(message_id = %id, "The claim could not be renewed for a visibility timeout; a cancel may now be answered 200.");
                return Lost::Claim;
            }
        }
    }

    /// A claim lasts one visibility timeout, as the lease did when it was taken; a wait for the
    /// rate limit plus a send can take longer (32 messages at 1/s wait up to 32 s). Renewed with
    /// the lease, it keeps a cancel from being answered 200 while the message is still sent.
    async fn renew_claim(&self, lease: &Lease, owner: uuid::Uuid) -> Renewed {
        let id = lease.message.id;
        match self.store.claim(&[id], owner, self.visibility).await {
            Ok(c) if c.elsewhere.contains(&id) => Renewed::Taken,
            // Settled meanwhile by the holder of another copy, whose outcome ended this claim
            // along with its own.
            Ok(c) if c.statuses.get(&id).is_some_and(|s| !s.may_be_sent()) => Renewed::Taken,
            Ok(_) => Renewed::Yes,
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "Could not renew a message's claim.");
                Renewed::No
            }
        }
    }

    /// Ends this pull's claim on a message given back unsent, so that the copy taken next is
    /// not set aside as another's until the claim runs out. Best effort: it runs out anyway.
    async fn end_claim(&self, lease: &Lease, owner: uuid::Uuid) {
        let id = lease.message.id;
        let ids = [id];
        let ended = self.store.claim(&ids, owner, Duration::ZERO);
        match tokio::time::timeout(END_CLAIM_WITHIN, ended).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(message_id = %id, error = %e, "Could not end a message's claim; it runs out by itself.")
            }
            Err(_) => {
                tracing::warn!(message_id = %id, "Ending a message's claim took too long; it runs out by itself.")
            }
        }
    }

    /// Success: record, archive, ack.
    async fn finish(&self, lease: Lease, status: Status, detail: String) -> Result<(), QueueError> {
        let id = lease.message.id;
        let attempts = lease.attempt;
        let transition = match status {
            Status::Archived => Transition::Archived {
                attempts,
                detail: detail.clone(),
            },
            _ => Transition::Delivered {
                attempts,
                detail: detail.clone(),
            },
        };
        self.record_outcome(&lease, transition).await?;
        let outcome = Outcome {
            status,
            at: Utc::now(),
            attempts,
            detail,
        };
        if let Err(e) = self.archive(&lease, &outcome).await {
            // Already delivered: the next attempt sees that and only archives.
            let delay = backoff(&self.retry, attempts);
            tracing::error!(message_id = %id, error = %e, "Archive write failed; will retry.");
            metrics::counter!("mailroom_archive_failures_total").increment(1);
            return self.queue.retry(lease, delay).await;
        }
        self.queue.ack(lease).await?;
        let outcome = status.as_str();
        tracing::info!(message_id = %id, attempts, outcome, "Message {outcome}.");
        metrics::counter!("mailroom_deliveries_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Records a delivery's outcome. The message has gone out: a store that is briefly
    /// unreachable must not make it go out again, so the write is tried again, for up to
    /// [`RECORD_FOR`], with the lease kept alive meanwhile (not the claim: it is the same store,
    /// and the message is past cancelling). Should the lease be lost, the write still goes in:
    /// whoever takes the message next finds it delivered and does not send it again.
    async fn record_outcome(
        &self,
        lease: &Lease,
        transition: Transition,
    ) -> Result<(), QueueError> {
        let id = lease.message.id;
        // The usual case, one write that goes through, needs no heartbeat beside it.
        let first = self.store.record(id, transition.clone()).await;
        if first.is_ok() {
            return Ok(());
        }
        let retried = async {
            let started = tokio::time::Instant::now();
            let mut failures = 0u32;
            let mut result = first;
            loop {
                match result {
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
                result = self.store.record(id, transition.clone()).await;
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
    async fn fail(&self, lease: Lease, error: DeliveryError) -> Result<(), QueueError> {
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
    async fn dead_letter(
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
        if let Err(e) = self.archive(&lease, &outcome).await {
            tracing::error!(message_id = %id, error = %e, "Archive write for a dead letter failed.");
            metrics::counter!("mailroom_archive_failures_total").increment(1);
        }
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
