//! `POST /api/email`: the compatibility contract.

use serde_json::{Value, json};

use crate::helpers::{compat_body, error_field, spawn_app};

/// A valid compat payload is answered 202 with an id, and the message is recorded as queued.
#[tokio::test]
async fn valid_payload_is_accepted() {
    let app = spawn_app().await;
    let r = app.post_compat(&compat_body(&app.token)).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("JSON");
    let id = v["message_id"].as_str().expect("message_id");
    let m = app.get_message(id).await;
    assert_eq!(m["status"], "queued");
    assert_eq!(m["subject"], "Welcome");
    assert_eq!(m["events"][0]["kind"], "accepted");
}

/// A missing or wrong token is 401, whether or not the fields are valid.
#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let app = spawn_app().await;
    let mut body = compat_body("not-the-token");
    let r = app.post_compat(&body).await;
    assert_eq!(error_field(r, 401).await.0, "unauthorized");
    body.as_object_mut().expect("object").remove("token");
    let r = app.post_compat(&body).await;
    assert_eq!(error_field(r, 401).await.0, "unauthorized");
    body["token"] = json!("");
    assert_eq!(app.post_compat(&body).await.status(), 401);
    body["token"] = json!(12);
    let (code, field) = error_field(app.post_compat(&body).await, 400).await;
    assert_eq!((code.as_str(), field.as_str()), ("invalid_field", "token"));
    // An empty body token is no token: a valid `Authorization: Bearer` then counts, as it does
    // when the body has none (before, the empty one won and the answer was 401).
    body["token"] = json!("");
    let r = app
        .client
        .post(app.url("/api/email"))
        .bearer_auth(&app.token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
}

/// Each missing, empty or mistyped field is a 400 naming that field.
#[tokio::test]
async fn every_field_error_names_the_field() {
    let app = spawn_app().await;
    for name in [
        "email_subject",
        "email_sender",
        "email_timestream",
        "email_content",
    ] {
        let field = format!("data.{name}");
        let mut missing = compat_body(&app.token);
        missing["data"]
            .as_object_mut()
            .expect("object")
            .remove(name);
        assert_eq!(
            error_field(app.post_compat(&missing).await, 400).await.1,
            field,
            "missing {name}"
        );

        let mut empty = compat_body(&app.token);
        empty["data"][name] = json!("");
        assert_eq!(
            error_field(app.post_compat(&empty).await, 400).await.1,
            field,
            "empty {name}"
        );

        let mut mistyped = compat_body(&app.token);
        mistyped["data"][name] = json!(1700000000);
        assert_eq!(
            error_field(app.post_compat(&mistyped).await, 400).await.1,
            field,
            "number {name}"
        );
    }
    let mut no_data = compat_body(&app.token);
    no_data.as_object_mut().expect("object").remove("data");
    assert_eq!(
        error_field(app.post_compat(&no_data).await, 400).await.1,
        "data"
    );
    let mut bad_time = compat_body(&app.token);
    bad_time["data"]["email_timestream"] = json!("last tuesday");
    assert_eq!(
        error_field(app.post_compat(&bad_time).await, 400).await.1,
        "data.email_timestream"
    );
}

/// RFC 3339 is accepted as well as epoch seconds.
#[tokio::test]
async fn rfc3339_timestream_is_accepted() {
    let app = spawn_app().await;
    let mut body = compat_body(&app.token);
    body["data"]["email_timestream"] = json!("2024-02-29T12:00:00+01:00");
    let r = app.post_compat(&body).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.expect("JSON");
    let m = app.get_message(v["message_id"].as_str().expect("id")).await;
    assert!(
        m["archive_key"]
            .as_str()
            .expect("key")
            .starts_with("emails/2024/02/29/email-1709204400-"),
        "{m}"
    );
}

/// CR or LF in the subject or sender is rejected: it would reach an SMTP header.
#[tokio::test]
async fn header_injection_is_rejected() {
    let app = spawn_app().await;
    for (name, value) in [
        ("email_subject", "Hi\r\nBcc: victim@example.com"),
        ("email_subject", "Hi\nX-Evil: 1"),
        ("email_sender", "John\r\nTo: victim@example.com"),
        ("email_sender", "John\rdoe"),
    ] {
        let mut body = compat_body(&app.token);
        body["data"][name] = json!(value);
        let (code, field) = error_field(app.post_compat(&body).await, 400).await;
        assert_eq!(
            (code.as_str(), field.as_str()),
            ("invalid_field", format!("data.{name}").as_str())
        );
    }
}

/// Malformed bodies get a 4xx that says what is wrong: not JSON, wrong type, too large.
#[tokio::test]
async fn malformed_bodies_are_4xx() {
    let app = spawn_app().await;
    let r = app
        .post_raw("/api/email", "application/json", "{\"data\": ")
        .await;
    assert_eq!(error_field(r, 400).await.0, "invalid_json");
    let r = app
        .post_raw("/api/email", "application/json", vec![0xff, 0xfe, b'{'])
        .await;
    assert_eq!(error_field(r, 400).await.0, "invalid_json");
    let r = app
        .post_raw(
            "/api/email",
            "text/plain",
            compat_body(&app.token).to_string(),
        )
        .await;
    assert_eq!(error_field(r, 415).await.0, "unsupported_media_type");
    let r = app
        .post_raw("/api/email", "application/json", "[1, 2, 3]")
        .await;
    assert_eq!(error_field(r, 400).await.1, "body");
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let r = app.post_raw("/api/email", "application/json", deep).await;
    assert_eq!(error_field(r, 400).await.0, "invalid_json");
    let mut big = compat_body(&app.token);
    big["data"]["email_content"] = json!("x".repeat(2 * 1024 * 1024));
    let r = app
        .post_raw("/api/email", "application/json", big.to_string())
        .await;
    let v: Value = {
        assert_eq!(r.status(), 413);
        r.json().await.expect("JSON")
    };
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1048576"),
        "{v}"
    );
    // None of these left a record behind.
    assert_eq!(app.message_count().await, 0);
}

/// When the store cannot commit (another process holds the database's write lock past the busy
/// timeout), the API answers 503 with Retry-After, never a 202, and nothing is recorded; while
/// the write waits, `/ready` says the store is stuck (a read alone would still answer).
#[tokio::test]
async fn store_unavailable_is_503_never_202() {
    let app = spawn_app().await;
    let blocker = app.lock_store().await;
    let body = compat_body(&app.token);
    let (r, stuck) = tokio::join!(app.post_compat(&body), async {
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(9) {
            let r = app.get_public("/ready").await;
            if r.status() == 503 {
                return Some(r.text().await.expect("text"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        None
    });
    let stuck = stuck.expect("/ready is 503 while writes wait");
    assert!(stuck.contains("writes have waited"), "{stuck}");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["error"]["code"], "unavailable");
    let r = app.get_public("/ready").await;
    assert_eq!(r.status(), 200, "no write waits now");
    app.unlock_store(blocker).await;
    assert_eq!(app.message_count().await, 0);
    assert_eq!(
        app.post_compat(&compat_body(&app.token)).await.status(),
        202,
        "recovers"
    );
}
