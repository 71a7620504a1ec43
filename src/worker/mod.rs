//! The worker: pulls leases, waits for the global rate limit, delivers, archives, settles.
//!
//! Per message: the store is told first (delivered, deferred, dead), then the archive is written,
//! then the lease is settled. A crash anywhere in between leaves the lease to expire; the next
//! attempt finds the stored status and does not send a delivered message again.
//!
//! A file per part: this one pulls, looks each message up in the store and hands it over;
//! `hold.rs` keeps leases and store claims alive while a message waits and is sent; `settle.rs`
//! records, archives and settles what came of it.

mod hold;
mod settle;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::archive::Archive;
use crate::config::RetrySettings;
use crate::delivery::mime::{self, MimeSettings};
use crate::delivery::{Delivery, DeliveryError};
use crate::limiter::{self, RateLimiter};
use crate::message::Status;
use crate::queue::{Lease, Queue, QueueError};
use crate::store::{Claimed, Store};
use hold::{Claim, Lost};
pub use settle::backoff;

/// Everything the worker needs, built by `startup`.
pub struct Worker {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
    pub delivery: Arc<dyn Delivery>,
    pub archive: Option<Archive>,
    /// `None`: no ceiling.
    pub limiter: Option<Arc<dyn RateLimiter>>,
    /// Places at the delivery backend ([`Delivery::max_in_flight`]: SMTP's connections),
    /// taken before a rate-limit slot, so that a slot is used as it comes. Taken after, slots
    /// booked while every connection is held by a stalled relay would wait for a connection
    /// and go out together when it recovers, above the ceiling. `None`: no limit of its own.
    pub places: Option<Arc<Semaphore>>,
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

/// The end of the shutdown grace period kept for what comes after the deliveries in progress:
/// giving back the leases of those cut off (half of it), then closing the queue (the other
/// half: Kafka commits its offsets and leaves the group). A quarter of the grace, at least 1 s
/// and at most 5 s, so that the process exits within `SHUTDOWN_GRACE_SECS` of the signal, as
/// the orchestrator's stop timeout above it expects (a grace under 1 s: within 1 s).
pub fn shutdown_tail(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

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

/// A pulled message, with what the store said of it before it is sent.
struct Pulled {
    lease: Lease,
    /// `None`: the store does not know the message (it was never accepted here).
    status: Option<Status>,
    claim: Claim,
}

/// The longest pause between two tries to write a delivery's outcome to the store, or to read
/// the statuses of a pulled batch, while the store is unreachable.
const STORE_PAUSE_MAX: Duration = Duration::from_secs(10);

/// The shortest pause after a failed pull.
const PULL_PAUSE_MIN: Duration = Duration::from_millis(100);

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
                let recheck = self.delivery.recheck_in();
                tracing::warn!(
                    reason,
                    recheck_in_secs = recheck.as_secs(),
                    "Delivery paused; asking the provider again later."
                );
                tokio::select! {
                    _ = tokio::time::sleep(recheck) => {}
                    _ = shutdown.cancelled() => break,
                }
                tokio::select! {
                    checked = self.delivery.check() => {
                        if let Err(e) = checked {
                            tracing::warn!(error = %e, "Delivery still unavailable.");
                        }
                    }
                    _ = shutdown.cancelled() => break,
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
                    // Backoff, not the poll interval: that is zero for Kafka and for SQS's
                    // long poll, and errors no SDK retries (access denied, a queue that does not
                    // exist, expired credentials) come back at once.
                    let pause = self.store_pause(pull_errors).max(PULL_PAUSE_MIN);
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
            let this = self.clone();
            let mut looking = Box::pin(async move { this.look_up(leases).await });
            let looked = tokio::select! {
                looked = &mut looking => looked,
                _ = shutdown.cancelled() => {
                    // A look-up held up by a slow store ends beside the in-flight deliveries,
                    // within the same grace period, and gives what it pulled back unsent.
                    let this = self.clone();
                    tasks.spawn(async move {
                        match looking.await {
                            Ok(pulled) => {
                                for p in pulled {
                                    this.hand_back(p).await;
                                }
                            }
                            Err(leases) => this.give_back(leases).await,
                        }
                    });
                    break;
                }
            };
            let pulled = match looked {
                Ok(pulled) => pulled,
                Err(leases) => {
                    // Beside the deliveries, so that a store that hangs cannot hold the loop
                    // (and a shutdown) up while the leases go back.
                    let this = self.clone();
                    tasks.spawn(async move { this.give_back(leases).await });
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
        let tail = shutdown_tail(self.shutdown_grace);
        let drained = tokio::time::timeout(self.shutdown_grace.saturating_sub(tail), async {
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
            let _ = tokio::time::timeout(tail / 2, async {
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
    async fn look_up(&self, mut leases: Vec<Lease>) -> Result<Vec<Pulled>, Vec<Lease>> {
        if self.claims {
            // Of two copies in one batch, the one with attempts left is the one claimed.
            leases.sort_by_key(|l| l.attempt);
        }
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
        // Filled only with claims: a database queue never hands out one message twice.
        let mut seen = HashSet::new();
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

    /// Gives a pulled message back unsent at shutdown, its claim ended first.
    async fn hand_back(&self, pulled: Pulled) {
        if let Claim::Ours(owner) = pulled.claim {
            self.end_claim(&pulled.lease, owner).await;
        }
        if let Err(e) = self.queue.release(pulled.lease).await {
            tracing::warn!(error = %e, "Could not release a lease at shutdown.");
        }
    }

    /// How long to wait before the `n`th try after the store (or the queue's pull) failed: the
    /// retry backoff, at most [`STORE_PAUSE_MAX`].
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
            // Sent before: by an attempt interrupted before it settled its lease, or by another
            // copy of the message. Its record stands; what follows a record is done again.
            return self.sent_before(lease, done).await;
        }
        if status == Some(Status::Dead) {
            // Dead-lettered, then interrupted before the lease was let go (or a second copy):
            // archived again and taken off the queue, not sent again.
            return self.dead_before(lease).await;
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
        let _place = match &self.places {
            Some(places) => tokio::select! {
                place = places.clone().acquire_owned() => place.ok(),
                _ = soft_stop.cancelled() => return Sent::Stopped,
                lost = &mut kept => return Sent::Lost(lost),
            },
            None => None,
        };
        if let Some(limiter) = &self.limiter {
            let cost = self.delivery.rate_cost(email);
            let waited = tokio::select! {
                w = limiter::acquire(limiter.as_ref(), cost) => w,
                _ = soft_stop.cancelled() => return Sent::Stopped,
                lost = &mut kept => return Sent::Lost(lost),
            };
            metrics::histogram!("mailroom_rate_limit_wait_seconds").record(waited.as_secs_f64());
            metrics::counter!("mailroom_rate_limit_slots_total").increment(u64::from(cost));
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
}
