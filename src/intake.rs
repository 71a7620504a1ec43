//! Durable acceptance: the store commits, then the queue takes the messages, then the caller is
//! answered. Nothing is acknowledged before it is durable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::message::{Message, Status};
use crate::queue::Queue;
use crate::store::{Acceptance, Accepted, Cancel, Store, StoreError, Transition, now_ms};

/// How long a request's Idempotency-Key stays pending while an external queue takes its
/// messages: a retry meanwhile is told to wait (409), and once it has passed the accepting process
/// is taken to have died mid-push and the key is claimed afresh. The push itself is given up
/// (503, messages abandoned) well before, so a push that succeeds always settles in time: the
/// push has until [`PUSH_WITHIN`] after the key was stamped, the store's insert included.
pub const PENDING_FOR: Duration = Duration::from_secs(120);
const PUSH_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The store or queue could not take the message: answer 503, never 202.
    #[error("{0}")]
    Unavailable(String),
    #[error("message {0} not found")]
    NotFound(Uuid),
    #[error("message {0} is {1}, not dead: only dead letters can be redriven")]
    NotDead(Uuid, &'static str),
    #[error("message {0} is {1}: only queued or deferred messages can be cancelled")]
    NotCancellable(Uuid, &'static str),
    #[error("message {0} is being delivered right now: too late to cancel")]
    InFlight(Uuid),
    /// The queue cannot carry this message (over its size limit): nothing was stored.
    #[error("{field}: {detail}")]
    TooLarge { field: String, detail: String },
}

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        IntakeError::Unavailable(e.to_string())
    }
}

/// What a client is told when the store or the queue cannot take its message (the cause is
/// logged, not told).
pub const UNAVAILABLE: &str = "mailroom cannot store or queue messages right now; retry later";

/// A batch answer (`{"accepted", "rejected", "results": [...]}`) whose queue took only some of
/// its messages: each entry of a message it did not take becomes an `unavailable` error, for
/// the client to send that one again, and the counts follow. Any other answer is left as it is.
pub fn without_unqueued(
    mut response: serde_json::Value,
    failed: &[(Uuid, String)],
) -> serde_json::Value {
    let failed: std::collections::HashSet<String> =
        failed.iter().map(|(id, _)| id.to_string()).collect();
    let error = serde_json::json!({"code": "unavailable", "message": UNAVAILABLE});
    if let Some(results) = response["results"].as_array_mut() {
        for entry in results.iter_mut() {
            if entry["message_id"]
                .as_str()
                .is_some_and(|id| failed.contains(id))
            {
                *entry = serde_json::json!({"index": entry["index"], "error": error});
            }
        }
        let accepted = results
            .iter()
            .filter(|e| e.get("message_id").is_some())
            .count();
        let rejected = results.len() - accepted;
        response["accepted"] = accepted.into();
        response["rejected"] = rejected.into();
    }
    response
}

#[derive(Clone)]
pub struct Intake {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    /// The queue lives in the store's database: one transaction writes both.
    pub queue_in_store: bool,
    /// Rung after each commit so an in-process worker picks the work up at once.
    pub wake: Arc<Notify>,
}

impl Intake {
    pub async fn accept(&self, acceptance: Acceptance) -> Result<Accepted, IntakeError> {
        if self.queue_in_store {
            return self.store_and_queue(acceptance).await;
        }
        // Store, then queue: two steps that must both happen once the first has. Run apart from
        // the request, so a client that hangs up between them cannot leave a stored record (and
        // its idempotency answer) with nothing queued.
        let this = self.clone();
        tokio::spawn(async move { this.store_and_queue(acceptance).await })
            .await
            .map_err(|e| IntakeError::Unavailable(format!("intake task failed: {e}")))?
    }

    async fn store_and_queue(&self, mut acceptance: Acceptance) -> Result<Accepted, IntakeError> {
        let (messages, held) = if self.queue_in_store {
            (Vec::new(), Vec::new())
        } else {
            let single = acceptance.messages.len() == 1;
            for (index, m) in acceptance.messages.iter().enumerate() {
                self.queue.check(m).map_err(|e| IntakeError::TooLarge {
                    field: if single {
                        "body".into()
                    } else {
                        format!("messages[{index}]")
                    },
                    detail: e.to_string(),
                })?;
            }
            // Those due later wait in the store's database queue, committed with them, until
            // the scheduler hands them over (`crate::scheduler`).
            let (held, now): (Vec<&Message>, Vec<&Message>) = acceptance
                .messages
                .iter()
                .partition(|m| m.due_later().is_some());
            (
                now.into_iter().cloned().collect(),
                held.into_iter().map(|m| m.id).collect(),
            )
        };
        // The push must end (or be given up) well within the key's pending time, which starts
        // now, before the store's insert: a slow insert leaves the push less time, not the key
        // less margin.
        let push_by = tokio::time::Instant::now() + PUSH_WITHIN;
        // The key, and the answer recorded with it (rewritten should the queue take only some).
        let key = acceptance.idempotency.as_mut().map(|i| {
            // Its answer is not one to give a retry until the queue has taken the messages.
            if !messages.is_empty() {
                i.pending_until = Some(now_ms() + PENDING_FOR.as_millis() as i64);
                return (i.key.clone(), Some((i.status, i.response.clone())));
            }
            (i.key.clone(), None)
        });
        let accepted = self.store.insert(acceptance, self.queue_in_store).await?;
        if accepted == Accepted::Inserted && !messages.is_empty() {
            let results = match tokio::time::timeout_at(push_by, self.queue.push(&messages)).await {
                Ok(results) => results,
                Err(_) => {
                    let late = format!("the queue did not answer within {PUSH_WITHIN:?}");
                    let late = |_| Err(crate::queue::QueueError::Unavailable(late.clone()));
                    messages.iter().map(late).collect()
                }
            };
            let failure = results
                .iter()
                .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
            if let Some(e) = failure {
                // What the queue did not take is abandoned, for the client to send again. A push
                // that reported a failure may have landed all the same (an answer lost, a
                // produce that timed out after the write): a message that a worker has already
                // claimed is not abandoned (record.sql), and counts as queued, since it is being
                // sent. An abandon that could not be written leaves the message in doubt.
                let mut failed = Vec::new();
                let mut in_doubt = false;
                for (m, r) in messages.iter().zip(&results) {
                    let Err(own) = r else { continue };
                    let error = format!("not queued: {own}");
                    let abandon = Transition::Abandoned {
                        error: error.clone(),
                    };
                    match self.store.record(m.id, abandon).await {
                        Ok(true) => failed.push((m.id, error)),
                        Ok(false) => {
                            tracing::info!(message_id = %m.id, error = %own, "The queue reported a failure, but a worker already holds the message: it counts as queued.");
                        }
                        Err(abandon) => {
                            in_doubt = true;
                            tracing::error!(message_id = %m.id, error = %abandon, "Could not abandon a message that was not queued.");
                            failed.push((m.id, error));
                        }
                    }
                }
                if failed.len() == messages.len() {
                    return Err(self.unqueued(key, &held, in_doubt, e).await);
                }
                if !failed.is_empty() {
                    return Ok(self.partly_queued(key, failed, in_doubt).await);
                }
            }
            if let Some((key, _)) = key
                && let Err(e) = self.store.settle_idempotency(&key, None).await
            {
                // The key stays pending until PENDING_FOR has passed; a retry is told to wait
                // until then, and after it accepted afresh, this request's messages abandoned
                // unless already under way (one copy, or two, never none).
                tracing::error!(error = %e, "Could not settle the Idempotency-Key of a queued request.");
            }
        }
        self.wake.notify_one();
        Ok(accepted)
    }

    /// Some of a request's messages are on the queue, where a worker may already be sending
    /// them: they stay accepted, and only those the queue did not take (`failed`, abandoned)
    /// are refused, for the client to send again (a 503 for all would have it send the others
    /// twice). The key is settled here, not by the request (whose client may have hung up by
    /// now), with the answer that says which were not queued: a retry is given that answer.
    /// When an abandon could not be written (`in_doubt`), that answer may not be true (the
    /// message may be on the queue after all): the key stays pending, and a retry with it
    /// after PENDING_FOR takes it over, abandoning whatever of this request is not being sent.
    async fn partly_queued(
        &self,
        key: Option<(String, Option<(u16, String)>)>,
        failed: Vec<(Uuid, String)>,
        in_doubt: bool,
    ) -> Accepted {
        if let Some((key, Some((status, response)))) = key.filter(|_| !in_doubt) {
            let answer = serde_json::from_str(&response)
                .map(|r| without_unqueued(r, &failed).to_string())
                .unwrap_or(response);
            if let Err(e) = self
                .store
                .settle_idempotency(&key, Some((status, answer)))
                .await
            {
                tracing::error!(error = %e, "Could not settle the Idempotency-Key of a partly queued request.");
            }
        }
        self.wake.notify_one();
        Accepted::Partly(failed)
    }

    /// The queue took none of a request's messages (each was abandoned, or is `in_doubt`): the
    /// client hears 503 and will send the whole request again, so none of it may look pending:
    /// those held for later are abandoned too (the scheduler would hand them over).
    async fn unqueued(
        &self,
        key: Option<(String, Option<(u16, String)>)>,
        held: &[Uuid],
        mut in_doubt: bool,
        e: String,
    ) -> IntakeError {
        let others = || format!("not sent: another message of its request was not queued ({e})");
        for id in held {
            let abandon = Transition::Abandoned { error: others() };
            match self.store.record(*id, abandon).await {
                Ok(true) => {}
                Ok(false) => in_doubt = true,
                Err(abandon) => {
                    in_doubt = true;
                    tracing::error!(message_id = %id, error = %abandon, "Could not abandon a message of a request that was not queued.");
                }
            }
        }
        // The key is let go only when none of the request's messages can still go out:
        // otherwise the client's retry would be accepted afresh beside one that may be sent. It
        // then stays pending: a retry is told to wait (409) until PENDING_FOR has passed, and
        // after it takes the key over, abandoning in the same transaction whatever of this
        // request is not being sent.
        if !in_doubt
            && let Some((key, _)) = key
            && let Err(forget) = self.store.forget_idempotency(&key).await
        {
            tracing::error!(error = %forget, "Could not let go of the Idempotency-Key of a request that was not queued.");
        }
        IntakeError::Unavailable(e)
    }

    /// Withdraws a message that has not been sent yet (queued, scheduled or waiting for a retry).
    pub async fn cancel(&self, id: Uuid) -> Result<(), IntakeError> {
        match self.store.cancel(id).await? {
            Cancel::Cancelled => {
                tracing::info!(message_id = %id, "Message cancelled.");
                metrics::counter!("mailroom_cancellations_total").increment(1);
                Ok(())
            }
            Cancel::NotFound => Err(IntakeError::NotFound(id)),
            Cancel::Settled(status) => Err(IntakeError::NotCancellable(id, status.as_str())),
            Cancel::InFlight => Err(IntakeError::InFlight(id)),
        }
    }

    /// Puts a dead letter back in the queue, in one store transaction.
    pub async fn redrive(&self, id: Uuid) -> Result<(), IntakeError> {
        let record = self.store.get(id).await?.ok_or(IntakeError::NotFound(id))?;
        if record.status != Status::Dead {
            return Err(IntakeError::NotDead(id, record.status.as_str()));
        }
        // The store's own database queue takes the message in the same transaction as its
        // status, so a crash cannot leave it `queued` with nothing to deliver it: the workers'
        // queue when it is that one; with SQS or Kafka, the queue of messages held for the
        // scheduler, which hands it over within a second (`crate::scheduler`).
        if !self.store.redrive(&record.message).await? {
            // Another redrive queued it in the meantime: once is enough.
            return Err(IntakeError::NotDead(id, Status::Queued.as_str()));
        }
        tracing::info!(message_id = %id, "Dead letter redriven.");
        metrics::counter!("mailroom_redrives_total").increment(1);
        self.wake.notify_one();
        Ok(())
    }
}
