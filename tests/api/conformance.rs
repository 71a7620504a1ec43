//! Conformance suites: the same functions run against every queue backend and every archive
//! store (object_store's `integration.rs` pattern). The PostgreSQL, SQS and S3 runs live with
//! their backends' tests (`scale.rs`, `aws.rs`).

use std::sync::Arc;
use std::time::Duration;

use mailroom::archive::{Archive, Outcome};
use mailroom::message::{CompatEmail, Content, Message, Status};
use mailroom::queue::{Lease, Queue, QueueError};
use object_store::{ObjectStoreExt, path::Path};

/// A compat message whose subject carries `n`.
pub fn message(n: usize) -> Message {
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

/// Dead-lettering takes the message off the queue.
pub async fn dead_leaves_the_queue(queue: &dyn Queue) {
    push(queue, 1).await;
    let lease = pull_n(queue, 1, 1).await.pop().expect("one");
    queue.dead(lease, "550 no such user").await.expect("dead");
    assert_eq!(queue.depth().await.expect("depth").messages, 0);
    assert!(queue.pull(1).await.expect("pull").is_empty());
}

/// A message with a later `send_at` stays invisible until its time (and does not age the queue
/// meanwhile); one whose `send_at` has passed is due at once.
pub async fn scheduled_waits_for_its_time(queue: &dyn Queue) {
    let at = |offset_ms: i64| {
        let mut m = message(0);
        m.content = Content::Native(Box::new(
            serde_json::from_value(serde_json::json!({
                "from": "a@example.com", "to": "b@example.com", "subject": "scheduled",
                "text": "t", "send_at": (m.accepted_at + chrono::Duration::milliseconds(offset_ms)).to_rfc3339(),
            }))
            .expect("valid"),
        ));
        m
    };
    let (later, past) = (at(3_000), at(-60_000));
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
        depth.messages, 1,
        "the scheduled message waits in the queue"
    );
    assert!(
        (0.0..1.0).contains(&depth.oldest_age_secs),
        "a message waiting for its time does not age the queue: {depth:?}"
    );
    assert!(
        queue.pull(10).await.expect("pull").is_empty(),
        "not due yet"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let due = queue.pull(10).await.expect("pull");
    assert_eq!(due.len(), 1, "due now");
    assert_eq!(due[0].message.id, later.id);
    assert_eq!(due[0].attempt, 1, "waiting is not an attempt");
    queue
        .ack(due.into_iter().next().expect("one"))
        .await
        .expect("ack");
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
    // SQS and Kafka cannot hold a message for later: the API refuses a `send_at` still ahead
    // for them (`NativeEmail::parse`; tested on SQS in `aws.rs`).
    let queue = fresh().await;
    if queue.schedules() {
        scheduled_waits_for_its_time(queue.as_ref()).await;
    }
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
                Arc::new(mailroom::queue::sqlite::SqliteQueue::new(db, visibility))
                    as Arc<dyn Queue>
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
    archive_suite(&Archive::from_url(&url, &Default::default()).expect("archive")).await;
}

use mailroom::store::{
    Acceptance, Accepted, Cancel, IdempotencyRecord, ListFilter, Store, Transition,
};

fn native(n: usize) -> Message {
    Message::new(Content::Native(
        serde_json::from_value(serde_json::json!({
            "from": "a@example.com", "to": "b@example.com", "subject": format!("store {n}"), "text": "t",
        }))
        .expect("valid"),
    ))
}

/// Inserted messages read back whole, with an accepted event; transitions change the status,
/// attempts and last error and append events; a finished message never goes back.
pub async fn store_records_and_transitions(store: &dyn Store) {
    let m = native(1);
    let id = m.id;
    let accepted = store
        .insert(
            Acceptance {
                messages: vec![m.clone()],
                idempotency: None,
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(accepted, Accepted::Inserted);
    let r = store.get(id).await.expect("get").expect("found");
    assert_eq!(r.message, m);
    assert_eq!((r.status, r.attempts), (Status::Queued, 0));
    store
        .record(
            id,
            Transition::Deferred {
                attempts: 1,
                error: "451 busy".into(),
                retry_in: Duration::from_secs(1),
            },
        )
        .await
        .expect("record");
    store
        .record(
            id,
            Transition::Delivered {
                attempts: 2,
                detail: "250 ok".into(),
            },
        )
        .await
        .expect("record");
    // A stale worker's late failure must not undo a delivery.
    let applied = store
        .record(
            id,
            Transition::Dead {
                attempts: 1,
                error: "stale".into(),
            },
        )
        .await
        .expect("record");
    assert!(!applied, "a finished message never goes back");
    let r = store.get(id).await.expect("get").expect("found");
    assert_eq!((r.status, r.attempts), (Status::Delivered, 2));
    assert_eq!(r.last_error.as_deref(), Some("451 busy"));
    let kinds: Vec<String> = store
        .events(id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["accepted", "deferred", "delivered"]);
    let st = store
        .statuses(&[id, uuid::Uuid::new_v4()])
        .await
        .expect("statuses");
    assert_eq!(st.len(), 1);
    assert_eq!(st[&id], Status::Delivered);
    assert!(
        store
            .get(uuid::Uuid::new_v4())
            .await
            .expect("get")
            .is_none()
    );
}

/// Listing is newest first, filters by status and pages with `before`; counts add up.
pub async fn store_listing(store: &dyn Store) {
    let messages: Vec<Message> = (0..5).map(native).collect();
    store
        .insert(
            Acceptance {
                messages: messages.clone(),
                idempotency: None,
            },
            false,
        )
        .await
        .expect("insert");
    store
        .record(
            messages[1].id,
            Transition::Dead {
                attempts: 1,
                error: "550".into(),
            },
        )
        .await
        .expect("record");
    let page = store
        .list(ListFilter {
            status: None,
            before: None,
            limit: 3,
        })
        .await
        .expect("list");
    let ids: Vec<_> = page.iter().map(|r| r.message.id).collect();
    assert_eq!(ids, [messages[4].id, messages[3].id, messages[2].id]);
    let next = store
        .list(ListFilter {
            status: None,
            before: Some(messages[2].id),
            limit: 3,
        })
        .await
        .expect("list");
    assert_eq!(
        next.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        [messages[1].id, messages[0].id]
    );
    let dead = store
        .list(ListFilter {
            status: Some(Status::Dead),
            before: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("550"));
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts[&Status::Queued], counts[&Status::Dead]), (4, 1));
}

/// An idempotency key is claimed once: a second insert with it replays the first answer and
/// stores nothing; keys past their TTL are purged.
pub async fn store_idempotency(store: &dyn Store) {
    let record = |hash: &str| IdempotencyRecord {
        key: "k-1".into(),
        request_hash: hash.into(),
        status: 202,
        response: "{\"message_id\":\"first\"}".into(),
    };
    let first = native(1);
    let a = store
        .insert(
            Acceptance {
                messages: vec![first.clone()],
                idempotency: Some(record("h1")),
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(a, Accepted::Inserted);
    let second = native(2);
    let b = store
        .insert(
            Acceptance {
                messages: vec![second.clone()],
                idempotency: Some(record("h2")),
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(b, Accepted::Replay(record("h1")));
    assert!(
        store.get(second.id).await.expect("get").is_none(),
        "a replay stores nothing"
    );
    assert_eq!(
        store
            .idempotency("k-1", Duration::from_secs(60))
            .await
            .expect("lookup"),
        Some(record("h1"))
    );
    assert_eq!(
        store
            .idempotency("k-2", Duration::from_secs(60))
            .await
            .expect("lookup"),
        None
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store
            .purge_idempotency(Duration::from_millis(1))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .idempotency("k-1", Duration::from_secs(60))
            .await
            .expect("lookup"),
        None
    );
}

/// Runs every store function against one backend; `fresh` makes an empty store per function.
pub async fn store_suite<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    store_records_and_transitions(fresh().await.as_ref()).await;
    store_listing(fresh().await.as_ref()).await;
    store_idempotency(fresh().await.as_ref()).await;
    store_cancel(fresh().await.as_ref()).await;
}

/// A queued message is cancelled once; afterwards no worker's change takes it back to pending
/// (a deferral is refused), though a delivery already under way may still record that it was
/// sent. Delivered and unknown messages cannot be cancelled.
pub async fn store_cancel(store: &dyn Store) {
    let (m, sent) = (native(1), native(2));
    let acceptance = Acceptance {
        messages: vec![m.clone(), sent.clone()],
        idempotency: None,
    };
    store.insert(acceptance, true).await.expect("insert");
    assert_eq!(store.cancel(m.id).await.expect("cancel"), Cancel::Cancelled);
    assert_eq!(
        store.cancel(m.id).await.expect("cancel"),
        Cancel::Settled(Status::Cancelled)
    );
    let r = store.get(m.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Cancelled);
    let events = store.events(m.id).await.expect("events");
    assert_eq!(events.last().expect("an event").kind, "cancelled");
    let deferral = Transition::Deferred {
        attempts: 1,
        error: "451 later".into(),
        retry_in: Duration::from_secs(1),
    };
    assert!(!store.record(m.id, deferral).await.expect("record"));
    let delivered = || Transition::Delivered {
        attempts: 1,
        detail: "250 ok".into(),
    };
    assert!(store.record(m.id, delivered()).await.expect("record"));

    assert!(store.record(sent.id, delivered()).await.expect("record"));
    assert_eq!(
        store.cancel(sent.id).await.expect("cancel"),
        Cancel::Settled(Status::Delivered)
    );
    assert_eq!(
        store.cancel(uuid::Uuid::now_v7()).await.expect("cancel"),
        Cancel::NotFound
    );
}

/// The SQLite store passes the store suite.
#[tokio::test]
async fn sqlite_store_conformance() {
    let dirs = std::sync::Mutex::new(Vec::new());
    store_suite(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        dirs.lock().expect("lock").push(dir);
        async move {
            let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
            Arc::new(mailroom::store::sqlite::SqliteStore::new(db)) as Arc<dyn Store>
        }
    })
    .await;
}

/// Concurrent accepts share commits: 200 requests at once need far fewer than 200 transactions,
/// and every message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let store = Arc::new(mailroom::store::sqlite::SqliteStore::new(db.clone()));
    let before = db.commits();
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert(
                        Acceptance {
                            messages: vec![native(n)],
                            idempotency: None,
                        },
                        true,
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("joined").expect("insert"),
            Accepted::Inserted
        );
    }
    let commits = db.commits() - before;
    assert!(
        commits < 100,
        "{commits} commits for 200 concurrent inserts"
    );
    assert_eq!(store.counts().await.expect("counts")[&Status::Queued], 200);
}

/// A SQLite store on a fresh file, and a connection of its own to that file, to change the
/// schema under the store.
async fn sqlite_store_and_admin() -> (
    tempfile::TempDir,
    mailroom::store::sqlite::SqliteStore,
    sqlx::SqliteConnection,
) {
    use sqlx::Connection;

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let admin = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    (dir, mailroom::store::sqlite::SqliteStore::new(db), admin)
}

/// A write batch that fails is rolled back whole, whichever way it ran (plain acceptances run
/// as one statement list with their BEGIN and COMMIT; a keyed one in a transaction), and the
/// writer goes on: the next batch commits.
#[tokio::test]
async fn sqlite_failed_batch_leaves_nothing() {
    let (_dir, store, mut admin) = sqlite_store_and_admin().await;
    // The queue insert comes last in a batch: the messages are written before it.
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON queue BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&mut admin)
    .await
    .expect("trigger");
    let keyed = |hash: &str| IdempotencyRecord {
        key: "k-fail".into(),
        request_hash: hash.into(),
        status: 202,
        response: "{}".into(),
    };
    let attempts = [(native(1), None), (native(2), Some(keyed("first")))];
    for (message, idempotency) in &attempts {
        let acceptance = Acceptance {
            messages: vec![message.clone()],
            idempotency: idempotency.clone(),
        };
        assert!(store.insert(acceptance, true).await.is_err());
        assert!(store.get(message.id).await.expect("get").is_none());
    }
    let ttl = Duration::from_secs(3600);
    assert!(
        store
            .idempotency("k-fail", ttl)
            .await
            .expect("read")
            .is_none()
    );

    sqlx::query("DROP TRIGGER refuse")
        .execute(&mut admin)
        .await
        .expect("drop trigger");
    for (message, idempotency) in attempts {
        let acceptance = Acceptance {
            messages: vec![message.clone()],
            idempotency,
        };
        assert_eq!(
            store.insert(acceptance, true).await.expect("insert"),
            Accepted::Inserted
        );
        let record = store.get(message.id).await.expect("get").expect("stored");
        assert_eq!(record.status, Status::Queued);
        assert_eq!(store.events(message.id).await.expect("events").len(), 1);
    }
    assert!(
        store
            .idempotency("k-fail", ttl)
            .await
            .expect("read")
            .is_some()
    );
}

/// After a rollback, the previous image starts on a database that a later release migrated
/// further (sqlx would refuse a database with a migration it does not know), and works on it.
#[tokio::test]
async fn sqlite_opens_a_database_a_later_release_migrated() {
    let (dir, store, mut admin) = sqlite_store_and_admin().await;
    drop(store);
    // A later release's migration, as sqlx records it once applied.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a later release', true, x'00', 0)",
    )
    .execute(&mut admin)
    .await
    .expect("the later release's migration is recorded");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let db = mailroom::store::sqlite::Db::open(&url)
        .await
        .expect("the database opens despite a migration this build does not know");
    let store = mailroom::store::sqlite::SqliteStore::new(Arc::new(db));
    let message = native(1);
    let acceptance = Acceptance {
        messages: vec![message.clone()],
        idempotency: None,
    };
    store.insert(acceptance, true).await.expect("insert");
    assert!(store.get(message.id).await.expect("get").is_some());
}

/// A message's `accepted` event comes from its row; a database written by an earlier release,
/// which stored that event as a row of its own, still shows it once.
#[tokio::test]
async fn sqlite_accepted_event_shown_once() {
    let (_dir, store, mut admin) = sqlite_store_and_admin().await;
    let (new, old) = (native(1), native(2));
    for m in [&new, &old] {
        let acceptance = Acceptance {
            messages: vec![m.clone()],
            idempotency: None,
        };
        store.insert(acceptance, true).await.expect("insert");
    }
    sqlx::query("INSERT INTO events (message_id, at, kind) VALUES (?1, ?2, 'accepted')")
        .bind(old.id.to_string())
        .bind(old.accepted_at.timestamp_millis())
        .execute(&mut admin)
        .await
        .expect("an event row as earlier releases wrote it");
    for m in [&new, &old] {
        let events = store.events(m.id).await.expect("events");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["accepted"]);
        assert_eq!(
            events[0].at.timestamp_millis(),
            m.accepted_at.timestamp_millis()
        );
    }
}
