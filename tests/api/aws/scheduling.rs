//! Messages due later (`send_at`) on SQS, which delays 15 minutes at most: held in the store's
//! database queue (SQLite or PostgreSQL) until the scheduler hands them over.

use std::time::Duration;

use mailroom::config::RawConfig;
use serde_json::{Value, json};

use super::moto::Moto;
use super::on_aws;
use crate::helpers::{TestApp, accepted_id, spawn_app_with, unique_rcpt};

/// SQS delays a message 15 minutes at most: a message due later waits in the store's database
/// queue, committed with it, and the scheduler hands it to SQS when its time comes, and not
/// before; a time already past goes to SQS at once. Then the worker delivers it like any other,
/// dated its `send_at`. In a batch each entry goes its own way. A held message cancelled before
/// its time is never handed over. If SQS refuses a batch's messages due now, those held for
/// later are abandoned with them (the client heard 503 and sends all again).
async fn scheduled_on_sqs(app: &TestApp, moto: &Moto, queue_url: &str) {
    let scheduler = app
        .scheduler
        .clone()
        .expect("an external queue has a scheduler");
    let to = unique_rcpt("scheduled-sqs");
    let body = |send_at: String| {
        json!({"from": "a@example.com", "to": [&to], "subject": "s", "text": "t",
               "send_at": send_at})
    };
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(2_500);
    let batch = json!({"messages": [body(due.to_rfc3339()), body("1700000000".into()),
                                    body(due.to_rfc3339())]});
    let v: Value = app.post_batch(&batch).await.json().await.expect("JSON");
    let ids: Vec<&str> = (0..3)
        .map(|i| {
            assert_eq!(v["results"][i]["status"], "queued", "{v}");
            v["results"][i]["message_id"].as_str().expect("an id")
        })
        .collect();
    let (later, now, cancelled) = (ids[0], ids[1], ids[2]);
    assert_eq!(app.cancel(cancelled).await.status(), 200);
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1, "only the message due now is on the queue");
    assert_eq!(leases[0].message.id.to_string(), now);
    for lease in leases {
        app.queue.release(lease).await.expect("release");
    }
    assert_eq!(
        scheduler.run_once().await.expect("the store answers"),
        0,
        "not due yet"
    );
    assert_eq!(app.dispatch_all_pending().await, 1);
    assert_eq!(app.get_message(now).await["status"], "delivered");
    assert_eq!(app.get_message(later).await["status"], "queued");

    let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(
        scheduler.run_once().await.expect("handed over"),
        1,
        "the one due, not the cancelled one"
    );
    assert_eq!(
        scheduler.run_once().await.expect("the store answers"),
        0,
        "handed over once"
    );
    app.dispatch_until(later, "delivered").await;
    assert_eq!(app.get_message(cancelled).await["status"], "cancelled");
    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 2, "each message once");
    let dates: Vec<i64> = got
        .iter()
        .map(|g| {
            let date = g.header("Date").expect("a Date header");
            chrono::DateTime::parse_from_rfc2822(&date)
                .expect("an RFC 5322 date")
                .timestamp()
        })
        .collect();
    assert!(
        dates.contains(&due.timestamp()),
        "dated its send_at: {dates:?}"
    );

    let held = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    moto.sqs()
        .delete_queue()
        .queue_url(queue_url)
        .send()
        .await
        .expect("deleted");
    let batch = json!({"messages": [body(held), body("1700000000".into())]});
    assert_eq!(app.post_batch(&batch).await.status(), 503);
    let list: Value = app.get_json("/v1/messages?status=abandoned").await;
    assert_eq!(
        list["messages"].as_array().expect("an array").len(),
        2,
        "{list}"
    );
}

/// A scheduled message that SQS can no longer carry when its time comes (its size limit was
/// lowered after the message was accepted) is dead-lettered with the reason, not tried forever.
#[tokio::test]
async fn a_scheduled_message_sqs_no_longer_takes_is_dead_lettered() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("shrunk", 5, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let configure = |raw: &mut RawConfig| {
        on_aws(raw, &moto, &url);
        raw.database_url = Some(db.clone().into());
    };
    let first = spawn_app_with(configure).await;
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let body = json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s",
                      "text": "x".repeat(2_000), "send_at": due.to_rfc3339()});
    let id = accepted_id(first.post_message(&body, None).await).await;
    drop(first);
    moto.sqs()
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .expect("limit lowered");
    // A release started after the change reads the new limit.
    let app = spawn_app_with(configure).await;
    let scheduler = app.scheduler.clone().expect("a scheduler");
    let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(scheduler.run_once().await.expect("a round"), 0);
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "dead", "{m}");
    let error = m["last_error"].as_str().expect("an error");
    assert!(
        error.contains("refused it when its time came") && error.contains("at most 512 bytes"),
        "{error}"
    );
    assert!(app.queue.pull(10).await.expect("pull").is_empty());
    assert_eq!(scheduler.run_once().await.expect("a round"), 0);
    assert_eq!(
        app.get_message(&id).await["status"],
        "dead",
        "and it stays there"
    );
}

#[tokio::test]
async fn scheduled_messages_wait_in_the_store_then_go_through_sqs() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("scheduled", 5, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    scheduled_on_sqs(&app, &moto, &url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn scheduled_messages_wait_in_postgres_then_go_through_sqs() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("scheduled-pg", 5, None).await;
    let db = crate::helpers::fresh_pg_database().await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.database_url = Some(db.into());
    })
    .await;
    scheduled_on_sqs(&app, &moto, &url).await;
}

/// A dead letter redriven on SQS goes back through the store's own database queue, committed
/// with its status, and the scheduler hands it to SQS: the redrive is one transaction, so a
/// crash cannot leave the message `queued` with nothing on SQS to deliver it (before, the
/// status and the SQS send were two steps).
#[tokio::test]
async fn a_dead_letter_redriven_on_sqs_goes_through_the_scheduler() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("redrive", 5, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    let scheduler = app.scheduler.clone().expect("a scheduler");
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_until(&id, "dead").await;

    assert_eq!(app.redrive(&id).await.status(), 202);
    assert_eq!(app.get_message(&id).await["status"], "queued");
    assert_eq!(app.dispatch_all_pending().await, 0, "nothing on SQS yet");
    assert_eq!(scheduler.run_once().await.expect("handed over"), 1);
    let m = app.dispatch_until(&id, "delivered").await;
    assert_eq!(
        crate::helpers::event_kinds(&m),
        ["accepted", "dead", "redriven", "delivered"]
    );
    assert_eq!(app.relay.received_for(&to).len(), 1);
    assert_eq!(
        scheduler.run_once().await.expect("a round"),
        0,
        "handed over once"
    );
}
