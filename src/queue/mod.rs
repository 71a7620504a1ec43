//! Leases with visibility timeouts, retries with a due time, and attempts.
//!
//! A [`Lease`] is settled by value: [`Queue::ack`], [`Queue::retry`], [`Queue::release`] and
//! [`Queue::dead`] consume it, so one job cannot be settled twice. A lease that is never settled
//! (its worker died) becomes visible again when its visibility timeout runs out.

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
#[cfg(feature = "sqs")]
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::message::Message;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached: try again later (503 at the API).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The lease ran out and another worker may hold the message now; nothing to settle.
    #[error("lease on message {0} was lost (visibility timeout passed)")]
    LeaseLost(Uuid),
    /// The message cannot be put on this queue (too large, malformed): a client error.
    #[error("message rejected by the queue: {0}")]
    Rejected(String),
}

impl From<crate::store::StoreError> for QueueError {
    fn from(e: crate::store::StoreError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

/// `text` cut to at most `max` bytes, on a character boundary (for error attributes and headers
/// whose size the queue limits).
#[cfg(any(feature = "sqs", feature = "kafka"))]
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The message of a leased database-queue row, or `None` when this release cannot read it (a
/// later release's format seen after a rollback or mid-deploy, or damage). It is logged and
/// counted, and the rest of the batch goes on; the database queues give such a row back uncounted,
/// due again after the visibility timeout for a worker that can read it, so waiting for one does
/// not use up its attempts.
pub(crate) fn readable(id: Uuid, payload: &str) -> Option<Message> {
    match crate::store::decode_message(payload) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, "A queued message cannot be read by this release; setting it aside for its visibility timeout.");
            metrics::counter!("mailroom_queue_poison_messages_total").increment(1);
            None
        }
    }
}

/// A message taken from the queue for one delivery attempt.
#[derive(Debug)]
pub struct Lease {
    pub message: Message,
    /// 1 for the first attempt: how many times the message has been received, this time included.
    pub attempt: u32,
    /// What the backend needs to settle this lease (a lease token, a receipt handle, an offset).
    pub receipt: String,
}

/// How much work is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Depth {
    /// Messages waiting (due, or delayed for a retry) and in flight.
    pub messages: u64,
    /// Age of the oldest waiting message, in seconds.
    pub oldest_age_secs: f64,
    /// Messages waiting for their `send_at`, not in `messages`: they are not a backlog (and not
    /// a reason to add workers) until their time comes. Only the database queues hold them.
    pub scheduled: u64,
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Puts messages on the queue; one result per message, in order.
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>>;

    /// Leases up to `max` due messages for the visibility timeout the queue was built with.
    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError>;

    /// Done: the message leaves the queue.
    async fn ack(&self, lease: Lease) -> Result<(), QueueError>;

    /// Try again after `delay`; the attempt counts.
    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError>;

    /// Give the message back at once without counting the attempt (shutdown).
    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.postpone(lease, Duration::ZERO).await
    }

    /// Give the message back without counting the attempt, due again after `delay`: another
    /// copy of it is with another worker (SQS and Kafka deliver at least once), and this one
    /// comes back once that one is settled, to be acknowledged, or sent if it never was.
    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError>;

    /// Due again after `delay` for what is left to do once the message was sent (its archive
    /// write): the delivery attempt is not spent where the queue counts attempts itself. SQS
    /// counts receives, and past its redrive policy's `maxReceiveCount` would move a message
    /// that was sent to its dead-letter queue, its archive never written. A retry elsewhere.
    async fn retry_sent(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.retry(lease, delay).await
    }

    /// Failed for good: the message leaves the queue for the dead letters.
    async fn dead(&self, lease: Lease, error: &str) -> Result<(), QueueError>;

    async fn depth(&self) -> Result<Depth, QueueError>;

    fn name(&self) -> &'static str;

    /// Refuses, before anything is stored, a message this queue cannot carry (over its size
    /// limit). The database queues carry anything the API accepts.
    fn check(&self, _message: &Message) -> Result<(), QueueError> {
        Ok(())
    }

    /// Whether the queue can hold a message until a later time (`send_at`): the database queues
    /// can; SQS delays at most 15 minutes and Kafka not at all, so for them the store's database
    /// queue holds such messages until [`crate::scheduler`] hands them over.
    fn schedules(&self) -> bool {
        false
    }

    /// How often a delivery that is still running should call [`Queue::extend`]; `None` when
    /// leases need no keeping alive. Every queue here needs it: a message can wait for its turn
    /// at the rate limit far longer than one visibility timeout (32 messages at 1/s wait up to
    /// 32 s), and a lease that ran out meanwhile would let another worker send it too.
    fn heartbeat(&self) -> Option<Duration> {
        None
    }

    /// Pushes the lease's visibility deadline a full visibility timeout into the future.
    async fn extend(&self, _lease: &Lease) -> Result<(), QueueError> {
        Ok(())
    }

    /// The worker has stopped: commit what is settled and let go of the queue (a Kafka consumer
    /// leaves its group, so the others take its partitions at once).
    async fn close(&self) {}
}
