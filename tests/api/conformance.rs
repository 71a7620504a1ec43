//! Conformance suites: the same functions run against every queue backend and every archive
//! store (object_store's `integration.rs` pattern). The SQS, PostgreSQL and Kafka queues and the
//! S3 archive join these lists when their features land.

use std::sync::Arc;
use std::time::Duration;

use mailroom::archive::{Archive, Outcome};
use mailroom::message::{CompatEmail, Content, Message, Status};
use mailroom::queue::{Queue, QueueError};
use object_store::{ObjectStoreExt, path::Path};

fn message(n: usize) -> Message {
    Message::new(Content::Compat(CompatEmail {
        email_subject: format!("conformance {n}"),
        email_sender: "Conformance".into(),
        email_timestream: "1700000000".into(),
        email_content: "body".into(),
    }))
}

/// Pushes `n` messages, returning them.
async fn push(queue: &dyn Queue, n: usize) -> Vec<Message> {
    let messages: Vec<Message> = (0..n).map(message).collect();
    for r in queue.push(&messages).await {
        r.expect("push succeeds");
    }
    messages
}

/// Every pushed message is pulled once, with its content, and ack removes it.
pub async fn push_pull_ack(queue: &dyn Queue) {
    let sent = push(queue, 5).await;
    let mut leases = queue.pull(3).await.expect("pull");
    assert_eq!(leases.len(), 3, "pull honours max");
    leases.extend(queue.pull(10).await.expect("pull"));
    assert_eq!(leases.len(), 5);
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
    let mut leases = queue.pull(2).await.expect("pull");
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
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = queue.pull(10).await.expect("pull");
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].message.id, later[0].attempt),
        (a_id, 2),
        "retry counts the attempt"
    );
    for l in now.into_iter().chain(later) {
        queue.ack(l).await.expect("ack");
    }
}

/// An unsettled lease expires and the message is leased again; the stale holder cannot settle.
pub async fn expired_lease_is_redelivered(queue: &dyn Queue, visibility: Duration) {
    push(queue, 1).await;
    let stale = queue.pull(1).await.expect("pull").pop().expect("one");
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

/// Dead-lettering takes the message off the queue.
pub async fn dead_leaves_the_queue(queue: &dyn Queue) {
    push(queue, 1).await;
    let lease = queue.pull(1).await.expect("pull").pop().expect("one");
    queue.dead(lease, "550 no such user").await.expect("dead");
    assert_eq!(queue.depth().await.expect("depth").messages, 0);
    assert!(queue.pull(1).await.expect("pull").is_empty());
}

/// Runs every queue function against one backend. `fresh` makes an empty queue per function.
pub async fn queue_suite<F, Fut>(fresh: F, visibility: Duration)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Queue>>,
{
    push_pull_ack(fresh().await.as_ref()).await;
    retry_and_release(fresh().await.as_ref()).await;
    expired_lease_is_redelivered(fresh().await.as_ref(), visibility).await;
    dead_leaves_the_queue(fresh().await.as_ref()).await;
}

/// The archive writes JSON at the message's key, and a second write replaces the first.
pub async fn archive_suite(archive: &Archive) {
    let m = message(1);
    let outcome = |status| Outcome {
        status,
        at: chrono::Utc::now(),
        attempts: 1,
        detail: "x".into(),
    };
    let key = archive.put(&m, &outcome(Status::Dead)).await.expect("put");
    assert_eq!(key, m.archive_key());
    archive
        .put(&m, &outcome(Status::Delivered))
        .await
        .expect("second put");
    let store = archive.object_store();
    let listed: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("emails/2023/11/14"))))
            .await;
    let mine: Vec<_> = listed
        .into_iter()
        .map(|r| r.expect("list"))
        .filter(|o| o.location.as_ref().contains(&m.id.to_string()))
        .collect();
    assert_eq!(mine.len(), 1, "one object per message");
    let bytes = store
        .get(&Path::from(key.as_str()))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        doc["outcome"]["status"], "delivered",
        "the second write won"
    );
    assert_eq!(doc["id"], m.id.to_string());
    assert_eq!(doc["email_subject"], "conformance 1");
}

/// The database queue (SQLite) passes the queue suite.
#[tokio::test]
async fn database_queue_conformance() {
    let dirs = std::sync::Mutex::new(Vec::new());
    let visibility = Duration::from_secs(1);
    queue_suite(
        || {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("q.db").display());
            dirs.lock().expect("lock").push(dir);
            async move {
                let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
                Arc::new(mailroom::queue::database::DatabaseQueue::new(
                    db, visibility,
                )) as Arc<dyn Queue>
            }
        },
        visibility,
    )
    .await;
}

/// The local-directory archive passes the archive suite.
#[tokio::test]
async fn local_archive_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::from_directory_path(dir.path()).expect("absolute");
    archive_suite(&Archive::from_url(&url).expect("archive")).await;
}
