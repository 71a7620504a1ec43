//! The AWS backends against the moto server: the queue suite on SQS, the archive suite on S3,
//! the pipeline through SQS, S3 and SES, the SQS size limit at the API, a failed SQS send, and
//! the API token from SSM (rotation, outage).

use std::sync::Arc;
use std::time::Duration;

use mailroom::archive::Archive;
use mailroom::config::{RawConfig, S3Settings};
use mailroom::queue::Queue;
use mailroom::queue::sqs::{SqsQueue, SqsSettings};
use serde_json::{Value, json};

use crate::conformance::{archive_suite, message, queue_suite};
use crate::helpers::{TestApp, accepted_id, spawn_app_with, unique_rcpt};
use crate::moto::{Hold, Moto, REGION, SlowProxy};

fn sqs_settings(url: &str, visibility: Duration) -> SqsSettings {
    SqsSettings {
        queue_url: url.to_string(),
        dlq_url: None,
        visibility,
        wait: Duration::from_secs(1),
        pollers: 2,
    }
}

/// Points a test app at moto: SQS queue `queue_url`, fast long polls.
fn on_aws(raw: &mut RawConfig, moto: &Moto, queue_url: &str) {
    raw.queue_backend = Some("sqs".into());
    raw.sqs_queue_url = Some(queue_url.to_string());
    raw.sqs_wait_time_secs = 1;
    raw.aws_region = Some(REGION.into());
    raw.aws_endpoint_url = Some(moto.endpoint.clone());
}

/// The queue suite passes on SQS, each function on a fresh queue with a redrive policy.
#[tokio::test]
async fn sqs_queue_conformance() {
    let moto = Moto::start().await;
    // Longer than a pull that finds nothing (one 1 s long poll) plus the suite's other calls.
    let visibility = Duration::from_secs(3);
    let n = std::sync::atomic::AtomicUsize::new(0);
    queue_suite(
        || {
            let name = format!(
                "conformance-{}",
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            );
            let moto = &moto;
            async move {
                let (url, _) = moto.queue_with_dlq(&name, 5, None).await;
                Arc::new(SqsQueue::open(moto.sqs(), sqs_settings(&url, visibility), 5).await)
                    as Arc<dyn Queue>
            }
        },
        visibility,
    )
    .await;
}

/// A permanent failure goes to the dead-letter queue named by the redrive policy, with its
/// error; a body that is not a mailroom message is left to the redrive policy, which moves it
/// there after maxReceiveCount receives.
#[tokio::test]
async fn sqs_dead_letters_and_poison_messages_reach_the_dlq() {
    let moto = Moto::start().await;
    let (url, dlq) = moto.queue_with_dlq("dead", 2, None).await;
    let visibility = Duration::from_secs(1);
    let queue = SqsQueue::open(moto.sqs(), sqs_settings(&url, visibility), 2).await;
    let message = message(0);
    queue
        .push(std::slice::from_ref(&message))
        .await
        .pop()
        .expect("one")
        .expect("pushed");
    let lease = queue.pull(10).await.expect("pull").pop().expect("one");
    queue
        .dead(lease, "550 5.1.1 no such user")
        .await
        .expect("dead");
    let dead = moto.drain(&dlq).await;
    assert_eq!(dead.len(), 1);
    let body: Value = serde_json::from_str(&dead[0].0).expect("the message as JSON");
    assert_eq!(body["id"], message.id.to_string());
    assert_eq!(dead[0].1.as_deref(), Some("550 5.1.1 no such user"));

    moto.sqs()
        .send_message()
        .queue_url(&url)
        .message_body("{not a mailroom message")
        .send()
        .await
        .expect("sent");
    for _ in 0..3 {
        assert!(
            queue.pull(10).await.expect("pull").is_empty(),
            "poison is never leased"
        );
        tokio::time::sleep(visibility + Duration::from_millis(200)).await;
    }
    let poison = moto.drain(&dlq).await;
    assert_eq!(
        poison.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        ["{not a mailroom message"],
        "the redrive policy moved the poison message"
    );
}

/// The archive suite passes on S3, under a prefix, with server-side encryption requested.
#[tokio::test]
async fn s3_archive_conformance() {
    let moto = Moto::start().await;
    moto.bucket("archive").await;
    let url = url::Url::parse("s3://archive/mail/prod").expect("URL");
    let s3 = S3Settings {
        region: Some(REGION.into()),
        endpoint_url: Some(moto.endpoint.clone()),
        server_side_encryption: Some("AES256".into()),
        kms_key_id: None,
    };
    archive_suite(&Archive::from_url(&url, &s3).expect("archive")).await;
    let keys = moto.keys("archive").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("mail/prod/emails/2023/11/14/email-1700000000-"),
        "{keys:?}"
    );
}

/// A message posted to the API goes through SQS, out through SES with its headers and every
/// recipient (Bcc too), and into the S3 archive; an unverified sender is dead at once and its
/// copy is in the dead-letter queue.
#[tokio::test]
async fn pipeline_through_sqs_ses_and_s3() {
    let moto = Moto::start().await;
    let (url, dlq) = moto.queue_with_dlq("pipeline", 5, None).await;
    moto.bucket("mail-archive").await;
    moto.verify_sender("shop@example.com").await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.archive_url = Some("s3://mail-archive/archive".into());
        raw.delivery = "ses".into();
        raw.send_rate_per_second = 50.0;
    })
    .await;
    let r = app
        .post_message(
            &json!({
                "from": "Shop <shop@example.com>",
                "to": ["buyer@example.net"],
                "bcc": ["audit@example.org"],
                "subject": "Your receipt",
                "text": "Thanks.",
                "headers": {"X-Campaign": "receipts"},
            }),
            None,
        )
        .await;
    let id = accepted_id(r).await;
    let v = app.dispatch_until(&id, "delivered").await;
    assert!(v["events"].to_string().contains("SES message id"), "{v}");
    let sent = moto.ses_sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let raw = sent[0]["raw_data"].as_str().expect("raw MIME");
    for header in [
        format!("X-Mailroom-Id: {id}"),
        "Subject: Your receipt".into(),
        "From: Shop <shop@example.com>".into(),
        "X-Campaign: receipts".into(),
    ] {
        assert!(raw.contains(&header), "{header} missing from {raw}");
    }
    assert!(
        !raw.contains("audit@example.org"),
        "Bcc is not in the headers"
    );
    let destinations = sent[0]["destinations"].to_string();
    assert!(
        destinations.contains("buyer@example.net") && destinations.contains("audit@example.org"),
        "{destinations}"
    );
    let keys = moto.keys("mail-archive").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("archive/emails/") && keys[0].ends_with(&format!("-{id}.json")));
    let doc = moto.object("mail-archive", &keys[0]).await;
    assert_eq!(doc["outcome"]["status"], "delivered");

    let r = app
        .post_message(
            &json!({"from": "someone@unverified.example", "to": ["x@example.net"], "subject": "s", "text": "t"}),
            None,
        )
        .await;
    let id = accepted_id(r).await;
    let v = app.dispatch_until(&id, "dead").await;
    assert_eq!(v["attempts"], 1, "permanent: no retries");
    assert!(
        v["last_error"]
            .as_str()
            .expect("error")
            .contains("MessageRejected"),
        "{v}"
    );
    let dead = moto.drain(&dlq).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].0.contains(&id));
}

/// A message larger than the SQS queue takes is a 413 naming the limit, and nothing is stored; in
/// a batch, only that entry is refused, named by its own index.
#[tokio::test]
async fn message_over_the_sqs_limit_is_413() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("small", 5, Some(1024)).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    let r = app
        .post_message(
            &json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "big", "text": "x".repeat(2000)}),
            None,
        )
        .await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "message_too_large");
    assert_eq!(body["error"]["field"], "body");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("text")
            .contains("at most 512 bytes"),
        "{body}"
    );
    assert_eq!(app.message_count().await, 0, "nothing stored");

    let entry = |text: String| json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": text});
    let batch = json!({"messages": [{"subject": "no recipient"}, entry("x".repeat(2000)), entry("small".into())]});
    let v: Value = app.post_batch(&batch).await.json().await.expect("JSON");
    assert_eq!(v["results"][1]["error"]["code"], "message_too_large", "{v}");
    assert_eq!(v["results"][1]["error"]["field"], "messages[1]", "{v}");
    assert_eq!(v["results"][2]["status"], "queued", "{v}");
    assert_eq!(app.message_count().await, 1, "only the small one");
}

/// SQS refusing a send is a 503 with Retry-After, never a 202, and the request's
/// Idempotency-Key is let go: the client's retry is accepted once the queue is back.
#[tokio::test]
async fn failed_sqs_send_is_503_and_frees_the_idempotency_key() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("flaky", 5, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    moto.sqs()
        .delete_queue()
        .queue_url(&url)
        .send()
        .await
        .expect("deleted");
    let body =
        json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"});
    let r = app.post_message(&body, Some("order-17")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    // The stored record is abandoned, not a dead letter: the client heard 503 and sends it again,
    // so a redrive would deliver it twice.
    let list: Value = app.get_json("/v1/messages?status=abandoned").await;
    let abandoned = list["messages"].as_array().expect("an array");
    assert_eq!(abandoned.len(), 1, "{list}");
    let abandoned_id = abandoned[0]["id"].as_str().expect("an id").to_string();
    let dead: Value = app.get_json("/v1/dead-letters").await;
    assert_eq!(
        dead["dead_letters"].as_array().expect("an array").len(),
        0,
        "{dead}"
    );
    assert_eq!(app.redrive(&abandoned_id).await.status(), 409);
    moto.queue_with_dlq("flaky", 5, None).await;
    let r = app.post_message(&body, Some("order-17")).await;
    assert_eq!(r.status(), 202, "the retry with the same key is accepted");
    let id = accepted_id(r).await;
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].message.id.to_string(), id);
}

/// With SQS the Idempotency-Key is committed before SQS takes the message. While that push is
/// under way a retry with the key is a 409 with Retry-After, never a 202: the push may yet
/// fail, and a 202 then would be for a message that is abandoned. Once SQS took it, the retry
/// gets the first answer again; once the push failed (503), the retry is accepted afresh.
#[tokio::test]
async fn a_retry_while_sqs_is_still_taking_the_message_is_told_to_wait() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("pending-keys", 5, None).await;
    let proxy = SlowProxy::start(&moto.endpoint).await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.aws_endpoint_url = Some(proxy.endpoint.clone());
    })
    .await;
    let body =
        json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"});
    let while_pushing = |key: &'static str| {
        let (app, body) = (&app, &body);
        async move {
            let first = app.post_message(body, Some(key));
            let retry = async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                app.post_message(body, Some(key)).await
            };
            tokio::join!(first, retry)
        }
    };

    // SQS fails after a while: the first request is a 503, the retry meanwhile a 409.
    proxy.hold(Hold::ThenDrop(Duration::from_millis(1_000)));
    let (first, retry) = while_pushing("order-1").await;
    assert_eq!(first.status(), 503);
    assert_eq!(retry.status(), 409);
    assert_eq!(retry.headers()["retry-after"], "1");
    let v: Value = retry.json().await.expect("JSON");
    assert_eq!(v["error"]["code"], "idempotency_key_in_progress", "{v}");
    proxy.hold(Hold::Nothing);
    let again = app.post_message(&body, Some("order-1")).await;
    assert_eq!(again.status(), 202, "accepted afresh after the 503");
    assert!(again.headers().get("idempotent-replayed").is_none());
    let id = accepted_id(again).await;

    // SQS is slow but takes it: the retry meanwhile is a 409, the one after it the first answer.
    proxy.hold(Hold::For(Duration::from_millis(1_000)));
    let (first, retry) = while_pushing("order-2").await;
    assert_eq!(first.status(), 202);
    assert_eq!(retry.status(), 409);
    proxy.hold(Hold::Nothing);
    let first_id = accepted_id(first).await;
    let replay = app.post_message(&body, Some("order-2")).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(accepted_id(replay).await, first_id);

    let mut queued: Vec<String> = Vec::new();
    for lease in app.queue.pull(10).await.expect("pull") {
        queued.push(lease.message.id.to_string());
    }
    queued.sort();
    let mut expected = vec![id, first_id];
    expected.sort();
    assert_eq!(queued, expected, "one message per key on the queue");
}

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

/// On SQS, which cannot take a message back, a cancelled message stays in the queue: the worker
/// that receives it drops it unsent.
#[tokio::test]
async fn a_message_cancelled_on_sqs_is_dropped_by_the_worker() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("cancel", 5, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    let to = unique_rcpt("cancel-sqs");
    let id = app.send_to(&to).await;
    assert_eq!(app.cancel(&id).await.status(), 200);
    assert_eq!(
        app.dispatch_all_pending().await,
        1,
        "received, then dropped"
    );
    assert!(app.relay.received_for(&to).is_empty(), "not sent");
    assert_eq!(app.get_message(&id).await["status"], "cancelled");
    assert!(app.queue.pull(10).await.expect("pull").is_empty(), "acked");
}

/// SQS cannot take a message back, so a worker claims what it receives before it waits for the
/// rate limit and sends: a cancel meanwhile is a 409 ("being delivered"), never a 200 for a
/// message that then goes out. A temporary failure ends the claim: the deferred message can be
/// cancelled while it waits for its retry, and is then dropped unsent.
#[tokio::test]
async fn a_message_a_worker_holds_from_sqs_cannot_be_cancelled_under_it() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("claim", 5, None).await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.send_rate_per_second = 2.0;
        raw.send_burst = 1;
    })
    .await;
    // One receive takes all three; at 2/s the last waits a second for its turn.
    let outcomes = cancel_while_dispatching(&app, "claim", 3, Duration::from_millis(300)).await;
    let mut in_flight = 0;
    for o in &outcomes {
        let (id, got, now) = (&o.id, o.sent, &o.now);
        match o.status {
            200 => assert!(
                got == 0 && now == "cancelled",
                "{id}: a 200, yet {got} sent, {now}"
            ),
            409 => assert!(
                got == 1 && now == "delivered",
                "{id}: a 409, yet {got} sent, {now}"
            ),
            other => panic!("{id}: {other} {}", o.body),
        }
        in_flight += usize::from(o.body.contains("being delivered"));
    }
    assert!(
        in_flight >= 1,
        "a message waiting for the rate limit is claimed: {outcomes:?}"
    );

    let to = unique_rcpt("fail-451-5");
    let id = app.send_to(&to).await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    assert_eq!(app.get_message(&id).await["status"], "deferred");
    assert_eq!(app.cancel(&id).await.status(), 200, "no longer claimed");
    // SQS hides it for the backoff, rounded to whole seconds.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        app.dispatch_all_pending().await,
        1,
        "received, then dropped"
    );
    assert_eq!(app.get_message(&id).await["status"], "cancelled");
}

/// A claim outlives one visibility timeout while its message still waits: at 1/s, the last of
/// six messages received together waits about 5 s for its turn, and the visibility timeout is
/// 3 s. The claim is renewed with the SQS lease, so a cancel 3.5 s in is still refused.
#[tokio::test]
async fn a_claim_lasts_as_long_as_the_wait_for_the_rate_limit() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("long-claim", 5, None).await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.visibility_timeout_secs = 3;
        raw.smtp_timeout_secs = 2;
        raw.send_rate_per_second = 1.0;
        raw.send_burst = 1;
    })
    .await;
    let outcomes =
        cancel_while_dispatching(&app, "long-claim", 6, Duration::from_millis(3_500)).await;
    for o in &outcomes {
        assert!(
            o.status == 409 && o.sent == 1 && o.now == "delivered",
            "{o:?}"
        );
    }
    assert!(
        outcomes.iter().any(|o| o.body.contains("being delivered")),
        "a message still waited for its turn 3.5 s in: {outcomes:?}"
    );
}

/// One message's fate in [`cancel_while_dispatching`]: the cancel's answer, then how many
/// copies the relay received and the status the message ended with.
#[derive(Debug)]
struct CancelOutcome {
    id: String,
    status: u16,
    body: String,
    sent: usize,
    now: Value,
}

/// Sends `n` messages, then dispatches them all and, `after` into that, cancels each in turn.
async fn cancel_while_dispatching(
    app: &TestApp,
    prefix: &str,
    n: usize,
    after: Duration,
) -> Vec<CancelOutcome> {
    let mut sent = Vec::new();
    for i in 0..n {
        let to = unique_rcpt(&format!("{prefix}-{i}"));
        sent.push((app.send_to(&to).await, to));
    }
    let cancels = async {
        tokio::time::sleep(after).await;
        let mut answers = Vec::new();
        for (id, _) in &sent {
            let r = app.cancel(id).await;
            let status = r.status().as_u16();
            answers.push((status, r.text().await.expect("text")));
        }
        answers
    };
    let (_, answers) = tokio::join!(app.dispatch_all_pending(), cancels);
    let mut outcomes = Vec::new();
    for ((id, to), (status, body)) in sent.into_iter().zip(answers) {
        outcomes.push(CancelOutcome {
            sent: app.relay.received_for(&to).len(),
            now: app.get_message(&id).await["status"].clone(),
            id,
            status,
            body,
        });
    }
    outcomes
}

/// The token comes from SSM; a rotation is picked up within the TTL without a restart; when
/// SSM fails, the cached token keeps working and /ready says so.
#[tokio::test]
async fn api_token_from_ssm_rotates_and_survives_an_outage() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("token", 5, None).await;
    moto.put_parameter("/mailroom/test/api-token", "first-token-value")
        .await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.api_token = None;
        raw.ssm_token_parameter = Some("/mailroom/test/api-token".into());
        raw.ssm_token_ttl_secs = 1;
    })
    .await;
    let status = |app: &TestApp, token: &'static str| {
        let req = app.client.get(app.url("/v1/messages")).bearer_auth(token);
        async move { req.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(status(&app, "first-token-value").await, 200);
    assert_eq!(status(&app, "second-token-value").await, 401);
    moto.put_parameter("/mailroom/test/api-token", "second-token-value")
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(&app, "second-token-value").await,
        200,
        "rotated within the TTL"
    );
    assert_eq!(status(&app, "first-token-value").await, 401);

    moto.ssm()
        .delete_parameter()
        .name("/mailroom/test/api-token")
        .send()
        .await
        .expect("deleted");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(&app, "second-token-value").await,
        200,
        "the cached token still works"
    );
    let ready: Value = app.get_public("/ready").await.json().await.expect("JSON");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["checks"]["token"]
            .as_str()
            .expect("text")
            .contains("cached"),
        "{ready}"
    );
}
