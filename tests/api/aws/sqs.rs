//! SQS as the queue (the queue suite, dead letters and poison messages) and at the API (its size
//! limit, a failed send, an Idempotency-Key while a send is under way).

use std::sync::Arc;
use std::time::Duration;

use mailroom::queue::Queue;
use mailroom::queue::sqs::SqsQueue;
use serde_json::{Value, json};

use super::moto::{Hold, Moto, SlowProxy};
use super::{on_aws, sqs_settings};
use crate::conformance::{message, queue_suite};
use crate::helpers::{accepted_id, native_body, spawn_app_with, unique_rcpt};

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

/// A batch SQS takes only part of is answered entry by entry: those it took are accepted (and
/// delivered once), each it did not take is an `unavailable` error of its own entry, for the
/// client to send again, never a 503 for all (whose resend would send the others twice). A
/// retry with the same Idempotency-Key gets that answer again.
#[tokio::test]
async fn a_batch_sqs_takes_only_part_of_is_answered_entry_by_entry() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("partly", 5, None).await;
    let proxy = SlowProxy::start(&moto.endpoint).await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, &moto, &url);
        raw.aws_endpoint_url = Some(proxy.endpoint.clone());
    })
    .await;
    // Eleven make at least two SendMessageBatch calls; the one with the last fails.
    let rcpts: Vec<String> = (0..11)
        .map(|i| unique_rcpt(&format!("partly-{i}")))
        .collect();
    let mut entries: Vec<Value> = rcpts.iter().map(|to| native_body(to)).collect();
    entries[10]["subject"] = json!("unqueueable");
    let body = json!({ "messages": entries });
    let post = || {
        app.client
            .post(app.url("/v1/messages/batch"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "partly-1")
            .json(&body)
            .send()
    };
    proxy.hold(Hold::DropIfHolds("unqueueable", Duration::ZERO));
    let r = post().await.expect("sent");
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("JSON");
    let results = v["results"].as_array().expect("results").clone();
    let (mut queued, mut again) = (Vec::new(), Vec::new());
    for (i, entry) in results.iter().enumerate() {
        match entry["message_id"].as_str() {
            Some(id) => queued.push((id.to_string(), rcpts[i].clone())),
            None => {
                assert_eq!(entry["error"]["code"], "unavailable", "{entry}");
                again.push(i);
            }
        }
    }
    assert!(again.contains(&10), "the failed call's messages: {v}");
    assert!(!queued.is_empty(), "the other call's messages: {v}");
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(queued.len()), &json!(again.len()))
    );
    let replay = post().await.expect("sent");
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.expect("JSON"), v);

    // A client that hangs up before the answer: the key is settled all the same, and its
    // retry is given the entry-by-entry answer, never a second copy of what SQS took.
    proxy.hold(Hold::DropIfHolds("unqueueable", Duration::from_millis(700)));
    let hung_up = app
        .client
        .post(app.url("/v1/messages/batch"))
        .bearer_auth(&app.token)
        .header("idempotency-key", "partly-2")
        .timeout(Duration::from_millis(300))
        .json(&body)
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up first");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let replay = loop {
        let r = app
            .client
            .post(app.url("/v1/messages/batch"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "partly-2")
            .json(&body)
            .send()
            .await
            .expect("sent");
        if r.status() != 409 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key stayed pending"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let second: Value = replay.json().await.expect("JSON");
    assert_eq!(
        second["results"][10]["error"]["code"], "unavailable",
        "{second}"
    );
    let taken: Vec<String> = second["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|e| e["message_id"].as_str().map(str::to_string))
        .collect();
    assert!(!taken.is_empty(), "{second}");

    proxy.hold(Hold::Nothing);
    // What the client sends again: the entries of the second batch SQS did not take.
    let mut resent = Vec::new();
    for (i, entry) in second["results"]
        .as_array()
        .expect("results")
        .iter()
        .enumerate()
    {
        if entry.get("message_id").is_none() {
            let mut again = body["messages"][i].clone();
            let to = unique_rcpt(&format!("partly-again-{i}"));
            again["to"] = json!([to]);
            resent.push((accepted_id(app.post_message(&again, None).await).await, to));
        }
    }
    app.dispatch_all_pending().await;
    // Each recipient gets one copy per batch that had its message taken, none of the rest.
    for (i, to) in rcpts.iter().enumerate() {
        let taken_in = [&v, &second]
            .iter()
            .filter(|b| b["results"][i].get("message_id").is_some())
            .count();
        assert_eq!(app.relay.received_for(to).len(), taken_in, "entry {i}");
    }
    for (id, to) in &resent {
        assert_eq!(app.relay.received_for(to).len(), 1, "{id}");
    }
    for id in queued.iter().map(|(id, _)| id).chain(&taken) {
        assert_eq!(app.get_message(id).await["status"], "delivered", "{id}");
    }
}

/// On SQS a message sent whose archive cannot be written goes back without spending a receive:
/// with `maxReceiveCount` 2, five failed writes leave it on the queue, not in the dead-letter
/// queue (where its archive would never be written); once the archive works it is archived,
/// and it was sent once.
#[tokio::test]
async fn an_archive_that_fails_on_sqs_spends_no_receives() {
    let moto = Moto::start().await;
    let (url, dlq) = moto.queue_with_dlq("archive-owed", 2, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    let archive = app.archive_dir();
    std::fs::create_dir_all(&archive).expect("archive dir");
    // The archive's top directory is a file: every write fails.
    std::fs::write(archive.join("emails"), "not a directory").expect("written");
    let to = unique_rcpt("archive-owed");
    let id = app.send_to(&to).await;
    let mut tries = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tries < 5 && std::time::Instant::now() < deadline {
        tries += app.worker.run_once().await.expect("the queue answers");
    }
    assert!(tries >= 5, "{tries} tries to write the archive");
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered", "{m}");
    assert!(moto.drain(&dlq).await.is_empty(), "nothing dead-lettered");

    std::fs::remove_file(archive.join("emails")).expect("removed");
    let path = archive.join(m["archive_key"].as_str().expect("archive key"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !path.exists() && std::time::Instant::now() < deadline {
        app.worker.run_once().await.expect("the queue answers");
    }
    assert!(path.exists(), "archived once the archive works");
    assert_eq!(app.relay.received_for(&to).len(), 1, "sent once");
    assert!(moto.drain(&dlq).await.is_empty(), "nothing dead-lettered");
}
