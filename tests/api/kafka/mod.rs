//! The Kafka queue and delivery events against the tansu broker `scripts/test` starts on
//! 127.0.0.1 (`MAILROOM_TEST_KAFKA`). Every test uses topics and consumer groups of its own.
//! This file: the queue itself, its consumer groups and rebalances; `dead_letters.rs`: the
//! dead-letter topic; `events.rs`: delivery events.

mod dead_letters;
mod events;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailroom::config::{KafkaSecurity, KafkaSettings};
use mailroom::events::DeliveryEvent;
use mailroom::queue::kafka::KafkaQueue;
use mailroom::queue::sqlite::SqliteQueue;
use mailroom::queue::{Queue, QueueError};
use mailroom::scheduler::Scheduler;
use mailroom::store::sqlite::SqliteStore;
use rdkafka::Message as _;
use rdkafka::consumer::StreamConsumer;

use crate::conformance::{message, queue_suite, scheduled};
use crate::helpers::{kafka_brokers as brokers, kafka_reader as reader};

/// A name no other test (or earlier run against the same broker) has used.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        uuid::Uuid::now_v7().simple(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn settings(topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers(),
        topic: topic.to_string(),
        group_id: unique("group"),
        create_topics: true,
        partitions: 3,
        replication_factor: 1,
        // The test broker completes a group join only after a session timeout.
        session_timeout: Duration::from_secs(2),
        security: KafkaSecurity {
            protocol: "plaintext".into(),
            ..Default::default()
        },
        events_topic: None,
    }
}

async fn queue(settings: &KafkaSettings, visibility: Duration) -> Arc<dyn Queue> {
    mailroom::kafka::ensure_topics(settings, &mailroom::kafka::topics(settings, true))
        .await
        .expect("topics");
    Arc::new(KafkaQueue::new(settings, visibility, 64).expect("queue"))
}

/// Reads records from `consumer` until `done` says enough or `within` passes.
pub async fn read_until<T>(
    consumer: &StreamConsumer,
    within: Duration,
    mut decode: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> T,
    done: impl Fn(&[T]) -> bool,
) -> Vec<T> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => got.push(decode(&m)),
            Ok(Err(e)) => panic!("reading Kafka: {e}"),
            Err(_) => break,
        }
    }
    got
}

/// The first records of the dead-letter topic of `s` (within 30 s): payload and error header.
async fn dead_letter_records(s: &KafkaSettings) -> Vec<(Option<Vec<u8>>, Option<String>)> {
    dead_letter_records_within(s, Duration::from_secs(30), 1).await
}

/// The dead-letter topic's records of `s`, read until there are `enough` or `within` passes.
async fn dead_letter_records_within(
    s: &KafkaSettings,
    within: Duration,
    enough: usize,
) -> Vec<(Option<Vec<u8>>, Option<String>)> {
    use rdkafka::message::Headers;
    read_until(
        &reader(&s.dlq_topic()),
        within,
        |m| {
            let error = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "mailroom-error"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            (m.payload().map(<[u8]>::to_vec), error)
        },
        |got| got.len() >= enough,
    )
    .await
}

/// The queue suite passes on Kafka: topics created with three partitions, a fresh group each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_queue_conformance() {
    let visibility = Duration::from_secs(3);
    queue_suite(
        || async move { queue(&settings(&unique("conformance")), visibility).await },
        visibility,
    )
    .await;
}

/// Kafka has no delay: a message due later waits in the store's database queue, and the
/// scheduler produces it to the topic once its time has come, and once only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_hands_due_messages_to_kafka() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("held.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let visibility = Duration::from_secs(3);
    let scheduler = Scheduler {
        held: Arc::new(SqliteQueue::new(db.clone(), visibility)),
        queue: queue(&settings(&unique("scheduled")), visibility).await,
        store: Arc::new(SqliteStore::new(db)),
        shutdown_grace: Duration::from_secs(1),
    };
    let later = scheduled(2_000);
    for r in scheduler.held.push(std::slice::from_ref(&later)).await {
        r.expect("held");
    }
    assert_eq!(scheduler.run_once().await.expect("run"), 0, "not due yet");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(scheduler.run_once().await.expect("run"), 1);
    assert_eq!(
        scheduler.run_once().await.expect("run"),
        0,
        "handed over once"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.is_empty() && tokio::time::Instant::now() < deadline {
        got = scheduler.queue.pull(10).await.expect("pull");
    }
    assert_eq!(got.len(), 1, "the message is on the topic");
    assert_eq!(got[0].message, later);
}

/// Start-up names a missing topic unless mailroom may create it; `check` reports both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_are_named_or_created() {
    let mut s = settings(&unique("missing"));
    s.create_topics = false;
    let topics = mailroom::kafka::topics(&s, true);
    let error = mailroom::kafka::ensure_topics(&s, &topics)
        .await
        .expect_err("missing topics refuse")
        .to_string();
    assert!(
        error.contains(&s.topic) && error.contains(&s.dlq_topic()),
        "{error}"
    );
    assert!(error.contains("KAFKA_CREATE_TOPICS=true"), "{error}");
    s.create_topics = true;
    let created = mailroom::kafka::check(&s, &topics).await.expect("created");
    assert!(created.contains("created"), "{created}");
    let again = mailroom::kafka::check(&s, &topics).await.expect("exist");
    assert!(again.contains("exist"), "{again}");
    let mut unreachable = s.clone();
    unreachable.brokers = "127.0.0.1:9".into();
    assert!(
        mailroom::kafka::check(&unreachable, &topics)
            .await
            .expect_err("no broker")
            .contains("unreachable")
    );
}

/// A consumer that dies without committing hands its unsettled records to the next member of
/// the group; what it settled stays settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_records_go_to_the_next_consumer() {
    let s = settings(&unique("handover"));
    let first = queue(&s, Duration::from_secs(30)).await;
    let sent: Vec<_> = (0..6).map(message).collect();
    for r in first.push(&sent).await {
        r.expect("push");
    }
    let mut leases = Vec::new();
    while leases.len() < 6 {
        leases.extend(first.pull(6).await.expect("pull"));
    }
    let (acked, unsettled) = leases.split_at(3);
    let acked_ids: Vec<_> = acked.iter().map(|l| l.message.id).collect();
    let mut unsettled_ids: Vec<_> = unsettled.iter().map(|l| l.message.id).collect();
    for lease in leases.drain(..3) {
        first.ack(lease).await.expect("ack");
    }
    // Commit what was settled, then go away without settling the rest.
    first.depth().await.expect("depth");
    first.close().await;
    drop(leases);
    drop(first);
    let second = queue(&s, Duration::from_secs(30)).await;
    let mut again = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while again.len() < 3 && std::time::Instant::now() < deadline {
        again.extend(second.pull(10).await.expect("pull"));
    }
    let mut again_ids: Vec<_> = again.iter().map(|l| l.message.id).collect();
    again_ids.sort();
    unsettled_ids.sort();
    assert_eq!(
        again_ids, unsettled_ids,
        "exactly the unsettled records come back"
    );
    assert!(again_ids.iter().all(|id| !acked_ids.contains(id)));
    for lease in again {
        second.ack(lease).await.expect("ack");
    }
    lag_comes_to_nothing(second.as_ref()).await;
}

/// The group's lag on `queue`'s topics reaches zero: every record is settled and committed. A
/// commit the group refuses while it rebalances (a member just left) lands at a later tick.
async fn lag_comes_to_nothing(queue: &dyn Queue) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut lag = u64::MAX;
    while lag > 0 && std::time::Instant::now() < deadline {
        lag = queue.depth().await.expect("depth").messages;
        if lag > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert_eq!(lag, 0, "records left uncommitted in the group");
}

/// A worker joining the group takes partitions from one that holds leases on them: the first
/// loses exactly those leases (an ack of one fails, so its delivery is not recorded as its own),
/// the newcomer receives exactly those records, and what the first keeps stays its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_moves_unsettled_records_and_their_leases() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("mailroom=debug")
        .with_writer(std::io::stderr)
        .try_init();
    let s = settings(&unique("rebalance"));
    let first = queue(&s, Duration::from_secs(60)).await;
    let sent: Vec<_> = (0..12).map(message).collect();
    for r in first.push(&sent).await {
        r.expect("push");
    }
    let mut leases = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while leases.len() < sent.len() && std::time::Instant::now() < deadline {
        leases.extend(first.pull(12).await.expect("pull"));
    }
    assert_eq!(
        leases.len(),
        sent.len(),
        "the first worker holds every record"
    );

    // The second joins; the group moves some of the three partitions to it.
    let second = queue(&s, Duration::from_secs(60)).await;
    let mut received = Vec::new();
    let mut lost = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        received.extend(second.pull(12).await.expect("pull"));
        lost = Vec::new();
        for lease in &leases {
            if let Err(e) = first.extend(lease).await {
                assert!(matches!(e, QueueError::LeaseLost(_)), "{e}");
                lost.push(lease.message.id);
            }
        }
        if !lost.is_empty() && received.len() >= lost.len() {
            break;
        }
    }
    assert!(!lost.is_empty(), "the second worker took no partition");
    assert!(
        lost.len() < sent.len(),
        "the first worker kept none of the topic"
    );

    let mut received_ids: Vec<_> = received.iter().map(|l| l.message.id).collect();
    received_ids.sort();
    lost.sort();
    assert_eq!(received_ids, lost, "exactly the records whose leases moved");
    for lease in leases {
        let id = lease.message.id;
        let acked = first.ack(lease).await;
        assert_eq!(acked.is_ok(), !lost.contains(&id), "ack of {id}: {acked:?}");
    }
    // Closing commits what the first settled; the second's depth then counts the group's.
    first.close().await;
    for lease in received {
        second.ack(lease).await.expect("ack");
    }
    lag_comes_to_nothing(second.as_ref()).await;
    second.close().await;
}

/// A deployment upgraded from the release that read the retry topic in the main group: the new
/// retry group (`{group}.retry`) starts where the main group left the retry topic, so retry
/// records already settled there are not read (and sent, or dead-lettered) a second time, while
/// new work flows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_retry_group_starts_where_the_main_group_left_the_retry_topic() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};
    let mut s = settings(&unique("seed"));
    s.partitions = 1;
    mailroom::kafka::ensure_topics(&s, &mailroom::kafka::topics(&s, true))
        .await
        .expect("topics");
    // What the old release left: three retry records, all settled and committed by its group.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let old: Vec<_> = (0..3).map(message).collect();
    for m in &old {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "mailroom-attempts",
                value: Some("1"),
            })
            .insert(Header {
                key: "mailroom-due-ms",
                value: Some("0"),
            });
        let payload = serde_json::to_vec(m).expect("JSON");
        let key = m.id.to_string();
        producer
            .send(
                FutureRecord::to(&s.retry_topic())
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
    let old_group: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &s.group_id)
        .create()
        .expect("consumer");
    let mut position = TopicPartitionList::new();
    position
        .add_partition_offset(&s.retry_topic(), 0, Offset::Offset(3))
        .expect("offset");
    old_group
        .commit(&position, CommitMode::Sync)
        .expect("the old release's commit");

    let queue = queue(&s, Duration::from_secs(30)).await;
    let new = message(10);
    queue
        .push(std::slice::from_ref(&new))
        .await
        .pop()
        .expect("one result")
        .expect("pushed");
    let mut leased = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        leased.extend(queue.pull(10).await.expect("pull"));
        // Once the new message is in, a few seconds more for any old record to show up.
        if leased.iter().any(|l| l.message.id == new.id) {
            let settle = std::time::Instant::now() + Duration::from_secs(4);
            while std::time::Instant::now() < settle {
                leased.extend(queue.pull(10).await.expect("pull"));
            }
            break;
        }
    }
    let ids: Vec<_> = leased.iter().map(|l| l.message.id).collect();
    assert_eq!(
        ids,
        [new.id],
        "only the new message; none of the settled retries"
    );
    for lease in leased {
        queue.ack(lease).await.expect("ack");
    }
    lag_comes_to_nothing(queue.as_ref()).await;
    queue.close().await;
}
