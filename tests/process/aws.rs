//! The AWS deployment with the real binary: `mailroom api` and `mailroom worker` as separate
//! processes sharing one SQS queue (with a redrive policy), one S3 bucket and one PostgreSQL
//! store, the API token read from SSM; and settings given as `ssm:` / `secretsmanager:`
//! references.

use std::time::{Duration, Instant};

use crate::cli::cli;
use crate::helpers::{accepted_id, compat_body, fresh_pg_database};
use crate::moto::{Moto, REGION};
use crate::{spawn, start_role};

/// What every process needs to reach moto at `endpoint` (moto's own, or a forwarder in front of
/// it); the processes start with an empty environment.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
    ];
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        let value = std::env::var(var)
            .unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test"));
        env.push((var, value));
    }
    env
}

/// Polls `f` every 200 ms until it gives `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A compat payload posted to the api lands as the right JSON object in the bucket after the
/// worker sent it through SES; a poison message ends in the dead-letter queue after
/// maxReceiveCount receives; a rotated SSM token is in force within its TTL; a message due
/// later reaches SQS through the worker's scheduler, no earlier than its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_over_sqs_s3_and_ssm() {
    let _heavy = crate::HEAVY.lock().await;
    let moto = Moto::start().await;
    let (queue_url, dlq_url) = moto.queue_with_dlq("e2e", 2, None).await;
    moto.bucket("e2e-archive").await;
    moto.verify_sender("noreply@example.com").await;
    moto.put_parameter("/mailroom/e2e/api-token", "e2e-token-one")
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = aws_env(&moto.endpoint);
    env.extend([
        ("DATABASE_URL", fresh_pg_database().await),
        ("QUEUE_BACKEND", "sqs".into()),
        ("SQS_QUEUE_URL", queue_url.clone()),
        ("SQS_WAIT_TIME_SECS", "1".into()),
        ("VISIBILITY_TIMEOUT_SECS", "2".into()),
        ("SMTP_TIMEOUT_SECS", "1".into()),
        ("ARCHIVE_URL", "s3://e2e-archive/mail".into()),
        ("DELIVERY", "ses".into()),
        ("DEFAULT_FROM", "noreply@example.com".into()),
        ("COMPAT_RECIPIENT", "inbox@example.net".into()),
        ("SEND_RATE_PER_SECOND", "20".into()),
        ("SSM_TOKEN_PARAMETER", "/mailroom/e2e/api-token".into()),
        ("SSM_TOKEN_TTL_SECS", "2".into()),
    ]);
    let api_dir = dir.path().join("api");
    let worker_dir = dir.path().join("worker");
    let api = start_role("api", &api_dir, &env).await;
    let _worker = spawn("worker", &worker_dir, &env);
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{}/api/email", api.url))
        .json(&compat_body("e2e-token-one"))
        .send()
        .await
        .expect("sent");
    let id = accepted_id(r).await;
    let key = eventually(Duration::from_secs(30), "archiving to S3", || async {
        moto.keys("e2e-archive")
            .await
            .into_iter()
            .find(|k| k.ends_with(&format!("-{id}.json")))
    })
    .await;
    assert!(
        key.starts_with("mail/emails/2023/11/14/email-1700000000-"),
        "{key}"
    );
    let doc = moto.object("e2e-archive", &key).await;
    assert_eq!(doc["email_subject"], "Welcome");
    assert_eq!(doc["email_sender"], "John doe");
    assert_eq!(doc["email_timestream"], "1700000000");
    assert_eq!(doc["email_content"], "Hello from the compat API.");
    assert_eq!(doc["outcome"]["status"], "delivered", "{doc}");
    let sent = moto.ses_sent().await;
    assert!(
        sent.iter()
            .any(|m| m["raw_data"].as_str().unwrap_or_default().contains(&id)),
        "SES has the message"
    );

    // A message due later waits in PostgreSQL, and the worker's scheduler hands it to SQS when
    // its time has come.
    let due = chrono::Utc::now() + chrono::Duration::seconds(2);
    let r = http
        .post(format!("{}/v1/messages", api.url))
        .bearer_auth("e2e-token-one")
        .json(
            &serde_json::json!({"to": ["later@example.net"], "subject": "Later",
                                  "text": "t", "send_at": due.to_rfc3339()}),
        )
        .send()
        .await
        .expect("sent");
    let later = accepted_id(r).await;
    let m = eventually(
        Duration::from_secs(30),
        "the scheduled message delivered",
        || async {
            let v: serde_json::Value = http
                .get(format!("{}/v1/messages/{later}", api.url))
                .bearer_auth("e2e-token-one")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["status"] == "delivered").then_some(v)
        },
    )
    .await;
    let delivered = m["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "delivered")
        .and_then(|e| e["at"].as_str())
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .expect("a delivered event");
    assert!(delivered >= due, "sent at {delivered}, due {due}");

    moto.sqs()
        .send_message()
        .queue_url(&queue_url)
        .message_body("{\"not\": \"a mailroom message\"}")
        .send()
        .await
        .expect("poison sent");
    let poison = eventually(
        Duration::from_secs(30),
        "the poison message reaching the DLQ",
        || async { moto.drain(&dlq_url).await.into_iter().next() },
    )
    .await;
    assert_eq!(poison.0, "{\"not\": \"a mailroom message\"}");

    let status = |token: &'static str| {
        let req = http
            .get(format!("{}/v1/messages", api.url))
            .bearer_auth(token);
        async move { req.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(status("e2e-token-one").await, 200);
    moto.put_parameter("/mailroom/e2e/api-token", "e2e-token-two")
        .await;
    let rotated = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the rotated token taking effect",
        || async { (status("e2e-token-two").await == 200).then_some(()) },
    )
    .await;
    assert!(
        rotated.elapsed() <= Duration::from_secs(3),
        "picked up within the 2 s TTL (plus a poll): {:?}",
        rotated.elapsed()
    );
    // The old token is accepted for two TTLs after the new one was seen, then refused.
    assert_eq!(
        status("e2e-token-one").await,
        200,
        "the old token, meanwhile"
    );
    eventually(
        Duration::from_secs(8),
        "the old token being refused",
        || async { (status("e2e-token-one").await == 401).then_some(()) },
    )
    .await;
}

/// Any setting may name an SSM parameter or a Secrets Manager secret (a JSON key of it).
#[tokio::test]
async fn settings_from_ssm_and_secrets_manager() {
    let moto = Moto::start().await;
    moto.put_parameter("/mailroom/e2e/default-from", "ops@example.com")
        .await;
    aws_sdk_secretsmanager::Client::new(&moto.config)
        .create_secret()
        .name("mailroom/e2e")
        .secret_string(r#"{"recipient": "inbox@example.net", "other": "x"}"#)
        .send()
        .await
        .expect("secret created");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = aws_env(&moto.endpoint);
    env.extend([
        ("DEFAULT_FROM", "ssm:/mailroom/e2e/default-from".to_string()),
        (
            "COMPAT_RECIPIENT",
            "secretsmanager:mailroom/e2e#recipient".to_string(),
        ),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = cli(dir.path(), &env, &["config"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("default_from = \"ops@example.com\""), "{out}");
    assert!(
        out.contains("compat_recipient = \"inbox@example.net\""),
        "{out}"
    );

    let mut missing = env.clone();
    missing.push(("DATABASE_URL", "ssm:/mailroom/e2e/no-such-parameter"));
    let (ok, _, err) = cli(dir.path(), &missing, &["config"]).await;
    assert!(!ok);
    assert!(
        err.contains("DATABASE_URL") && err.contains("/mailroom/e2e/no-such-parameter"),
        "{err}"
    );
}

/// `send --file` on SQS refuses a line too large for the queue as that line, by its number, and
/// queues every other line: not the whole chunk it would have been sent with.
#[tokio::test]
async fn send_file_refuses_a_line_sqs_cannot_carry_alone() {
    let moto = Moto::start().await;
    let (queue_url, _) = moto.queue_with_dlq("send-file", 2, Some(1_024)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = aws_env(&moto.endpoint);
    env.extend([
        ("QUEUE_BACKEND", "sqs".into()),
        ("SQS_QUEUE_URL", queue_url.clone()),
        ("DELIVERY", "none".into()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let line = |text: &str| {
        serde_json::json!({"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": text})
            .to_string()
    };
    let file = dir.path().join("messages.jsonl");
    let lines = [line("one"), line(&"x".repeat(2_000)), line("three")];
    std::fs::write(&file, lines.join("\n")).expect("write");
    let path = file.to_str().expect("utf-8");
    let (ok, out, err) = cli(dir.path(), &env, &["send", "--file", path]).await;
    assert!(!ok, "a refused line fails the command");
    assert!(out.contains("2 queued, 1 rejected"), "{out}{err}");
    assert!(err.contains("line 2:") && err.contains("at most"), "{err}");
    let bodies: Vec<String> = moto
        .drain(&queue_url)
        .await
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.iter().all(|b| !b.contains("xxxx")), "{bodies:?}");
}

/// A backend on AWS with no region anywhere (environment, profile, instance metadata) stops
/// `check` and start-up with a sentence naming the setting and AWS_REGION, not the SDK's
/// "Missing Region" dispatch failure at the first call.
#[tokio::test]
async fn a_missing_region_is_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: Vec<(&str, String)> = aws_env("http://127.0.0.1:9")
        .into_iter()
        .filter(|(var, _)| *var != "AWS_REGION")
        .chain([("DELIVERY", "ses".to_string())])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = cli(dir.path(), &env, &["check"]).await;
    assert!(!ok);
    assert!(
        out.contains("DELIVERY=ses needs an AWS region: set AWS_REGION"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(dir.path(), &env, &["worker"]).await;
    assert!(!ok);
    assert!(err.contains("DELIVERY=ses needs an AWS region"), "{err}");
}
