//! Failures carry their decision: a 4xx is retried with backoff, a 5xx and exhausted attempts
//! are dead-lettered, and a dead letter is redriven once.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{event_kinds, spawn_app, spawn_app_with, unique_rcpt};

/// A 4xx from the relay is retried with growing backoff, then the message is delivered.
#[tokio::test]
async fn temporary_failure_is_retried_with_backoff_then_delivered() {
    let app = spawn_app_with(|c| {
        c.retry_base_ms = 100;
        c.retry_max_ms = 10_000;
    })
    .await;
    let to = unique_rcpt("fail-451-2");
    let id = app.send_to(&to).await;
    let started = Instant::now();
    let m = app.dispatch_until(&id, "delivered").await;
    // Two waits: at least 50 ms (half of 100, the jitter floor) and 100 ms (half of 200).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(m["attempts"], 3);
    let events: Vec<&Value> = m["events"].as_array().expect("events").iter().collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["accepted", "deferred", "deferred", "delivered"]);
    let delay = |e: &Value| -> u64 {
        let d = e["detail"].as_str().expect("detail");
        assert!(d.contains("451"), "{d}");
        d.split("next attempt in ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("a delay")
    };
    let (first, second) = (delay(events[1]), delay(events[2]));
    assert!(
        (50..=100).contains(&first) && (100..=200).contains(&second),
        "{first} then {second}"
    );
    assert_eq!(app.relay.received_for(&to).len(), 1);
    assert!(
        m["last_error"]
            .as_str()
            .expect("last error kept")
            .contains("451")
    );
}

/// A 5xx is dead-lettered at once; redriven, it is delivered.
#[tokio::test]
async fn permanent_failure_is_dead_lettered_then_redriven() {
    let app = spawn_app().await;
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "dead");
    assert_eq!(m["attempts"], 1);
    assert!(m["last_error"].as_str().expect("error").contains("550"));
    let dl: Value = app.get_json("/v1/dead-letters").await;
    assert_eq!(dl["dead_letters"][0]["id"], id.as_str());

    let r = app.redrive(&id).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        app.redrive(&id).await.status(),
        409,
        "only dead letters can be redriven"
    );
    assert_eq!(
        app.redrive(&uuid::Uuid::new_v4().to_string())
            .await
            .status(),
        404
    );
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    let kinds = event_kinds(&m);
    assert_eq!(kinds, ["accepted", "dead", "redriven", "delivered"]);
    assert_eq!(app.relay.received_for(&to).len(), 1);
    let dl: Value = app.get_json("/v1/dead-letters").await;
    assert_eq!(dl["dead_letters"].as_array().expect("array").len(), 0);
}

/// Two redrives of one dead letter at once queue it once: one is a 202, the other a 409, and
/// the message is delivered once.
#[tokio::test]
async fn a_dead_letter_redriven_twice_at_once_is_queued_once() {
    let app = spawn_app().await;
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_until(&id, "dead").await;
    let (a, b) = tokio::join!(app.redrive(&id), app.redrive(&id));
    let mut answers = [a.status().as_u16(), b.status().as_u16()];
    answers.sort_unstable();
    assert_eq!(answers, [202, 409]);
    app.dispatch_until(&id, "delivered").await;
    assert_eq!(app.relay.received_for(&to).len(), 1);
    let m = app.get_message(&id).await;
    assert_eq!(
        event_kinds(&m),
        ["accepted", "dead", "redriven", "delivered"]
    );
}

/// After MAX_ATTEMPTS temporary failures the message is dead with its last error.
#[tokio::test]
async fn attempts_exhausted_is_dead_lettered() {
    let app = spawn_app_with(|c| c.max_attempts = 3).await;
    let id = app.send_to(&unique_rcpt("fail-421-always")).await;
    let m = app.dispatch_until(&id, "dead").await;
    assert_eq!(m["attempts"], 3);
    let err = m["last_error"].as_str().expect("error");
    assert!(
        err.contains("gave up after 3 attempts") && err.contains("421"),
        "{err}"
    );
}

/// A relay that says the account's daily quota is used up (SES's SMTP endpoint: "454 Throttling
/// failure: Daily message quota exceeded.") pauses delivery instead of using up attempts: with
/// `MAX_ATTEMPTS=1` the message is neither deferred nor dead-lettered, the pause is on, and once the relay takes mail again the message is delivered on its one attempt.
/// (Before, a 454 was a throttle like any other, each one counted, and every message pulled
/// while the quota lasted was dead-lettered.)
#[tokio::test]
async fn a_daily_quota_used_up_pauses_delivery_without_using_attempts() {
    let app = spawn_app_with(|c| c.max_attempts = 1).await;
    let to = unique_rcpt("quota-1");
    let id = app.send_to(&to).await;
    assert_eq!(app.worker.run_once().await.expect("pull"), 1);
    let m = app.get_message(&id).await;
    assert_eq!(
        (&m["status"], &m["attempts"]),
        (&"queued".into(), &0.into())
    );
    assert_eq!(event_kinds(&m), ["accepted"]);
    // The pause (which the worker's loop waits out, asking the relay again after 30 s, and
    // which `/ready` reports where the process runs the worker:
    // process::cli::a_paused_provider_leaves_serve_ready_to_accept) is on.
    let metrics = app.get_public("/metrics").await.text().await.expect("text");
    assert!(
        metrics.lines().any(|l| l == "mailroom_delivery_paused 1"),
        "{metrics}"
    );

    let m = app.dispatch_until(&id, "delivered").await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// A dead letter whose archive write fails is not kept on the queue for it (on SQS or Kafka the
/// copy kept there would outlive a redrive): the failure is counted for the alert, the message
/// is dead and listed, and nothing of it is left to pull. A redrive once the archive works
/// delivers it and writes its object.
#[tokio::test]
async fn a_dead_letter_whose_archive_fails_is_counted_and_not_kept() {
    let app = spawn_app().await;
    let archive = app.archive_dir();
    std::fs::create_dir_all(&archive).expect("archive dir");
    std::fs::write(archive.join("emails"), "not a directory").expect("written");
    let failures = || async {
        let text = app.get_public("/metrics").await.text().await.expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix("mailroom_archive_failures_total "))
            .map_or(0, |v| v.parse::<u64>().expect("a count"))
    };
    let before = failures().await;
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "dead", "{m}");
    assert!(failures().await > before, "the failed write is counted");
    assert_eq!(
        app.dispatch_all_pending().await,
        0,
        "nothing left on the queue"
    );
    let path = archive.join(m["archive_key"].as_str().expect("archive key"));
    assert!(!path.exists());

    std::fs::remove_file(archive.join("emails")).expect("removed");
    assert_eq!(app.redrive(&id).await.status(), 202);
    let m = app.dispatch_until(&id, "delivered").await;
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("archived")).expect("JSON");
    assert_eq!(doc["outcome"]["status"], "delivered", "{doc}");
    assert_eq!(
        app.relay.received_for(&to).len(),
        1,
        "sent once, after the redrive"
    );
    assert_eq!(m["status"], "delivered");
}

/// While the archive cannot be written, a sent message stays owed to it (on the queue, not sent
/// again); once it can be, it is archived with its recorded outcome and leaves the queue.
#[tokio::test]
async fn an_archive_that_fails_is_written_once_it_works() {
    let app = spawn_app().await;
    let archive = app.archive_dir();
    std::fs::create_dir_all(&archive).expect("archive dir");
    // The archive's top directory is a file: every write fails.
    std::fs::write(archive.join("emails"), "not a directory").expect("written");
    let to = unique_rcpt("archive-down");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    let path = archive.join(m["archive_key"].as_str().expect("archive key"));
    // Still on the queue: its retries come and fail, and it is not sent again.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        app.dispatch_all_pending().await;
    }
    assert!(!path.exists());
    assert_eq!(app.relay.received_for(&to).len(), 1, "sent once");

    std::fs::remove_file(archive.join("emails")).expect("removed");
    for _ in 0..200 {
        app.dispatch_all_pending().await;
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("archived")).expect("JSON");
    assert_eq!(doc["outcome"]["status"], "delivered", "{doc}");
    let detail = doc["outcome"]["detail"].as_str().expect("detail");
    assert!(detail.contains("250"), "{detail}");
    assert_eq!(app.relay.received_for(&to).len(), 1, "sent once");
    assert_eq!(
        event_kinds(&app.get_message(&id).await),
        ["accepted", "delivered"]
    );
    assert_eq!(
        app.dispatch_all_pending().await,
        0,
        "nothing left on the queue"
    );
}
