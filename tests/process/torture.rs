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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Relay, compat_body, unique_rcpt};
use crate::proxy::Proxy;
use crate::{Server, archive_objects, received_ids, start, start_role};

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

/// Waits until the relay has received every id; returns how many times it received each.
async fn wait_all_received(
    relay: &Relay,
    rcpt: &str,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, usize> {
    let want: HashSet<&String> = ids.iter().collect();
    let deadline = Instant::now() + limit;
    loop {
        let got = received_ids(relay, rcpt);
        if want.iter().all(|id| got.contains_key(*id)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted messages delivered within {limit:?}",
            want.iter().filter(|id| got.contains_key(**id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every id has status `delivered` in the store, as `GET /v1/messages/{id}` reports it.
async fn assert_recorded_delivered(api: &str, token: &str, ids: &[String]) {
    let http = reqwest::Client::new();
    let statuses: Vec<(String, Value)> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let req = http
                .get(format!("{api}/v1/messages/{id}"))
                .bearer_auth(token);
            async move {
                let v: Value = req.send().await.expect("sent").json().await.expect("JSON");
                (id, v["status"].clone())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wrong: Vec<_> = statuses.iter().filter(|(_, s)| s != "delivered").collect();
    assert!(
        wrong.is_empty(),
        "{} of {} not recorded delivered, e.g. {:?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// Exactly one archive object per accepted id (the archive key ends in `-{id}.json`).
fn assert_one_archive_object_each(archive: &Path, ids: &[String]) {
    let mut objects = Vec::new();
    archive_objects(archive, &mut objects);
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for name in &objects {
        if let Some(id) = name
            .strip_suffix(".json")
            .and_then(|s| s.get(s.len().saturating_sub(36)..))
        {
            *per_id.entry(id).or_default() += 1;
        }
    }
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| per_id.get(id.as_str()).copied() != Some(1))
        .map(|id| (id, per_id.get(id.as_str()).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} accepted messages do not have exactly one archive object, e.g. {:?}",
        wrong.len(),
        ids.len(),
        &wrong[..wrong.len().min(3)]
    );
}

async fn kill_9(server: &mut tokio::process::Child) {
    server.start_kill().expect("SIGKILL is sent");
    server.wait().await.expect("the process is reaped");
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
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DELIVERY", "smtp".into()),
        ("SMTP_URL", relay.plain_url()),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("VISIBILITY_TIMEOUT_SECS", "3".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
    ];
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

    let received = wait_all_received(&relay, &rcpt, &accepted, Duration::from_secs(180)).await;
    assert_recorded_delivered(&server.url, &token, &accepted).await;
    assert_one_archive_object_each(&dir.path().join("archive"), &accepted);
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!(
        "duplicates over {CYCLES} kills: {duplicates} (bound {CYCLES} x concurrency {concurrency})"
    );
    assert!(
        duplicates <= CYCLES * concurrency,
        "{duplicates} duplicates"
    );
    kill_9(&mut server.child).await;
}

/// One `api` and two `worker` processes on PostgreSQL and Redis; ten times a random one of them
/// is killed with `kill -9` and started again while clients keep posting.
#[cfg(all(feature = "postgres", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_workers_killed_ten_times_under_load_lose_nothing() {
    use crate::helpers::{fresh_pg_database, redis_url};
    use crate::spawn;

    let _turn = crate::HEAVY.lock().await;
    let mut rng = rng();
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("torture-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("torture-split");
    let concurrency = 8;
    let archive = dir.path().join("archive");
    let archive_url = url::Url::from_directory_path(&archive).expect("absolute");
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DATABASE_URL", fresh_pg_database().await),
        ("REDIS_URL", redis_url()),
        (
            "REDIS_KEY_PREFIX",
            format!("torture-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("ARCHIVE_URL", archive_url.to_string()),
        ("DELIVERY", "smtp".into()),
        ("SMTP_URL", relay.plain_url()),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("VISIBILITY_TIMEOUT_SECS", "3".into()),
        ("POLL_INTERVAL_MS", "100".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
    ];
    let data_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    let worker = |i: usize| {
        let mut env = env.clone();
        env.push(("INSTANCE_ID", format!("worker-{i}")));
        spawn("worker", &data_dir(&format!("worker-{i}")), &env)
    };
    let mut api = start_role("api", &data_dir("api"), &env).await;
    let mut workers = [worker(0), worker(1)];
    let load = Load::start(&api.url, &token, 6, Duration::from_millis(10));
    let mut kills = HashMap::new();
    for cycle in 0..CYCLES {
        let alive = Duration::from_millis(rng.random_range(400..2000));
        tokio::time::sleep(alive).await;
        let victim = rng.random_range(0..3);
        if victim == 2 {
            kill_9(&mut api.child).await;
            api = start_role("api", &data_dir("api"), &env).await;
            load.point_at(&api.url);
        } else {
            kill_9(&mut workers[victim]).await;
            workers[victim] = worker(victim);
        }
        let name = ["worker-0", "worker-1", "api"][victim];
        *kills.entry(name).or_insert(0) += 1;
        eprintln!(
            "cycle {cycle}: killed {name} after {alive:?}; {} accepted so far",
            load.accepted_count()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (accepted, refused) = load.finish().await;
    eprintln!(
        "accepted {} (202); other answers {refused:?}; kills {kills:?}",
        accepted.len()
    );
    assert!(accepted.len() > 500, "the load was real");
    assert!(
        refused.keys().all(|s| *s == 503),
        "only 503s besides the 202s: {refused:?}"
    );

    let received = wait_all_received(&relay, &rcpt, &accepted, Duration::from_secs(180)).await;
    assert_recorded_delivered(&api.url, &token, &accepted).await;
    assert_one_archive_object_each(&archive, &accepted);
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!("duplicates over {CYCLES} kills: {duplicates} (bound {CYCLES} x {concurrency})");
    assert!(
        duplicates <= CYCLES * concurrency,
        "{duplicates} duplicates"
    );
}

/// The value of one unlabelled-or-labelled series in Prometheus text (`name{labels} value`).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| {
            // Series carry extra labels (instance_id): match the name and each wanted label.
            let (want_name, want_labels) = series.split_once('{').unwrap_or((series, ""));
            let (got_name, got_labels) = name.split_once('{').unwrap_or((name, ""));
            got_name == want_name
                && want_labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .all(|l| got_labels.contains(l))
        })
        .map(|(_, v)| v.parse::<f64>().expect("a number"))
        .sum()
}

async fn metrics_text(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("text")
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
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DELIVERY", "smtp".into()),
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", proxy.port)),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("WORKER_CONCURRENCY", "8".into()),
        ("POLL_INTERVAL_MS", "100".into()),
        // Short timeouts for the test: backoff from 0.5 s up to 8 s, enough attempts to outlast
        // the outage (a production MAX_ATTEMPTS=8 with RETRY_BASE_MS=5000 spans about 10 min).
        ("RETRY_BASE_MS", "500".into()),
        ("RETRY_MAX_MS", "8000".into()),
        ("MAX_ATTEMPTS", "40".into()),
    ];
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
    let dead: Value = reqwest::Client::new()
        .get(format!("{}/v1/dead-letters", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
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
    let api = start_role("api", dir.path(), &env).await;
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
    use crate::moto::{Moto, REGION};

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
    let mut env = vec![
        ("API_TOKEN", token.clone()),
        ("QUEUE_BACKEND", "sqs".into()),
        ("SQS_QUEUE_URL", queue_url.clone()),
        ("AWS_REGION", REGION.into()),
        (
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", proxy.port),
        ),
        ("DELIVERY", "none".into()),
    ];
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let value = std::env::var(var)
            .unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test"));
        env.push((var, value));
    }
    let api = start_role("api", dir.path(), &env).await;
    let accepted = unreachable_backend_round(&api, &token, &proxy).await;
    let queued: HashSet<String> = moto
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

/// Accepted while the backend is up; 503 with Retry-After (never 202) while it is down; accepted
/// again once it is back. Returns the ids answered 202.
async fn unreachable_backend_round(api: &Server, token: &str, proxy: &Proxy) -> Vec<String> {
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
