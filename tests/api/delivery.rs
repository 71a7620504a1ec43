//! The worker against the real SMTP relay: delivery, archive, retries, dead letters, leases,
//! TLS and AUTH, the rate ceiling and shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom::message::{Message, Status};
use mailroom::queue::{Depth, Lease, Queue, QueueError};
use mailroom::worker::Worker;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    TestApp, accepted_id, compat_body, event_kinds, spawn_app, spawn_app_with, unique_rcpt,
};

/// Messages sent one after another travel on one SMTP connection (the pool keeps it); after a
/// 5xx (lettre closes that session) the next message still goes out.
#[tokio::test]
async fn smtp_connections_are_reused() {
    let app = spawn_app().await;
    let rcpt = unique_rcpt("reuse");
    for _ in 0..5 {
        app.send_to(&rcpt).await;
        assert_eq!(app.dispatch_all_pending().await, 1);
    }
    let ports: std::collections::HashSet<Option<u64>> = app
        .relay
        .received_for(&rcpt)
        .iter()
        .map(|m| m.peer_port)
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "one connection for five messages: {ports:?}"
    );
    assert!(
        ports.iter().all(Option::is_some),
        "the relay records the port"
    );

    let id = app.send_to(&unique_rcpt("fail-550-1")).await;
    app.dispatch_all_pending().await;
    assert_eq!(app.get_message(&id).await["status"], "dead");
    app.send_to(&rcpt).await;
    app.dispatch_all_pending().await;
    let after: Vec<Option<u64>> = app
        .relay
        .received_for(&rcpt)
        .iter()
        .map(|m| m.peer_port)
        .collect();
    assert_eq!(after.len(), 6, "delivered after the 5xx");
}

/// An internationalised domain goes out in its ASCII form, in the envelope and in the headers,
/// so a relay without SMTPUTF8 takes it; the record keeps the address as it was written.
#[tokio::test]
async fn an_internationalised_domain_is_sent_in_its_ascii_form() {
    let app = spawn_app().await;
    let user = format!("idn-{}", uuid::Uuid::new_v4().simple());
    let body = json!({
        "from": "Bücher <verkauf@bücher.example>",
        "to": [format!("{user}@bücher.example")],
        "subject": "Ihre Bestellung",
        "text": "Danke.",
    });
    let id = accepted_id(app.post_message(&body, None).await).await;
    app.dispatch_until(&id, "delivered").await;
    let ascii = format!("{user}@xn--bcher-kva.example");
    let got = app.relay.received_for(&ascii);
    assert_eq!(got.len(), 1, "one copy to {ascii}");
    assert_eq!(got[0].mail_from, "verkauf@xn--bcher-kva.example");
    let to = got[0].header("To").expect("a To header");
    assert_eq!(to, ascii);
    assert!(got[0].raw.is_ascii(), "{}", got[0].raw);
    let m = app.get_message(&id).await;
    assert_eq!(m["sender"], "Bücher <verkauf@bücher.example>");
}

/// A native message reaches the relay with the right headers and envelope, and is archived as
/// JSON at `emails/YYYY/MM/DD/email-{ts}-{sender_hash}-{id}.json` with its outcome.
#[tokio::test]
async fn delivered_with_headers_and_archived() {
    let app = spawn_app().await;
    let to = unique_rcpt("headers");
    let hidden = unique_rcpt("bcc");
    let body = json!({
        "from": "Shop <shop@example.com>", "to": [to], "bcc": hidden,
        "reply_to": "support@example.com", "subject": "Your receipt €",
        "text": "Thanks.", "html": "<p>Thanks.</p>",
        "headers": {"X-Campaign": "spring"}, "tags": ["receipt"],
    });
    let r = app.post_message(&body, None).await;
    let id = accepted_id(r).await;
    assert_eq!(app.dispatch_all_pending().await, 1);

    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 1, "exactly one delivery");
    let mail = &got[0];
    assert_eq!(mail.mail_from, "shop@example.com");
    assert!(mail.rcpt_tos.contains(&hidden), "bcc is in the envelope");
    assert!(!mail.raw.contains(&hidden), "bcc is not in the headers");
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Shop <shop@example.com>")
    );
    assert_eq!(mail.header("To").as_deref(), Some(to.as_str()));
    assert_eq!(
        mail.header("Reply-To").as_deref(),
        Some("support@example.com")
    );
    assert_eq!(mail.header("X-Campaign").as_deref(), Some("spring"));
    assert_eq!(mail.header("X-Mailroom-Id").as_deref(), Some(id.as_str()));
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{id}@example.com>"))
    );
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.is_ascii() && subject.to_ascii_lowercase().contains("=?utf-8?"),
        "non-ASCII subject is encoded: {subject}"
    );
    assert!(mail.raw.contains("multipart/alternative"));

    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["attempts"], 1);
    let kinds = event_kinds(&m);
    assert_eq!(kinds, ["accepted", "delivered"]);

    let key = m["archive_key"].as_str().expect("archive_key");
    let accepted = chrono::DateTime::parse_from_rfc3339(m["accepted_at"].as_str().expect("time"))
        .expect("rfc3339");
    let hash = mailroom::message::sender_hash("Shop <shop@example.com>");
    assert_eq!(
        key,
        format!(
            "emails/{}/email-{}-{hash}-{id}.json",
            accepted.format("%Y/%m/%d"),
            accepted.timestamp()
        )
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(app.archive_dir().join(key)).expect("archived"))
            .expect("JSON");
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["subject"], "Your receipt €");
    assert_eq!(doc["outcome"]["status"], "delivered");
    assert!(
        doc["outcome"]["detail"]
            .as_str()
            .expect("detail")
            .starts_with("250")
    );
}

/// Attachments reach the relay as parts of a multipart/mixed message with their names, types
/// and exact bytes, and stay in the archived JSON.
#[tokio::test]
async fn attachments_are_delivered_byte_for_byte() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let app = spawn_app().await;
    let to = unique_rcpt("attach");
    let pdf: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = json!({
        "from": "shop@example.com", "to": to, "subject": "Invoice", "text": "Attached.",
        "attachments": [
            {"filename": "invoice.pdf", "content_type": "application/pdf", "content": engine.encode(&pdf)},
            {"filename": "notes.txt", "content_type": "text/plain; charset=utf-8", "content": engine.encode("ok")},
        ],
    });
    let id = accepted_id(app.post_message(&body, None).await).await;
    assert_eq!(app.dispatch_all_pending().await, 1);

    let got = app.relay.received_for(&to);
    assert_eq!(got.len(), 1);
    let raw = &got[0].raw;
    assert!(raw.contains("multipart/mixed"), "{raw}");
    let part = &raw[raw
        .find("filename=\"invoice.pdf\"")
        .expect("the pdf part names its file")..];
    let after_headers = &part[part.find("\r\n\r\n").expect("part body") + 4..];
    let encoded: String = after_headers
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    assert_eq!(engine.decode(encoded.trim()).expect("base64"), pdf);
    assert!(raw.contains("filename=\"notes.txt\""), "{raw}");

    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    let key = m["archive_key"].as_str().expect("archive_key");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(app.archive_dir().join(key)).expect("archived"))
            .expect("JSON");
    assert_eq!(doc["attachments"][0]["filename"], "invoice.pdf");
    assert_eq!(
        doc["attachments"][0]["content"],
        engine.encode(&pdf).as_str()
    );
}

/// A compat message is archived under its own timestamp; with COMPAT_RECIPIENT it is also sent
/// there, from the sender's display name at DEFAULT_FROM.
#[tokio::test]
async fn compat_message_archived_and_sent_to_compat_recipient() {
    let rcpt = unique_rcpt("compat");
    let r2 = rcpt.clone();
    let app = spawn_app_with(move |c| {
        c.compat_recipient = Some(r2);
        c.default_from = Some("noreply@example.com".into());
    })
    .await;
    let r = app.post_compat(&compat_body(&app.token)).await;
    let id = accepted_id(r).await;
    app.dispatch_all_pending().await;
    let got = app.relay.received_for(&rcpt);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("From").as_deref(),
        Some("\"John doe\" <noreply@example.com>")
    );
    assert_eq!(got[0].header("Subject").as_deref(), Some("Welcome"));
    assert!(
        got[0]
            .header("Date")
            .expect("date")
            .contains("14 Nov 2023 22:13:20")
    );
    let key = format!(
        "emails/2023/11/14/email-1700000000-{}-{id}.json",
        mailroom::message::sender_hash("John doe")
    );
    let doc: Value = serde_json::from_slice(
        &std::fs::read(app.archive_dir().join(&key)).expect("archived at the compat key"),
    )
    .expect("JSON");
    assert_eq!(doc["email_sender"], "John doe");
    assert_eq!(doc["email_timestream"], "1700000000");
    assert_eq!(doc["email_content"], "Hello from the compat API.");
    assert_eq!(doc["outcome"]["status"], "delivered");
}

/// Without COMPAT_RECIPIENT a compat message is archived only.
#[tokio::test]
async fn compat_message_without_recipient_is_archived_only() {
    let app = spawn_app().await;
    let r = app.post_compat(&compat_body(&app.token)).await;
    let id = accepted_id(r).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "archived");
    assert!(
        app.archive_dir()
            .join(m["archive_key"].as_str().expect("key"))
            .exists()
    );
}

/// A 4xx from the relay is retried with growing backoff, then the message is delivered.
#[tokio::test]
async fn temporary_failure_is_retried_with_backoff_then_delivered() {
    let app = spawn_app_with(|c| {
        c.retry_base_ms = 100;
        c.retry_max_ms = 10_000;
    })
    .await;
    let to = unique_rcpt("fail-451-2");
    let id = app.send_to(&to).await;
    let started = Instant::now();
    let m = app.dispatch_until(&id, "delivered").await;
    // Two waits: at least 50 ms (half of 100, the jitter floor) and 100 ms (half of 200).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(m["attempts"], 3);
    let events: Vec<&Value> = m["events"].as_array().expect("events").iter().collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["accepted", "deferred", "deferred", "delivered"]);
    let delay = |e: &Value| -> u64 {
        let d = e["detail"].as_str().expect("detail");
        assert!(d.contains("451"), "{d}");
        d.split("next attempt in ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("a delay")
    };
    let (first, second) = (delay(events[1]), delay(events[2]));
    assert!(
        (50..=100).contains(&first) && (100..=200).contains(&second),
        "{first} then {second}"
    );
    assert_eq!(app.relay.received_for(&to).len(), 1);
    assert!(
        m["last_error"]
            .as_str()
            .expect("last error kept")
            .contains("451")
    );
}

/// A 5xx is dead-lettered at once; redriven, it is delivered.
#[tokio::test]
async fn permanent_failure_is_dead_lettered_then_redriven() {
    let app = spawn_app().await;
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "dead");
    assert_eq!(m["attempts"], 1);
    assert!(m["last_error"].as_str().expect("error").contains("550"));
    let dl: Value = app.get_json("/v1/dead-letters").await;
    assert_eq!(dl["dead_letters"][0]["id"], id.as_str());

    let r = app.redrive(&id).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        app.redrive(&id).await.status(),
        409,
        "only dead letters can be redriven"
    );
    assert_eq!(
        app.redrive(&uuid::Uuid::new_v4().to_string())
            .await
            .status(),
        404
    );
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    let kinds = event_kinds(&m);
    assert_eq!(kinds, ["accepted", "dead", "redriven", "delivered"]);
    assert_eq!(app.relay.received_for(&to).len(), 1);
    let dl: Value = app.get_json("/v1/dead-letters").await;
    assert_eq!(dl["dead_letters"].as_array().expect("array").len(), 0);
}

/// Two redrives of one dead letter at once queue it once: one is a 202, the other a 409, and
/// the message is delivered once.
#[tokio::test]
async fn a_dead_letter_redriven_twice_at_once_is_queued_once() {
    let app = spawn_app().await;
    let to = unique_rcpt("fail-550-1");
    let id = app.send_to(&to).await;
    app.dispatch_until(&id, "dead").await;
    let (a, b) = tokio::join!(app.redrive(&id), app.redrive(&id));
    let mut answers = [a.status().as_u16(), b.status().as_u16()];
    answers.sort_unstable();
    assert_eq!(answers, [202, 409]);
    app.dispatch_until(&id, "delivered").await;
    assert_eq!(app.relay.received_for(&to).len(), 1);
    let m = app.get_message(&id).await;
    assert_eq!(
        event_kinds(&m),
        ["accepted", "dead", "redriven", "delivered"]
    );
}

/// After MAX_ATTEMPTS temporary failures the message is dead with its last error.
#[tokio::test]
async fn attempts_exhausted_is_dead_lettered() {
    let app = spawn_app_with(|c| c.max_attempts = 3).await;
    let id = app.send_to(&unique_rcpt("fail-421-always")).await;
    let m = app.dispatch_until(&id, "dead").await;
    assert_eq!(m["attempts"], 3);
    let err = m["last_error"].as_str().expect("error");
    assert!(
        err.contains("gave up after 3 attempts") && err.contains("421"),
        "{err}"
    );
}

/// Accepts a message to a recipient of its own and leases it as a worker that then dies would:
/// never settled. Returns (id, recipient) once the lease has run out (the app's visibility
/// timeout is to be 2 s).
async fn leased_by_a_dead_worker(app: &TestApp, prefix: &str) -> (String, String) {
    let to = unique_rcpt(prefix);
    let id = app.send_to(&to).await;
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1);
    std::mem::forget(leases); // the worker holding them is gone
    assert_eq!(app.dispatch_all_pending().await, 0, "still leased");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    (id, to)
}

/// A lease whose worker died (taken, never settled) becomes visible again after the visibility
/// timeout, and the message is delivered on the next attempt.
#[tokio::test]
async fn lease_of_dead_worker_is_recovered() {
    let app = spawn_app_with(|c| {
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
    })
    .await;
    let (id, to) = leased_by_a_dead_worker(&app, "lease").await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["attempts"], 2);
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// A message whose attempts never finish (each worker holding it killed, or failing, before it
/// settles the lease) is not taken for ever: once its attempts are used up, the next one
/// dead-letters it unsent, saying why, and an operator's redrive then delivers it.
#[tokio::test]
async fn a_message_whose_attempts_never_finish_is_dead_lettered() {
    let app = spawn_app_with(|c| {
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
        c.max_attempts = 1;
    })
    .await;
    let (id, to) = leased_by_a_dead_worker(&app, "never-finishes").await;
    assert_eq!(app.dispatch_all_pending().await, 1);
    let m = app.get_message(&id).await;
    assert_eq!((&m["status"], &m["attempts"]), (&json!("dead"), &json!(1)));
    let err = m["last_error"].as_str().expect("error");
    assert!(
        err.contains("gave up after 1 attempts: the last ones never finished"),
        "{err}"
    );
    assert!(app.relay.received_for(&to).is_empty(), "not sent");
    assert_eq!(app.redrive(&id).await.status(), 202);
    app.dispatch_until(&id, "delivered").await;
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// STARTTLS with AUTH, and implicit TLS with AUTH, deliver; a wrong password defers (an
/// operator's mistake must not dead-letter messages).
#[tokio::test]
async fn tls_and_auth() {
    let relay = crate::helpers::Relay::from_env();
    let url = |scheme: &str, port: u16, password: &str, tls: &str| {
        format!(
            "{scheme}://{}:{password}@127.0.0.1:{port}?{tls}ca_file={}",
            relay.user, relay.ca
        )
    };
    for (name, smtp_url) in [
        (
            "starttls",
            url("smtp", relay.tls_port, &relay.password, "tls=required&"),
        ),
        ("smtps", url("smtps", relay.smtps_port, &relay.password, "")),
    ] {
        let u = smtp_url.clone();
        let app = spawn_app_with(move |c| c.smtp_url = Some(u.into())).await;
        let to = unique_rcpt(name);
        let id = app.send_to(&to).await;
        app.dispatch_all_pending().await;
        assert_eq!(app.get_message(&id).await["status"], "delivered", "{name}");
        let got = app.relay.received_for(&to);
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got[0].login.as_deref(), Some(relay.user.as_str()), "{name}");
    }
    let bad = url("smtp", relay.tls_port, "wrong-password", "tls=required&");
    let app = spawn_app_with(move |c| c.smtp_url = Some(bad.into())).await;
    let id = app.send_to(&unique_rcpt("badauth")).await;
    app.dispatch_all_pending().await;
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "deferred");
    assert!(
        m["last_error"]
            .as_str()
            .expect("error")
            .contains("authentication"),
        "{m}"
    );
}

/// A relay named by an IPv6 literal is reached: the URL's brackets are not part of the address
/// (before, every attempt failed to resolve `[::ffff:127.0.0.1]`). The IPv4-mapped form reaches
/// the test relay, which listens on 127.0.0.1 only.
#[tokio::test]
async fn a_relay_named_by_an_ipv6_literal_is_reached() {
    let relay = crate::helpers::Relay::from_env();
    let url = format!("smtp://[::ffff:127.0.0.1]:{}", relay.port);
    let app = spawn_app_with(move |c| c.smtp_url = Some(url.into())).await;
    let to = unique_rcpt("ipv6");
    let id = app.send_to(&to).await;
    app.dispatch_all_pending().await;
    assert_eq!(app.get_message(&id).await["status"], "delivered");
    assert_eq!(app.relay.received_for(&to).len(), 1);
}

/// With a ceiling of 20/s, 21 deliveries cannot finish in less than one second (burst 1), however
/// many run concurrently.
#[tokio::test]
async fn rate_ceiling_holds_across_concurrent_deliveries() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 20.0;
        c.worker_concurrency = 32;
    })
    .await;
    for _ in 0..21 {
        app.send_to(&unique_rcpt("rate")).await;
    }
    let started = Instant::now();
    assert_eq!(app.dispatch_all_pending().await, 21);
    assert!(
        started.elapsed() >= Duration::from_millis(980),
        "{:?}",
        started.elapsed()
    );
}

/// A message waiting for its turn longer than the visibility timeout keeps its lease: at 2/s
/// the last of eight taken together waits about 3.5 s, the visibility timeout is 2 s, and a
/// second worker loop pulls all the while. Each message goes out once, at its first attempt.
#[tokio::test]
async fn a_lease_lasts_as_long_as_the_wait_for_the_rate_limit() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 2.0;
        c.worker_concurrency = 8;
        c.visibility_timeout_secs = 2;
        c.smtp_timeout_secs = 1;
    })
    .await;
    let sent = app.send_to_each("long-lease", 8).await;
    let stop = CancellationToken::new();
    let first = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(app.worker.clone().run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    for (id, _) in &sent {
        while app.get_message(id).await["status"] != "delivered" {
            assert!(Instant::now() < deadline, "{id} never delivered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Time for a second copy, had a lease run out, to pass the limiter.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.cancel();
    let _ = tokio::join!(first, second);
    for (id, to) in &sent {
        let m = app.get_message(id).await;
        assert_eq!(
            (app.relay.received_for(to).len(), &m["attempts"]),
            (1, &json!(1)),
            "{id}: {m}"
        );
    }
}

/// A queue whose leases are lost at their first heartbeat, as a Kafka rebalance loses those of
/// the partitions it moves, or a database lease that ran out while its extensions failed; or,
/// with `hangs`, whose heartbeat never answers (a connection to a failed-over database).
struct LosesLeases {
    inner: Arc<dyn Queue>,
    hangs: bool,
}

#[async_trait::async_trait]
impl Queue for LosesLeases {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        self.inner.push(messages).await
    }
    async fn pull(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        self.inner.pull(max).await
    }
    async fn ack(&self, lease: Lease) -> Result<(), QueueError> {
        self.inner.ack(lease).await
    }
    async fn retry(&self, lease: Lease, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry(lease, delay).await
    }
    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.inner.release(lease).await
    }
    async fn dead(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.inner.dead(lease, error).await
    }
    async fn depth(&self) -> Result<Depth, QueueError> {
        self.inner.depth().await
    }
    fn name(&self) -> &'static str {
        "loses-leases"
    }
    fn heartbeat(&self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }
    async fn extend(&self, lease: &Lease) -> Result<(), QueueError> {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        Err(QueueError::LeaseLost(lease.message.id))
    }
}

/// A worker whose lease is lost while the message waits for its turn does not send it: the
/// message's next holder does (or drops it, if it was cancelled meanwhile). At 0.4/s the first
/// of three goes at once and the others wait 2.5 and 5 s. A heartbeat that says the lease is
/// gone (at 300 ms), or one that hangs past the 2 s visibility timeout, stops them both.
#[tokio::test]
async fn a_lease_lost_while_waiting_is_not_sent() {
    for hangs in [false, true] {
        let app = spawn_app_with(|c| {
            c.send_rate_per_second = 0.4;
            c.worker_concurrency = 3;
            c.visibility_timeout_secs = 2;
            c.smtp_timeout_secs = 1;
        })
        .await;
        let sent = app.send_to_each("lost-lease", 3).await;
        let queue = LosesLeases {
            inner: app.queue.clone(),
            hangs,
        };
        let worker = Arc::new(Worker {
            queue: Arc::new(queue),
            store: app.worker.store.clone(),
            delivery: app.worker.delivery.clone(),
            archive: app.worker.archive.clone(),
            limiter: app.worker.limiter.clone(),
            mime: app.worker.mime.clone(),
            retry: app.worker.retry.clone(),
            concurrency: 3,
            poll_interval: app.worker.poll_interval,
            wake: app.worker.wake.clone(),
            shutdown_grace: app.worker.shutdown_grace,
            visibility: app.worker.visibility,
            claims: false,
        });
        assert_eq!(worker.run_once().await.expect("pull"), 3);
        let mut delivered = 0;
        for (id, to) in &sent {
            let (got, m) = (app.relay.received_for(to).len(), app.get_message(id).await);
            match got {
                1 => delivered += 1,
                0 => assert_eq!(m["status"], "queued", "{m}"),
                n => panic!("{id}: sent {n} times"),
            }
        }
        assert_eq!(
            delivered, 1,
            "hangs {hangs}: only the one whose slot came at once"
        );
    }
}

/// On shutdown the worker stops pulling and releases leases still waiting for the rate limit:
/// no lease stays taken, and the released attempts do not count.
#[tokio::test]
async fn shutdown_releases_waiting_leases() {
    let app = spawn_app_with(|c| {
        c.send_rate_per_second = 2.0;
        c.worker_concurrency = 8;
        c.shutdown_grace_secs = 5;
    })
    .await;
    for _ in 0..8 {
        app.send_to(&unique_rcpt("shutdown")).await;
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.worker.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.cancel();
    let started = Instant::now();
    run.await.expect("the worker exits cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let counts = app.backends_store.counts().await.expect("counts");
    let delivered = counts.get(&Status::Delivered).copied().unwrap_or(0);
    assert!((1..=3).contains(&delivered), "delivered {delivered}");
    // Everything else is due again at once, with its attempt given back.
    let leases = app.queue.pull(100).await.expect("pull");
    assert_eq!(leases.len() as u64, 8 - delivered);
    assert!(
        leases.iter().all(|l| l.attempt == 1),
        "released attempts do not count"
    );
}

/// A relay that stalls mid-send is cut off after SMTP_TIMEOUT_SECS and the message deferred,
/// so a stuck connection cannot hold a message past its lease.
#[tokio::test]
async fn stalled_relay_times_out_and_defers() {
    let app = spawn_app_with(|c| c.smtp_timeout_secs = 1).await;
    let id = app.send_to(&unique_rcpt("slow-3000")).await;
    let started = Instant::now();
    app.dispatch_all_pending().await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let m = app.get_message(&id).await;
    assert_eq!(m["status"], "deferred");
    let err = m["last_error"].as_str().expect("error");
    assert!(err.contains("within 1 s"), "{err}");
}
