//! The command line, run as a user would.

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{Relay, compat_body, unique_rcpt};

/// Runs the binary with `args` and only the given environment; returns (success, stdout, stderr).
pub async fn cli(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
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
    assert!(
        out.contains("ok    rate limit: 7/s ceiling reachable"),
        "{out}"
    );
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
