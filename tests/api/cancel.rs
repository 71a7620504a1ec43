//! `POST /v1/messages/{id}/cancel`: a message not sent yet (queued, scheduled, waiting for a
//! retry) is withdrawn and never sent; one being delivered, sent, dead or cancelled already is a
//! 409; an unknown id a 404. The scenario runs on SQLite here and on PostgreSQL in `scale.rs`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, accepted_id, error_field, event_kinds, spawn_app, unique_rcpt};

/// The whole scenario against one app whose queue is its database.
pub async fn cancel_scenario(app: &TestApp) {
    // A scheduled message: cancelled, it never goes out, even once its time has come.
    let to = unique_rcpt("cancel");
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(800);
    let body = json!({"from": "a@example.com", "to": [&to], "subject": "Later", "text": "t",
                      "send_at": due.to_rfc3339()});
    let scheduled = accepted_id(app.post_message(&body, None).await).await;
    let r = app.cancel(&scheduled).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["status"], "cancelled");
    let kinds = event_kinds(&v);
    assert_eq!(kinds, ["accepted", "cancelled"]);
    let (code, _) = error_field(app.cancel(&scheduled).await, 409).await;
    assert_eq!(code, "conflict", "cancelled already");

    // A message a worker holds (its lease is live) is being delivered: too late.
    let held_to = unique_rcpt("cancel-held");
    let held = app.send_to(&held_to).await;
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1, "only the message that is due");
    let r = app.cancel(&held).await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.expect("JSON");
    let says = e["error"]["message"].as_str().expect("message");
    assert!(says.contains("being delivered"), "{says}");
    // Given back (as at shutdown), it can be cancelled again.
    for lease in leases {
        app.queue.release(lease).await.expect("released");
    }
    assert_eq!(app.cancel(&held).await.status(), 200);

    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(app.dispatch_all_pending().await, 0, "nothing left to send");
    assert!(app.relay.received_for(&to).is_empty());
    assert!(app.relay.received_for(&held_to).is_empty());
    assert_eq!(app.get_message(&held).await["status"], "cancelled");
    let list = app.get_json("/v1/messages?status=cancelled").await;
    assert_eq!(
        list["messages"].as_array().expect("array").len(),
        2,
        "{list}"
    );

    // Sent already: 409. Unknown: 404. Not an id: 400.
    let sent_to = unique_rcpt("cancel-sent");
    let sent = app.send_to(&sent_to).await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let r = app.cancel(&sent).await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.expect("JSON");
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("message")
            .contains("is delivered"),
        "{e}"
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.cancel(&unknown).await.status(), 404);
    assert_eq!(app.cancel("not-an-id").await.status(), 400);
}

#[tokio::test]
async fn cancel_on_sqlite() {
    cancel_scenario(&spawn_app().await).await;
}

/// A message deferred after a temporary failure can be cancelled while it waits for its retry.
#[tokio::test]
async fn a_deferred_message_can_be_cancelled() {
    let app = spawn_app().await;
    let to = unique_rcpt("fail-451-5");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    let before = app.get_message(&id).await;
    assert_eq!(before["status"], "deferred");
    assert_eq!(app.cancel(&id).await.status(), 200);
    // Past the longest backoff (RETRY_MAX_MS is 200 in the tests).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.dispatch_all_pending().await, 0);
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "cancelled");
    assert_eq!(
        m["attempts"], before["attempts"],
        "no attempt after the cancel"
    );
}
