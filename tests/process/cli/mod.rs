//! The command line, run as a user would: the commands one by one (this file), `serve` and
//! `api` while they run (`serve.rs`), a worker alone (`worker.rs`), and how settings are read
//! (`settings.rs`).

mod serve;
mod settings;
mod worker;

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

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

/// Runs `args` (a `check`), which must pass or fail as `passes` says and print every one of
/// `lines`.
async fn check_says(d: &Path, env: &[(&str, &str)], args: &[&str], passes: bool, lines: &[&str]) {
    let (ok, out, err) = cli(d, env, args).await;
    assert_eq!(ok, passes, "{out}{err}");
    for line in lines {
        assert!(out.contains(line), "{line} in {out}");
    }
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

    // Where no mailroom has run, commands that read or change messages say so instead of
    // answering from a new, empty database; `send` makes one and says where.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let e = elsewhere.path();
    let unknown = Uuid::now_v7().to_string();
    for args in [
        vec!["status", unknown.as_str()],
        vec!["cancel", unknown.as_str()],
        vec!["dead-letters", "list"],
    ] {
        let (ok, _, err) = cli(e, &[], &args).await;
        assert!(!ok && err.contains("No database at"), "{args:?}: {err}");
    }
    let (ok, _, err) = cli(
        e,
        &[],
        &[
            "send",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--subject",
            "s",
            "--text",
            "t",
        ],
    )
    .await;
    assert!(ok && err.contains("a new one is made"), "{err}");
    let (ok, _, err) = cli(e, &[], &["dead-letters", "list"]).await;
    assert!(ok, "the database exists now: {err}");

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
    // What start-up works out from the settings is shown too, not left unset.
    assert!(
        out.contains("queue_backend = \"database\"")
            && out.contains("archive_url = \"file://")
            && out.contains("templates_dir = "),
        "{out}"
    );

    // A value of the wrong kind is named with what the setting accepts, in words.
    for (var, value, said) in [
        (
            "SEND_RATE_PER_SECOND",
            "fast",
            "SEND_RATE_PER_SECOND=\"fast\" (from environment variable(s)): expected a number.",
        ),
        (
            "PORT",
            "abc",
            "PORT=\"abc\" (from environment variable(s)): expected a whole number from 0 to 65535.",
        ),
        (
            "WORKER_CONCURRENCY",
            "-5",
            "WORKER_CONCURRENCY=-5 (from environment variable(s)): expected a whole number, 0 or more.",
        ),
    ] {
        let (ok, _, err) = cli(d, &[(var, value)], &["config"]).await;
        assert!(!ok);
        assert!(err.contains(&format!("Invalid setting {said}")), "{err}");
    }
    // A RUST_LOG that is no filter is said to be so (and the default levels used).
    let (ok, _, err) = cli(d, &[("RUST_LOG", "mailroom=verbose")], &["config"]).await;
    assert!(ok, "{err}");
    assert!(err.contains("RUST_LOG is not a filter"), "{err}");
    // A file that is not TOML is named, not blamed on "a setting".
    let toml = d.join("broken.toml");
    std::fs::write(&toml, "port = \n").expect("written");
    let path = toml.to_str().expect("utf-8");
    let (ok, _, err) = cli(d, &[], &["--config", path, "config"]).await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "Cannot read the TOML file {path}: TOML parse error"
        )),
        "{err}"
    );
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
    check_says(d, &dead, &["check"], false, &["FAIL  delivery"]).await;
    // Each role is checked for what it uses alone, as its own permissions allow: an API process
    // never reaches the relay, and a worker never reads the token.
    let api = ["check", "--role", "api"];
    check_says(
        d,
        &dead,
        &api,
        true,
        &["ok    delivery: not used by the api"],
    )
    .await;
    let unreadable = [
        ("API_TOKEN_FILE", "/nonexistent/mailroom-token"),
        ("DELIVERY", "smtp"),
        ("SMTP_URL", plain.as_str()),
    ];
    check_says(d, &unreadable, &["check"], false, &["FAIL  token"]).await;
    let worker = ["check", "--role", "worker"];
    let lines = [
        "ok    token: not used by the worker",
        "ok    delivery: smtp reachable",
    ];
    check_says(d, &unreadable, &worker, true, &lines).await;

    let to = unique_rcpt("cli");
    // `send` of one message to `to`, with what else the step gives.
    let send = |more: &[&'static str]| {
        let mut args = vec!["send", "--from", "a@example.com", "--to", to.as_str()];
        args.extend(more);
        args
    };
    let (ok, out, err) = cli(d, &good, &send(&["--subject", "Hi", "--text", "Body"])).await;
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    let (ok, out, _) = cli(d, &good, &["status", &id]).await;
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("status prints JSON");
    assert_eq!(v["status"], "queued");

    // A template in $DATA_DIR/templates: `check` lists it, `send --template` renders it.
    let templates = d.join("templates");
    std::fs::create_dir_all(&templates).expect("mkdir");
    std::fs::write(templates.join("hello.subject"), "Hello {{ name }}").expect("write");
    std::fs::write(templates.join("hello.txt"), "Hi {{ name }}.").expect("write");
    let (ok, out, err) = cli(d, &good, &["check"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ok    templates: 1 loaded from") && out.contains(": hello"),
        "{out}"
    );
    let send_hello = |variables: &'static str| {
        let args = send(&["--template", "hello", "--variables", variables]);
        async move { cli(d, &good, &args).await }
    };
    let (ok, out, err) = send_hello(r#"{"name": "Ann"}"#).await;
    assert!(ok, "{err}");
    let (_, status, _) = cli(d, &good, &["status", out.trim()]).await;
    let v: Value = serde_json::from_str(&status).expect("status prints JSON");
    assert_eq!(v["subject"], "Hello Ann", "{v}");
    let (ok, _, err) = send_hello("{}").await;
    assert!(!ok, "a missing variable fails the command");
    assert!(
        err.contains("variables") && err.contains("undefined"),
        "{err}"
    );
    let (ok, _, err) = send_hello("{name").await;
    assert!(!ok);
    assert!(err.contains("--variables is not JSON"), "{err}");

    // --send-at schedules it; `status` shows when it is due.
    let due = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp();
    let due_text = due.to_string();
    let mut args = send(&["--subject", "Later", "--text", "x", "--send-at"]);
    args.push(&due_text);
    let (ok, out, err) = cli(d, &good, &args).await;
    assert!(ok, "{err}");
    let scheduled = out.trim().to_string();
    let (_, status, _) = cli(d, &good, &["status", &scheduled]).await;
    let v: Value = serde_json::from_str(&status).expect("status prints JSON");
    let shown = v["send_at"].as_str().expect("send_at");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(shown)
            .expect("RFC 3339")
            .timestamp(),
        due
    );
    // `check` counts it apart from the messages waiting to be sent.
    let (_, out, err) = cli(d, &good, &["check"]).await;
    assert!(
        format!("{out}{err}").contains(", 1 scheduled for later"),
        "{out}{err}"
    );
    // `cancel` withdraws it; a second cancel is too late.
    let (ok, out, err) = cli(d, &good, &["cancel", &scheduled]).await;
    assert!(ok && out.contains("cancelled"), "{out}{err}");
    let (_, out, err) = cli(d, &good, &["check"]).await;
    assert!(
        format!("{out}{err}").contains(", 0 scheduled for later"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(d, &good, &["cancel", &scheduled]).await;
    assert!(!ok);
    assert!(err.contains("is cancelled"), "{err}");
    args.pop();
    args.push("tomorrow");
    let (ok, _, err) = cli(d, &good, &args).await;
    assert!(!ok);
    assert!(
        err.contains("send_at") && err.contains("is not a time"),
        "{err}"
    );

    let file = d.join("batch.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"from\": \"a@example.com\", \"to\": \"{to}\", \"subject\": \"one\", \"text\": \"1\"}}\n{{\"from\": \"a@example.com\", \"subject\": \"no recipient\", \"text\": \"2\"}}\n{}\n{{\"from\": \"a@example.com\", \"to\": \"{to}\", \"subject\": \"big\", \"text\": \"{}\"}}\n{{\"from\": \"a@example.com\", \"to\": \"{to}\", \"to\": \"b@example.com\", \"subject\": \"twice\", \"text\": \"5\"}}\r\n{}",
            compat_body("unused"),
            // Over MAX_BODY_BYTES (1 MiB by default), which a line is held to as a request is.
            "x".repeat(1_100_000),
            // The last line has no line end.
            compat_body("unused"),
        ),
    )
    .expect("write");
    let (ok, out, err) = cli(d, &good, &["send", "--file", file.to_str().expect("utf-8")]).await;
    assert!(!ok, "a rejected line fails the command");
    assert!(out.contains("3 queued, 3 rejected"), "{out}");
    assert!(err.contains("line 2") && err.contains("to"), "{err}");
    assert!(
        err.contains("line 4: is 1100") && err.contains("MAX_BODY_BYTES"),
        "{err}"
    );
    assert!(
        err.contains("line 5: the key \"to\" is given twice"),
        "{err}"
    );
    assert!(!err.contains("line 6"), "{err}");
    let waiting = |out: &str| -> u64 {
        let (before, _) = out
            .split_once(" message(s) waiting")
            .expect("check reports the queue");
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count")
    };
    let (_, out, err) = cli(d, &good, &["check"]).await;
    let before = waiting(&format!("{out}{err}"));

    // Blank lines anywhere, the last ones included, are skipped; every message is still queued.
    let message = |n: u32| {
        format!(
            "{{\"from\": \"a@example.com\", \"to\": \"{to}\", \"subject\": \"{n}\", \"text\": \"x\"}}"
        )
    };
    // A line that names no sender takes the one of --from.
    let unsigned = format!("{{\"to\": \"{to}\", \"subject\": \"3\", \"text\": \"x\"}}");
    std::fs::write(
        &file,
        format!("{}\n\n{}\n  \n{unsigned}\n\n", message(1), message(2)),
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    let (ok, out, err) = cli(
        d,
        &good,
        &["send", "--file", path, "--from", "b@example.com"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("3 queued, 0 rejected"), "{out}");
    let (_, out, err) = cli(d, &good, &["check"]).await;
    assert_eq!(waiting(&format!("{out}{err}")), before + 3, "{out}{err}");

    let (ok, _, err) = cli(d, &good, &["dead-letters", "list"]).await;
    assert!(ok);
    assert!(err.contains("0 of 0 dead letter(s) shown"), "{err}");
    let (ok, _, err) = cli(d, &good, &["dead-letters", "list", "--limit", "0"]).await;
    assert!(!ok && err.contains("--limit"), "{err}");
    // Each id named is tried, and each one refused is named.
    let unknown = Uuid::now_v7().to_string();
    let (ok, _, err) = cli(
        d,
        &good,
        &["dead-letters", "redrive", &id, "not-an-id", &unknown],
    )
    .await;
    assert!(!ok, "a queued message is not a dead letter");
    assert!(
        err.contains(&format!("{id} not redriven")) && err.contains("not dead"),
        "{err}"
    );
    assert!(err.contains(&format!("{unknown} not redriven")), "{err}");
    assert!(
        err.contains("not-an-id not redriven: not a message id"),
        "{err}"
    );
    assert!(err.contains("3 of 3 dead letter(s)"), "{err}");
}

/// Sends SIGHUP to the process `pid`.
pub(super) fn hangup(pid: u32) {
    crate::signal(pid, "HUP");
}
