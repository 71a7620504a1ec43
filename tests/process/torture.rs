//! The torture suite: the guarantees under abuse, with the real binary and real servers.
//!
//! - `kill -9` of `serve`, and of `api` and `worker` processes, at random moments over ten cycles
//!   under load: no message answered 202 is lost, each has exactly one archive object, and the
//!   duplicates the relay sees are bounded by what was in flight at the kills.
//! - The SMTP relay down for 60 s under load: nothing lost, nothing dead-lettered, everything
//!   delivered after it is back, the backoff visible in the metrics.
//! - The database or the queue unreachable: the API answers 503 with Retry-After, never a 202
//!   it cannot keep.
//!
//! (SIGTERM under load is `crash::sigterm_drains_and_leaves_no_lease`.) The random moments come
//! from a seed printed by each test; `MAILROOM_TORTURE_SEED` replays one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::checks::{
    assert_one_archive_object_each, assert_recorded_delivered, kill_9, metric, metrics_text,
    smtp_env, wait_all_received,
};
use crate::helpers::{Relay, compat_body, unique_rcpt};
use crate::proxy::Proxy;
use crate::start;

const CYCLES: usize = 10;

fn rng() -> StdRng {
    let seed = std::env::var("MAILROOM_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("torture seed {seed} (MAILROOM_TORTURE_SEED={seed} replays it)");
    StdRng::seed_from_u64(seed)
}

/// Clients posting compat messages to whatever address the API has now, the way an application
/// would: a refused connection or a 503 is tried again later; only a 202 counts as accepted.
struct Load {
    url: Arc<RwLock<String>>,
    accepted: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<HashMap<u16, usize>>>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// `clients` posting in a loop, each pausing `pause` between requests.
    fn start(url: &str, token: &str, clients: usize, pause: Duration) -> Self {
        let url = Arc::new(RwLock::new(url.to_string()));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(HashMap::new()));
        let stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        for _ in 0..clients {
            let (url, accepted, refused, stop) =
                (url.clone(), accepted.clone(), refused.clone(), stop.clone());
            let (http, body) = (http.clone(), compat_body(token));
            tasks.spawn(async move {
                while !stop.is_cancelled() {
                    let target = format!("{}/api/email", url.read().expect("lock"));
                    match http.post(&target).json(&body).send().await {
                        Ok(r) if r.status() == 202 => {
                            if let Ok(v) = r.json::<Value>().await {
                                let id = v["message_id"].as_str().expect("an id").to_string();
                                accepted.lock().expect("lock").push(id);
                            }
                        }
                        Ok(r) => {
                            *refused
                                .lock()
                                .expect("lock")
                                .entry(r.status().as_u16())
                                .or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        // Connection refused or cut: the process is down; try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Self {
            url,
            accepted,
            refused,
            stop,
            tasks,
        }
    }

    fn point_at(&self, url: &str) {
        *self.url.write().expect("lock") = url.to_string();
    }

    fn accepted_count(&self) -> usize {
        self.accepted.lock().expect("lock").len()
    }

    /// Stops the clients; returns the ids answered 202 and the other statuses seen.
    async fn finish(mut self) -> (Vec<String>, HashMap<u16, usize>) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        let accepted = self.accepted.lock().expect("lock").clone();
        let refused = self.refused.lock().expect("lock").clone();
        (accepted, refused)
    }
}

/// Stops the load, then checks what every kill cycle must leave: each id answered 202 delivered,
/// recorded delivered and archived once, no answer but 202 or 503, and no more duplicates than
/// `kills` x `concurrency` (the leases in flight at each kill).
async fn finish_and_check(
    load: Load,
    relay: &Relay,
    rcpt: &str,
    api: &str,
    token: &str,
    archive: &Path,
    concurrency: usize,
) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (accepted, refused) = load.finish().await;
    eprintln!(
        "accepted {} (202); other answers {refused:?}",
        accepted.len()
    );
    assert!(accepted.len() > 500, "the load was real");
    assert!(
        refused.keys().all(|s| *s == 503),
        "only 503s besides the 202s: {refused:?}"
    );
    wait_all_received(relay, rcpt, &accepted, Duration::from_secs(180)).await;
    assert_recorded_delivered(api, token, &accepted).await;
    assert_one_archive_object_each(archive, &accepted).await;
    // Counted once everything is recorded, so late redeliveries are in it.
    let received = crate::received_ids(relay, rcpt);
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "duplicates over {CYCLES} kills: {duplicates} (bound {CYCLES} x concurrency {concurrency})"
    );
    assert!(
        duplicates <= CYCLES * concurrency,
        "{duplicates} duplicates"
    );
}

/// Ten `kill -9`s of `mailroom serve` at random moments while clients keep posting: every 202
/// is delivered, recorded delivered and archived once; duplicates stay within what the worker
/// had in flight at each kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_ten_times_under_load_loses_nothing() {
    let _turn = crate::HEAVY.lock().await;
    let mut rng = rng();
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("torture-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("torture-serve");
    let concurrency = 16;
    let mut env = smtp_env(relay.plain_url(), &token, &rcpt);
    env.extend([
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("VISIBILITY_TIMEOUT_SECS", "3".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
    ]);
    let mut server = start(dir.path(), &env).await;
    let load = Load::start(&server.url, &token, 6, Duration::from_millis(10));
    for cycle in 0..CYCLES {
        let alive = Duration::from_millis(rng.random_range(400..2000));
        tokio::time::sleep(alive).await;
        kill_9(&mut server.child).await;
        eprintln!(
            "cycle {cycle}: killed serve after {alive:?}; {} accepted so far",
            load.accepted_count()
        );
        server = start(dir.path(), &env).await;
        load.point_at(&server.url);
    }
    let archive = dir.path().join("archive");
    finish_and_check(
        load,
        &relay,
        &rcpt,
        &server.url,
        &token,
        &archive,
        concurrency,
    )
    .await;
    kill_9(&mut server.child).await;
}

/// One `api` and two `worker` processes on PostgreSQL and Redis (the scale-out cluster, with no
/// rate ceiling); ten times a random one of them is killed with `kill -9` and started again while
/// clients keep posting.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_workers_killed_ten_times_under_load_lose_nothing() {
    let _turn = crate::HEAVY.lock().await;
    let mut rng = rng();
    let relay = Relay::from_env();
    let c = crate::scale::cluster_with_rate(0.0).await;
    let mut api = crate::start_role("api", &c.data_dir("api"), &c.env).await;
    let mut workers = [c.worker(0), c.worker(1)];
    let load = Load::start(&api.url, &c.token, 6, Duration::from_millis(10));
    let mut kills = HashMap::new();
    for cycle in 0..CYCLES {
        let alive = Duration::from_millis(rng.random_range(400..2000));
        tokio::time::sleep(alive).await;
        let victim = rng.random_range(0..3);
        if victim == 2 {
            kill_9(&mut api.child).await;
            api = crate::start_role("api", &c.data_dir("api"), &c.env).await;
            load.point_at(&api.url);
        } else {
            kill_9(&mut workers[victim]).await;
            workers[victim] = c.worker(victim);
        }
        let name = ["worker-0", "worker-1", "api"][victim];
        *kills.entry(name).or_insert(0) += 1;
        eprintln!(
            "cycle {cycle}: killed {name} after {alive:?}; {} accepted so far",
            load.accepted_count()
        );
    }
    eprintln!("kills {kills:?}");
    let archive = c.archive_dir();
    let concurrency = crate::scale::WORKER_CONCURRENCY;
    finish_and_check(
        load,
        &relay,
        &c.rcpt,
        &api.url,
        &c.token,
        &archive,
        concurrency,
    )
    .await;
}

/// The relay unreachable for 60 s while clients keep posting: the API keeps accepting, nothing
/// is dead-lettered, the retries back off (the metrics show delays growing), and every message
/// is delivered once the relay is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_60_s_loses_and_dead_letters_nothing() {
    let _turn = crate::HEAVY.lock().await;
    let outage = Duration::from_secs(60);
    let relay = Relay::from_env();
    let proxy = Proxy::start(relay.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("torture-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("torture-outage");
    let mut env = smtp_env(format!("smtp://127.0.0.1:{}", proxy.port), &token, &rcpt);
    env.extend([
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("WORKER_CONCURRENCY", "8".into()),
        ("POLL_INTERVAL_MS", "100".into()),
        // Short timeouts for the test: backoff from 0.5 s up to 8 s, enough attempts to outlast
        // the outage (a production MAX_ATTEMPTS=8 with RETRY_BASE_MS=5000 spans about 10 min).
        ("RETRY_BASE_MS", "500".into()),
        ("RETRY_MAX_MS", "8000".into()),
        ("MAX_ATTEMPTS", "40".into()),
    ]);
    let server = start(dir.path(), &env).await;
    let load = Load::start(&server.url, &token, 2, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.down();
    let down_at = Instant::now();
    let accepted_before = load.accepted_count();
    tokio::time::sleep(outage / 2).await;
    let halfway = metrics_text(&server).await;
    assert!(
        metric(&halfway, "mailroom_deliveries_total{outcome=\"deferred\"}") > 0.0,
        "deliveries are deferred while the relay is down"
    );
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let during = load.accepted_count() - accepted_before;
    proxy.up();
    eprintln!(
        "relay back after {:?}; {during} accepted while it was down",
        down_at.elapsed()
    );
    assert!(during > 100, "the API kept accepting during the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (accepted, refused) = load.finish().await;
    assert!(
        refused.is_empty(),
        "every request answered 202: {refused:?}"
    );

    // Backoff grows to the cap, not past it: within 8 s + jitter of the relay's return all is
    // delivered; allow for the backlog on top.
    let received = wait_all_received(&relay, &rcpt, &accepted, Duration::from_secs(60)).await;
    assert_recorded_delivered(&server.url, &token, &accepted).await;
    let dead = crate::get_json(
        &reqwest::Client::new(),
        &format!("{}/v1/dead-letters", server.url),
        &token,
    )
    .await;
    assert_eq!(
        dead["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "nothing dead-lettered: {dead}"
    );
    let text = metrics_text(&server).await;
    let deferred = metric(&text, "mailroom_deliveries_total{outcome=\"deferred\"}");
    let dead_count = metric(&text, "mailroom_deliveries_total{outcome=\"dead\"}");
    let delays = metric(&text, "mailroom_retry_delay_seconds_count");
    let long = delays - metric(&text, "mailroom_retry_delay_seconds_bucket{le=\"2\"}");
    let over_cap = delays - metric(&text, "mailroom_retry_delay_seconds_bucket{le=\"10\"}");
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "{} accepted; deferred {deferred}; retry delays {delays} ({long} over 2 s, {over_cap} over 10 s); duplicates {duplicates}",
        accepted.len()
    );
    assert_eq!(dead_count, 0.0);
    assert_eq!(deferred, delays, "every deferral chose a backoff");
    assert!(
        deferred > during as f64,
        "messages were tried more than once during the outage"
    );
    assert!(long > 0.0, "the backoff grew past 2 s");
    assert_eq!(over_cap, 0.0, "and never past RETRY_MAX_MS");
}

/// PostgreSQL unreachable behind `mailroom api`: answers are 503 with Retry-After, never 202;
/// once it is back, requests are accepted again, and every 202 is in the database.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_unreachable_is_503_never_202() {
    use crate::helpers::fresh_pg_database;
    use sqlx::Connection;

    let _turn = crate::HEAVY.lock().await;
    let database = fresh_pg_database().await;
    let mut via_proxy = url::Url::parse(&database).expect("a URL");
    let proxy = Proxy::start(via_proxy.port().expect("a port")).await;
    via_proxy.set_port(Some(proxy.port)).expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("torture-{}", uuid::Uuid::new_v4());
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DATABASE_URL", via_proxy.to_string()),
        ("DELIVERY", "none".into()),
    ];
    let api = crate::start_role("api", dir.path(), &env).await;
    let accepted = unreachable_backend_round(&api, &token, &proxy).await;

    let mut db = sqlx::PgConnection::connect(&database)
        .await
        .expect("PostgreSQL");
    let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(
        stored as usize,
        accepted.len(),
        "exactly the 202s are stored"
    );
}

/// The SQS endpoint unreachable behind `mailroom api`: the same promise.
#[cfg(all(feature = "aws", feature = "postgres"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_unreachable_is_503_never_202() {
    use crate::moto::Moto;

    let _turn = crate::HEAVY.lock().await;
    let moto = Moto::start().await;
    let (queue_url, _) = moto.queue_with_dlq("torture", 5, None).await;
    let moto_port = url::Url::parse(&moto.endpoint)
        .expect("a URL")
        .port()
        .expect("a port");
    let proxy = Proxy::start(moto_port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("torture-{}", uuid::Uuid::new_v4());
    let mut env = crate::aws::aws_env(&format!("http://127.0.0.1:{}", proxy.port));
    env.extend([
        ("API_TOKEN", token.clone()),
        ("QUEUE_BACKEND", "sqs".into()),
        ("SQS_QUEUE_URL", queue_url.clone()),
        ("DELIVERY", "none".into()),
    ]);
    let api = crate::start_role("api", dir.path(), &env).await;
    let accepted = unreachable_backend_round(&api, &token, &proxy).await;
    let queued: std::collections::HashSet<String> = moto
        .drain(&queue_url)
        .await
        .into_iter()
        .filter_map(|(body, _)| {
            serde_json::from_str::<Value>(&body).ok()?["id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for id in &accepted {
        assert!(
            queued.contains(id),
            "202 for {id} but it is not in the queue"
        );
    }
}

#[cfg(feature = "postgres")]
/// Accepted while the backend is up; 503 with Retry-After (never 202) while it is down; accepted
/// again once it is back. Returns the ids answered 202.
async fn unreachable_backend_round(api: &crate::Server, token: &str, proxy: &Proxy) -> Vec<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client");
    let post = || {
        http.post(format!("{}/api/email", api.url))
            .json(&compat_body(token))
            .send()
    };
    let mut accepted = Vec::new();
    let r = post().await.expect("answered");
    assert_eq!(r.status(), 202, "accepted while the backend is up");
    accepted.push(crate::helpers::accepted_id(r).await);

    proxy.down();
    let answers = futures::future::join_all((0..8).map(|_| post())).await;
    for r in answers {
        let r = r.expect("answered, not hung up on");
        assert_eq!(r.status(), 503, "never a 202 while the backend is down");
        assert!(
            r.headers().contains_key("retry-after"),
            "503 carries Retry-After"
        );
        let v: Value = r.json().await.expect("a JSON error");
        assert_eq!(v["error"]["code"], "unavailable", "{v}");
    }
    let ready = reqwest::get(format!("{}/ready", api.url))
        .await
        .expect("ready answers");
    assert_eq!(ready.status(), 503, "/ready says so too");

    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = post().await.expect("answered");
        if r.status() == 202 {
            accepted.push(crate::helpers::accepted_id(r).await);
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "accepting again once it is back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    accepted
}
