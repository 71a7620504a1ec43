//! SQS delivers at least once: two copies of one message can be in flight at the same time (a
//! duplicate receive, or a copy pushed again). The store's claim is one pull's alone, so the
//! second copy waits while the first is sent, then finds the message delivered and goes.

use std::time::Duration;

use mailroom::config::RawConfig;
use mailroom::store::Transition;
use uuid::Uuid;

use super::moto::Moto;
use super::on_aws;
use crate::helpers::{TestApp, event_kinds, spawn_app_with, unique_rcpt};

/// One message on SQS queue `name`, in an app with a 2 s visibility timeout (how long a copy set
/// aside waits) unless `adjust` says otherwise: the app, the recipient and the message's id.
async fn one_message(
    moto: &Moto,
    name: &str,
    adjust: impl FnOnce(&mut RawConfig),
) -> (TestApp, String, Uuid) {
    let (url, _) = moto.queue_with_dlq(name, 5, None).await;
    let app = spawn_app_with(|raw| {
        on_aws(raw, moto, &url);
        raw.visibility_timeout_secs = 2;
        raw.smtp_timeout_secs = 1;
        adjust(raw);
    })
    .await;
    let to = unique_rcpt(name);
    let id = app.send_to(&to).await;
    (app, to, Uuid::parse_str(&id).expect("a uuid"))
}

/// [`one_message`] at 2/s, twice in the queue.
async fn two_copies(moto: &Moto, name: &str, concurrency: usize) -> (TestApp, String, Uuid) {
    let (app, to, id) = one_message(moto, name, |raw| {
        raw.send_rate_per_second = 2.0;
        raw.send_burst = 1;
        raw.worker_concurrency = concurrency;
    })
    .await;
    let lease = app
        .queue
        .pull(1)
        .await
        .expect("pull")
        .pop()
        .expect("queued");
    let copy = app.queue.push(std::slice::from_ref(&lease.message)).await;
    copy.into_iter().for_each(|r| r.expect("pushed again"));
    app.queue.release(lease).await.expect("released");
    (app, to, id)
}

/// Books the limiter's next slot, so that the next send waits one interval for its turn.
async fn take_the_next_slot(app: &TestApp) {
    let limiter = app.worker.limiter.clone().expect("a rate limit");
    limiter.reserve(1).await.expect("a slot");
}

/// Waits past the second copy's wait, dispatches what comes back, and checks that the message
/// went out once, that no copy is left in the queue, and that the copy left the record of the
/// send as it was: one `delivered` event, and the relay's reply in the archive.
async fn second_copy_is_dropped(app: &TestApp, to: &str, id: Uuid) {
    let record = app.get_message(&id.to_string()).await;
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let back = app.dispatch_all_pending().await;
    assert_eq!(back, 1, "the second copy is back");
    assert_eq!(app.relay.received_for(to).len(), 1, "sent once");
    assert!(
        app.queue.pull(10).await.expect("pull").is_empty(),
        "the second copy was acknowledged unsent"
    );
    let after = app.get_message(&id.to_string()).await;
    assert_eq!(event_kinds(&after), ["accepted", "delivered"], "{after}");
    assert_eq!(after["updated_at"], record["updated_at"], "{after}");
    let key = after["archive_key"].as_str().expect("archive_key");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.archive_dir().join(key)).expect("archived"))
            .expect("JSON");
    let detail = doc["outcome"]["detail"].as_str().expect("detail");
    assert!(detail.starts_with("250"), "the relay's reply: {detail}");
}

/// Two pulls each take a copy: the first holds its claim while it waits for the rate limit, and
/// the second, finding the message claimed by another pull, sets its copy aside.
#[tokio::test]
async fn a_second_copy_pulled_while_the_first_is_sent_waits_for_it() {
    let moto = Moto::start().await;
    let (app, to, id) = two_copies(&moto, "copies-apart", 1).await;
    // The first copy waits half a second for its turn, claimed.
    take_the_next_slot(&app).await;
    let (first, second) = tokio::join!(app.worker.run_once(), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        app.worker.run_once().await
    });
    let pulled = (first.expect("pull"), second.expect("pull"));
    assert_eq!(pulled, (1, 1), "a copy each");
    assert_eq!(app.relay.received_for(&to).len(), 1, "the first copy only");
    second_copy_is_dropped(&app, &to, id).await;
}

/// One pull takes both copies: the first is claimed and sent, the second set aside.
#[tokio::test]
async fn two_copies_pulled_together_are_sent_once() {
    let moto = Moto::start().await;
    let (app, to, id) = two_copies(&moto, "copies-together", 10).await;
    assert_eq!(app.worker.run_once().await.expect("pull"), 2, "one batch");
    assert_eq!(app.relay.received_for(&to).len(), 1, "one of the two");
    second_copy_is_dropped(&app, &to, id).await;
}

/// A worker stopped while a message waits for the rate limit gives it back and ends its claim,
/// so that the next worker sends it at once, not a visibility timeout later as a second copy.
#[tokio::test]
async fn a_message_given_back_at_shutdown_is_not_held_by_its_claim() {
    let moto = Moto::start().await;
    let (app, to, id) = one_message(&moto, "copies-shutdown", |raw| {
        raw.visibility_timeout_secs = 30;
        raw.send_rate_per_second = 1.0;
        raw.send_burst = 1;
    })
    .await;
    take_the_next_slot(&app).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    running.await.expect("the worker stops");
    assert!(app.relay.received_for(&to).is_empty(), "given back unsent");

    // One round of pulls: a copy set aside would wait the 30 s out, and the message stay queued.
    app.dispatch_all_pending().await;
    let now = app.get_message(&id.to_string()).await;
    assert_eq!(now["status"], "delivered");
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// A copy set aside for a claim whose worker died is not lost: once the claim runs out, the copy
/// that comes back is sent.
#[tokio::test]
async fn a_copy_set_aside_is_sent_once_the_other_claim_runs_out() {
    let moto = Moto::start().await;
    let (app, to, id) = one_message(&moto, "copies-orphan", |_| {}).await;
    // Another worker claimed the message for 1.5 s, then died.
    let (dead_worker, ttl) = (Uuid::new_v4(), Duration::from_millis(1_500));
    let claimed = app.worker.store.claim(&[id], dead_worker, ttl).await;
    assert!(claimed.expect("claim").elsewhere.is_empty());

    assert_eq!(app.dispatch_all_pending().await, 1, "received, set aside");
    assert!(app.relay.received_for(&to).is_empty(), "held by the claim");
    assert_eq!(app.get_message(&id.to_string()).await["status"], "queued");
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_eq!(app.dispatch_all_pending().await, 1, "back after its wait");
    assert_eq!(
        app.get_message(&id.to_string()).await["status"],
        "delivered"
    );
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// A worker whose claim was ended under it, by the outcome another copy's holder recorded,
/// finds the message settled when it renews the claim, and does not send it.
#[tokio::test]
async fn a_message_settled_under_a_waiting_copy_is_not_sent_by_it() {
    let moto = Moto::start().await;
    let (app, to, id) = one_message(&moto, "copies-settled", |raw| {
        raw.visibility_timeout_secs = 3;
        raw.send_rate_per_second = 0.5;
        raw.send_burst = 1;
    })
    .await;
    // The message waits 2 s for its turn; its claim is renewed after 1 s.
    take_the_next_slot(&app).await;
    let settled = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let delivered = Transition::Delivered {
            attempts: 1,
            detail: "250 sent by the holder of another copy".into(),
        };
        let store = &app.worker.store;
        assert!(store.record(id, delivered).await.expect("record"));
    };
    let (pulled, ()) = tokio::join!(app.worker.run_once(), settled);
    assert_eq!(pulled.expect("pull"), 1);
    assert!(app.relay.received_for(&to).is_empty(), "not sent again");
    // The copy given back is acknowledged unsent.
    app.dispatch_all_pending().await;
    let sent = app.relay.received_for(&to);
    assert!(sent.is_empty(), "never sent by mailroom");
    let left = app.queue.pull(10).await.expect("pull");
    assert!(left.is_empty(), "acknowledged");
}

/// A worker stopped while the store is too slow to look up what it has just pulled (its claim
/// waits on a locked database, up to the 10 s busy timeout) is done within its grace period,
/// and sends nothing. (Before, the look-up was waited out first, and the grace started after.)
#[tokio::test]
async fn shutdown_is_not_held_up_by_a_slow_look_up() {
    let moto = Moto::start().await;
    let (app, to, _) = one_message(&moto, "copies-slow-store", |raw| {
        raw.shutdown_grace_secs = 2;
    })
    .await;
    let lock = app.lock_store().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(app.worker.clone().run(stop.clone()));
    // Received from SQS at once; its claim then waits for the store.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.cancel();
    let started = std::time::Instant::now();
    running.await.expect("the worker stops");
    let took = started.elapsed();
    app.unlock_store(lock).await;
    assert!(took <= Duration::from_millis(2_300), "{took:?}");
    assert!(app.relay.received_for(&to).is_empty(), "nothing sent");
}
