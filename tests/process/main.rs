//! Tests with the real `mailroom` binary: a `kill -9` in the middle of a load loses nothing that
//! was answered 202, and SIGTERM drains without leaving a lease taken. Run through
//! `scripts/test`, which starts the SMTP relay.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{Relay, compat_body, unique_rcpt};
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Server {
    child: Child,
    url: String,
}

/// Starts `mailroom serve` on a free port and waits for its "listening" line.
async fn start(data_dir: &Path, env: &[(&str, String)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    cmd.arg("serve")
        .env_clear()
        .env("PORT", "0")
        .env("DATA_DIR", data_dir)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the mailroom binary starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("mailroom prints its address within 20 s")
        .expect("stdout is readable")
        .expect("a first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, url }
}

/// Every X-Mailroom-Id the relay received for `rcpt`, with how many times.
fn received_ids(relay: &Relay, rcpt: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for mail in relay.received_for(rcpt) {
        if let Some(id) = mail.header("X-Mailroom-Id") {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

fn archive_objects(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            archive_objects(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(
                p.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// Load `mailroom serve` with a few thousand messages, `kill -9` it while it accepts and
/// delivers, start it again: every message that got a 202 is delivered and archived, with
/// exactly one archive object each; duplicates are no more than what was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_answered_202() {
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!("crash-token-{}", uuid::Uuid::new_v4());
    let rcpt = unique_rcpt("crash");
    let concurrency = 16;
    let env = vec![
        ("API_TOKEN", token.clone()),
        ("DELIVERY", "smtp".to_string()),
        ("SMTP_URL", relay.plain_url()),
        ("SMTP_TIMEOUT_SECS", "2".into()),
        ("COMPAT_RECIPIENT", rcpt.clone()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("SEND_RATE_PER_SECOND", "0".into()),
        ("VISIBILITY_TIMEOUT_SECS", "3".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
    ];
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
    server.child.start_kill().expect("SIGKILL is sent");
    server.child.wait().await.expect("the process is reaped");
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
    let want: HashSet<&String> = accepted.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let received = loop {
        let got = received_ids(&relay, &rcpt);
        if want.iter().all(|id| got.contains_key(*id)) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted messages delivered after restart",
            want.iter().filter(|id| got.contains_key(**id)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Every 202 delivered; the store says so too.
    let client = reqwest::Client::new();
    let mut not_delivered = Vec::new();
    for id in &accepted {
        let v: Value = client
            .get(format!("{}/v1/messages/{id}", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        if v["status"] != "delivered" {
            not_delivered.push((id.clone(), v["status"].clone()));
        }
    }
    assert!(
        not_delivered.is_empty(),
        "{} not recorded delivered, e.g. {:?}",
        not_delivered.len(),
        &not_delivered[..not_delivered.len().min(3)]
    );

    // Exactly one archive object per accepted message.
    let mut objects = Vec::new();
    archive_objects(&dir.path().join("archive"), &mut objects);
    for id in &accepted {
        let n = objects.iter().filter(|o| o.contains(id.as_str())).count();
        assert_eq!(n, 1, "archive objects for {id}");
    }
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    eprintln!("duplicates after kill -9: {duplicates} (worker concurrency {concurrency})");
    assert!(
        duplicates <= concurrency,
        "duplicates {duplicates} exceed what could be in flight"
    );
    server.child.start_kill().expect("stop");
}

/// SIGTERM under load: the process exits within the grace period with status 0, and no lease
/// is left taken in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_leaves_no_lease() {
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
    for _ in 0..60 {
        let r = client
            .post(format!("{}/api/email", server.url))
            .json(&compat_body(&token))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = server.child.id().expect("running").to_string();
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(8), server.child.wait())
        .await
        .expect("exits within the grace period")
        .expect("reaped");
    assert!(exit.success(), "exit status {exit:?}");
    eprintln!("SIGTERM to exit: {:?}", sent.elapsed());

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
    assert_eq!(
        delivered + waiting,
        60,
        "every message is delivered or waiting"
    );
    assert!(waiting > 0, "the shutdown came mid-run");
}

/// Runs the binary with `args` and only the given environment; returns (success, stdout, stderr).
async fn cli(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command line: `config` redacts secrets, a bad setting names its variable, `check` reaches
/// the relay (and fails on a dead one), `send` queues one message or a JSONL file, `status`
/// shows it, `dead-letters list` runs.
#[tokio::test]
async fn command_line() {
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let smtp_url = format!("smtp://user:hunter2-secret@127.0.0.1:{}", relay.port);
    let base = [
        ("API_TOKEN", "cli-token-0123456789abcdef"),
        ("DELIVERY", "smtp"),
        ("SMTP_URL", smtp_url.as_str()),
    ];

    let (ok, out, _) = cli(d, &base, &["config"]).await;
    assert!(ok);
    assert!(
        !out.contains("hunter2") && !out.contains("cli-token"),
        "{out}"
    );
    assert!(
        out.contains("[redacted]") && out.contains("delivery = \"smtp\""),
        "{out}"
    );

    let (ok, _, err) = cli(d, &[("SEND_RATE_PER_SECOND", "fast")], &["config"]).await;
    assert!(!ok);
    assert!(err.contains("SEND_RATE_PER_SECOND"), "{err}");
    let (ok, _, err) = cli(d, &[("QUEUE_BACKEND", "carrier-pigeon")], &["check"]).await;
    assert!(!ok);
    assert!(
        err.contains("QUEUE_BACKEND") && err.contains("database, sqs, kafka"),
        "{err}"
    );

    let plain = format!("smtp://127.0.0.1:{}", relay.port);
    let good = [
        ("API_TOKEN", "cli-token-0123456789abcdef"),
        ("DELIVERY", "smtp"),
        ("SMTP_URL", plain.as_str()),
    ];
    let (ok, out, err) = cli(d, &good, &["check"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok    delivery: smtp reachable"), "{out}");
    let dead = [
        ("API_TOKEN", "cli-token-0123456789abcdef"),
        ("DELIVERY", "smtp"),
        ("SMTP_URL", "smtp://127.0.0.1:1"),
    ];
    let (ok, out, _) = cli(d, &dead, &["check"]).await;
    assert!(!ok);
    assert!(out.contains("FAIL  delivery"), "{out}");

    let to = unique_rcpt("cli");
    let (ok, out, err) = cli(
        d,
        &good,
        &[
            "send",
            "--from",
            "a@example.com",
            "--to",
            &to,
            "--subject",
            "Hi",
            "--text",
            "Body",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    let (ok, out, _) = cli(d, &good, &["status", &id]).await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("status prints JSON");
    assert_eq!(v["status"], "queued");

    let file = d.join("batch.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"from\": \"a@example.com\", \"to\": \"{to}\", \"subject\": \"one\", \"text\": \"1\"}}\n{{\"from\": \"a@example.com\", \"subject\": \"no recipient\", \"text\": \"2\"}}\n{}\n",
            compat_body("unused")
        ),
    )
    .expect("write");
    let (ok, out, err) = cli(d, &good, &["send", "--file", file.to_str().expect("utf-8")]).await;
    assert!(!ok, "a rejected line fails the command");
    assert!(out.contains("2 queued, 1 rejected"), "{out}");
    assert!(err.contains("line 2") && err.contains("to"), "{err}");

    let (ok, _, err) = cli(d, &good, &["dead-letters", "list"]).await;
    assert!(ok);
    assert!(err.contains("0 dead letter(s)"), "{err}");
    let (ok, _, err) = cli(d, &good, &["dead-letters", "redrive", &id]).await;
    assert!(!ok, "a queued message is not a dead letter");
    assert!(err.contains("not dead"), "{err}");
}
