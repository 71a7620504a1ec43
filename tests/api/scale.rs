//! The scale-out backends against real servers: the PostgreSQL store and queue (conformance
//! suites, the pipeline end to end, LISTEN/NOTIFY), and the Redis-shared limiter and
//! idempotency cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailroom::limiter::redis::{RedisLimiter, connect};
use mailroom::limiter::{LimitError, RateLimiter, acquire};
use mailroom::queue::Queue;
use mailroom::queue::postgres::PostgresQueue;
use mailroom::store::Store;
use mailroom::store::postgres::{PgSettings, PgStore};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::conformance::{queue_suite, store_suite};
use crate::helpers::{
    event_kinds, fresh_pg_database, native_body, redis_url, spawn_app_with, unique_rcpt,
};

async fn pg_pool() -> sqlx::PgPool {
    let url = fresh_pg_database().await;
    mailroom::store::postgres::connect(&PgSettings {
        url,
        pool_size: 5,
        statement_timeout: Duration::from_secs(10),
    })
    .await
    .expect("PostgreSQL connects and migrates")
}

/// The PostgreSQL queue passes the queue suite.
#[tokio::test]
async fn postgres_queue_conformance() {
    let visibility = Duration::from_secs(1);
    queue_suite(
        || async move { Arc::new(PostgresQueue::new(pg_pool().await, visibility)) as Arc<dyn Queue> },
        visibility,
    )
    .await;
}

/// The PostgreSQL queue sets aside a row it cannot read without counting an attempt.
#[tokio::test]
async fn postgres_queue_sets_unreadable_rows_aside() {
    let pool = pg_pool().await;
    let visibility = Duration::from_secs(1);
    let queue = PostgresQueue::new(pool.clone(), visibility);
    crate::conformance::unreadable_is_set_aside_uncounted(&queue, visibility, |id, payload| {
        let pool = pool.clone();
        async move {
            let old: String = sqlx::query_scalar("SELECT payload FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("stored");
            sqlx::query("UPDATE messages SET payload = $1 WHERE id = $2")
                .bind(payload)
                .bind(id)
                .execute(&pool)
                .await
                .expect("updated");
            old
        }
    })
    .await;
}

/// A queue row whose message row is missing is removed; the rest of the batch is leased.
#[tokio::test]
async fn postgres_queue_leases_the_rest_beside_a_row_without_its_message() {
    let pool = pg_pool().await;
    let queue = PostgresQueue::new(pool.clone(), Duration::from_secs(60));
    let good = crate::conformance::queue::message(1);
    let results = queue.push(std::slice::from_ref(&good)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let orphan = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO queue (message_id, enqueued_at, available_at) VALUES ($1, 0, 0)")
        .bind(orphan)
        .execute(&pool)
        .await
        .expect("inserted");
    let leases = queue.pull(10).await.expect("the batch is leased");
    let ids: Vec<_> = leases.iter().map(|l| l.message.id).collect();
    assert_eq!(ids, [good.id]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue WHERE message_id = $1")
        .bind(orphan)
        .fetch_one(&pool)
        .await
        .expect("counted");
    assert_eq!(left, 0, "the row without a message is removed");
}

/// A redrive on PostgreSQL queues the message in the same transaction as its status.
#[tokio::test]
async fn postgres_redrive_requeues_in_one_step() {
    let pool = pg_pool().await;
    let store = PgStore::new(pool.clone());
    let queue = PostgresQueue::new(pool, Duration::from_secs(30));
    crate::conformance::store::store_redrive_requeues(&store, &queue).await;
}

/// The PostgreSQL store passes the store suite.
#[tokio::test]
async fn postgres_store_conformance() {
    store_suite(|| async { Arc::new(PgStore::new(pg_pool().await)) as Arc<dyn Store> }).await;
}

/// After a rollback, the previous image starts on a PostgreSQL database that a later release
/// migrated further, and works on it.
#[tokio::test]
async fn postgres_opens_a_database_a_later_release_migrated() {
    let url = fresh_pg_database().await;
    let settings = PgSettings {
        url,
        pool_size: 2,
        statement_timeout: Duration::from_secs(10),
    };
    let pool = mailroom::store::postgres::connect(&settings)
        .await
        .expect("PostgreSQL connects and migrates");
    // A later release's migration, as sqlx records it once applied.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a later release', true, '\\x00'::bytea, 0)",
    )
    .execute(&pool)
    .await
    .expect("the later release's migration is recorded");
    pool.close().await;
    let pool = mailroom::store::postgres::connect(&settings)
        .await
        .expect("the database opens despite a migration this build does not know");
    let store = PgStore::new(pool);
    let message = mailroom::message::Message::new(mailroom::message::Content::Native(
        serde_json::from_value(native_body("a@example.com")).expect("valid"),
    ));
    let acceptance = mailroom::store::Acceptance {
        messages: vec![message.clone()],
        idempotency: None,
    };
    store.insert(acceptance, true).await.expect("insert");
    assert!(store.get(message.id).await.expect("get").is_some());
}

/// Two pullers on one PostgreSQL queue never lease the same message (SKIP LOCKED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_pulls_never_share_a_message() {
    let pool = pg_pool().await;
    let queue = Arc::new(PostgresQueue::new(pool, Duration::from_secs(30)));
    let messages: Vec<_> = (0..200)
        .map(|_| {
            mailroom::message::Message::new(mailroom::message::Content::Native(
                serde_json::from_value(native_body("a@example.com")).expect("valid"),
            ))
        })
        .collect();
    for r in queue.push(&messages).await {
        r.expect("push");
    }
    let pullers: Vec<_> = (0..4)
        .map(|_| {
            let q = queue.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let leases = q.pull(7).await.expect("pull");
                    if leases.is_empty() {
                        return ids;
                    }
                    ids.extend(leases.into_iter().map(|l| l.message.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for p in pullers {
        all.extend(p.await.expect("joined"));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (200, 200),
        "every message leased exactly once"
    );
}

/// Cancelling on PostgreSQL: the scenario of `cancel.rs`.
#[tokio::test]
async fn cancel_on_postgres() {
    let db = fresh_pg_database().await;
    let app = spawn_app_with(move |c| c.database_url = Some(db.into())).await;
    crate::cancel::cancel_scenario(&app).await;
}

/// The whole pipeline on PostgreSQL: accepted, delivered over SMTP, archived; and a worker idle
/// on a long poll interval is woken by NOTIFY as soon as a message is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_on_postgres_with_notify_wakeup() {
    let db = fresh_pg_database().await;
    let app = spawn_app_with(move |c| {
        c.database_url = Some(db.into());
        c.poll_interval_ms = 60_000;
    })
    .await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await; // the worker is now idle, waiting
    let to = unique_rcpt("pg");
    let id = app.send_to(&to).await;
    let started = Instant::now();
    loop {
        if app.get_message(&id).await["status"] == "delivered" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not woken by NOTIFY"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    worker.await.expect("worker stops");
    assert_eq!(app.relay.received_for(&to).len(), 1);
    let m = app.get_message(&id).await;
    assert!(
        app.archive_dir()
            .join(m["archive_key"].as_str().expect("key"))
            .exists()
    );
    let kinds = event_kinds(&m);
    assert_eq!(kinds, ["accepted", "delivered"]);
}

/// Three limiters on one Redis key (three worker replicas), twelve waiters: the slots they book
/// form one schedule at the shared rate. 60 sends at 40/s span 59 intervals: never less (the
/// ceiling holds), and not much more (no slot is lost to the waiters' wake-up latency).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limiter_is_shared_by_replicas() {
    let key = format!("mailroom-test:{}", uuid::Uuid::new_v4());
    let replicas: Vec<Arc<RedisLimiter>> = (0..3)
        .map(|_| {
            let conn = connect(&redis_url()).expect("url");
            Arc::new(RedisLimiter::new(
                conn,
                &key,
                40.0,
                1,
                Duration::from_secs(10),
            ))
        })
        .collect();
    let booked = Arc::new(AtomicUsize::new(0));
    let sends = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (limiter, booked, sends) = (replicas[i % 3].clone(), booked.clone(), sends.clone());
            tokio::spawn(async move {
                while booked.fetch_add(1, Ordering::SeqCst) < 60 {
                    acquire(limiter.as_ref(), 1).await;
                    sends.lock().expect("lock").push(started.elapsed());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("joined");
    }
    let mut sends = sends.lock().expect("lock").clone();
    sends.sort();
    assert_eq!(sends.len(), 60);
    // 59 intervals between the first and the last send at the least (the ceiling holds; 5 ms
    // for the clocks). A new key's schedule starts after a wait (a lost schedule is waited
    // out), so the span is measured from the first send, not from the start.
    let span = (sends[59] - sends[0]).as_secs_f64();
    assert!(
        span >= 59.0 / 40.0 - 0.005,
        "60 sends in {span:.3} s: faster than 40/s"
    );
    // Lost slots would each add an interval; late wake-ups on a loaded machine add a little
    // too, so a few intervals are allowed (bench/ measures the rate itself).
    assert!(
        span <= 59.0 / 40.0 * 1.15,
        "60 sends in {span:.3} s: slots were lost"
    );
}

/// A new schedule's key on Redis, idle (its time in the past; a missing key is a schedule Redis
/// lost, waited out first), and a connection.
async fn idle_schedule() -> (String, redis::aio::ConnectionManager) {
    let key = format!("mailroom-test:{}", uuid::Uuid::new_v4());
    let mut conn = connect(&redis_url()).expect("url");
    redis::cmd("SET")
        .arg(&key)
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .expect("set");
    (key, conn)
}

/// A booking of several slots on the shared schedule (a message to several recipients, where
/// the provider counts recipients) holds them all and goes out at the last: at 10/s, a booking
/// of 5 slots waits 400 ms, and one after it, from another replica, 500 ms.
#[tokio::test]
async fn redis_limiter_books_a_message_of_several_slots() {
    let (key, conn) = idle_schedule().await;
    let one = RedisLimiter::new(conn.clone(), &key, 10.0, 1, Duration::from_secs(10));
    let other = RedisLimiter::new(conn, &key, 10.0, 1, Duration::from_secs(10));
    let started = Instant::now();
    let first = one.reserve(5).await.expect("within the horizon");
    let second = started.elapsed() + other.reserve(1).await.expect("within the horizon");
    // Each wait is counted from its own call; the calls' own time is slack.
    assert!(
        first > Duration::from_millis(350) && first <= Duration::from_millis(400),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(495) && second < Duration::from_millis(700),
        "{second:?}"
    );
}

/// A limiter at 10/s on an idle shared schedule books 10 slots, then Redis loses the schedule
/// (its key deleted, as a restart without persistence, a failover or an eviction would). The
/// limiter, the test's start, and when the last slot booked before the loss comes.
async fn ten_booked_then_lost() -> (RedisLimiter, Instant, Duration) {
    let (key, mut conn) = idle_schedule().await;
    let limiter = RedisLimiter::new(conn.clone(), &key, 10.0, 1, Duration::from_secs(10));
    let started = Instant::now();
    let mut last = Duration::ZERO;
    for _ in 0..10 {
        let wait = limiter.reserve(1).await.expect("within the horizon");
        last = last.max(started.elapsed() + wait);
    }
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await
        .expect("del");
    (limiter, started, last)
}

/// The next slot of `limiter` comes no earlier than `last`.
async fn next_slot_after(limiter: &RedisLimiter, started: Instant, last: Duration) {
    let wait = limiter.reserve(1).await.expect("within the horizon");
    let next = started.elapsed() + wait;
    assert!(
        next >= last,
        "a slot at {next:?} beside those booked up to {last:?}"
    );
}

/// A schedule Redis loses while slots are booked does not start a second one beside them: no
/// slot is booked again before the horizon has passed, so the sends already booked are not
/// joined by new ones at twice the rate.
#[tokio::test]
async fn a_schedule_redis_loses_is_not_doubled() {
    let (limiter, started, last) = ten_booked_then_lost().await;
    next_slot_after(&limiter, started, last).await;
}

/// A slow-down asked for after Redis lost the schedule does not shorten the wait a lost
/// schedule needs: no slot is booked beside those booked before the loss.
#[tokio::test]
async fn a_slow_down_after_redis_loses_the_schedule_keeps_the_wait() {
    let (limiter, started, last) = ten_booked_then_lost().await;
    // A pause shorter than what is booked: before, it set the schedule to now + 100 ms.
    limiter
        .hold_off(Duration::from_millis(100))
        .await
        .expect("hold off");
    next_slot_after(&limiter, started, last).await;
}

/// With Redis unreachable the limiter says so quickly instead of granting permits, and the API
/// keeps accepting while `/ready` reports the limiter as degraded.
#[tokio::test]
async fn redis_down_pauses_delivery_not_the_api() {
    let dead = "redis://127.0.0.1:1";
    let limiter = RedisLimiter::new(
        connect(dead).expect("url"),
        "k",
        7.0,
        1,
        Duration::from_secs(10),
    );
    let started = Instant::now();
    assert!(matches!(
        limiter.reserve(1).await,
        Err(LimitError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let app = spawn_app_with(|c| {
        c.redis_url = Some(dead.to_string().into());
        c.send_rate_per_second = 7.0;
    })
    .await;
    let r = app
        .post_message(&native_body(&unique_rcpt("redis-down")), None)
        .await;
    assert_eq!(r.status(), 202);
    let r = app.get_public("/ready").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["status"], "degraded");
    assert_ne!(v["checks"]["limiter"], "ok");
}

/// On PostgreSQL with Redis, an idempotent request is cached in Redis and replayed from it,
/// for the key's 24 hours from its first use and no longer.
#[tokio::test]
async fn idempotency_cached_in_redis() {
    let db = fresh_pg_database().await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let p = prefix.clone();
    let app = spawn_app_with(move |c| {
        c.database_url = Some(db.into());
        c.redis_url = Some(redis_url().into());
        c.redis_key_prefix = p;
    })
    .await;
    let key = format!("cache-{}", uuid::Uuid::new_v4());
    let body = native_body(&unique_rcpt("cache"));
    let first: Value = app
        .post_message(&body, Some(&key))
        .await
        .json()
        .await
        .expect("JSON");
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let cached: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}:idempotency:{key}"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    let cached: Value = serde_json::from_str(&cached.expect("the key is cached")).expect("JSON");
    assert_eq!(
        serde_json::from_str::<Value>(cached["response"].as_str().expect("response"))
            .expect("JSON"),
        first
    );
    let again = app.post_message(&body, Some(&key)).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.expect("JSON"), first);
    // Cached until the key's day is over, counted from its first use, not from the write.
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:idempotency:{key}"))
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    let day_ms = 24 * 3600 * 1000;
    let age_ms = mailroom::store::now_ms() - cached["created_at"].as_i64().expect("created_at");
    assert!(
        ttl_ms <= day_ms - age_ms + 1000 && ttl_ms > day_ms - 60_000,
        "{ttl_ms} ms left, {age_ms} ms after its first use"
    );

    // A key used 25 hours ago holds no more, even where the cache still has it: the request
    // is accepted afresh rather than refused as another body under a used key.
    let old_key = format!("cache-{}", uuid::Uuid::new_v4());
    let mut stale = cached.clone();
    stale["key"] = old_key.clone().into();
    stale["request_hash"] = "another body".into();
    stale["created_at"] = (mailroom::store::now_ms() - 25 * 3600 * 1000).into();
    redis::cmd("SET")
        .arg(format!("{prefix}:idempotency:{old_key}"))
        .arg(stale.to_string())
        .arg("EX")
        .arg(3600)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET");
    let fresh = app.post_message(&body, Some(&old_key)).await;
    assert_eq!(fresh.status(), 202);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
}
