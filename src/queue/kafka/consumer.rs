//! The consumer side of the Kafka queue: the task that fetches records into the worker's lists,
//! commits, and pauses a topic's fetch under back-pressure; the rebalance callbacks; and records
//! that are not mailroom messages, copied to the dead-letter topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::state::{Entry, Source, State, Topics};
use super::{ATTEMPTS_HEADER, DUE_HEADER, ERROR_HEADER, MAX_ERROR_BYTES};
use crate::kafka::REQUEST_TIMEOUT;
use crate::message::Message;
use crate::queue::truncate_utf8;

/// Waiting retries held in memory before the retry topic's fetch pauses.
const MAX_DELAYED: usize = 10_000;

/// The furthest ahead a retry record's due time is taken at its word (a day; `RETRY_MAX_MS`
/// is an hour by default).
const MAX_DUE_MS: i64 = 24 * 3600 * 1000;

/// How often settled offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// What the queue, its consumer task and the rebalance callbacks share.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Rung when records arrive.
    pub(super) arrived: Notify,
    pub(super) topics: Topics,
    /// Whether each topic's fetch is paused; no entry: not known since the last assignment
    /// (librdkafka keeps a partition's pause across rebalances), so the next check sets it.
    pub(super) paused: Mutex<HashMap<Source, bool>>,
    /// One commit at a time per topic (each has its own consumer), so an older position can
    /// never land after a newer one.
    pub(super) commit: [Mutex<()>; 2],
    /// Records that are not mailroom messages and could not be copied to the dead-letter topic
    /// yet; tried again at every commit tick, their offsets unsettled until then.
    pub(super) poison: Mutex<Vec<Poison>>,
}

/// A record to copy to the dead-letter topic as it is.
pub(super) struct Poison {
    pub(super) source: Source,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) error: String,
    /// Copied without the error header: the record was too large for the dead-letter topic
    /// with it.
    pub(super) bare: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits every position of `source`'s partitions that moved, synchronously, through the
    /// consumer that reads them. Blocks: call it off the async runtime (or from a librdkafka
    /// callback).
    pub(super) fn commit<C: Consumer<Context>>(
        &self,
        consumer: &C,
        source: Source,
    ) -> Result<(), KafkaError> {
        let _one_at_a_time = self.commit[source as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(tpl) = self.lock().to_commit(&self.topics, source) else {
            return Ok(());
        };
        consumer.commit(&tpl, CommitMode::Sync)?;
        self.lock().committed(&tpl, &self.topics);
        Ok(())
    }

    pub(super) fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<(Source, i32)> {
        tpl.elements()
            .iter()
            .filter_map(|e| Some((self.topics.source(e.topic())?, e.partition())))
            .collect()
    }
}

/// A consumer's context: commits what is settled on partitions about to be taken away.
pub(super) struct Context {
    pub(super) shared: Arc<Shared>,
    /// The topic this consumer reads.
    pub(super) source: Source,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = self.shared.partitions_of(tpl);
                if let Err(e) = self.shared.commit(consumer, self.source) {
                    tracing::warn!(error = %e, "Could not commit offsets of revoked Kafka partitions; their unsettled records will be delivered again.");
                }
                self.shared.lock().drop_partitions(&revoked);
                self.shared
                    .poison
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|p| !revoked.contains(&(p.source, p.partition)));
                tracing::info!(
                    topic = self.shared.topics.name(self.source),
                    partitions = revoked.len(),
                    "Kafka partitions revoked."
                );
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    topic = self.shared.topics.name(self.source),
                    partitions = tpl.count(),
                    "Kafka partitions assigned."
                );
                // Unknown again: the next check pauses or resumes the whole new assignment.
                self.shared
                    .paused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.source);
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

pub(super) fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
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

/// A consumer's task: fetches its topic's records into the local lists, commits their
/// positions, pauses and resumes its fetch.
pub(super) async fn consume(
    consumer: Arc<StreamConsumer<Context>>,
    source: Source,
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
                match tokio::task::spawn_blocking(move || s.commit(c.as_ref(), source)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "Kafka offset commit failed; will try again."),
                    Err(e) => tracing::warn!(error = %e, "Kafka offset commit task failed."),
                }
            }
            received = consumer.recv() => match received {
                Ok(m) => fetched(&m, &shared),
                Err(e) => {
                    metrics::counter!("mailroom_kafka_errors_total").increment(1);
                    tracing::warn!(error = %e, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        backpressure(&consumer, source, &shared, prefetch);
    }
}

/// Takes one fetched record into the local lists. A record that is not a mailroom message goes
/// to the dead-letter topic as it is (at the next commit tick), so it neither blocks the
/// partition nor disappears.
fn fetched(m: &BorrowedMessage<'_>, shared: &Shared) {
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
                    bare: false,
                });
            // Copied at the next commit tick, beside any others: a dead-letter topic that
            // cannot be written then holds up the consume task for one write a tick, not one
            // per record fetched.
        }
    }
}

/// Copies waiting poison records to the dead-letter topic; each one copied is settled. This
/// runs in the consume task, so after a copy fails (the dead-letter topic unwritable) the rest
/// wait for the next tick: each tick waits out at most one failed write, not one per record.
async fn retry_poison(shared: &Shared, producer: &FutureProducer) {
    let waiting = std::mem::take(&mut *shared.poison.lock().unwrap_or_else(|e| e.into_inner()));
    let mut waiting = waiting.into_iter();
    while let Some(mut poison) = waiting.next() {
        let mut record = FutureRecord::<[u8], [u8]>::to(&shared.topics.dlq);
        if !poison.bare {
            record = record.headers(headers(&[(
                ERROR_HEADER,
                truncate_utf8(&poison.error, MAX_ERROR_BYTES),
            )]));
        }
        if let Some(key) = &poison.key {
            record = record.key(key);
        }
        if let Some(payload) = &poison.payload {
            record = record.payload(payload);
        }
        let settle = |poison: &Poison| {
            let mut state = shared.lock();
            if let Some(p) = state.partitions.get_mut(&(poison.source, poison.partition)) {
                p.pending.remove(&poison.offset);
            }
        };
        match producer.send(record, Timeout::After(REQUEST_TIMEOUT)).await {
            Ok(_) => settle(&poison),
            Err((e, _))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                if poison.bare {
                    // It can never be copied (the dead-letter topic takes less than the topic
                    // it came from): holding it would hold the partition's commit for ever.
                    tracing::error!(topic = ?poison.source, partition = poison.partition, offset = poison.offset, error = %e, "A record that is not a mailroom message is too large for the dead-letter topic; left where it is, at this offset, and passed over.");
                    settle(&poison);
                } else {
                    poison.bare = true;
                    shared
                        .poison
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(poison);
                }
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "Could not copy a record to the dead-letter topic; trying again.");
                let mut later = shared.poison.lock().unwrap_or_else(|e| e.into_inner());
                later.push(poison);
                later.extend(waiting);
                return;
            }
        }
    }
}

/// Pauses a topic's fetch while this process holds more of it than it can use (ready records
/// past `prefetch`; for the retry topic also waiting ones past `MAX_DELAYED`), resumes it when
/// the backlog halves. Retry records already due go straight to the ready list, so a retry
/// topic read from far back (a new group) would otherwise fill memory with them. The consumer
/// keeps polling either way, so it stays in the group.
fn backpressure(
    consumer: &StreamConsumer<Context>,
    source: Source,
    shared: &Shared,
    prefetch: usize,
) {
    // How full the fullest list is, as a share of its limit.
    let fill = {
        let state = shared.lock();
        let ready = state.ready.len() as f64 / prefetch as f64;
        match source {
            Source::Main => ready,
            Source::Retry => ready.max(state.delayed.len() as f64 / MAX_DELAYED as f64),
        }
    };
    let mut paused = shared.paused.lock().unwrap_or_else(|e| e.into_inner());
    let known = paused.get(&source).copied();
    let want = if known == Some(true) {
        fill > 0.5
    } else {
        fill >= 1.0
    };
    if known == Some(want) {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if want {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => {
            paused.insert(source, want);
        }
        Err(e) => tracing::warn!(error = %e, "Could not pause or resume a Kafka fetch."),
    }
}
