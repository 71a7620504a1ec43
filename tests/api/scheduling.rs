//! `send_at`: a native message scheduled for later waits in the database queue until its time,
//! then goes out like any other; a time already past sends at once; what is not a time, or is
//! too far ahead, is a 400 naming the field.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{accepted_id, spawn_app, unique_rcpt};

#[tokio::test]
async fn a_scheduled_message_is_delivered_at_its_time() {
    let app = spawn_app().await;
    let to = unique_rcpt("scheduled");
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(2_500);
    let body = json!({
        "from": "a@example.com", "to": [&to], "subject": "Later", "text": "t",
        "send_at": due.to_rfc3339(),
    });
    let id = accepted_id(app.post_message(&body, None).await).await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "queued");
    let shown = chrono::DateTime::parse_from_rfc3339(m["send_at"].as_str().expect("send_at"))
        .expect("RFC 3339");
    assert_eq!(shown.timestamp_millis(), due.timestamp_millis());

    // Sent at once: a time already past, in Unix seconds.
    let now_to = unique_rcpt("past");
    let past = json!({
        "from": "a@example.com", "to": [&now_to], "subject": "Now", "text": "t",
        "send_at": 1_700_000_000,
    });
    let past_id = accepted_id(app.post_message(&past, None).await).await;
    assert_eq!(
        app.dispatch_all_pending().await,
        1,
        "only the message that is due"
    );
    assert_eq!(app.relay.received_for(&now_to).len(), 1);
    assert!(app.get_message(&past_id).await.get("send_at").is_none());
    assert!(
        app.relay.received_for(&to).is_empty(),
        "not before its time"
    );

    let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 1);
    // Dated when it was meant to go out, not when it was accepted.
    let date = got[0].header("Date").expect("a Date header");
    let date = chrono::DateTime::parse_from_rfc2822(&date).expect("an RFC 5322 date");
    assert_eq!(date.timestamp(), due.timestamp(), "{date}");
    let sent_ms = (got[0].received_ns / 1_000_000) as i64;
    assert!(
        sent_ms >= due.timestamp_millis(),
        "received {sent_ms}, due {}",
        due.timestamp_millis()
    );
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["attempts"], 1, "waiting is not an attempt");
}

#[tokio::test]
async fn send_at_errors_name_the_field() {
    let app = spawn_app().await;
    let far = chrono::Utc::now() + chrono::Duration::days(31);
    let base = |send_at: Value| {
        json!({"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t",
               "send_at": send_at})
    };
    for (send_at, says) in [
        (json!(far.to_rfc3339()), "the limit is 30 days ahead"),
        (json!(far.timestamp()), "the limit is 30 days ahead"),
        (json!("tomorrow"), "is not a time"),
        (json!("2026-13-01T00:00:00Z"), "is not a time"),
        (json!(1.5), "RFC 3339"),
        (json!(-5), "RFC 3339"),
        (json!({"at": 1}), "RFC 3339"),
    ] {
        let body = base(send_at);
        let r = app.post_message(&body, None).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.expect("a JSON error");
        assert_eq!(e["error"]["field"], "send_at", "{body}: {e}");
        let message = e["error"]["message"].as_str().expect("a message");
        assert!(message.contains(says), "{body}: {message}");
    }
    // null is no time, as for the other optional fields.
    let r = app.post_message(&base(Value::Null), None).await;
    assert_eq!(r.status(), 202);
    let batch = json!({"messages": [base(json!(1_700_000_000)), base(json!("soon"))]});
    let v: Value = app.post_batch(&batch).await.json().await.expect("JSON");
    assert_eq!(v["results"][0]["status"], "queued", "{v}");
    assert_eq!(
        v["results"][1]["error"]["field"], "messages[1].send_at",
        "{v}"
    );
    assert_eq!(
        app.message_count().await,
        2,
        "only the good ones are stored"
    );
}
