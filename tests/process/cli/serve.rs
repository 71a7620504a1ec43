//! `mailroom serve` and `mailroom api` while they run: template reloads, logs, a paused
//! provider, the dead-letter gauge.

use serde_json::Value;
use tokio::process::Command;

use super::hangup;
use crate::helpers::{Relay, compat_body, unique_rcpt};

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

    // A syntax error: the reload fails (counted: waited for, so the check below follows it)
    // and the set in use stays.
    let failed_reloads = || async {
        let text = crate::checks::metrics_text(&api).await;
        crate::checks::metric(&text, "mailroom_template_reloads_total{outcome=\"failed\"}")
    };
    assert_eq!(failed_reloads().await, 0.0);
    write("hello.subject", "Hello {{ name");
    hangup(pid);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while failed_reloads().await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a failed reload within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        api.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    assert_eq!(render("hello").await, Ok("Welcome back, Ann".to_string()));
    assert_eq!(render("bye").await, Ok("Goodbye Ann".to_string()));
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

/// `mailroom serve` on a fresh data directory, delivering compat messages to `rcpt` through the
/// test relay (plain SMTP) with `token`.
async fn serve_through_the_relay(
    token: &str,
    rcpt: &str,
) -> (tempfile::TempDir, Relay, crate::Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = Relay::from_env();
    let env = crate::checks::smtp_env(relay.plain_url(), token, rcpt);
    let server = crate::start(dir.path(), &env).await;
    (dir, relay, server)
}

/// `mailroom serve` whose relay says the account's daily quota is used up: delivery pauses
/// (the message stays queued, no attempt used), and `/ready` reports the pause as `degraded`
/// with a 200, so the process stays in its load balancer and goes on accepting messages.
/// (Before, `/ready` answered 503 for as long as the provider refused, and an orchestrator
/// replaced the task again and again.)
#[tokio::test]
async fn a_paused_provider_leaves_serve_ready_to_accept() {
    let _turn = crate::HEAVY.lock().await;
    let token = "paused-token-0123456789abcdef";
    let rcpt = unique_rcpt("quota-1000");
    let (_dir, relay, server) = serve_through_the_relay(token, &rcpt).await;
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
/// the store again. The dead letter is listed and redriven with the command line, beside the
/// running server, as an operator on the host would; the server delivers the redriven copy.
#[tokio::test]
async fn the_dead_letter_gauge_follows_the_store() {
    let _turn = crate::HEAVY.lock().await;
    let token = "gauge-token-0123456789abcdef";
    // Refused once, so the redriven copy is delivered.
    let rcpt = unique_rcpt("fail-550-1");
    let (dir, relay, server) = serve_through_the_relay(token, &rcpt).await;
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
    let (ok, out, err) = super::cli(dir.path(), &[], &["dead-letters", "list"]).await;
    assert!(ok && out.contains(&id) && out.contains("550"), "{out}{err}");
    let (ok, out, err) = super::cli(dir.path(), &[], &["dead-letters", "redrive", &id]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{id} redriven")), "{out}");
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

/// `mailroom serve` with no settings at all (DESIGN.md's first run): it makes its data directory
/// and a token, saves the token, and prints the address, the token and a curl command that works
/// as printed; started again on the same directory, it keeps the token and prints only where it
/// is.
#[tokio::test]
async fn a_first_run_prints_the_address_the_token_and_a_working_curl() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("new-data-dir");
    // Starts `serve` on the data directory and reads the first `n` lines it prints.
    let start = |n: usize| {
        let data = data.clone();
        async move {
            let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
                .arg("serve")
                .env_clear()
                .env("DATA_DIR", &data)
                .env("PORT", "0")
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("the binary runs");
            let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            let mut printed = Vec::new();
            while printed.len() < n {
                let line =
                    tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
                        .await
                        .expect("printed within 20 s")
                        .expect("readable")
                        .expect("a line");
                printed.push(line);
            }
            (child, printed)
        }
    };
    let (mut first, printed) = start(6).await;
    let text = printed.join("\n");
    let url = printed[0]
        .strip_prefix("mailroom is listening on ")
        .unwrap_or_else(|| panic!("the address first: {text}"));
    let saved = std::fs::read_to_string(data.join("token")).expect("the token is saved");
    let token = saved.trim();
    assert!(token.len() >= 32, "a long random token: {token:?}");
    assert_eq!(printed[2].trim(), token, "the token printed: {text}");
    assert!(
        printed[1].contains(&data.join("token").display().to_string()),
        "where it is saved: {text}"
    );
    // The curl command, run as printed (its two lines joined as a shell would).
    let curl = printed[4..6].join("\n");
    assert!(curl.trim_start().starts_with("curl "), "{text}");
    assert!(curl.contains(url) && curl.contains(token), "{curl}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&curl)
        .output()
        .await
        .expect("curl runs");
    let answer = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(v["status"], "queued", "{v}");
    first.kill().await.expect("stopped");

    let (_second, again) = start(2).await;
    assert!(
        again[0].starts_with("mailroom is listening on "),
        "{again:?}"
    );
    assert!(again[1].starts_with("API token: in "), "{again:?}");
    assert!(
        !again.join("\n").contains(token),
        "the token is not printed again"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("token"))
            .expect("kept")
            .trim(),
        token
    );
}
