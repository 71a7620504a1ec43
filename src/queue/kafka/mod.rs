//! Kafka queue (`QUEUE_BACKEND=kafka`): a topic read by a consumer group, with a retry topic and
//! a dead-letter topic beside it.
//!
//! - **Push** produces with idempotence on (`acks=all`), keyed by message id, and returns once
//!   the broker has acknowledged every message: only then does the API answer 202.
//! - **Consumers**: the main topic and the retry topic each have a consumer of their own in
//!   the group, so the group shares out each topic's partitions among the workers on its own
//!   (cooperative-sticky balances a member's partition count over all it reads, and one
//!   consumer of both topics could be left with the whole retry topic and none of the main).
//! - **Pull** hands out what the consumers have fetched. Kafka has no per-message visibility, so
//!   leases live in this process: a lease that is not settled within the visibility timeout
//!   goes back to this process's ready list (the next holder gets attempt + 1).
//! - **Offsets** are committed by hand, per partition, up to the first offset not yet settled:
//!   a crash or a lost partition makes the group redeliver everything from that offset, so a
//!   message is redelivered rather than lost, and duplicates are bounded by what was unsettled.
//! - **Retry** publishes the message to `{topic}.retry` with its due time and the attempts used
//!   (headers `mailroom-due-ms`, `mailroom-attempts`) and settles the original, so a waiting
//!   retry never holds up its partition. Retry records are held here until due; their offsets
//!   stay uncommitted until they are settled in turn.
//! - **Dead** publishes to `{topic}.dlq` with the error in the `mailroom-error` header.
//! - **Release** (shutdown) hands the message back at once without counting the attempt.
//!
//! Each consumer's task pauses its topic's fetch when this process already holds more than it
//! can work through (the main topic past `prefetch` ready messages, the retry topic past
//! `MAX_DELAYED` waiting retries or `prefetch` ready ones), and keeps polling, so it never drops
//! out of the group.

mod consumer;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::consumer::{Context, Shared, consume, headers};
use self::state::{Source, State, Topics};
use super::{Depth, Lease, Queue, QueueError, truncate_utf8};
use crate::config::KafkaSettings;
use crate::kafka::REQUEST_TIMEOUT;
use crate::message::Message;

const ATTEMPTS_HEADER: &str = "mailroom-attempts";
const DUE_HEADER: &str = "mailroom-due-ms";
const ERROR_HEADER: &str = "mailroom-error";

/// How long an empty pull waits for the consumer before returning nothing.
const PULL_WAIT: Duration = Duration::from_secs(1);

/// The largest message (as queued, JSON) the topic takes: the default `message.max.bytes` of
/// clients and brokers (1,000,000, counted over the record batch) less room for the key, the
/// record and batch framing, and the headers of the largest record mailroom writes: a
/// dead-letter record carries its error (up to [`MAX_ERROR_BYTES`]) and attempts, about 1,200
/// bytes in all. With 1,000 bytes of room, a message near the limit could be queued but never
/// dead-lettered.
const MAX_MESSAGE_BYTES: usize = 996_000;

/// A queued message's error header is cut to this many bytes.
const MAX_ERROR_BYTES: usize = 1_000;

pub struct KafkaQueue {
    producer: FutureProducer,
    /// One consumer for the main topic, in `KAFKA_GROUP_ID`, and one for the retry topic, in
    /// `{KAFKA_GROUP_ID}.retry`. A consumer reading both would be given a share of all their
    /// partitions together, and the sticky assignment may then leave one worker the whole main
    /// topic and another only the retry topic; a group per topic shares out each on its own.
    consumers: [(Source, Arc<StreamConsumer<Context>>); 2],
    shared: Arc<Shared>,
    visibility: Duration,
    /// Ready messages held before the main topic's fetch pauses.
    prefetch: usize,
    started: OnceLock<()>,
    stop: CancellationToken,
}

impl KafkaQueue {
    /// Connects the producer and the (not yet subscribed) consumer. The topics must exist:
    /// `crate::kafka::ensure_topics` runs first.
    pub fn new(
        settings: &KafkaSettings,
        visibility: Duration,
        prefetch: usize,
    ) -> Result<Self, QueueError> {
        let topics = Topics {
            main: settings.topic.clone(),
            retry: settings.retry_topic(),
            dlq: settings.dlq_topic(),
        };
        let producer: FutureProducer = producer_config(settings)
            .create()
            .map_err(|e| QueueError::Unavailable(format!("Kafka producer: {e}")))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            topics,
            paused: Mutex::new(HashMap::new()),
            commit: [Mutex::new(()), Mutex::new(())],
            poison: Mutex::new(Vec::new()),
        });
        let consumer = |source, group: &str| -> Result<_, QueueError> {
            let consumer: StreamConsumer<Context> = crate::kafka::client_config(settings)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                // A worker joining or leaving moves only the partitions that change owner; the
                // others keep their fetched records and leases (eager rebalancing drops them all).
                .set("partition.assignment.strategy", "cooperative-sticky")
                // mailroom never produces in transactions: read_committed would only add the
                // last-stable-offset bookkeeping to every fetch and watermark.
                .set("isolation.level", "read_uncommitted")
                // A worker killed without leaving the group gives its partitions up after this.
                .set(
                    "session.timeout.ms",
                    settings.session_timeout.as_millis().to_string(),
                )
                .set(
                    "heartbeat.interval.ms",
                    (settings.session_timeout.as_millis() / 4).to_string(),
                )
                .create_with_context(Context {
                    shared: shared.clone(),
                    source,
                })
                .map_err(|e| QueueError::Unavailable(format!("Kafka consumer: {e}")))?;
            Ok((source, Arc::new(consumer)))
        };
        Ok(Self {
            producer,
            consumers: [
                consumer(Source::Main, &settings.group_id)?,
                consumer(Source::Retry, &settings.retry_group_id())?,
            ],
            shared,
            visibility,
            prefetch: prefetch.max(16),
            started: OnceLock::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Joins the consumer group on the first pull, so an API-only process never does.
    async fn start(&self) -> Result<(), QueueError> {
        if self.started.get().is_some() {
            return Ok(());
        }
        let [(_, main), (_, retry)] = &self.consumers;
        let (main, retry, topic) = (
            main.clone(),
            retry.clone(),
            self.shared.topics.retry.clone(),
        );
        match tokio::task::spawn_blocking(move || seed_retry_group(&main, &retry, &topic)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not carry the main group's position on the retry topic over to the retry group (refused when another worker has already joined it); the retry group reads from what it has committed, or from the start.");
            }
            Err(e) => return Err(QueueError::Unavailable(format!("Kafka start: {e}"))),
        }
        for (source, consumer) in &self.consumers {
            consumer
                .subscribe(&[self.shared.topics.name(*source)])
                .map_err(|e| QueueError::Unavailable(format!("Kafka subscribe: {e}")))?;
        }
        if self.started.set(()).is_ok() {
            for (source, consumer) in &self.consumers {
                tokio::spawn(consume(
                    consumer.clone(),
                    *source,
                    self.shared.clone(),
                    self.producer.clone(),
                    self.prefetch,
                    self.stop.clone(),
                ));
            }
        }
        Ok(())
    }

    async fn produce(
        &self,
        topic: &str,
        message: &Message,
        headers: OwnedHeaders,
    ) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| QueueError::Rejected(format!("cannot encode message: {e}")))?;
        let key = message.id.to_string();
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        self.producer
            .send(record, Timeout::After(REQUEST_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(e, _)| produce_error(topic, e))
    }

    /// Commits every settled position now.
    async fn commit_now(&self) -> Result<(), QueueError> {
        if self.started.get().is_none() {
            return Ok(());
        }
        for (source, consumer) in &self.consumers {
            let (source, consumer, shared) = (*source, consumer.clone(), self.shared.clone());
            tokio::task::spawn_blocking(move || shared.commit(consumer.as_ref(), source))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?
                .map_err(|e| QueueError::Unavailable(format!("Kafka commit: {e}")))?;
        }
        Ok(())
    }
}

/// Gives the retry topic's group (`{KAFKA_GROUP_ID}.retry`) the position the main group has
/// committed on the retry topic, when the retry group has none: releases before it read both
/// topics in the main group, and a retry group that started afresh would read every retained
/// retry record again (dead letters copied to the dead-letter topic a second time, old copies of
/// messages still being retried sent before their time). A group that has committed anything is
/// left as it is; so is a deployment whose main group never read the retry topic. Blocking.
fn seed_retry_group(
    main: &StreamConsumer<Context>,
    retry: &StreamConsumer<Context>,
    topic: &str,
) -> Result<(), KafkaError> {
    let metadata = main.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut partitions = TopicPartitionList::new();
    for t in metadata.topics() {
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        for p in t.partitions() {
            partitions.add_partition(topic, p.id());
        }
    }
    if partitions.count() == 0 {
        // Nothing to compare: said, rather than read as "nothing committed".
        return Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let committed = |consumer: &StreamConsumer<Context>| {
        consumer
            .committed_offsets(partitions.clone(), REQUEST_TIMEOUT)
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
    };
    if !committed(retry)?.is_empty() {
        return Ok(());
    }
    let inherited = committed(main)?;
    if inherited.is_empty() {
        return Ok(());
    }
    let mut seed = TopicPartitionList::new();
    for (partition, offset) in &inherited {
        seed.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    // A commit from outside the group's membership, which brokers take only while the group
    // has no members: a worker starting beside one that has already seeded and joined is
    // refused, and reads from the position that one committed.
    retry.commit(&seed, rdkafka::consumer::CommitMode::Sync)?;
    tracing::info!(
        topic,
        partitions = inherited.len(),
        "The retry topic's consumer group starts where the main group left the retry topic."
    );
    Ok(())
}

fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = crate::kafka::client_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // A produce the brokers cannot take within this fails, and the API answers 503.
        .set("message.timeout.ms", "15000");
    config
}

pub(crate) fn produce_error(topic: &str, e: KafkaError) -> QueueError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            QueueError::Rejected(format!("too large for Kafka topic {topic}: {e}"))
        }
        _ => QueueError::Unavailable(format!("Kafka produce to {topic}: {e}")),
    }
}

#[async_trait]
impl Queue for KafkaQueue {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        let topic = &self.shared.topics.main;
        futures::future::join_all(
            messages
                .iter()
                .map(|m| self.produce(topic, m, OwnedHeaders::new())),
        )
        .await
    }

    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        self.start().await?;
        let until = Instant::now() + PULL_WAIT;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (leases, wakeup) = {
                let mut state = self.shared.lock();
                let leases = state.take(max, self.visibility);
                (leases, state.next_wakeup())
            };
            if !leases.is_empty() || Instant::now() >= until {
                return Ok(leases);
            }
            let wake_at = wakeup.map_or(until, |w| w.min(until));
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        let (entry, _) = state.unlease(&lease)?;
        state.settle(&entry);
        Ok(())
    }

    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        let (entry, _) = self.shared.lock().unlease(&lease)?;
        let due_ms = crate::store::now_ms() + delay.as_millis() as i64;
        let attempts = lease.attempt.to_string();
        let due = due_ms.to_string();
        let published = self
            .produce(
                &self.shared.topics.retry,
                &entry.message,
                headers(&[(ATTEMPTS_HEADER, &attempts), (DUE_HEADER, &due)]),
            )
            .await;
        let mut state = self.shared.lock();
        match published {
            Ok(()) => state.settle(&entry),
            Err(e) => {
                // The original's offset stays uncommitted, so holding the retry here is as safe
                // as the retry topic; a crash redelivers it.
                tracing::warn!(message_id = %entry.message.id, error = %e, "Could not publish to the retry topic; holding the retry in memory.");
                state.next_id += 1;
                let id = state.next_id;
                state.delayed.insert((Instant::now() + delay, id), entry);
            }
        }
        Ok(())
    }

    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        // Held here, its offset uncommitted: a crash meanwhile redelivers it.
        let mut state = self.shared.lock();
        let (mut entry, _) = state.unlease(&lease)?;
        entry.leased -= 1;
        if delay.is_zero() {
            // Released: first in line again.
            state.ready.push_front(entry);
        } else {
            state.next_id += 1;
            let id = state.next_id;
            state.delayed.insert((Instant::now() + delay, id), entry);
        }
        drop(state);
        self.shared.arrived.notify_waiters();
        Ok(())
    }

    async fn dead(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let (entry, deadline) = self.shared.lock().unlease(&lease)?;
        let attempts = lease.attempt.to_string();
        let published = self
            .produce(
                &self.shared.topics.dlq,
                &entry.message,
                headers(&[
                    (ATTEMPTS_HEADER, &attempts),
                    (ERROR_HEADER, truncate_utf8(error, MAX_ERROR_BYTES)),
                ]),
            )
            .await;
        let mut state = self.shared.lock();
        match published {
            Ok(()) => {
                state.settle(&entry);
                Ok(())
            }
            Err(e) => {
                // Still leased until its deadline, then delivered again.
                let id = lease.receipt.parse().unwrap_or_default();
                state.leases.insert(id, (entry, deadline));
                Err(e)
            }
        }
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        // Settled positions first, so the count is current. A commit the group refuses while it
        // rebalances (a worker joining or leaving) is tried again at the next tick; until then
        // the count includes what it would have moved past, and `/ready` does not fail for it.
        if let Err(e) = self.commit_now().await {
            tracing::debug!(error = %e, "Kafka commit before reading the lag failed; counting from the last commit.");
        }
        let fetched: HashMap<(Source, i32), i64> = self
            .shared
            .lock()
            .partitions
            .iter()
            .map(|(key, p)| (*key, p.next))
            .collect();
        let fetched = Arc::new(fetched);
        let mut messages = 0;
        // Each topic's lag is its own group's, asked through the consumer that is its member.
        for (source, consumer) in &self.consumers {
            let (source, consumer) = (*source, consumer.clone());
            let (topics, fetched) = (self.shared.topics.clone(), fetched.clone());
            messages +=
                tokio::task::spawn_blocking(move || lag(&consumer, &topics, source, &fetched))
                    .await
                    .map_err(|e| QueueError::Unavailable(e.to_string()))??;
        }
        let oldest = self.shared.lock().oldest_written_ms();
        let oldest_age_secs = oldest.map_or(0.0, |ms| {
            ((crate::store::now_ms() - ms).max(0) as f64) / 1000.0
        });
        Ok(Depth {
            messages,
            oldest_age_secs,
            // Held in the store's database queue (`crate::scheduler`).
            scheduled: 0,
        })
    }

    fn name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self, message: &Message) -> Result<(), QueueError> {
        let size = serde_json::to_vec(message).map(|v| v.len()).unwrap_or(0);
        if size > MAX_MESSAGE_BYTES {
            return Err(QueueError::Rejected(format!(
                "the message is {size} bytes as queued; the Kafka topic takes at most {MAX_MESSAGE_BYTES}"
            )));
        }
        Ok(())
    }

    /// A lease here is this process's own, in memory, and a rebalance that takes its partition
    /// away drops it: checked often (it costs a lock), a delivery still waiting for its turn
    /// learns of that within a quarter of a second, before the partition's new owner can have
    /// fetched the record again, and does not send it too.
    fn heartbeat(&self) -> Option<Duration> {
        Some((self.visibility / 3).min(Duration::from_millis(250)))
    }

    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        let id: u64 = lease.receipt.parse().unwrap_or_default();
        let mut state = self.shared.lock();
        let (_, deadline) = state
            .leases
            .get_mut(&id)
            .ok_or(QueueError::LeaseLost(lease.message.id))?;
        *deadline = Instant::now() + self.visibility;
        Ok(())
    }

    async fn close(&self) {
        if let Err(e) = self.commit_now().await {
            tracing::warn!(error = %e, "Could not commit Kafka offsets at shutdown.");
        }
        if self.started.get().is_some() {
            // Leave the group now, so the other workers take the partitions at once rather
            // than after the session timeout. The consumer task keeps polling, which is what
            // serves the revocation and the leave.
            for (_, consumer) in &self.consumers {
                consumer.unsubscribe();
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && self
                    .consumers
                    .iter()
                    .any(|(_, c)| c.assignment().is_ok_and(|a| a.count() > 0))
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.stop.cancel();
    }
}

/// Records of `source`'s topic not yet committed by its group: waiting, delayed and in
/// flight. The end of a partition this process reads is at least one past what it fetched (the
/// tansu test broker reports a high watermark below that once records were produced in
/// batches).
fn lag(
    consumer: &StreamConsumer<Context>,
    topics: &Topics,
    source: Source,
    fetched: &HashMap<(Source, i32), i64>,
) -> Result<u64, QueueError> {
    let unavailable = |e: KafkaError| QueueError::Unavailable(format!("Kafka: {e}"));
    let mut tpl = TopicPartitionList::new();
    // Metadata of all topics: asking for one by name may make a broker create it.
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(unavailable)?;
    for t in metadata.topics() {
        if topics.source(t.name()) == Some(source) {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    // Latest offsets of every partition in one request per broker (timestamp -1 = the end).
    let mut ends = tpl.clone();
    ends.set_all_offsets(Offset::End).map_err(unavailable)?;
    let ends = consumer
        .offsets_for_times(ends, REQUEST_TIMEOUT)
        .map_err(unavailable)?;
    let committed = consumer
        .committed_offsets(tpl, REQUEST_TIMEOUT)
        .map_err(unavailable)?;
    let mut total = 0u64;
    for e in committed.elements() {
        let high = match ends
            .find_partition(e.topic(), e.partition())
            .map(|p| p.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        };
        let seen = topics
            .source(e.topic())
            .and_then(|source| fetched.get(&(source, e.partition())))
            .copied()
            .unwrap_or(0);
        let high = high.max(seen);
        // Nothing committed yet: everything from the start is waiting (retention may have
        // dropped some of it; the count is an upper bound then).
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        total += (high - from).max(0) as u64;
    }
    Ok(total)
}
