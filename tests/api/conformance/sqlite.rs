//! The SQLite runs: the queue and store suites, and what only the SQLite store needs (group
//! commit, a failed batch, migrations of a later release, the accepted event).

use std::sync::Arc;
use std::time::Duration;

use mailroom::message::Status;
use mailroom::queue::Queue;
use mailroom::store::{Acceptance, Accepted, IdempotencyRecord, ListFilter, Store};

use super::store::native;
use super::{queue_suite, store_suite};

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

/// The database queue (SQLite) sets aside a row it cannot read without counting an attempt.
#[tokio::test]
async fn database_queue_sets_unreadable_rows_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let visibility = Duration::from_secs(1);
    let queue = mailroom::queue::sqlite::SqliteQueue::new(db, visibility);
    let raw = sqlx::SqlitePool::connect(&url)
        .await
        .expect("a second connection");
    super::queue::unreadable_is_set_aside_uncounted(&queue, visibility, |id, payload| {
        let raw = raw.clone();
        async move {
            let old: String = sqlx::query_scalar("SELECT payload FROM messages WHERE id = ?")
                .bind(id.to_string())
                .fetch_one(&raw)
                .await
                .expect("stored");
            sqlx::query("UPDATE messages SET payload = ? WHERE id = ?")
                .bind(payload)
                .bind(id.to_string())
                .execute(&raw)
                .await
                .expect("updated");
            old
        }
    })
    .await;
}

/// A redrive on SQLite queues the message in the same transaction as its status.
#[tokio::test]
async fn sqlite_redrive_requeues_in_one_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let store = mailroom::store::sqlite::SqliteStore::new(db.clone());
    let queue = mailroom::queue::sqlite::SqliteQueue::new(db, Duration::from_secs(30));
    super::store::store_redrive_requeues(&store, &queue).await;
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
    let queued = store
        .list(ListFilter {
            status: Some(Status::Queued),
            before: None,
            limit: 500,
        })
        .await
        .expect("list");
    assert_eq!(queued.len(), 200);
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
        pending_until: None,
        created_at: mailroom::store::now_ms(),
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

/// A claim renewal and the delivery's outcome sent to the single writer one right after the
/// other (a renewal whose future was dropped with its op already sent) are applied in that
/// order: the deferral ends the claim, so another copy is not set aside; and a cancel sent right
/// after a claim is ended sees it ended. (The writer applied a batch's status changes and
/// cancels before its claims: the deferred message was claimed again for an owner that had
/// gone, for a visibility timeout, and the cancel was refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_claim_sent_before_an_outcome_does_not_outlive_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let store = mailroom::store::sqlite::SqliteStore::new(db);
    let messages: Vec<_> = (0..20).map(native).collect();
    let acceptance = Acceptance {
        messages: messages.clone(),
        idempotency: None,
    };
    store.insert(acceptance, false).await.expect("insert");
    let minute = Duration::from_secs(60);
    let owner = uuid::Uuid::new_v4();
    let ids: Vec<_> = messages.iter().map(|m| m.id).collect();
    store.claim(&ids, owner, minute).await.expect("claim");
    // Each pair reaches the writer in one batch, the renewal first.
    let pairs = messages.iter().map(|m| {
        let store = &store;
        async move {
            let deferral = mailroom::store::Transition::Deferred {
                attempts: 1,
                error: "451 later".into(),
                retry_in: Duration::from_secs(5),
            };
            let one = [m.id];
            let (renewed, deferred) = tokio::join!(
                store.claim(&one, owner, minute),
                store.record(m.id, deferral)
            );
            renewed.expect("renewal");
            assert!(deferred.expect("record"), "deferred");
        }
    });
    futures::future::join_all(pairs).await;
    let rival = uuid::Uuid::new_v4();
    let next = store.claim(&ids, rival, minute).await.expect("claim");
    assert!(
        next.elsewhere.is_empty(),
        "claimed again after the deferral: {next:?}"
    );
    // A worker ends its claim (a message given back) and a cancel follows in the same batch:
    // the cancel sees the claim ended.
    let cancels = messages.iter().map(|m| {
        let store = &store;
        async move {
            let one = [m.id];
            let (ended, cancelled) =
                tokio::join!(store.claim(&one, rival, Duration::ZERO), store.cancel(m.id));
            ended.expect("end");
            cancelled.expect("cancel")
        }
    });
    for cancelled in futures::future::join_all(cancels).await {
        assert_eq!(cancelled, mailroom::store::Cancel::Cancelled);
    }
}
