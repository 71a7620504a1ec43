//! Settings as they are written: environment text, TOML keys, token files.

use super::cli;

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
