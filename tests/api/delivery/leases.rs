//! Leases: one whose worker died comes back, one kept alive lasts as long as the wait for the
//! rate limit, a lost one is not sent, attempts that never finish end in the dead letters, the
//! rate ceiling over concurrent deliveries, and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom::message::{Message, Status};
use mailroom::queue::{Depth, Lease, Queue, QueueError};
use mailroom::store::{ListFilter, Transition};
use mailroom::worker::Worker;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::faulty::{FaultyStore, StoreFault};
use crate::helpers::{TestApp, event_kinds, spawn_app, spawn_app_with, unique_rcpt};

/// Accepts a message to a recipient of its own and leases it as a worker that then dies would:
/// never settled. Returns (id, recipient) once the lease has run out (the app's visibility
/// timeout is to be 2 s).
async fn leased_by_a_dead_worker(app: &TestApp, prefix: &str) -> (String, String) {
    let to = unique_rcpt(prefix);
    let id = app.send_to(&to).await;
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1);
    std::mem::forget(leases); // the worker holding them is gone
    assert_eq!(app.dispatch_all_pending().await, 0, "still leased");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    (id, to)
}

/// A lease whose worker died (taken, never settled) becomes visible again after the visibility
/// timeout, and the message is delivered on the next attempt.
#[tokio::test]
async fn lease_of_dead_worker_is_recovered() {
    let app = spawn_app_with(|c| {
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
    })
    .await;
    let (id, to) = leased_by_a_dead_worker(&app, "lease").await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["attempts"], 2);
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// A worker that recorded a send and stopped before it archived the message and settled its
/// lease: the lease comes back, and the next attempt does not send it again, leaves its record
/// as it was (one `delivered` event, one attempt), and writes the archive object with the
/// recorded outcome (the relay's reply, not a note of its own).
#[tokio::test]
async fn a_send_recorded_but_not_archived_is_only_archived_on_its_next_attempt() {
    let app = spawn_app_with(|c| {
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
    })
    .await;
    let (id, to) = leased_by_a_dead_worker(&app, "recorded").await;
    let uuid = uuid::Uuid::parse_str(&id).expect("a uuid");
    let reply = "250 2.0.0 Ok: queued as 4F2C1";
    let recorded = Transition::Delivered {
        attempts: 1,
        detail: reply.into(),
    };
    assert!(
        app.backends_store
            .record(uuid, recorded)
            .await
            .expect("recorded")
    );
    let before = app.get_message(&id).await;

    assert_eq!(app.dispatch_all_pending().await, 1, "the lease came back");
    assert!(app.relay.received_for(&to).is_empty(), "not sent again");
    let after = app.get_message(&id).await;
    assert_eq!(event_kinds(&after), ["accepted", "delivered"], "{after}");
    assert_eq!(after["attempts"], 1);
    assert_eq!(after["updated_at"], before["updated_at"]);
    let key = after["archive_key"].as_str().expect("archive_key");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.archive_dir().join(key)).expect("archived"))
            .expect("JSON");
    assert_eq!(doc["outcome"]["detail"], reply);
    assert_eq!(doc["outcome"]["status"], "delivered");
    assert_eq!(doc["outcome"]["attempts"], 1);
    assert!(
        app.queue.pull(10).await.expect("pull").is_empty(),
        "settled"
    );
}

/// A message whose attempts never finish (each worker holding it killed, or failing, before it
/// settles the lease) is not taken for ever: once its attempts are used up, the next one
/// dead-letters it unsent, saying why, and an operator's redrive then delivers it.
#[tokio::test]
async fn a_message_whose_attempts_never_finish_is_dead_lettered() {
    let app = spawn_app_with(|c| {
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
        c.max_attempts = 1;
    })
    .await;
    let (id, to) = leased_by_a_dead_worker(&app, "never-finishes").await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let m = app.get_message(&id).await;
    assert_eq!((&m["status"], &m["attempts"]), (&json!("dead"), &json!(1)));
    let err = m["last_error"].as_str().expect("error");
    assert!(
        err.contains("gave up after 1 attempts: the last ones never finished"),
        "{err}"
    );
    assert!(app.relay.received_for(&to).is_empty(), "not sent");
    assert_eq!(app.redrive(&id).await.status(), 202);
    app.dispatch_until(&id, "delivered").await;
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// With a ceiling of 20/s, 21 deliveries cannot finish in less than one second (burst 1), however
/// many run concurrently.
#[tokio::test]
async fn rate_ceiling_holds_across_concurrent_deliveries() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 20.0;
        c.worker_concurrency = 32;
    })
    .await;
    for _ in 0..21 {
        app.send_to(&unique_rcpt("rate")).await;
    }
    let started = Instant::now();
    assert_eq!(app.dispatch_all_pending().await, 21);
    assert!(
        started.elapsed() >= Duration::from_millis(980),
        "{:?}",
        started.elapsed()
    );
}

/// A message waiting for its turn longer than the visibility timeout keeps its lease: at 2/s
/// the last of eight taken together waits about 3.5 s, the visibility timeout is 2 s, and a
/// second worker loop pulls all the while. Each message goes out once, at its first attempt.
#[tokio::test]
async fn a_lease_lasts_as_long_as_the_wait_for_the_rate_limit() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 2.0;
        c.worker_concurrency = 8;
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
    })
    .await;
    let sent = app.send_to_each("long-lease", 8).await;
    let stop = CancellationToken::new();
    let first = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(app.worker.clone().run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, _) in &sent {
        while app.get_message(id).await["status"] != "delivered" {
            assert!(Instant::now() < deadline, "{id} never delivered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Time for a second copy, had a lease run out, to pass the limiter.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.cancel();
    let _ = tokio::join!(first, second);
    for (id, to) in &sent {
        let m = app.get_message(id).await;
        assert_eq!(
            (app.relay.received_for(to).len(), &m["attempts"]),
            (1, &json!(1)),
            "{id}: {m}"
        );
    }
}

/// A queue that fails in one way, over a real one.
struct Faulty {
    inner: Arc<dyn Queue>,
    fault: Fault,
    pulls: std::sync::atomic::AtomicU32,
    extends: std::sync::atomic::AtomicU32,
}

enum Fault {
    /// Leases are lost at their first heartbeat, as a Kafka rebalance loses those of the
    /// partitions it moves, or a database lease that ran out while its extensions failed; or,
    /// with `hangs`, the heartbeat never answers (a connection to a failed-over database).
    LosesLeases { hangs: bool },
    /// Every pull fails at once, as SQS's does for access denied or a queue that does not exist
    /// (errors its SDK does not retry); the pulls are counted.
    PullFails,
    /// Nothing fails; leases are kept alive every 100 ms, and the heartbeats are counted.
    CountsExtends,
}

impl Faulty {
    fn new(inner: Arc<dyn Queue>, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            pulls: Default::default(),
            extends: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl Queue for Faulty {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        self.inner.push(messages).await
    }
    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        self.pulls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.fault {
            Fault::PullFails => Err(QueueError::Unavailable("AccessDenied".into())),
            Fault::LosesLeases { .. } | Fault::CountsExtends => self.inner.pull(max).await,
        }
    }
    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        self.inner.ack(lease).await
    }
    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry(lease, delay).await
    }
    async fn postpone(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.inner.postpone(lease, delay).await
    }
    async fn dead(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.inner.dead(lease, error).await
    }
    async fn depth(&self) -> Result<Depth, QueueError> {
        self.inner.depth().await
    }
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn heartbeat(&self) -> Option<Duration> {
        match self.fault {
            Fault::LosesLeases { .. } => Some(Duration::from_millis(300)),
            Fault::CountsExtends => Some(Duration::from_millis(100)),
            Fault::PullFails => self.inner.heartbeat(),
        }
    }
    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        match self.fault {
            Fault::LosesLeases { hangs: true } => std::future::pending().await,
            Fault::LosesLeases { hangs: false } => Err(QueueError::LeaseLost(lease.message.id)),
            Fault::PullFails => self.inner.extend(lease).await,
            Fault::CountsExtends => {
                self.extends
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.inner.extend(lease).await
            }
        }
    }
}

/// A worker whose lease is lost while the message waits for its turn does not send it: the
/// message's next holder does (or drops it, if it was cancelled meanwhile). At 0.4/s the first
/// of three goes at once and the others wait 2.5 and 5 s. A heartbeat that says the lease is
/// gone (at 300 ms), or one that hangs past the 2 s visibility timeout, stops them both.
#[tokio::test]
async fn a_lease_lost_while_waiting_is_not_sent() {
    for hangs in [false, true] {
        let app = spawn_app_with(|c| {
            c.send_rate_per_second = 0.4;
            c.worker_concurrency = 3;
            c.visibility_timeout_secs = 2;
            c.smtp_timeout_secs = 1;
        })
        .await;
        let sent = app.send_to_each("lost-lease", 3).await;
        let queue = Faulty::new(app.queue.clone(), Fault::LosesLeases { hangs });
        let worker = over(&app, Arc::new(queue), 3, app.worker.poll_interval);
        assert_eq!(worker.run_once().await.expect("pull"), 3);
        let mut delivered = 0;
        for (id, to) in &sent {
            let (got, m) = (app.relay.received_for(to).len(), app.get_message(id).await);
            match got {
                1 => delivered += 1,
                0 => assert_eq!(m["status"], "queued", "{m}"),
                n => panic!("{id}: sent {n} times"),
            }
        }
        assert_eq!(
            delivered, 1,
            "hangs {hangs}: only the one whose slot came at once"
        );
    }
}

/// The app's worker over another queue.
fn over(
    app: &TestApp,
    queue: Arc<dyn Queue>,
    concurrency: usize,
    poll_interval: Duration,
) -> Arc<Worker> {
    over_with(
        app,
        queue,
        app.worker.store.clone(),
        app.worker.delivery.clone(),
        concurrency,
        poll_interval,
    )
}

/// The app's worker over another queue, store and delivery.
fn over_with(
    app: &TestApp,
    queue: Arc<dyn Queue>,
    store: Arc<dyn mailroom::store::Store>,
    delivery: Arc<dyn mailroom::delivery::Delivery>,
    concurrency: usize,
    poll_interval: Duration,
) -> Arc<Worker> {
    Arc::new(Worker {
        queue,
        store,
        delivery,
        archive: app.worker.archive.clone(),
        limiter: app.worker.limiter.clone(),
        places: app.worker.places.clone(),
        mime: app.worker.mime.clone(),
        retry: app.worker.retry.clone(),
        concurrency,
        poll_interval,
        wake: app.worker.wake.clone(),
        shutdown_grace: app.worker.shutdown_grace,
        visibility: app.worker.visibility,
        claims: false,
    })
}

/// A worker whose pulls fail at once waits longer after each (the retry backoff, at least
/// 100 ms), even with a poll interval of zero (Kafka's, and SQS's under long polling): it does
/// not spin on the queue and the error log.
#[tokio::test]
async fn failed_pulls_back_off_even_with_no_poll_interval() {
    let app = spawn_app().await;
    let queue = Arc::new(Faulty::new(app.queue.clone(), Fault::PullFails));
    let worker = over(&app, queue.clone(), 1, Duration::ZERO);
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    run.await.expect("the worker exits cleanly");
    let pulls = queue.pulls.load(std::sync::atomic::Ordering::Relaxed);
    // Pauses of at least 100 ms: at most 10 pulls and the first, plus one for timing.
    assert!((2..=12).contains(&pulls), "{pulls} pulls in 1 s");
}

/// A provider that has paused the account and whose check never answers.
struct PausedAndSilent;

#[async_trait::async_trait]
impl mailroom::delivery::Delivery for PausedAndSilent {
    async fn deliver(
        &self,
        _email: &lettre::Message,
    ) -> Result<mailroom::delivery::Receipt, mailroom::delivery::DeliveryError> {
        panic!("nothing is sent while paused")
    }
    async fn check(&self) -> Result<(), mailroom::delivery::DeliveryError> {
        std::future::pending().await
    }
    fn paused(&self) -> Option<String> {
        Some("daily quota used up".into())
    }
    fn recheck_in(&self) -> Duration {
        Duration::from_millis(50)
    }
    fn name(&self) -> &'static str {
        "paused-and-silent"
    }
}

/// A worker whose paused provider is being asked again, and does not answer, still stops at
/// once on shutdown.
#[tokio::test]
async fn shutdown_is_not_held_up_by_a_provider_check() {
    let app = spawn_app().await;
    let worker = over_with(
        &app,
        app.queue.clone(),
        app.worker.store.clone(),
        Arc::new(PausedAndSilent),
        1,
        app.worker.poll_interval,
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    // Past the first re-check, which now waits for ever.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), run)
        .await
        .expect("the worker stops within 3 s")
        .expect("the worker exits cleanly");
}

/// A delivery whose outcome is written late (a connection to a database that failed over
/// answers after 1.5 s) keeps its lease alive from the first try of that write: the lease
/// cannot run out under a message that was sent, for another worker to send it again.
#[tokio::test]
async fn a_late_outcome_write_keeps_the_lease_alive() {
    let app = spawn_app().await;
    let to = unique_rcpt("late-outcome");
    let id = app.send_to(&to).await;
    let queue = Arc::new(Faulty::new(app.queue.clone(), Fault::CountsExtends));
    let store = Arc::new(FaultyStore::new(
        app.worker.store.clone(),
        StoreFault::SlowOutcome(Duration::from_millis(1_500)),
    ));
    let worker = over_with(
        &app,
        queue.clone(),
        store,
        app.worker.delivery.clone(),
        1,
        app.worker.poll_interval,
    );
    let started = Instant::now();
    assert_eq!(worker.run_once().await.expect("pull"), 1);
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    let beats = queue.extends.load(std::sync::atomic::Ordering::Relaxed);
    // One every 100 ms while the write waits (before: none until the write had answered).
    assert!(beats >= 8, "{beats} heartbeats during a 1.5 s write");
    assert_eq!(app.get_message(&id).await["status"], "delivered");
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// On shutdown the worker stops pulling and releases leases still waiting for the rate limit:
/// no lease stays taken, and the released attempts do not count.
#[tokio::test]
async fn shutdown_releases_waiting_leases() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 2.0;
        c.worker_concurrency = 8;
        c.shutdown_grace_secs = 5;
    })
    .await;
    for _ in 0..8 {
        app.send_to(&unique_rcpt("shutdown")).await;
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.cancel();
    let started = Instant::now();
    run.await.expect("the worker exits cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let delivered = app
        .backends_store
        .list(ListFilter {
            status: Some(Status::Delivered),
            before: None,
            limit: 100,
        })
        .await
        .expect("list")
        .len() as u64;
    assert!((1..=3).contains(&delivered), "delivered {delivered}");
    // Everything else is due again at once, with its attempt given back.
    let leases = app.queue.pull(100).await.expect("pull");
    assert_eq!(leases.len() as u64, 8 - delivered);
    assert!(
        leases.iter().all(|l| l.attempt == 1),
        "released attempts do not count"
    );
}

/// The worker is done within `SHUTDOWN_GRACE_SECS` of the signal, giving back what it could,
/// even when giving back a cut-off delivery's lease hangs (the store locked): the rest of the
/// shutdown (closing the queue) and the orchestrator's stop timeout above the grace are kept.
/// (Before, the give-backs had 5 s of their own past the grace.)
#[tokio::test]
async fn shutdown_ends_within_the_grace_period() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 100.0;
        c.worker_concurrency = 2;
        c.shutdown_grace_secs = 2;
    })
    .await;
    for _ in 0..2 {
        app.send_to(&unique_rcpt("slow-6000")).await;
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.worker.clone().run(stop.clone()));
    // Both are with the relay, which answers their DATA after 6 s.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let lock = app.lock_store().await;
    stop.cancel();
    let started = Instant::now();
    run.await.expect("the worker exits cleanly");
    let took = started.elapsed();
    app.unlock_store(lock).await;
    assert!(took <= Duration::from_millis(2_300), "{took:?}");
}
