//! Kafka with the real binary: one `api` and two `worker` processes on one topic (tansu broker,
//! PostgreSQL store) deliver a few thousand messages to the relay while one worker is killed
//! with `kill -9`; a 4xx goes round the retry topic, a 5xx lands in the dead-letter topic, and
//! every message's events reach `EVENTS_TOPIC`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::Message as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Headers;
use serde_json::{Value, json};

use crate::helpers::{
    Relay, compat_body, fresh_pg_database, kafka_brokers as brokers, kafka_reader as reader,
    unique_rcpt,
};
use crate::{received_ids, spawn, start_role};

const MESSAGES: usize = 2000;
const WORKER_CONCURRENCY: usize = 8;

type Record = (String, Vec<u8>, HashMap<String, String>);

/// Reads `(key, payload, headers)` from `consumer` until `done` (shown each record as it comes)
/// says enough, or `within` passes.
async fn read(
    consumer: &StreamConsumer,
    within: Duration,
    mut done: impl FnMut(&Record) -> bool,
) -> Vec<Record> {
    let mut got: Vec<Record> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.last().is_none_or(|r| !done(r)) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.push((key, m.payload().unwrap_or_default().to_vec(), headers));
            }
            Ok(Err(e)) => panic!("reading Kafka: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_workers_survive_a_kill_and_publish_events() {
    let _turn = crate::HEAVY.lock().await;
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("kafka-token-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("kafka");
    let topic = format!("mail-{}", uuid::Uuid::new_v4().simple());
    let events_topic = format!("{topic}.events");
    let archive = url::Url::from_directory_path(dir.path().join("archive")).expect("absolute");
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DATABASE_URL", fresh_pg_database().await),
        ("QUEUE_BACKEND", "kafka".into()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC", topic.clone()),
        ("KAFKA_GROUP_ID", format!("workers-{topic}")),
        ("KAFKA_CREATE_TOPICS", "true".into()),
        ("KAFKA_PARTITIONS", "4".into()),
        ("KAFKA_REPLICATION_FACTOR", "1".into()),
        // The test broker completes a group join only after a session timeout.
        ("KAFKA_SESSION_TIMEOUT_SECS", "3".into()),
        ("EVENTS_TOPIC", events_topic.clone()),
        ("ARCHIVE_URL", archive.to_string()),
        ("DELIVERY", "smtp".into()),
        ("SMTP_URL", relay.plain_url()),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        // Per worker (no shared limiter here): slow enough that the kill lands mid-run.
        ("SEND_RATE_PER_SECOND", "120".into()),
        ("WORKER_CONCURRENCY", WORKER_CONCURRENCY.to_string()),
        ("VISIBILITY_TIMEOUT_SECS", "10".into()),
        ("RETRY_BASE_MS", "300".into()),
        ("RETRY_MAX_MS", "1000".into()),
    ];
    let data = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    let t0 = Instant::now();
    let api = start_role("api", &data("api"), &env).await;
    let client = reqwest::Client::new();

    // A few thousand compat messages, sixteen requests at a time.
    let url = format!("{}/api/email", api.url);
    let body = compat_body(&token);
    let ids: Vec<String> = futures::stream::iter(0..MESSAGES)
        .map(|_| {
            let request = client.post(&url).json(&body).send();
            async move {
                let r = request.await.expect("the api answers");
                assert_eq!(r.status(), 202);
                let v: Value = r.json().await.expect("JSON");
                v["message_id"].as_str().expect("id").to_string()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // One the relay refuses twice with 451, then takes; one it refuses for good with 550.
    let native = |to: &str| {
        let request = client
            .post(format!("{}/v1/messages", api.url))
            .bearer_auth(&token)
            .json(&json!({"from": "app@example.com", "to": to, "subject": "kafka", "text": "t"}))
            .send();
        async move { crate::helpers::accepted_id(request.await.expect("sent")).await }
    };
    let flaky = native(&unique_rcpt("fail-451-2")).await;
    let refused = native(&unique_rcpt("fail-550-always")).await;

    eprintln!("{:.1} s: {MESSAGES} accepted", t0.elapsed().as_secs_f64());
    let worker = |i: usize| {
        let mut env = env.clone();
        env.push(("INSTANCE_ID", format!("worker-{i}")));
        spawn("worker", &data(&format!("worker-{i}")), &env)
    };
    let mut workers = vec![worker(0), worker(1)];
    let started = Instant::now();
    while received_ids(&relay, &rcpt).len() < MESSAGES / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "deliveries did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{:.1} s: a third delivered; kill -9",
        t0.elapsed().as_secs_f64()
    );
    workers[1].start_kill().expect("SIGKILL");
    workers[1].wait().await.expect("reaped");

    // Every accepted message is delivered: the survivor takes the killed worker's partitions
    // from their last committed offsets.
    let want: HashSet<&String> = ids.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = received_ids(&relay, &rcpt);
        let done = want.iter().filter(|id| got.contains_key(**id)).count();
        if done == want.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {MESSAGES} delivered in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{:.1} s: all delivered", t0.elapsed().as_secs_f64());
    let counts = received_ids(&relay, &rcpt);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "Kafka, kill -9 of one of two workers: {MESSAGES} delivered, {duplicates} duplicate(s); its concurrency {WORKER_CONCURRENCY}"
    );
    // Redelivered records that the store already knows as delivered are not sent again; only
    // those in the middle of their SMTP exchange when the worker died can be.
    assert!(duplicates <= WORKER_CONCURRENCY, "{duplicates} duplicates");

    let get = |path: String| {
        let request = client
            .get(format!("{}{path}", api.url))
            .bearer_auth(&token)
            .send();
        async move {
            request
                .await
                .expect("sent")
                .json::<Value>()
                .await
                .expect("JSON")
        }
    };
    // The 451s went round the retry topic; the third attempt was delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let flaky_record = loop {
        let v = get(format!("/v1/messages/{flaky}")).await;
        if v["status"] == "delivered" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("{:.1} s: flaky delivered", t0.elapsed().as_secs_f64());
    assert_eq!(flaky_record["status"], "delivered", "{flaky_record}");
    assert_eq!(flaky_record["attempts"], 3, "{flaky_record}");
    let mut trips = 0;
    let retried = read(
        &reader(&format!("{topic}.retry")),
        Duration::from_secs(30),
        |(k, _, _)| {
            trips += usize::from(*k == flaky);
            trips == 2
        },
    )
    .await;
    eprintln!("{:.1} s: retry topic read", t0.elapsed().as_secs_f64());
    let flaky_retries: Vec<_> = retried.iter().filter(|(k, _, _)| *k == flaky).collect();
    assert_eq!(flaky_retries.len(), 2, "two trips through the retry topic");
    assert_eq!(flaky_retries[1].2["mailroom-attempts"], "2");

    // The 550 is dead at once: in the dead letters, and on the dead-letter topic with its error.
    let dead = get("/v1/dead-letters".into()).await;
    assert!(
        dead.to_string().contains(&refused),
        "the 550 is listed as a dead letter: {dead}"
    );
    let dlq = read(
        &reader(&format!("{topic}.dlq")),
        Duration::from_secs(30),
        |(k, _, _)| *k == refused,
    )
    .await;
    eprintln!("{:.1} s: dlq read", t0.elapsed().as_secs_f64());
    let (_, _, headers) = dlq
        .iter()
        .find(|(k, _, _)| *k == refused)
        .expect("the 550 on the dead-letter topic");
    assert!(headers["mailroom-error"].contains("550"), "{headers:?}");

    // Every message's events: accepted, then delivered.
    // Read until every delivered event and the 550's dead event are in: they sit on different
    // partitions, so one can arrive after the others.
    let mut delivered = HashSet::new();
    let mut refused_dead = false;
    let events = read(
        &reader(&events_topic),
        Duration::from_secs(60),
        |(k, p, _)| {
            let event = serde_json::from_slice::<Value>(p).unwrap_or_default();
            if event["event"] == "delivered" {
                delivered.insert(k.clone());
            }
            refused_dead |= *k == refused && event["event"] == "dead";
            delivered.len() > MESSAGES && refused_dead
        },
    )
    .await;
    eprintln!("{:.1} s: events read", t0.elapsed().as_secs_f64());
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (key, payload, _) in &events {
        let e: Value = serde_json::from_slice(payload).expect("event JSON");
        assert_eq!(e["message_id"], key.as_str(), "keyed by message id");
        seen.entry(key.clone())
            .or_default()
            .push(e["event"].as_str().unwrap_or_default().to_string());
    }
    for id in ids.iter().chain([&flaky]) {
        let kinds = seen.get(id).cloned().unwrap_or_default();
        let accepted = kinds.iter().position(|k| k == "accepted");
        let delivered = kinds.iter().position(|k| k == "delivered");
        assert!(
            matches!((accepted, delivered), (Some(a), Some(d)) if a < d),
            "{id}: {kinds:?} ({} events read)",
            events.len()
        );
    }
    assert_eq!(
        seen[&flaky]
            .iter()
            .filter(|k| k.as_str() == "deferred")
            .count(),
        2
    );
    assert!(seen[&refused].contains(&"dead".to_string()));

    for w in &mut workers {
        let _ = w.start_kill();
    }
    drop(api);
}
