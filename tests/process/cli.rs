//! The command line, run as a user would.

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

/// A worker alone serves `/health` and `/metrics` on PORT (it has no API there), so container
/// health checks and Prometheus reach every role; `mailroom healthcheck` probes it, and with
/// METRICS_PORT set probes that port instead, where every role answers `/health` too. A worker
/// whose PORT is taken still works, and a SIGHUP does not end a worker.
#[tokio::test]
async fn a_worker_alone_answers_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let env = [("DELIVERY", "none".to_string())];
    let mut worker = crate::start_role("worker", d, &env).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", worker.url))
        .send()
        .await
        .expect("the worker answers");
    assert_eq!(health.status(), 200);
    // The gauges are set by a task that starts beside the server: give it a moment.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http
            .get(format!("{}/metrics", worker.url))
            .send()
            .await
            .expect("the worker answers")
            .text()
            .await
            .expect("text");
        if metrics.contains("mailroom_rate_limit_per_second") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("mailroom_rate_limit_per_second"),
        "{metrics}"
    );
    // What this port does not serve is a JSON error, as on the API's port.
    for (method, path, status) in [
        (reqwest::Method::GET, "/ready", 404),
        (reqwest::Method::POST, "/v1/messages", 404),
        (reqwest::Method::POST, "/health", 405),
    ] {
        let r = http
            .request(method, format!("{}{path}", worker.url))
            .send()
            .await
            .expect("the worker answers");
        assert_eq!(r.status(), status, "{path}");
        let body: serde_json::Value = r.json().await.expect("a JSON error");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    // Series of rare events are there from the start, at zero, for dashboards and rate().
    for (name, label) in [
        ("mailroom_archive_failures_total", ""),
        ("mailroom_redrives_total", ""),
        ("mailroom_delivery_paused", ""),
        ("mailroom_deliveries_total", "outcome=\"dead\""),
    ] {
        let at_zero = metrics.lines().any(|l| {
            l.starts_with(name)
                && l.contains(label)
                && l.rsplit_once(' ').is_some_and(|(_, v)| v == "0")
        });
        assert!(at_zero, "{name} {label} at 0 in {metrics}");
    }
    let port = worker.url.rsplit(':').next().expect("a port").to_string();
    let (ok, _, err) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(ok, "healthcheck on PORT: {err}");
    // An address given as the URL the server printed is taken too.
    let (ok, _, err) = cli(d, &[], &["healthcheck", "--addr", &worker.url]).await;
    assert!(ok, "healthcheck --addr {}: {err}", worker.url);
    // With METRICS_PORT set, the health check goes there (here: to the same worker), not to PORT.
    let (ok, _, err) = cli(
        d,
        &[("PORT", "1"), ("METRICS_PORT", &port)],
        &["healthcheck"],
    )
    .await;
    assert!(ok, "healthcheck on METRICS_PORT: {err}");
    // SIGHUP reloads what an API has; a worker has nothing to reload and keeps running.
    hangup(worker.child.id().expect("running"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        worker.child.try_wait().expect("status").is_none(),
        "a worker keeps running after SIGHUP"
    );
    let (ok, _, err) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(ok, "healthcheck after SIGHUP: {err}");
    // A second worker whose PORT is taken (as beside an api on one machine) runs without them.
    let other = tempfile::tempdir().expect("tempdir");
    let mut second = crate::spawn("worker", other.path(), &[("PORT", port.clone())]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        second.try_wait().expect("status").is_none(),
        "a worker whose PORT is taken keeps running"
    );
    second.kill().await.expect("kill");
    worker.child.kill().await.expect("kill");
    let (ok, _, _) = cli(d, &[("PORT", &port)], &["healthcheck"]).await;
    assert!(!ok, "nothing answers once the worker is gone");
}

/// SIGHUP makes a running API load `TEMPLATES_DIR` again: a changed template renders the new way
/// and a new one can be named, without a restart. A set that does not load leaves the one in use
/// (and the process) as it was.
#[tokio::test]
async fn sighup_reloads_the_templates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).expect("mkdir");
    let write = |name: &str, text: &str| std::fs::write(templates.join(name), text).expect("write");
    write("hello.subject", "Hello {{ name }}");
    write("hello.txt", "Hi.");
    let token = format!("reload-token-{}", uuid::Uuid::new_v4());
    let env = [
        ("API_TOKEN", token.clone()),
        ("DELIVERY", "none".to_string()),
    ];
    let mut api = crate::start_role("api", dir.path(), &env).await;
    let http = reqwest::Client::new();
    let url = api.url.clone();
    let render = |template: &'static str| rendered_subject(&http, &url, &token, template);
    let pid = api.child.id().expect("running");
    assert_eq!(render("hello").await, Ok("Hello Ann".to_string()));
    assert!(render("bye").await.is_err(), "not loaded yet");

    write("hello.subject", "Welcome back, {{ name }}");
    write("bye.subject", "Goodbye {{ name }}");
    write("bye.txt", "Bye.");
    hangup(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while render("bye").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "reloaded within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(render("hello").await, Ok("Welcome back, Ann".to_string()));
    assert_eq!(render("bye").await, Ok("Goodbye Ann".to_string()));

    // A syntax error: the reload fails and the set in use stays.
    write("hello.subject", "Hello {{ name");
    hangup(pid);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        api.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    assert_eq!(render("hello").await, Ok("Welcome back, Ann".to_string()));
    assert_eq!(render("bye").await, Ok("Goodbye Ann".to_string()));
}

/// Sends SIGHUP to the process `pid`.
fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The subject `mailroom api` at `url` renders for `template` (with `name` Ann), or the error
/// message it answers.
async fn rendered_subject(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    template: &str,
) -> Result<String, String> {
    let v: Value = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(token)
        .json(
            &serde_json::json!({"from": "a@example.com", "to": ["b@example.com"],
                                  "template": template, "variables": {"name": "Ann"}}),
        )
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let Some(id) = v["message_id"].as_str() else {
        return Err(v["error"]["message"].to_string());
    };
    let m = crate::get_json(http, &format!("{url}/v1/messages/{id}"), token).await;
    Ok(m["subject"].as_str().expect("a subject").to_string())
}

/// Even with every log on (`RUST_LOG=trace`), a delivery through a relay with AUTH leaves
/// neither the relay's password nor the base64 `AUTH PLAIN` argument that carries it in the
/// logs, nor the API token.
#[tokio::test]
async fn no_secret_reaches_the_logs_at_trace_level() {
    use base64::Engine;
    use tokio::io::AsyncReadExt;
    let relay = Relay::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "trace-token-0123456789abcdef";
    let smtp_url = format!(
        "smtp://{}:{}@127.0.0.1:{}?tls=required&ca_file={}",
        relay.user, relay.password, relay.tls_port, relay.ca
    );
    let to = unique_rcpt("trace");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("serve")
        .env_clear()
        .env("PORT", "0")
        .env("DATA_DIR", dir.path())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .env("API_TOKEN", token)
        .env("DELIVERY", "smtp")
        .env("SMTP_URL", &smtp_url)
        .env("COMPAT_RECIPIENT", &to)
        .env("DEFAULT_FROM", "noreply@example.com")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut stderr = child.stderr.take().expect("piped");
    let logs = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all).await;
        String::from_utf8_lossy(&all).into_owned()
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut printed = Vec::new();
    let url = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), stdout.read(&mut chunk))
            .await
            .expect("the address within 20 s")
            .expect("stdout");
        assert!(n > 0, "stdout closed before the address");
        printed.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&printed);
        if let Some(url) = text.split_whitespace().find(|w| w.starts_with("http://")) {
            break url.to_string();
        }
    };
    tokio::spawn(async move { while stdout.read(&mut [0u8; 4096]).await.is_ok_and(|n| n > 0) {} });
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/api/email"))
        .json(&compat_body(token))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while relay.received_for(&to).is_empty() {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        relay.received_for(&to)[0].login.as_deref(),
        Some(relay.user.as_str())
    );
    child.kill().await.expect("killed");
    let logs = logs.await.expect("logs read");
    assert!(
        logs.len() > 10_000,
        "trace logs were written: {} bytes",
        logs.len()
    );
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{}", relay.user, relay.password));
    for secret in [relay.password.as_str(), plain.as_str(), token] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

/// `mailroom serve` whose relay says the account's daily quota is used up: delivery pauses
/// (the message stays queued, no attempt used), and `/ready` reports the pause as `degraded`
/// with a 200, so the process stays in its load balancer and goes on accepting messages.
/// (Before, `/ready` answered 503 for as long as the provider refused, and an orchestrator
/// replaced the task again and again.)
#[tokio::test]
async fn a_paused_provider_leaves_serve_ready_to_accept() {
    let _turn = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::from_env();
    let token = "paused-token-0123456789abcdef";
    let rcpt = unique_rcpt("quota-1000");
    let env = crate::checks::smtp_env(relay.plain_url(), token, &rcpt);
    let server = crate::start(dir.path(), &env).await;
    let http = reqwest::Client::new();
    let post = || async {
        http.post(format!("{}/api/email", server.url))
            .json(&compat_body(token))
            .send()
            .await
            .expect("sent")
            .status()
    };
    assert_eq!(post().await, 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = loop {
        let ready: Value = http
            .get(format!("{}/ready", server.url))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON");
        if ready["checks"]["delivery"] != "ok" {
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never paused: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(ready["status"], "degraded", "{ready}");
    let status = http
        .get(format!("{}/ready", server.url))
        .send()
        .await
        .expect("sent")
        .status();
    assert_eq!(status, 200);
    assert!(
        ready["checks"]["delivery"]
            .as_str()
            .is_some_and(|d| d.starts_with("paused: ") && d.contains("quota")),
        "{ready}"
    );
    assert_eq!(post().await, 202, "still accepting while paused");
    assert!(relay.received_for(&rcpt).is_empty());
}

/// `mailroom serve` publishes how many messages are dead-lettered now: a 550 turns the gauge to
/// 1 within a maintenance round (5 s), and a redrive of it back to 0 once the next round reads
/// the store again.
#[tokio::test]
async fn the_dead_letter_gauge_follows_the_store() {
    let _turn = crate::HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::from_env();
    let token = "gauge-token-0123456789abcdef";
    // Refused once, so the redriven copy is delivered.
    let rcpt = unique_rcpt("fail-550-1");
    let env = crate::checks::smtp_env(relay.plain_url(), token, &rcpt);
    let server = crate::start(dir.path(), &env).await;
    let http = reqwest::Client::new();
    let gauge_reaches = |want: f64| {
        let server = &server;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            loop {
                let text = crate::checks::metrics_text(server).await;
                let got = crate::checks::metric(&text, "mailroom_dead_letters");
                if got == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "mailroom_dead_letters stayed {got}, not {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let r = http
        .post(format!("{}/api/email", server.url))
        .json(&compat_body(token))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.expect("JSON")["message_id"]
        .as_str()
        .expect("an id")
        .to_string();
    gauge_reaches(1.0).await;
    let r = http
        .post(format!("{}/v1/dead-letters/{id}/redrive", server.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    gauge_reaches(0.0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while relay.received_for(&rcpt).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the redriven copy never went out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(relay.received_for(&rcpt).len(), 1, "sent once");
}

/// Settings are read as they are written: a number or a boolean may be given as text (every
/// environment variable is), text that looks like a number stays text, a token keeps its
/// leading zeros, a decimal is not rounded, blanks around a value are dropped, a key of the
/// TOML file that is no setting is refused by name, and a token file is held to the token's
/// 16-character minimum.
#[tokio::test]
async fn settings_are_read_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ok, out, err) = cli(
        d,
        &[
            ("INSTANCE_ID", "1"),
            ("REDIS_KEY_PREFIX", "0123"),
            ("SES_CONFIGURATION_SET", "2024"),
            ("PORT", "8081"),
            ("KAFKA_CREATE_TOPICS", "true"),
            ("SEND_RATE_PER_SECOND", "0.1"),
            ("DELIVERY", " none\n"),
        ],
        &["config"],
    )
    .await;
    assert!(ok, "{err}");
    for line in [
        "instance_id = \"1\"",
        "redis_key_prefix = \"0123\"",
        "ses_configuration_set = \"2024\"",
        "port = 8081",
        "kafka_create_topics = true",
        "send_rate_per_second = 0.1",
        "delivery = \"none\"",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    let (ok, _, err) = cli(d, &[("PORT", "eighty")], &["config"]).await;
    assert!(!ok && err.contains("PORT"), "{err}");

    let file = d.join("mailroom.toml");
    std::fs::write(&file, "send_rate_per_sec = 1\n").expect("write");
    let (ok, _, err) = cli(
        d,
        &[],
        &["--config", file.to_str().expect("utf-8"), "config"],
    )
    .await;
    assert!(!ok, "a misspelt key is refused");
    assert!(
        err.contains("`send_rate_per_sec`") && err.contains("lower case"),
        "{err}"
    );

    // `check` on a fresh data directory leaves the token to the first start, which prints it.
    let fresh = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = cli(fresh.path(), &[], &["check", "--role", "api"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok    token: none saved yet"), "{out}");
    assert!(!fresh.path().join("token").exists(), "check made a token");

    // The token as written, its leading zero kept; one pair of quotes around it is taken off
    // (env files for `docker run --env-file` keep them).
    let token = "0123456789abcdef";
    let server = crate::start(d, &[("API_TOKEN", format!("\"{token}\""))]).await;
    let http = reqwest::Client::new();
    let posted = |bearer: &'static str| {
        http.post(format!("{}/v1/messages", server.url))
            .bearer_auth(bearer)
            .json(&serde_json::json!({
                "from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t",
            }))
            .send()
    };
    assert_eq!(posted(token).await.expect("sent").status(), 202);
    assert_eq!(
        posted("\"0123456789abcdef\"").await.expect("sent").status(),
        401
    );
    drop(server);

    let short = d.join("short-token");
    std::fs::write(&short, "short\n").expect("write");
    let (ok, out, err) = cli(
        d,
        &[("API_TOKEN_FILE", short.to_str().expect("utf-8"))],
        &["serve"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("5 characters") && err.contains("at least 16"),
        "{err}"
    );
}
