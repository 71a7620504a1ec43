//! Kafka queue (`QUEUE_BACKEND=kafka`): a topic read by a consumer group, with a retry topic and
//! a dead-letter topic beside it.
//!
//! - **Push** produces with idempotence on (`acks=all`), keyed by message id, and returns once
//!   the broker has acknowledged every message: only then does the API answer 202.
//! - **Pull** hands out what the consumer has fetched. Kafka has no per-message visibility, so
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
//! The consumer task pauses the fetch of a topic when this process already holds more than it
//! can work through (the main topic past `prefetch` ready messages, the retry topic past
//! `MAX_DELAYED` waiting retries), and keeps polling, so it never drops out of the group.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Depth, Lease, Queue, QueueError};
use crate::config::KafkaSettings;
use crate::kafka::REQUEST_TIMEOUT;
use crate::message::Message;

const ATTEMPTS_HEADER: &str = "mailroom-attempts";
const DUE_HEADER: &str = "mailroom-due-ms";
const ERROR_HEADER: &str = "mailroom-error";

/// Waiting retries held in memory before the retry topic's fetch pauses.
const MAX_DELAYED: usize = 10_000;

/// The furthest ahead a retry record's due time is taken at its word (a day; `RETRY_MAX_MS`
/// is an hour by default).
const MAX_DUE_MS: i64 = 24 * 3600 * 1000;

/// How often settled offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// How long an empty pull waits for the consumer before returning nothing.
const PULL_WAIT: Duration = Duration::from_secs(1);

/// The largest message (as queued, JSON) the topic takes: the default `message.max.bytes` of
/// clients and brokers (1,000,000) less room for the key and headers.
const MAX_MESSAGE_BYTES: usize = 999_000;

/// A queued message's error header is cut to this many bytes.
const MAX_ERROR_BYTES: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    Main,
    Retry,
}

/// A record this process has fetched and not yet settled.
#[derive(Debug)]
struct Entry {
    message: Message,
    source: Source,
    partition: i32,
    offset: i64,
    /// Attempts used before this record was published (`mailroom-attempts`).
    prior: u32,
    /// Times this process has leased it.
    leased: u32,
    /// When the record was written, for the oldest-age gauge.
    written_ms: i64,
}

impl Entry {
    fn key(&self) -> (Source, i32) {
        (self.source, self.partition)
    }
}

/// Offsets fetched from one partition and not yet settled.
#[derive(Debug, Default)]
struct PartitionState {
    pending: BTreeSet<i64>,
    /// One past the highest offset fetched.
    next: i64,
    /// The last position committed.
    committed: i64,
}

impl PartitionState {
    /// The offset to commit: the first unsettled one, or past everything fetched.
    fn position(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<(Source, i32), PartitionState>,
    ready: VecDeque<Entry>,
    /// Retries not yet due, by due time.
    delayed: BTreeMap<(Instant, u64), Entry>,
    /// Leased entries by lease id, with their deadline.
    leases: HashMap<u64, (Entry, Instant)>,
    next_id: u64,
}

impl State {
    fn fetched(&mut self, entry: Entry, due: Option<Instant>) {
        let p = self.partitions.entry(entry.key()).or_default();
        p.pending.insert(entry.offset);
        p.next = p.next.max(entry.offset + 1);
        self.next_id += 1;
        match due {
            Some(due) if due > Instant::now() => {
                self.delayed.insert((due, self.next_id), entry);
            }
            _ => self.ready.push_back(entry),
        }
    }

    fn settle(&mut self, entry: &Entry) {
        if let Some(p) = self.partitions.get_mut(&entry.key()) {
            p.pending.remove(&entry.offset);
        }
    }

    /// Moves due retries and expired leases to the ready list.
    fn promote(&mut self, now: Instant) {
        while let Some(first) = self.delayed.first_entry() {
            if first.key().0 > now {
                break;
            }
            self.ready.push_back(first.remove());
        }
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((entry, _)) = self.leases.remove(&id) {
                tracing::warn!(message_id = %entry.message.id, "A Kafka lease ran out unsettled; the message goes back to the ready list.");
                self.ready.push_front(entry);
            }
        }
    }

    fn take(&mut self, max: usize, visibility: Duration) -> Vec<Lease> {
        let now = Instant::now();
        self.promote(now);
        let mut leases = Vec::new();
        while leases.len() < max {
            let Some(mut entry) = self.ready.pop_front() else {
                break;
            };
            entry.leased += 1;
            self.next_id += 1;
            leases.push(Lease {
                message: entry.message.clone(),
                attempt: entry.prior + entry.leased,
                receipt: self.next_id.to_string(),
            });
            self.leases.insert(self.next_id, (entry, now + visibility));
        }
        leases
    }

    fn unlease(&mut self, lease: &Lease) -> Result<(Entry, Instant), QueueError> {
        lease
            .receipt
            .parse::<u64>()
            .ok()
            .and_then(|id| self.leases.remove(&id))
            .ok_or(QueueError::LeaseLost(lease.message.id))
    }

    /// The earliest moment something becomes ready without a new fetch.
    fn next_wakeup(&self) -> Option<Instant> {
        let due = self.delayed.keys().next().map(|(at, _)| *at);
        let lease = self.leases.values().map(|(_, d)| *d).min();
        due.into_iter().chain(lease).min()
    }

    /// Positions that moved since the last commit, as the list to commit.
    fn to_commit(&self, topics: &Topics) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for ((source, partition), p) in &self.partitions {
            let position = p.position();
            if position > p.committed {
                let _ = tpl.add_partition_offset(
                    topics.name(*source),
                    *partition,
                    Offset::Offset(position),
                );
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    fn committed(&mut self, tpl: &TopicPartitionList, topics: &Topics) {
        for e in tpl.elements() {
            if let (Some(source), Offset::Offset(o)) = (topics.source(e.topic()), e.offset())
                && let Some(p) = self.partitions.get_mut(&(source, e.partition()))
            {
                p.committed = p.committed.max(o);
            }
        }
    }

    /// Forgets partitions this process no longer owns: their records go to the new owner from
    /// the last committed offset, and leases on them are lost.
    fn drop_partitions(&mut self, revoked: &[(Source, i32)]) {
        let gone = |e: &Entry| revoked.contains(&e.key());
        for key in revoked {
            self.partitions.remove(key);
        }
        self.ready.retain(|e| !gone(e));
        self.delayed.retain(|_, e| !gone(e));
        self.leases.retain(|_, (e, _)| !gone(e));
    }

    fn oldest_written_ms(&self) -> Option<i64> {
        self.ready
            .iter()
            .chain(self.delayed.values())
            .chain(self.leases.values().map(|(e, _)| e))
            .map(|e| e.written_ms)
            .min()
    }
}

#[derive(Debug, Clone)]
struct Topics {
    main: String,
    retry: String,
    dlq: String,
}

impl Topics {
    fn name(&self, source: Source) -> &str {
        match source {
            Source::Main => &self.main,
            Source::Retry => &self.retry,
        }
    }

    fn source(&self, topic: &str) -> Option<Source> {
        if topic == self.main {
            Some(Source::Main)
        } else if topic == self.retry {
            Some(Source::Retry)
        } else {
            None
        }
    }
}

/// What the queue, its consumer task and the rebalance callbacks share.
struct Shared {
    state: Mutex<State>,
    /// Rung when records arrive.
    arrived: Notify,
    topics: Topics,
    /// Whether each topic's fetch is paused; no entry: not known since the last assignment
    /// (librdkafka keeps a partition's pause across rebalances), so the next check sets it.
    paused: Mutex<HashMap<Source, bool>>,
    /// One commit at a time, so an older position can never land after a newer one.
    commit: Mutex<()>,
    /// Records that are not mailroom messages and could not be copied to the dead-letter topic
    /// yet; tried again at every commit tick, their offsets unsettled until then.
    poison: Mutex<Vec<Poison>>,
}

/// A record to copy to the dead-letter topic as it is.
struct Poison {
    source: Source,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    error: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits every position that moved, synchronously. Blocks: call it off the async runtime
    /// (or from a librdkafka callback).
    fn commit<C: Consumer<Context>>(&self, consumer: &C) -> Result<(), KafkaError> {
        let _one_at_a_time = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tpl) = self.lock().to_commit(&self.topics) else {
            return Ok(());
        };
        consumer.commit(&tpl, CommitMode::Sync)?;
        self.lock().committed(&tpl, &self.topics);
        Ok(())
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<(Source, i32)> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.topics.source(e.topic())?, e.partition())))
            .collect()
    }
}

/// The consumer's context: commits what is settled on partitions about to be taken away.
struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = self.shared.partitions_of(tpl);
                if let Err(e) = self.shared.commit(consumer) {
                    tracing::warn!(error = %e, "Could not commit offsets of revoked Kafka partitions; their unsettled records will be delivered again.");
                }
                self.shared.lock().drop_partitions(&revoked);
                self.shared
                    .poison
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|p| !revoked.contains(&(p.source, p.partition)));
                tracing::info!(partitions = revoked.len(), "Kafka partitions revoked.");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Kafka partitions assigned.");
                // Unknown again: the next check pauses or resumes the whole new assignment.
                self.shared
                    .paused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "Kafka rebalance failed."),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            // Commit these positions again at the next tick.
            tracing::warn!(error = %e, "A Kafka offset commit failed; trying again.");
            let revert = self.shared.partitions_of(offsets);
            let mut state = self.shared.lock();
            for key in revert {
                if let Some(p) = state.partitions.get_mut(&key) {
                    p.committed = 0;
                }
            }
        }
    }
}

pub struct KafkaQueue {
    producer: FutureProducer,
    consumer: Arc<StreamConsumer<Context>>,
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
            commit: Mutex::new(()),
            poison: Mutex::new(Vec::new()),
        });
        let consumer: StreamConsumer<Context> = crate::kafka::client_config(settings)
            .set("group.id", &settings.group_id)
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
            })
            .map_err(|e| QueueError::Unavailable(format!("Kafka consumer: {e}")))?;
        Ok(Self {
            producer,
            consumer: Arc::new(consumer),
            shared,
            visibility,
            prefetch: prefetch.max(16),
            started: OnceLock::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Joins the consumer group on the first pull, so an API-only process never does.
    fn start(&self) -> Result<(), QueueError> {
        if self.started.get().is_some() {
            return Ok(());
        }
        let topics = &self.shared.topics;
        self.consumer
            .subscribe(&[&topics.main, &topics.retry])
            .map_err(|e| QueueError::Unavailable(format!("Kafka subscribe: {e}")))?;
        if self.started.set(()).is_ok() {
            tokio::spawn(consume(
                self.consumer.clone(),
                self.shared.clone(),
                self.producer.clone(),
                self.prefetch,
                self.stop.clone(),
            ));
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
        let (consumer, shared) = (self.consumer.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || shared.commit(consumer.as_ref()))
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?
            .map_err(|e| QueueError::Unavailable(format!("Kafka commit: {e}")))
    }
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

fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    })
}

fn header(message: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The consumer task: fetches, keeps the local lists, commits, pauses and resumes.
async fn consume(
    consumer: Arc<StreamConsumer<Context>>,
    shared: Arc<Shared>,
    producer: FutureProducer,
    prefetch: usize,
    stop: CancellationToken,
) {
    let mut commit = tokio::time::interval(COMMIT_INTERVAL);
    commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = commit.tick() => {
                retry_poison(&shared, &producer).await;
                let (c, s) = (consumer.clone(), shared.clone());
                match tokio::task::spawn_blocking(move || s.commit(c.as_ref())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "Kafka offset commit failed; will try again."),
                    Err(e) => tracing::warn!(error = %e, "Kafka offset commit task failed."),
                }
            }
            received = consumer.recv() => match received {
                Ok(m) => fetched(&m, &shared, &producer).await,
                Err(e) => {
                    metrics::counter!("mailroom_kafka_errors_total").increment(1);
                    tracing::warn!(error = %e, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        backpressure(&consumer, &shared, prefetch);
    }
}

/// Takes one fetched record into the local lists. A record that is not a mailroom message goes
/// to the dead-letter topic as it is, so it neither blocks the partition nor disappears.
async fn fetched(m: &BorrowedMessage<'_>, shared: &Shared, producer: &FutureProducer) {
    let Some(source) = shared.topics.source(m.topic()) else {
        return;
    };
    let written_ms = m.timestamp().to_millis().unwrap_or_default();
    let prior = header(m, ATTEMPTS_HEADER)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let due = header(m, DUE_HEADER)
        .and_then(|d| d.parse::<i64>().ok())
        .map(|due_ms| {
            // A due time beyond any backoff mailroom sets is not honoured to the letter.
            let wait = due_ms
                .saturating_sub(crate::store::now_ms())
                .clamp(0, MAX_DUE_MS);
            Instant::now() + Duration::from_millis(wait as u64)
        });
    let decoded = m
        .payload()
        .ok_or_else(|| "empty record".to_string())
        .and_then(|p| serde_json::from_slice::<Message>(p).map_err(|e| e.to_string()));
    match decoded {
        Ok(message) => {
            shared.lock().fetched(
                Entry {
                    message,
                    source,
                    partition: m.partition(),
                    offset: m.offset(),
                    prior,
                    leased: 0,
                    written_ms,
                },
                due,
            );
            shared.arrived.notify_waiters();
        }
        Err(e) => {
            metrics::counter!("mailroom_queue_poison_messages_total").increment(1);
            tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "A Kafka record is not a mailroom message; moving it to the dead-letter topic.");
            // Until the copy is on the dead-letter topic the offset stays unsettled (and holds
            // the partition's commit, so a restart tries again).
            {
                let mut state = shared.lock();
                let p = state.partitions.entry((source, m.partition())).or_default();
                p.pending.insert(m.offset());
                p.next = p.next.max(m.offset() + 1);
            }
            shared
                .poison
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Poison {
                    source,
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    error: format!("not a mailroom message: {e}"),
                });
            retry_poison(shared, producer).await;
        }
    }
}

/// Copies waiting poison records to the dead-letter topic; each one copied is settled.
async fn retry_poison(shared: &Shared, producer: &FutureProducer) {
    let waiting = std::mem::take(&mut *shared.poison.lock().unwrap_or_else(|e| e.into_inner()));
    for poison in waiting {
        let mut record = FutureRecord::<[u8], [u8]>::to(&shared.topics.dlq).headers(headers(&[(
            ERROR_HEADER,
            cut(&poison.error, MAX_ERROR_BYTES),
        )]));
        if let Some(key) = &poison.key {
            record = record.key(key);
        }
        if let Some(payload) = &poison.payload {
            record = record.payload(payload);
        }
        match producer.send(record, Timeout::After(REQUEST_TIMEOUT)).await {
            Ok(_) => {
                let mut state = shared.lock();
                if let Some(p) = state.partitions.get_mut(&(poison.source, poison.partition)) {
                    p.pending.remove(&poison.offset);
                }
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "Could not copy a record to the dead-letter topic; trying again.");
                shared
                    .poison
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(poison);
            }
        }
    }
}

/// Pauses a topic's fetch while this process holds more of it than it can use, resumes it when
/// the backlog halves. The consumer keeps polling either way, so it stays in the group.
fn backpressure(consumer: &StreamConsumer<Context>, shared: &Shared, prefetch: usize) {
    let (ready, delayed) = {
        let state = shared.lock();
        (state.ready.len(), state.delayed.len())
    };
    for (source, held, limit) in [
        (Source::Main, ready, prefetch),
        (Source::Retry, delayed, MAX_DELAYED),
    ] {
        let mut paused = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
        let known = paused.get(&source).copied();
        let want = if known == Some(true) {
            held > limit / 2
        } else {
            held >= limit
        };
        if known == Some(want) {
            continue;
        }
        let Ok(assignment) = consumer.assignment() else {
            continue;
        };
        let mut tpl = TopicPartitionList::new();
        for e in assignment.elements() {
            if e.topic() == shared.topics.name(source) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        let result = if want {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                paused.insert(source, want);
            }
            Err(e) => tracing::warn!(error = %e, "Could not pause or resume a Kafka fetch."),
        }
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
        self.start()?;
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

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        let mut state = self.shared.lock();
        let (mut entry, _) = state.unlease(&lease)?;
        entry.leased -= 1;
        state.ready.push_front(entry);
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
                    (ERROR_HEADER, cut(error, MAX_ERROR_BYTES)),
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
        self.commit_now().await?;
        let consumer = self.consumer.clone();
        let topics = self.shared.topics.clone();
        let fetched: HashMap<(Source, i32), i64> = self
            .shared
            .lock()
            .partitions
            .iter()
            .map(|(key, p)| (*key, p.next))
            .collect();
        let messages = tokio::task::spawn_blocking(move || lag(&consumer, &topics, &fetched))
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))??;
        let oldest = self.shared.lock().oldest_written_ms();
        let oldest_age_secs = oldest.map_or(0.0, |ms| {
            ((crate::store::now_ms() - ms).max(0) as f64) / 1000.0
        });
        Ok(Depth {
            messages,
            oldest_age_secs,
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

    fn heartbeat(&self) -> Option<Duration> {
        Some(self.visibility / 3)
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
            self.consumer.unsubscribe();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && self.consumer.assignment().is_ok_and(|a| a.count() > 0)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.stop.cancel();
    }
}

/// Records not yet committed by the group, over the main and retry topics: waiting, delayed
/// and in flight. The end of a partition this process reads is at least one past what it
/// fetched (the tansu test broker reports a high watermark below that once records were
/// produced in batches).
fn lag(
    consumer: &StreamConsumer<Context>,
    topics: &Topics,
    fetched: &HashMap<(Source, i32), i64>,
) -> Result<u64, QueueError> {
    let unavailable = |e: KafkaError| QueueError::Unavailable(format!("Kafka: {e}"));
    let mut tpl = TopicPartitionList::new();
    // One metadata request for both topics (asking for all topics never creates one).
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(unavailable)?;
    for t in metadata.topics() {
        if topics.source(t.name()).is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{CompatEmail, Content};

    fn entry(partition: i32, offset: i64) -> Entry {
        Entry {
            message: Message::new(Content::Compat(CompatEmail {
                email_subject: "s".into(),
                email_sender: "S".into(),
                email_timestream: "1700000000".into(),
                email_content: "c".into(),
            })),
            source: Source::Main,
            partition,
            offset,
            prior: 0,
            leased: 0,
            written_ms: 0,
        }
    }

    fn topics() -> Topics {
        Topics {
            main: "m".into(),
            retry: "m.retry".into(),
            dlq: "m.dlq".into(),
        }
    }

    fn position(state: &State, partition: i32) -> i64 {
        let tpl = state.to_commit(&topics()).expect("something to commit");
        match tpl.find_partition("m", partition).expect("listed").offset() {
            Offset::Offset(o) => o,
            other => panic!("{other:?}"),
        }
    }

    /// The committed position never passes an unsettled offset, whatever order settles come in.
    #[test]
    fn commit_stops_at_first_unsettled_offset() {
        let mut state = State::default();
        for offset in 10..15 {
            state.fetched(entry(0, offset), None);
        }
        for offset in [11, 13, 14] {
            state.settle(&entry(0, offset));
        }
        assert_eq!(position(&state, 0), 10, "10 is still out");
        state.settle(&entry(0, 10));
        assert_eq!(position(&state, 0), 12, "12 is still out");
        state.settle(&entry(0, 12));
        assert_eq!(position(&state, 0), 15, "everything fetched is settled");
    }

    /// A lease not settled in time goes back with the next attempt; the stale holder loses it.
    #[test]
    fn expired_lease_returns_with_next_attempt() {
        let mut state = State::default();
        state.fetched(entry(0, 1), None);
        let first = state.take(1, Duration::ZERO).pop().expect("one");
        assert_eq!(first.attempt, 1);
        let second = state.take(1, Duration::from_secs(60)).pop().expect("again");
        assert_eq!((second.message.id, second.attempt), (first.message.id, 2));
        assert!(matches!(
            state.unlease(&first),
            Err(QueueError::LeaseLost(_))
        ));
        assert!(state.unlease(&second).is_ok());
    }

    /// Revoked partitions vanish from every list, and their leases become lost.
    #[test]
    fn revoked_partitions_lose_their_leases() {
        let mut state = State::default();
        state.fetched(entry(0, 1), None);
        state.fetched(entry(1, 1), None);
        let leases = state.take(2, Duration::from_secs(60));
        state.drop_partitions(&[(Source::Main, 0)]);
        let lost = leases.iter().find(|l| state.unlease(l).is_err());
        assert!(lost.is_some(), "the lease on partition 0 is gone");
        assert!(
            state
                .to_commit(&topics())
                .into_iter()
                .all(|t| t.elements().iter().all(|e| e.partition() == 1))
        );
    }
}
