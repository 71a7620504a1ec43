//! `kill -9` and SIGTERM against `mailroom serve`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use crate::checks::{
    assert_one_archive_object_each, assert_recorded_delivered, kill_9, smtp_env, wait_all_received,
};
use crate::helpers::{Relay, compat_body, unique_rcpt};
use crate::{received_ids, start};

/// Load `mailroom serve` with a few thousand messages, `kill -9` it while it accepts and
/// delivers, start it again: every message that got a 202 is delivered and archived, with
/// exactly one archive object each; duplicates are no more than what was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_answered_202() {
    let _turn = crate::HEAVY.lock().await;
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("crash-token-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("crash");
    let concurrency = 16;
    let mut env = smtp_env(relay.plain_url(), &token, &rcpt);
    env.extend([
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("VISIBILITY_TIMEOUT_SECS", "3".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
    ]);
    let mut server = start(dir.path(), &env).await;

    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let body = compat_body(&token);
    let kill_after = 2000;
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (client, accepted, body) = (client.clone(), accepted.clone(), body.clone());
        let url = format!("{}/api/email", server.url);
        load.spawn(async move {
            loop {
                let Ok(r) = client.post(&url).json(&body).send().await else {
                    return;
                };
                if r.status() != 202 {
                    return;
                }
                let Ok(v) = r.json::<Value>().await else {
                    return;
                };
                accepted
                    .lock()
                    .expect("lock")
                    .push(v["message_id"].as_str().expect("id").to_string());
            }
        });
    }
    let started = Instant::now();
    while accepted.lock().expect("lock").len() < kill_after {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the load is too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill_9(&mut server.child).await;
    while load.join_next().await.is_some() {}
    let accepted: Vec<String> = accepted.lock().expect("lock").clone();
    let delivered_before_restart = received_ids(&relay, &rcpt).len();
    eprintln!(
        "accepted {} (202), delivered before the kill: {delivered_before_restart}",
        accepted.len()
    );
    assert!(
        delivered_before_restart < accepted.len(),
        "the kill came mid-run"
    );

    let mut server = start(dir.path(), &env).await;
    wait_all_received(&relay, &rcpt, &accepted, Duration::from_secs(120)).await;
    assert_recorded_delivered(&server.url, &token, &accepted).await;
    assert_one_archive_object_each(&dir.path().join("archive"), &accepted).await;
    // Counted once everything is recorded, so late redeliveries are in it.
    let received = received_ids(&relay, &rcpt);
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!("duplicates after kill -9: {duplicates} (worker concurrency {concurrency})");
    assert!(
        duplicates <= concurrency,
        "duplicates {duplicates} exceed what could be in flight"
    );
    server.child.start_kill().expect("stop");
}

/// SIGTERM under load: while clients keep posting and the worker delivers, the process exits
/// within the grace period with status 0, no lease is left taken, and every message answered 202
/// is delivered or still waiting in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_leaves_no_lease() {
    let _turn = crate::HEAVY.lock().await;
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("term-token-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("slow-300");
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DELIVERY", "smtp".to_string()),
        ("SMTP_URL", relay.plain_url()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("SEND_RATE_PER_SECOND", "10".into()),
        ("WORKER_CONCURRENCY", "8".into()),
        ("SHUTDOWN_GRACE_SECS", "5".into()),
    ];
    let mut server = start(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let accepted = Arc::new(Mutex::new(0i64));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, accepted, body) = (client.clone(), accepted.clone(), compat_body(&token));
        let url = format!("{}/api/email", server.url);
        load.spawn(async move {
            // Until the server goes away: a refused connection ends this client.
            while let Ok(r) = client.post(&url).json(&body).send().await {
                if r.status() == 202 {
                    *accepted.lock().expect("lock") += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = Instant::now();
    crate::signal(server.child.id().expect("running"), "TERM");
    let exit = tokio::time::timeout(Duration::from_secs(8), server.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("reaped");
    assert!(exit.success(), "exit status {exit:?}");
    eprintln!("SIGTERM to exit: {:?}", sent.elapsed());
    // SHUTDOWN_GRACE_SECS=5, and a second for the process to end once its work is done.
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "exited {:?} after SIGTERM, past the grace period",
        sent.elapsed()
    );
    while load.join_next().await.is_some() {}
    let accepted = *accepted.lock().expect("lock");

    let db = dir.path().join("mailroom.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    let (taken, waiting): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE lease_token IS NOT NULL), count(*) FROM queue",
    )
    .fetch_one(&mut conn)
    .await
    .expect("query");
    assert_eq!(taken, 0, "no lease left taken");
    let delivered = received_ids(&relay, &rcpt).len() as i64;
    eprintln!("{accepted} accepted under load; {delivered} delivered, {waiting} waiting");
    assert!(accepted > 60, "the load was real");
    // A request cut off by the shutdown after its commit may be stored without its client
    // having seen the 202: at most one per client.
    assert!(
        (accepted..=accepted + 4).contains(&(delivered + waiting)),
        "every message answered 202 is delivered or waiting ({accepted} accepted, {} stored)",
        delivered + waiting
    );
    assert!(waiting > 0, "the shutdown came mid-run");
}
