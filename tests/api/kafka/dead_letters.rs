//! The dead-letter topic: records that are not mailroom messages, and messages at the size
//! limit, copied there.

use super::*;

/// Pushes a mailroom message behind records that are not, and acknowledges it: it is the only
/// one leased.
async fn a_message_behind_poison_is_leased_alone(queue: &dyn Queue) {
    let message = message(0);
    queue
        .push(std::slice::from_ref(&message))
        .await
        .pop()
        .expect("one result")
        .expect("pushed");
    let mut leases = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while leases.is_empty() && std::time::Instant::now() < deadline {
        leases = queue.pull(10).await.expect("pull");
    }
    assert_eq!(leases.len(), 1, "only the mailroom message is leased");
    assert_eq!(leases[0].message.id, message.id);
    queue.ack(leases.pop().expect("one")).await.expect("ack");
}

/// A record that is not a mailroom message is copied to the dead-letter topic with the reason,
/// and does not hold up the message behind it or the partition's commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut s = settings(&unique("poison"));
    s.partitions = 1;
    let queue = queue(&s, Duration::from_secs(30)).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&s.topic).key("junk").payload("{not json"),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    a_message_behind_poison_is_leased_alone(queue.as_ref()).await;
    assert_eq!(
        queue.depth().await.expect("depth").messages,
        0,
        "the commit passed the junk record too"
    );
    let dlq = dead_letter_records(&s).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].0.as_deref(), Some(&b"{not json"[..]));
    assert!(
        dlq[0]
            .1
            .as_deref()
            .is_some_and(|e| e.starts_with("not a mailroom message")),
        "{:?}",
        dlq[0].1
    );
}

/// Poison records at the size limit: one that fits the topic only without the error header is
/// copied to the dead-letter topic bare (with the header, the copy was refused for ever and held
/// the partition's commit), and one the dead-letter topic cannot take at all (written by a
/// producer allowed larger records) is passed over, so neither holds up the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_too_large_for_the_error_header_are_copied_bare_or_passed_over() {
    use rdkafka::error::RDKafkaErrorCode;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut s = settings(&unique("poison-large"));
    s.partitions = 1;
    let queue = queue(&s, Duration::from_secs(30)).await;
    let producer = |max_bytes: &str| -> FutureProducer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("message.max.bytes", max_bytes)
            .create()
            .expect("producer")
    };
    // The largest record a producer with the default limit (mailroom's) takes, found by the
    // producer's own check, which refuses a record over it before sending anything.
    let default_limit = producer("1000000");
    let mut size = 1_000_000;
    loop {
        let junk = vec![b'!'; size];
        match default_limit
            .send(
                FutureRecord::to(&s.topic).key("junk").payload(&junk),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(_) => break,
            Err((e, _))
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
            {
                size -= 1;
                assert!(size > 990_000, "no record near the limit was taken: {e}");
            }
            Err((e, _)) => panic!("producing the junk record: {e}"),
        }
    }
    // Over every limit but this producer's.
    producer("2000000")
        .send(
            FutureRecord::to(&s.topic)
                .key("junk")
                .payload(&vec![b'?'; 1_500_000]),
            Duration::from_secs(10),
        )
        .await
        .expect("the oversized junk record produced");
    a_message_behind_poison_is_leased_alone(queue.as_ref()).await;
    // Each junk record takes a commit tick or two (with the header, then bare).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let waiting = queue.depth().await.expect("depth").messages;
        if waiting == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the junk records still hold the commit: {waiting} waiting"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dlq = dead_letter_records_within(&s, Duration::from_secs(5), 2).await;
    assert_eq!(dlq.len(), 1, "the oversized record is not copied");
    assert_eq!(
        dlq[0].0.as_ref().map(Vec::len),
        Some(size),
        "the record at the limit is copied whole"
    );
    assert_eq!(dlq[0].1, None, "copied without the error header");
}

/// A message as large as the queue takes goes to the dead-letter topic with the longest error
/// header the queue writes, and to the retry topic with its headers: the size limit leaves room
/// for them within the brokers' and clients' default `message.max.bytes`. (With 999,000 bytes
/// of message, such a record was over it: the dead-letter write failed at every try and the
/// message came back at each visibility timeout for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_the_largest_size_can_be_retried_and_dead_lettered() {
    let mut s = settings(&unique("largest"));
    s.partitions = 1;
    let queue = queue(&s, Duration::from_secs(30)).await;
    // The largest compat message the queue takes, found by its own check.
    let sized = |n: usize| {
        let mut m = message(0);
        if let mailroom::message::Content::Compat(c) = &mut m.content {
            c.email_content = "x".repeat(n);
        }
        m
    };
    let (mut fits, mut over) = (0, 2_000_000);
    while over - fits > 1 {
        let mid = (fits + over) / 2;
        if queue.check(&sized(mid)).is_ok() {
            fits = mid;
        } else {
            over = mid;
        }
    }
    let largest = sized(fits);
    let pull_one = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut leases = queue.pull(1).await.expect("pull");
            if let Some(lease) = leases.pop() {
                return lease;
            }
            assert!(std::time::Instant::now() < deadline, "nothing to pull");
        }
    };
    queue
        .push(std::slice::from_ref(&largest))
        .await
        .pop()
        .expect("one result")
        .expect("pushed");
    let lease = pull_one().await;
    queue
        .retry(lease, Duration::from_millis(10))
        .await
        .expect("published to the retry topic");
    let lease = pull_one().await;
    assert_eq!(lease.message.id, largest.id);
    let error = "é".repeat(5_000);
    queue
        .dead(lease, &error)
        .await
        .expect("published to the dead-letter topic");
    let dlq = dead_letter_records(&s).await;
    assert_eq!(dlq.len(), 1);
    let (payload, error) = (dlq[0].0.as_deref(), dlq[0].1.as_deref());
    assert!(
        payload.is_some_and(|p| p.len() > 990_000),
        "the whole message"
    );
    assert!(
        error.is_some_and(|e| e.len() >= 999),
        "the longest error header: {error:?}"
    );
}
