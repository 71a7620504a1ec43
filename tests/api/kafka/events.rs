//! Delivery events on `EVENTS_TOPIC`: published in order, and by the next holder of a message
//! whose worker stopped between its record and its event.

use super::*;

/// With `EVENTS_TOPIC`, a message's accepted and delivered events reach the topic in order, and
/// a stale change the store refuses publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_published_in_order() {
    use mailroom::store::{Acceptance, Store, Transition};
    let mut s = settings(&unique("unused"));
    let topic = unique("events");
    s.events_topic = Some(topic.clone());
    mailroom::kafka::ensure_topics(&s, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let inner = Arc::new(mailroom::store::sqlite::SqliteStore::new(db));
    let publisher =
        Arc::new(mailroom::events::KafkaEvents::new(&s, topic.clone()).expect("producer"));
    let store = mailroom::events::EventingStore::new(inner, publisher);
    let message = message(0);
    let id = message.id;
    store
        .insert(
            Acceptance {
                messages: vec![message],
                idempotency: None,
            },
            false,
        )
        .await
        .expect("insert");
    for transition in [
        Transition::Deferred {
            attempts: 1,
            error: "451 busy".into(),
            retry_in: Duration::from_secs(1),
        },
        Transition::Delivered {
            attempts: 2,
            detail: "250 ok".into(),
        },
        // Refused by the store: a delivered message never goes back.
        Transition::Dead {
            attempts: 2,
            error: "stale".into(),
        },
    ] {
        store.record(id, transition).await.expect("record");
    }
    let reader = reader(&topic);
    let events = read_until(
        &reader,
        Duration::from_secs(30),
        |m| {
            assert_eq!(
                m.key(),
                Some(id.to_string().as_bytes()),
                "keyed by message id"
            );
            serde_json::from_slice::<DeliveryEvent>(m.payload().expect("payload")).expect("JSON")
        },
        |got| got.len() >= 3,
    )
    .await;
    let kinds: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["accepted", "deferred", "delivered"]);
    assert!(events.iter().all(|e| e.message_id == id));
    assert_eq!(events[2].status, "delivered");
    assert_eq!(events[2].attempts, Some(2));
    // Nothing more arrives: the refused change was not published.
    let more = read_until(
        &reader,
        Duration::from_secs(3),
        |_| (),
        |got| !got.is_empty(),
    )
    .await;
    assert!(more.is_empty());
}

/// With `EVENTS_TOPIC`, a worker that stopped between recording a send and publishing its
/// event leaves the event to the message's next holder: the lease comes back, the message is
/// found sent and not sent again, and its `delivered` event is published with the recorded
/// outcome (events are at least once). (The first fix for copies of sent messages, which left
/// their record alone, published nothing: a process test's kill -9 lost one such event.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_of_a_send_recorded_before_a_crash_is_published_by_the_next_holder() {
    use mailroom::store::{Store, Transition};
    let topic = unique("crash-events");
    let s = settings(&unique("unused"));
    mailroom::kafka::ensure_topics(&s, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let app = crate::helpers::spawn_app_with(|raw| {
        raw.kafka_brokers = Some(brokers());
        raw.events_topic = Some(topic.clone());
        raw.visibility_timeout_secs = 2;
        raw.smtp_timeout_secs = 1;
    })
    .await;
    let to = crate::helpers::unique_rcpt("crash-events");
    let id = app.send_to(&to).await;
    let uuid = uuid::Uuid::parse_str(&id).expect("a uuid");
    // Its worker leases it, records the send straight in the database (as the store does
    // before the event goes out), and dies.
    let leases = app.queue.pull(10).await.expect("pull");
    assert_eq!(leases.len(), 1);
    std::mem::forget(leases);
    let url = format!(
        "sqlite://{}",
        app.app_data.path().join("mailroom.db").display()
    );
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let unpublished = mailroom::store::sqlite::SqliteStore::new(db);
    let sent = Transition::Delivered {
        attempts: 1,
        detail: "250 2.0.0 Ok: queued as 7A3F".into(),
    };
    assert!(unpublished.record(uuid, sent).await.expect("recorded"));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(app.dispatch_all_pending().await, 1, "the lease came back");
    assert!(app.relay.received_for(&to).is_empty(), "not sent again");
    let events = read_until(
        &reader(&topic),
        Duration::from_secs(30),
        |m| serde_json::from_slice::<DeliveryEvent>(m.payload().expect("payload")).expect("JSON"),
        |got| {
            got.iter()
                .any(|e| e.message_id == uuid && e.event == "delivered")
        },
    )
    .await;
    let delivered = events
        .iter()
        .find(|e| e.message_id == uuid && e.event == "delivered")
        .unwrap_or_else(|| panic!("no delivered event in {events:?}"));
    assert_eq!(
        delivered.detail.as_deref(),
        Some("250 2.0.0 Ok: queued as 7A3F")
    );
    assert_eq!(delivered.attempts, Some(1));
    let m = app.get_message(&id).await;
    assert_eq!(crate::helpers::event_kinds(&m), ["accepted", "delivered"]);
}
