//! Keeping hold of a message while it waits for its turn and is sent: the queue's lease, and with
//! an external queue (SQS, Kafka) the store's claim on it.

use std::time::Duration;

use super::Worker;
use crate::queue::{Lease, QueueError};

/// Where a message taken from an external queue (SQS, Kafka) is claimed for sending.
#[derive(Debug, Clone, Copy)]
pub(super) enum Claim {
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
pub(super) enum Lost {
    /// The lease ran out or went to another consumer: the message is no longer this worker's.
    Lease,
    /// The store's claim ran out (SQS, Kafka): a cancel may have been answered 200 since.
    Claim,
}

impl Worker {
    /// Keeps the lease from expiring while its message waits for a slot and is delivered, and,
    /// with `claim`, the store's claim with it (SQS, Kafka). Returns only when one is lost: the
    /// queue says the lease is gone, or a lease or claim was not renewed in time (a call that
    /// hangs past the end of what it renews counts as not renewed).
    pub(super) async fn keep_alive(&self, lease: &Lease, claim: Claim) -> Lost {
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
    pub(super) async fn end_claim(&self, lease: &Lease, owner: uuid::Uuid) {
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
}
