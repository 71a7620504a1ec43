//! Tests with the real `mailroom` binary: a `kill -9` in the middle of a load loses nothing that
//! was answered 202, SIGTERM drains without leaving a lease taken, the command line works, and
//! (with PostgreSQL and Redis) several worker processes share one queue and one send rate. Run
//! through `scripts/test`, which starts the servers.

#[cfg(all(feature = "aws", feature = "postgres"))]
mod aws;
mod checks;
mod cli;
mod crash;
#[cfg(all(feature = "kafka", feature = "postgres"))]
mod kafka;
mod proxy;
#[cfg(all(feature = "postgres", feature = "redis"))]
mod scale;
mod torture;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[cfg(all(feature = "aws", feature = "postgres"))]
#[allow(dead_code)]
#[path = "../api/aws/moto.rs"]
mod moto;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use helpers::Relay;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The real-process tests load both cores (a relay, a database, several mailroom processes):
/// they take turns, so that one test's load cannot starve another's rate measurement.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Server {
    pub child: Child,
    pub url: String,
}

/// Starts `mailroom serve` on a free port and waits for its "listening" line.
pub async fn start(data_dir: &Path, env: &[(&str, String)]) -> Server {
    start_role("serve", data_dir, env).await
}

/// Starts `mailroom ROLE` (serve or api) on a free port and waits for its "listening" line.
pub async fn start_role(role: &str, data_dir: &Path, env: &[(&str, String)]) -> Server {
    let mut child = spawn(role, data_dir, env);
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

/// Spawns `mailroom ROLE` with only the given environment (plus a free PORT and DATA_DIR).
pub fn spawn(role: &str, data_dir: &Path, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    cmd.arg(role)
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
    cmd.spawn().expect("the mailroom binary starts")
}

/// Sends the signal `name` (`TERM`, `HUP`) to the process `pid`, as an orchestrator or an
/// operator would.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// GET `url` with the API token: the JSON it answers.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON")
}

/// Every X-Mailroom-Id the relay received for `rcpt`, with how many times.
pub fn received_ids(relay: &Relay, rcpt: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for mail in relay.received_for(rcpt) {
        if let Some(id) = mail.header("X-Mailroom-Id") {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

pub fn archive_objects(dir: &Path, out: &mut Vec<String>) {
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
