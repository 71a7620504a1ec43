//! The queue suite: push, pull, ack, retry, release, expiry, dead letters and scheduling.

use std::sync::Arc;
use std::time::Duration;

use mailroom::message::{CompatEmail, Content, Message};
use mailroom::queue::{Lease, Queue, QueueError};

/// A compat message whose subject carries `n`.
pub fn message(n: usize) -> Message {
    Message::new(Content::Compat(CompatEmail {
        email_subject: format!("conformance {n}"),
        email_sender: "Conformance".into(),
        email_timestream: "1700000000".into(),
        email_content: "body".into(),
    }))
}

/// A native message whose `send_at` is `offset_ms` from its acceptance.
pub fn scheduled(offset_ms: i64) -> Message {
    let mut m = message(0);
    m.content = Content::Native(Box::new(
        serde_json::from_value(serde_json::json!({
            "from": "a@example.com", "to": "b@example.com", "subject": "scheduled",
            "text": "t", "send_at": (m.accepted_at + chrono::Duration::milliseconds(offset_ms)).to_rfc3339(),
        }))
        .expect("valid"),
    ));
    m
}

/// Pushes `n` messages, returning them.
async fn push(queue: &dyn Queue, n: usize) -> Vec<Message> {
    let messages: Vec<Message> = (0..n).map(message).collect();
    for r in queue.push(&messages).await {
        r.expect("push succeeds");
    }
    messages
}

/// Pulls until `n` leases are in hand, no pull returning more than `max`. A queue whose consumer
/// fetches in the background (Kafka's) may hand out a batch over several pulls.
async fn pull_n(queue: &dyn Queue, n: usize, max: usize) -> Vec<Lease> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut leases = Vec::new();
    while leases.len() < n && std::time::Instant::now() < deadline {
        let want = max.min(n - leases.len());
        let got = queue.pull(want).await.expect("pull");
        assert!(got.len() <= want, "pull honours max");
        leases.extend(got);
    }
    assert_eq!(leases.len(), n, "every pushed message is pulled");
    leases
}

/// Every pushed message is pulled once, with its content, and ack removes it.
pub async fn push_pull_ack(queue: &dyn Queue) {
    let sent = push(queue, 5).await;
    let mut leases = pull_n(queue, 3, 3).await;
    leases.extend(pull_n(queue, 2, 10).await);
    assert!(
        queue.pull(10).await.expect("pull").is_empty(),
        "leased messages are invisible"
    );
    let mut got: Vec<_> = leases.iter().map(|l| l.message.clone()).collect();
    got.sort_by_key(|m| m.id);
    assert_eq!(got, sent);
    assert!(leases.iter().all(|l| l.attempt == 1));
    assert_eq!(queue.depth().await.expect("depth").messages, 5);
    for l in leases {
        queue.ack(l).await.expect("ack");
    }
    assert_eq!(queue.depth().await.expect("depth").messages, 0);
}

/// Retry hides a message until its delay passes and counts the attempt; release does not.
pub async fn retry_and_release(queue: &dyn Queue) {
    push(queue, 2).await;
    let mut leases = pull_n(queue, 2, 2).await;
    let b = leases.pop().expect("two");
    let a = leases.pop().expect("two");
    let (a_id, b_id) = (a.message.id, b.message.id);
    queue
        .retry(a, Duration::from_millis(300))
        .await
        .expect("retry");
    queue.release(b).await.expect("release");
    let now = queue.pull(10).await.expect("pull");
    assert_eq!(now.len(), 1, "only the released one is due");
    assert_eq!(
        (now[0].message.id, now[0].attempt),
        (b_id, 1),
        "release gives the attempt back"
    );
    // Due after its delay (SQS counts whole seconds, so allow for rounding up; Kafka fetches it
    // back from the retry topic).
    let mut later = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while later.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        later = queue.pull(10).await.expect("pull");
    }
    assert_eq!(later.len(), 1, "the retried message comes back when due");
    assert_eq!(
        (later[0].message.id, later[0].attempt),
        (a_id, 2),
        "retry counts the attempt"
    );
    for l in now.into_iter().chain(later) {
        queue.ack(l).await.expect("ack");
    }
}

/// A postponed message (a second copy, set aside while its first is sent) stays hidden for its
/// delay, then comes back with its attempt not counted.
pub async fn postponed_comes_back_uncounted(queue: &dyn Queue) {
    push(queue, 1).await;
    let lease = pull_n(queue, 1, 1).await.pop().expect("one");
    let id = lease.message.id;
    let delay = Duration::from_secs(1);
    let postponed = std::time::Instant::now();
    queue.postpone(lease, delay).await.expect("postpone");
    // A pull may wait for it (Kafka's does, up to a few seconds): what matters is when it is
    // handed out.
    let mut back = Vec::new();
    let deadline = postponed + Duration::from_secs(10);
    while back.is_empty() && std::time::Instant::now() < deadline {
        back = queue.pull(10).await.expect("pull");
        if back.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(postponed.elapsed() >= delay, "hidden for its delay");
    assert_eq!(back.len(), 1, "the postponed message comes back");
    assert_eq!(
        (back[0].message.id, back[0].attempt),
        (id, 1),
        "postponing is no attempt"
    );
    for l in back {
        queue.ack(l).await.expect("ack");
    }
}

/// An unsettled lease expires and the message is leased again; the stale holder cannot settle.
pub async fn expired_lease_is_redelivered(queue: &dyn Queue, visibility: Duration) {
    push(queue, 1).await;
    let stale = pull_n(queue, 1, 1).await.pop().expect("one");
    tokio::time::sleep(visibility + Duration::from_millis(200)).await;
    let fresh = queue
        .pull(1)
        .await
        .expect("pull")
        .pop()
        .expect("visible again");
    assert_eq!(fresh.message.id, stale.message.id);
    assert_eq!(fresh.attempt, 2);
    assert!(matches!(
        queue.ack(stale).await,
        Err(QueueError::LeaseLost(_))
    ));
    queue.ack(fresh).await.expect("the current holder settles");
}

/// A lease its holder keeps alive (the worker's heartbeat while a message waits for its turn)
/// outlasts the visibility timeout: no one else leases the message, and the holder settles it.
pub async fn extended_lease_is_kept(queue: &dyn Queue, visibility: Duration) {
    push(queue, 1).await;
    let lease = pull_n(queue, 1, 1).await.pop().expect("one");
    let beat = queue
        .heartbeat()
        .expect("every queue's leases are kept alive");
    let until = tokio::time::Instant::now() + visibility + visibility / 2;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(beat).await;
        queue
            .extend(&lease)
            .await
            .expect("the holder extends its lease");
    }
    assert!(queue.pull(1).await.expect("pull").is_empty(), "still held");
    queue.ack(lease).await.expect("the holder settles");
}

/// Dead-lettering takes the message off the queue.
pub async fn dead_leaves_the_queue(queue: &dyn Queue) {
    push(queue, 1).await;
    let lease = pull_n(queue, 1, 1).await.pop().expect("one");
    queue.dead(lease, "550 no such user").await.expect("dead");
    assert_eq!(queue.depth().await.expect("depth").messages, 0);
    assert!(queue.pull(1).await.expect("pull").is_empty());
}

/// A message pushed again while a worker holds it (a redrive landing between the worker's dead
/// record and its `dead` call) is not lost when that worker then dead-letters its old lease: it
/// is pulled again, its attempts counted afresh.
pub async fn pushed_again_outlives_its_old_lease(queue: &dyn Queue) {
    let sent = push(queue, 1).await;
    let old = pull_n(queue, 1, 1).await.pop().expect("one");
    for r in queue.push(&sent).await {
        r.expect("pushed again");
    }
    // A database queue's row started afresh, so the old lease no longer settles it; SQS and
    // Kafka dead-letter the first copy and keep the second.
    let settled = queue.dead(old, "550 no such user").await;
    if is_database_queue(queue) {
        assert!(
            matches!(settled, Err(QueueError::LeaseLost(_))),
            "{}: {settled:?}",
            queue.name()
        );
    } else {
        assert!(matches!(settled, Ok(())), "{}: {settled:?}", queue.name());
    }
    let again = pull_n(queue, 1, 1).await.pop().expect("one");
    assert_eq!(again.message.id, sent[0].id);
    assert_eq!(again.attempt, 1, "attempts start afresh");
    queue.ack(again).await.expect("ack");
}

/// A message with a later `send_at` stays invisible until its time (and does not age the queue
/// meanwhile); one whose `send_at` has passed is due at once.
pub async fn scheduled_waits_for_its_time(queue: &dyn Queue) {
    let (later, past) = (scheduled(3_000), scheduled(-60_000));
    for r in queue.push(&[later.clone(), past.clone()]).await {
        r.expect("push succeeds");
    }
    let first = queue.pull(10).await.expect("pull");
    assert_eq!(first.len(), 1, "only the message whose time has come");
    assert_eq!(first[0].message.id, past.id);
    queue
        .ack(first.into_iter().next().expect("one"))
        .await
        .expect("ack");
    // Half way to its time: a queue that aged it from its acceptance would say 1.5 s.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let depth = queue.depth().await.expect("depth");
    assert_eq!(
        (depth.messages, depth.scheduled),
        (0, 1),
        "a message waiting for its time is counted apart, not as a backlog: {depth:?}"
    );
    assert_eq!(
        depth.oldest_age_secs, 0.0,
        "a message waiting for its time does not age the queue: {depth:?}"
    );
    assert!(
        queue.pull(10).await.expect("pull").is_empty(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let depth = queue.depth().await.expect("depth");
    assert_eq!(
        (depth.messages, depth.scheduled),
        (1, 0),
        "its time has come: {depth:?}"
    );
    let due = queue.pull(10).await.expect("pull");
    assert_eq!(due.len(), 1, "due now");
    assert_eq!(due[0].message.id, later.id);
    assert_eq!(due[0].attempt, 1, "waiting is not an attempt");
    queue
        .ack(due.into_iter().next().expect("one"))
        .await
        .expect("ack");
}

/// A row this release cannot read (a later release's format seen mid-deploy, or damage) is not
/// leased out, and waiting for a worker that can read it does not use up its attempts: once
/// readable, it is delivered as attempt 1. `swap` writes a message's stored payload straight into
/// the database and returns the one it replaced.
pub async fn unreadable_is_set_aside_uncounted<F, Fut>(
    queue: &dyn Queue,
    visibility: Duration,
    swap: F,
) where
    F: Fn(uuid::Uuid, String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let m = push(queue, 1).await.remove(0);
    let original = swap(m.id, r#"{"format": "from a later release"}"#.into()).await;
    assert!(queue.pull(10).await.expect("pull").is_empty(), "unreadable");
    assert!(queue.pull(10).await.expect("pull").is_empty(), "set aside");
    // Due again after the visibility timeout, and set aside again.
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    assert!(
        queue.pull(10).await.expect("pull").is_empty(),
        "still unreadable"
    );
    let depth = queue.depth().await.expect("depth");
    assert_eq!(depth.messages, 1, "still queued: {depth:?}");
    swap(m.id, original).await;
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    let leases = queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1, "readable again");
    assert_eq!(leases[0].message.id, m.id);
    assert_eq!(leases[0].attempt, 1, "being set aside is no attempt");
    queue
        .ack(leases.into_iter().next().expect("one"))
        .await
        .expect("ack");
}

/// Runs every queue function against one backend. `fresh` makes an empty queue per function.
/// SQLite's and PostgreSQL's queues (rows in the store's database), as against SQS and Kafka.
fn is_database_queue(queue: &dyn Queue) -> bool {
    matches!(queue.name(), "database" | "postgres")
}

pub async fn queue_suite<F, Fut>(fresh: F, visibility: Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    push_pull_ack(fresh().await.as_ref()).await;
    retry_and_release(fresh().await.as_ref()).await;
    postponed_comes_back_uncounted(fresh().await.as_ref()).await;
    expired_lease_is_redelivered(fresh().await.as_ref(), visibility).await;
    extended_lease_is_kept(fresh().await.as_ref(), visibility).await;
    dead_leaves_the_queue(fresh().await.as_ref()).await;
    pushed_again_outlives_its_old_lease(fresh().await.as_ref()).await;
    // SQS and Kafka cannot hold a message for later: the store's database queue holds it for
    // them (`mailroom::scheduler`; tested on SQS in `aws.rs`, on Kafka in `kafka.rs`).
    let queue = fresh().await;
    assert_eq!(
        queue.schedules(),
        is_database_queue(queue.as_ref()),
        "{} schedules",
        queue.name()
    );
    if queue.schedules() {
        scheduled_waits_for_its_time(queue.as_ref()).await;
    }
}
