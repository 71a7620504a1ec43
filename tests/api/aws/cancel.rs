//! Cancelling on SQS, which cannot take a message back: the worker drops a cancelled message,
//! and claims in the store what it holds, so a cancel never answers 200 for a message that goes.

use std::time::Duration;

use serde_json::Value;

use super::moto::Moto;
use super::on_aws;
use crate::helpers::{TestApp, spawn_app_with, unique_rcpt};

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

/// A worker that cannot reach the store does not send what it receives: it cannot tell a
/// cancelled message from a queued one, nor record what it sent. It gives the messages back
/// uncounted, and once the store is back the cancelled one is dropped and the other sent once.
#[tokio::test]
async fn a_worker_without_its_store_sends_nothing() {
    let moto = Moto::start().await;
    let (url, _) = moto.queue_with_dlq("no-store", 5, None).await;
    let app = spawn_app_with(|raw| on_aws(raw, &moto, &url)).await;
    let (kept, withdrawn) = (unique_rcpt("no-store"), unique_rcpt("no-store-cancelled"));
    let kept_id = app.send_to(&kept).await;
    let withdrawn_id = app.send_to(&withdrawn).await;
    assert_eq!(app.cancel(&withdrawn_id).await.status(), 200);

    let blocker = app.lock_store().await;
    assert_eq!(
        app.worker.run_once().await.expect("SQS answers"),
        0,
        "received, then given back"
    );
    assert!(app.relay.received_for(&kept).is_empty());
    assert!(app.relay.received_for(&withdrawn).is_empty(), "cancelled");
    app.unlock_store(blocker).await;

    app.dispatch_until(&kept_id, "delivered").await;
    assert_eq!(app.relay.received_for(&kept).len(), 1);
    assert_eq!(
        app.get_message(&kept_id).await["attempts"],
        1,
        "giving back is no attempt"
    );
    assert!(app.relay.received_for(&withdrawn).is_empty(), "never sent");
    assert_eq!(app.get_message(&withdrawn_id).await["status"], "cancelled");
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
    let sent = app.send_to_each(prefix, n).await;
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
