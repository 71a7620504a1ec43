//! Amazon SQS (`QUEUE_BACKEND=sqs`).
//!
//! - **Push**: concurrent accepts are gathered into `SendMessageBatch` calls of up to 10 entries
//!   (and no more bytes than the queue takes in one call); each caller hears only its own
//!   entry's result, so a failed entry is a 503 at the API, never a 202.
//! - **Pull**: one long poll (`SQS_WAIT_TIME_SECS`, at most 20 s); when it comes back full,
//!   more receives run at once without waiting, up to `max`.
//! - **Leases**: a receipt handle with a visibility deadline kept here. [`Queue::extend`] pushes
//!   the deadline out while a delivery runs long. A lease whose deadline passed is
//!   [`QueueError::LeaseLost`]: SQS may already have handed the message to another worker.
//! - **Attempts**: SQS counts receives (`ApproximateReceiveCount`); a message re-sent by
//!   [`Queue::release`] carries the attempts it had already used in the `mailroom-attempts`
//!   attribute, so giving a lease back does not cost an attempt.
//! - **Dead letters**: [`Queue::dead`] sends the message to the dead-letter queue (`SQS_DLQ_URL`,
//!   or the target of the queue's redrive policy) with the error in an attribute, then deletes
//!   it. A body that is not a mailroom message (a poison message) is left alone: the queue's
//!   redrive policy moves it to the dead-letter queue after `maxReceiveCount` receives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use serde::Deserialize;
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::{Depth, Lease, Queue, QueueError};
use crate::message::Message;

/// A message as an SQS body. SQS refuses a body with a character outside XML's (`#x9 | #xA | #xD
/// | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`). JSON escapes the control characters
/// already, but writes the noncharacters U+FFFE and U+FFFF as they are: they are written as
/// `\uFFFE` and `\uFFFF` escapes, the same JSON to its reader. Such a character can only stand
/// inside a JSON string, where an escape means the same.
fn encode(message: &Message) -> Result<String, QueueError> {
    let body = serde_json::to_string(message)
        .map_err(|e| QueueError::Rejected(format!("cannot encode message: {e}")))?;
    if !body.contains(['\u{FFFE}', '\u{FFFF}']) {
        return Ok(body);
    }
    Ok(body
        .replace('\u{FFFE}', "\\uFFFE")
        .replace('\u{FFFF}', "\\uFFFF"))
}

/// How many attempts a message used before this copy of it was sent.
const ATTEMPTS_ATTRIBUTE: &str = "mailroom-attempts";
/// Why a message was dead-lettered, on its copy in the dead-letter queue.
const ERROR_ATTRIBUTE: &str = "mailroom-error";
/// SQS's own limits.
const MAX_BATCH: usize = 10;
const MAX_WAIT_SECS: u64 = 20;
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// The queue's `MaximumMessageSize` when it cannot be read: SQS's long-standing default.
const DEFAULT_MAX_BYTES: usize = 262_144;
/// Room left in each message for its attributes (the attempts, or the dead-letter reason).
const ATTRIBUTE_ALLOWANCE: usize = 512;
/// Longest dead-letter reason kept on the dead-letter queue's copy (the store has it whole).
const MAX_REASON_BYTES: usize = 400;
/// SQS's longest `DelaySeconds`.
const MAX_DELAY: Duration = Duration::from_secs(900);
/// Batch sends in flight at once.
const SENDERS: usize = 16;

#[derive(Debug, Clone)]
pub struct SqsSettings {
    pub queue_url: String,
    /// `None`: the target of the queue's redrive policy.
    pub dlq_url: Option<String>,
    pub visibility: Duration,
    /// Long-poll wait of each receive (at most 20 s).
    pub wait: Duration,
    /// Receives run at once when the queue is busy.
    pub pollers: usize,
}

/// One message waiting to be sent in a batch.
struct Outgoing {
    body: String,
    attempts_before: u32,
    /// How long SQS keeps it from being received (at most [`MAX_DELAY`]).
    delay: Duration,
    reply: oneshot::Sender<Result<(), QueueError>>,
}

pub struct SqsQueue {
    client: Client,
    settings: SqsSettings,
    /// The queue's `MaximumMessageSize`, read when the queue is opened.
    max_bytes: Arc<AtomicUsize>,
    /// The dead-letter queue's URL, looked up once when first needed.
    dlq: OnceCell<Option<String>>,
    /// Receipt handle → when this process's hold on it ends.
    leases: Mutex<HashMap<String, Instant>>,
    outgoing: mpsc::Sender<Outgoing>,
}

impl SqsQueue {
    /// Opens the queue and starts its batch sender. Reads the queue's size limit and redrive
    /// policy, warning when the policy would dead-letter a message before mailroom gives up.
    pub async fn open(client: Client, settings: SqsSettings, max_attempts: u32) -> Self {
        let max_bytes = Arc::new(AtomicUsize::new(DEFAULT_MAX_BYTES));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(send_batches(
            client.clone(),
            settings.queue_url.clone(),
            max_bytes.clone(),
            rx,
        ));
        let queue = Self {
            client,
            settings,
            max_bytes,
            dlq: OnceCell::new(),
            leases: Mutex::new(HashMap::new()),
            outgoing: tx,
        };
        match queue.attributes(&queue.settings.queue_url).await {
            Ok(attrs) => {
                if let Some(n) = attrs
                    .get(&QueueAttributeName::MaximumMessageSize)
                    .and_then(|v| v.parse().ok())
                {
                    queue.max_bytes.store(n, Ordering::Relaxed);
                }
                if let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy)
                    && let Ok(p) = serde_json::from_str::<RedrivePolicy>(policy)
                    && p.max_receive_count < max_attempts
                {
                    tracing::warn!(
                        max_receive_count = p.max_receive_count,
                        max_attempts,
                        "The SQS redrive policy's maxReceiveCount is below MAX_ATTEMPTS: SQS will move retried messages to the dead-letter queue before mailroom gives up on them, and their status will stay 'deferred'."
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the SQS queue's attributes; assuming a 256 KiB message limit.")
            }
        }
        if let Ok(None) = queue.dlq_url().await {
            tracing::warn!(
                "The SQS queue has no dead-letter queue (no SQS_DLQ_URL, no redrive policy): dead letters are kept in the store only, and poison messages come back until SQS's retention drops them."
            );
        }
        queue
    }

    async fn attributes(
        &self,
        url: &str,
    ) -> Result<HashMap<QueueAttributeName, String>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// `SQS_DLQ_URL`, else the redrive policy's target; `None` when the queue has neither.
    async fn dlq_url(&self) -> Result<Option<&String>, QueueError> {
        self.dlq
            .get_or_try_init(|| async {
                if let Some(url) = &self.settings.dlq_url {
                    return Ok(Some(url.clone()));
                }
                let attrs = self.attributes(&self.settings.queue_url).await?;
                let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) else {
                    return Ok(None);
                };
                let policy: RedrivePolicy = serde_json::from_str(policy).map_err(|e| {
                    QueueError::Unavailable(format!("unreadable redrive policy: {e}"))
                })?;
                // arn:aws:sqs:{region}:{account}:{name}
                let parts: Vec<&str> = policy.dead_letter_target_arn.split(':').collect();
                let [.., account, name] = parts.as_slice() else {
                    return Err(QueueError::Unavailable(format!(
                        "unreadable dead-letter queue ARN {}",
                        policy.dead_letter_target_arn
                    )));
                };
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(*name)
                    .queue_owner_aws_account_id(*account)
                    .send()
                    .await
                    .map_err(unavailable)?;
                Ok(out.queue_url().map(str::to_string))
            })
            .await
            .map(Option::as_ref)
    }

    /// Sends messages through the batch sender; one result per message.
    async fn send(
        &self,
        messages: &[Message],
        attempts_before: u32,
        delay: Duration,
    ) -> Vec<Result<(), QueueError>> {
        let mut waiting = Vec::with_capacity(messages.len());
        for m in messages {
            let (reply, answer) = oneshot::channel();
            let item = encode(m).map(|body| Outgoing {
                body,
                attempts_before,
                delay: delay.min(MAX_DELAY),
                reply,
            });
            let sent = match item {
                Ok(item) => self
                    .outgoing
                    .send(item)
                    .await
                    .map_err(|_| QueueError::Unavailable("the SQS sender stopped".into())),
                Err(e) => Err(e),
            };
            waiting.push(sent.map(|()| answer));
        }
        let mut results = Vec::with_capacity(waiting.len());
        for w in waiting {
            results.push(match w {
                Ok(answer) => answer.await.unwrap_or_else(|_| {
                    Err(QueueError::Unavailable("the SQS sender stopped".into()))
                }),
                Err(e) => Err(e),
            });
        }
        results
    }

    /// One `ReceiveMessage` call.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Lease>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.settings.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(MAX_WAIT_SECS) as i32)
            .visibility_timeout(secs(self.settings.visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(ATTEMPTS_ATTRIBUTE)
            .send()
            .await
            .map_err(unavailable)?;
        // SQS starts the visibility clock when it hands a message out, which during a long poll
        // can be long after the call began: count from the answer, less a margin for its trip.
        let deadline = Instant::now() + self.settings.visibility
            - (self.settings.visibility / 10).min(Duration::from_secs(1));
        let mut leases = Vec::new();
        let mut holds = self.holds();
        // Forget holds on leases that were dropped without being settled.
        let now = Instant::now();
        holds.retain(|_, d| *d + self.settings.visibility > now);
        for m in out.messages() {
            let Some(handle) = m.receipt_handle() else {
                continue;
            };
            let message = match serde_json::from_str::<Message>(m.body().unwrap_or_default()) {
                Ok(message) => message,
                Err(e) => {
                    // Left in flight: after maxReceiveCount receives the redrive policy moves
                    // it to the dead-letter queue, where an operator can look at it.
                    tracing::error!(sqs_message_id = m.message_id().unwrap_or_default(), error = %e, "An SQS message is not a mailroom message; leaving it to the redrive policy.");
                    metrics::counter!("mailroom_queue_poison_messages_total").increment(1);
                    continue;
                }
            };
            let received: u32 = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let before: u32 = m
                .message_attributes()
                .and_then(|a| a.get(ATTEMPTS_ATTRIBUTE))
                .and_then(|v| v.string_value())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            holds.insert(handle.to_string(), deadline);
            leases.push(Lease {
                message,
                attempt: before.saturating_add(received),
                receipt: handle.to_string(),
            });
        }
        Ok(leases)
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends this process's hold on a lease: `LeaseLost` when its deadline already passed.
    fn let_go(&self, lease: &Lease) -> Result<(), QueueError> {
        let deadline = self.holds().remove(&lease.receipt);
        match deadline {
            Some(d) if d > Instant::now() => Ok(()),
            _ => Err(QueueError::LeaseLost(lease.message.id)),
        }
    }

    async fn delete(&self, lease: &Lease) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(&lease.receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| settle_error(e, lease))
    }

    async fn set_visibility(&self, lease: &Lease, after: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(&lease.receipt)
            .visibility_timeout(secs(after))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| settle_error(e, lease))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedrivePolicy {
    dead_letter_target_arn: String,
    #[serde(deserialize_with = "number_or_string")]
    max_receive_count: u32,
}

/// AWS writes `maxReceiveCount` as a number or as a string, depending on who set the policy.
fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum N {
        Number(u32),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Number(n) => Ok(n),
        N::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}
/// Whole seconds for SQS, rounded up so a short delay is never zero, within SQS's 12 hours.
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(MAX_VISIBILITY_SECS) as i32
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: aws_sdk_sqs::error::SdkError<E>,
) -> QueueError {
    QueueError::Unavailable(format!("SQS: {}", crate::aws::explain(&e)))
}

/// A settle call that SQS refused because the receipt handle is no longer current is a lost
/// lease; anything else is an outage.
fn settle_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: aws_sdk_sqs::error::SdkError<E>,
    lease: &Lease,
) -> QueueError {
    let code = e.code().unwrap_or_default();
    let expired = code == "InvalidParameterValue"
        && e.message()
            .is_some_and(|m| m.to_ascii_lowercase().contains("receipt handle"));
    if expired || code.contains("ReceiptHandleIsInvalid") || code.contains("MessageNotInflight") {
        return QueueError::LeaseLost(lease.message.id);
    }
    unavailable(e)
}

/// Gathers waiting messages into batches: whatever is queued when a batch starts goes in it,
/// up to 10 entries and the queue's size limit, so a lone request is not held back and a busy
/// API sends full batches.
async fn send_batches(
    client: Client,
    url: String,
    max_bytes: Arc<AtomicUsize>,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let senders = Arc::new(tokio::sync::Semaphore::new(SENDERS));
    let mut carried: Option<Outgoing> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let limit = max_bytes.load(Ordering::Relaxed);
        let mut size = first.body.len() + ATTRIBUTE_ALLOWANCE;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            let next_size = next.body.len() + ATTRIBUTE_ALLOWANCE;
            if size + next_size > limit {
                carried = Some(next);
                break;
            }
            size += next_size;
            batch.push(next);
        }
        let Ok(permit) = senders.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            send_batch(&client, &url, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(client: &Client, url: &str, batch: Vec<Outgoing>) {
    let mut entries = Vec::with_capacity(batch.len());
    for (i, item) in batch.iter().enumerate() {
        let attempts = MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(item.attempts_before.to_string())
            .build();
        let entry = attempts.and_then(|a| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&item.body)
                .message_attributes(ATTEMPTS_ATTRIBUTE, a)
                // None keeps the queue's own default delay for what the intake pushes.
                .set_delay_seconds(
                    (!item.delay.is_zero()).then_some(item.delay.as_secs_f64().ceil() as i32),
                )
                .build()
        });
        match entry {
            Ok(e) => entries.push(e),
            Err(e) => {
                tracing::error!(error = %e, "Could not build an SQS batch entry.");
            }
        }
    }
    let result = client
        .send_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await;
    metrics::counter!("mailroom_sqs_send_batches_total").increment(1);
    match result {
        Ok(out) => {
            let failed: HashMap<&str, String> = out
                .failed()
                .iter()
                .map(|f| {
                    let why = format!(
                        "SQS refused the message: {} {}",
                        f.code(),
                        f.message().unwrap_or_default()
                    );
                    (f.id(), why)
                })
                .collect();
            for (i, item) in batch.into_iter().enumerate() {
                let r = match failed.get(i.to_string().as_str()) {
                    Some(why) => Err(QueueError::Unavailable(why.clone())),
                    None if out.successful().iter().any(|s| s.id() == i.to_string()) => Ok(()),
                    None => Err(QueueError::Unavailable(
                        "SQS did not answer for the message".into(),
                    )),
                };
                let _ = item.reply.send(r);
            }
        }
        Err(e) => {
            let why = format!("SQS: {}", crate::aws::explain(&e));
            for item in batch {
                let _ = item.reply.send(Err(QueueError::Unavailable(why.clone())));
            }
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        self.send(messages, 0, Duration::ZERO).await
    }

    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        let mut leases = self.receive(max, self.settings.wait).await?;
        if leases.len() < MAX_BATCH || max <= MAX_BATCH {
            return Ok(leases);
        }
        // Busy: fill the rest with receives that do not wait, several at once.
        let want = max - leases.len();
        let calls = want.div_ceil(MAX_BATCH).min(self.settings.pollers.max(1));
        let more = futures::future::join_all(
            (0..calls).map(|i| self.receive((want - i * MAX_BATCH).min(MAX_BATCH), Duration::ZERO)),
        )
        .await;
        for r in more {
            match r {
                Ok(l) => leases.extend(l),
                // What was received already is leased: hand it out, report the error next time.
                Err(e) => tracing::warn!(error = %e, "An extra SQS receive failed."),
            }
        }
        Ok(leases)
    }

    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        self.let_go(&lease)?;
        self.delete(&lease).await
    }

    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.let_go(&lease)?;
        // SQS refuses a visibility that ends more than 12 hours after the receive; the lease is
        // at most one visibility timeout old.
        let cap = Duration::from_secs(MAX_VISIBILITY_SECS).saturating_sub(self.settings.visibility);
        self.set_visibility(&lease, delay.min(cap)).await
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.let_go(&lease)?;
        // A copy that remembers the attempts used, then the original goes: making the original
        // visible again would count one more receive against it.
        let used = lease.attempt.saturating_sub(1);
        let delay = delay.min(MAX_DELAY);
        if let Some(Err(e)) = self
            .send(std::slice::from_ref(&lease.message), used, delay)
            .await
            .pop()
        {
            // Not copied: let SQS hand the original out again instead.
            tracing::warn!(error = %e, "Could not re-send a message given back; making it visible again.");
            return self.set_visibility(&lease, delay).await;
        }
        self.delete(&lease).await
    }

    async fn retry_sent(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        // A copy that keeps the attempts used: a visibility change would count one more
        // receive.
        self.postpone(lease, delay).await
    }

    async fn dead(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.let_go(&lease)?;
        if let Some(dlq) = self.dlq_url().await? {
            let body = encode(&lease.message)?;
            // An attribute takes the characters a body does; the reason is for people.
            let reason = super::truncate_utf8(error, MAX_REASON_BYTES)
                .replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}");
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .map_err(|e| QueueError::Rejected(e.to_string()))?;
            self.client
                .send_message()
                .queue_url(dlq)
                .message_body(body)
                .message_attributes(ERROR_ATTRIBUTE, attribute)
                .send()
                .await
                .map_err(unavailable)?;
        }
        self.delete(&lease).await
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let attrs = self.attributes(&self.settings.queue_url).await?;
        let count = |name: QueueAttributeName| -> u64 {
            attrs
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_default()
        };
        Ok(Depth {
            messages: count(QueueAttributeName::ApproximateNumberOfMessages)
                + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            // SQS reports the oldest message's age only to CloudWatch
            // (ApproximateAgeOfOldestMessage), where the deployment's alarm reads it.
            oldest_age_secs: 0.0,
            // Held in the store's database queue (`crate::scheduler`).
            scheduled: 0,
        })
    }

    fn name(&self) -> &'static str {
        "sqs"
    }

    fn check(&self, message: &Message) -> Result<(), QueueError> {
        let limit = self.max_bytes.load(Ordering::Relaxed);
        let size = encode(message).map(|b| b.len()).unwrap_or(usize::MAX);
        if size + ATTRIBUTE_ALLOWANCE > limit {
            return Err(QueueError::Rejected(format!(
                "the message is {size} bytes encoded; the SQS queue takes at most {} bytes",
                limit - ATTRIBUTE_ALLOWANCE
            )));
        }
        Ok(())
    }

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.settings.visibility / 3)
    }

    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        let started = Instant::now();
        if !matches!(self.holds().get(&lease.receipt), Some(d) if *d > started) {
            return Err(QueueError::LeaseLost(lease.message.id));
        }
        self.set_visibility(lease, self.settings.visibility).await?;
        if let Some(d) = self.holds().get_mut(&lease.receipt) {
            *d = started + self.settings.visibility;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_count_as_number_or_string() {
        for text in [
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:dlq","maxReceiveCount":5}"#,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:dlq","maxReceiveCount":"5"}"#,
        ] {
            let p: RedrivePolicy = serde_json::from_str(text).expect("parses");
            assert_eq!(p.max_receive_count, 5);
            assert!(p.dead_letter_target_arn.ends_with(":dlq"));
        }
    }

    /// A text with U+FFFE or U+FFFF (which SQS refuses as they are) goes as escapes and reads
    /// back the same.
    #[test]
    fn noncharacters_are_escaped_for_sqs() {
        use crate::message::{CompatEmail, Content};
        let message = Message::new(Content::Compat(CompatEmail {
            email_subject: "a\u{FFFE}b".into(),
            email_sender: "Shop".into(),
            email_timestream: "1700000000".into(),
            email_content: "c\u{FFFF}d \u{FFFD}".into(),
        }));
        let body = encode(&message).expect("encodes");
        assert!(!body.contains(['\u{FFFE}', '\u{FFFF}']), "{body}");
        assert!(
            body.contains("a\\uFFFEb") && body.contains('\u{FFFD}'),
            "{body}"
        );
        let back: Message = serde_json::from_str(&body).expect("decodes");
        assert_eq!(back, message);
    }

    #[test]
    fn seconds_round_up_and_stay_within_sqs_limits() {
        assert_eq!(secs(Duration::from_millis(300)), 1);
        assert_eq!(secs(Duration::from_secs(2)), 2);
        assert_eq!(secs(Duration::ZERO), 0);
        assert_eq!(secs(Duration::from_secs(100_000)), 43_200);
    }
}
