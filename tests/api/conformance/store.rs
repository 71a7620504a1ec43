//! The store suite: records and transitions, listing, idempotency, cancel.

use std::sync::Arc;
use std::time::Duration;

use mailroom::message::{Content, Message, Status};
use mailroom::store::{
    Acceptance, Accepted, Cancel, IdempotencyRecord, ListFilter, Store, Transition,
};

/// A native message whose subject carries `n`.
pub fn native(n: usize) -> Message {
    Message::new(Content::Native(
        serde_json::from_value(serde_json::json!({
            "from": "a@example.com", "to": "b@example.com", "subject": format!("store {n}"), "text": "t",
        }))
        .expect("valid"),
    ))
}

/// `record` without its time of first use, which the store sets by its own clock.
fn undated(record: Option<IdempotencyRecord>) -> Option<IdempotencyRecord> {
    record.map(|r| IdempotencyRecord { created_at: 0, ..r })
}

/// A replay's record, without its time of first use.
fn replayed(accepted: Accepted) -> Option<IdempotencyRecord> {
    match accepted {
        Accepted::Replay(first) => undated(Some(first)),
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// Stores `messages` as accepted for an external queue (not on the store's own queue).
async fn stored(store: &dyn Store, messages: &[Message]) {
    let acceptance = Acceptance {
        messages: messages.to_vec(),
        idempotency: None,
    };
    store.insert(acceptance, false).await.expect("insert");
}

/// Inserted messages read back whole, with an accepted event; transitions change the status,
/// attempts and last error and append events; a finished message never goes back.
pub async fn store_records_and_transitions(store: &dyn Store) {
    let m = native(1);
    let id = m.id;
    let accepted = store
        .insert(
            Acceptance {
                messages: vec![m.clone()],
                idempotency: None,
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(accepted, Accepted::Inserted);
    let r = store.get(id).await.expect("get").expect("found");
    assert_eq!(r.message, m);
    assert_eq!((r.status, r.attempts), (Status::Queued, 0));
    store
        .record(
            id,
            Transition::Deferred {
                attempts: 1,
                error: "451 busy".into(),
                retry_in: Duration::from_secs(1),
            },
        )
        .await
        .expect("record");
    store
        .record(
            id,
            Transition::Delivered {
                attempts: 2,
                detail: "250 ok".into(),
            },
        )
        .await
        .expect("record");
    // A stale worker's late failure must not undo a delivery.
    let applied = store
        .record(
            id,
            Transition::Dead {
                attempts: 1,
                error: "stale".into(),
            },
        )
        .await
        .expect("record");
    assert!(!applied, "a finished message never goes back");
    let r = store.get(id).await.expect("get").expect("found");
    assert_eq!((r.status, r.attempts), (Status::Delivered, 2));
    assert_eq!(r.last_error.as_deref(), Some("451 busy"));
    let kinds: Vec<String> = store
        .events(id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["accepted", "deferred", "delivered"]);
    let st = store
        .statuses(&[id, uuid::Uuid::new_v4()])
        .await
        .expect("statuses");
    assert_eq!(st.len(), 1);
    assert_eq!(st[&id], Status::Delivered);
    assert!(
        store
            .get(uuid::Uuid::new_v4())
            .await
            .expect("get")
            .is_none()
    );
}

/// Listing is newest first, filters by status and pages with `before`; counts add up.
pub async fn store_listing(store: &dyn Store) {
    let messages: Vec<Message> = (0..5).map(native).collect();
    stored(store, &messages).await;
    store
        .record(
            messages[1].id,
            Transition::Dead {
                attempts: 1,
                error: "550".into(),
            },
        )
        .await
        .expect("record");
    let page = store
        .list(ListFilter {
            status: None,
            before: None,
            limit: 3,
        })
        .await
        .expect("list");
    let ids: Vec<_> = page.iter().map(|r| r.message.id).collect();
    assert_eq!(ids, [messages[4].id, messages[3].id, messages[2].id]);
    let next = store
        .list(ListFilter {
            status: None,
            before: Some(messages[2].id),
            limit: 3,
        })
        .await
        .expect("list");
    assert_eq!(
        next.iter().map(|r| r.message.id).collect::<Vec<_>>(),
        [messages[1].id, messages[0].id]
    );
    let dead = store
        .list(ListFilter {
            status: Some(Status::Dead),
            before: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("550"));
    let queued = store
        .list(ListFilter {
            status: Some(Status::Queued),
            before: None,
            limit: 10,
        })
        .await
        .expect("list");
    assert_eq!(queued.len(), 4);
    assert_eq!(store.dead_letters().await.expect("dead letters"), 1);
}

/// An idempotency key is claimed once: a second insert with it replays the first answer and
/// stores nothing; keys past their TTL are purged.
pub async fn store_idempotency(store: &dyn Store) {
    let record = |hash: &str| IdempotencyRecord {
        key: "k-1".into(),
        request_hash: hash.into(),
        status: 202,
        response: "{\"message_id\":\"first\"}".into(),
        pending_until: None,
        created_at: mailroom::store::now_ms(),
    };
    let first = native(1);
    let a = store
        .insert(
            Acceptance {
                messages: vec![first.clone()],
                idempotency: Some(record("h1")),
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(a, Accepted::Inserted);
    let second = native(2);
    let b = store
        .insert(
            Acceptance {
                messages: vec![second.clone()],
                idempotency: Some(record("h2")),
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(replayed(b), undated(Some(record("h1"))));
    assert!(
        store.get(second.id).await.expect("get").is_none(),
        "a replay stores nothing"
    );
    assert_eq!(
        undated(
            store
                .idempotency("k-1", Duration::from_secs(60))
                .await
                .expect("lookup")
        ),
        undated(Some(record("h1")))
    );
    assert_eq!(
        store
            .idempotency("k-2", Duration::from_secs(60))
            .await
            .expect("lookup"),
        None
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store
            .purge_idempotency(Duration::from_millis(1))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .idempotency("k-1", Duration::from_secs(60))
            .await
            .expect("lookup"),
        None
    );
}

/// Two changes of one message at once, such as two redrives of a dead letter, are checked one
/// after the other: the first applies, the second finds the message queued and does not, and
/// one `redriven` event is written. (SQLite's writer takes both in one batch; one UPDATE with
/// two source rows for one message had applied it once and answered both as applied.)
pub async fn store_concurrent_changes(store: &dyn Store) {
    let messages: Vec<Message> = (0..20).map(native).collect();
    stored(store, &messages).await;
    let dead = || Transition::Dead {
        attempts: 1,
        error: "550 no such user".into(),
    };
    for m in &messages {
        assert!(store.record(m.id, dead()).await.expect("record"));
    }
    let pairs = messages.iter().map(|m| async move {
        let (a, b) = tokio::join!(
            store.record(m.id, Transition::Redriven),
            store.record(m.id, Transition::Redriven)
        );
        (m.id, a.expect("record"), b.expect("record"))
    });
    for (id, a, b) in futures::future::join_all(pairs).await {
        assert!(a ^ b, "{id}: one of two redrives applies, not {a} and {b}");
        let redriven = store
            .events(id)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == "redriven")
            .count();
        assert_eq!(redriven, 1, "{id}");
        let r = store.get(id).await.expect("get").expect("found");
        assert_eq!(r.status, Status::Queued);
    }
}

/// A redrive puts the dead letter back on the store's own database queue in the same
/// transaction as its status (with SQS or Kafka, the scheduler hands it over from there); a
/// crash between two commits had left it `queued` with nothing to deliver it. A second redrive
/// changes nothing and queues nothing.
pub async fn store_redrive_requeues(store: &dyn Store, queue: &dyn mailroom::queue::Queue) {
    let (dead, alive) = (native(1), native(2));
    stored(store, &[dead.clone(), alive.clone()]).await;
    let failed = Transition::Dead {
        attempts: 1,
        error: "550 no such user".into(),
    };
    assert!(store.record(dead.id, failed).await.expect("record"));
    assert!(
        !store.redrive(&alive).await.expect("redrive"),
        "only a dead letter is redriven"
    );
    assert!(store.redrive(&dead).await.expect("redrive"));
    assert!(!store.redrive(&dead).await.expect("redrive"));
    let r = store.get(dead.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Queued);
    let leases = queue.pull(10).await.expect("pull");
    let pulled: Vec<_> = leases.iter().map(|l| (l.message.id, l.attempt)).collect();
    assert_eq!(pulled, [(dead.id, 1)], "the redriven one, once");
}

/// Runs every store function against one backend; `fresh` makes an empty store per function.
pub async fn store_suite<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    store_records_and_transitions(fresh().await.as_ref()).await;
    store_listing(fresh().await.as_ref()).await;
    store_idempotency(fresh().await.as_ref()).await;
    store_cancel(fresh().await.as_ref()).await;
    store_claim(fresh().await.as_ref()).await;
    store_pending_keys(fresh().await.as_ref()).await;
    store_concurrent_changes(fresh().await.as_ref()).await;
    store_late_changes(fresh().await.as_ref()).await;
}

/// Changes that come too late are refused: a stale worker's temporary failure does not make a
/// dead letter due again (it would be neither queued nor a dead letter), and a message whose
/// push reported a failure is not abandoned while a worker holds a claim on it (the push landed
/// after all, and the copy is being sent); once the claim has ended, it is.
pub async fn store_late_changes(store: &dyn Store) {
    let (dead, held) = (native(1), native(2));
    stored(store, &[dead.clone(), held.clone()]).await;
    let dead_letter = Transition::Dead {
        attempts: 1,
        error: "550 no such user".into(),
    };
    assert!(store.record(dead.id, dead_letter).await.expect("record"));
    let deferral = Transition::Deferred {
        attempts: 1,
        error: "451 later".into(),
        retry_in: Duration::from_secs(1),
    };
    assert!(
        !store.record(dead.id, deferral).await.expect("record"),
        "a dead letter is not deferred"
    );
    let abandon = || Transition::Abandoned {
        error: "not queued: timed out".into(),
    };
    assert!(!store.record(dead.id, abandon()).await.expect("record"));
    assert_eq!(store.dead_letters().await.expect("dead letters"), 1);
    let r = store.get(dead.id).await.expect("get").expect("found");
    assert_eq!(
        (r.status, r.last_error.as_deref()),
        (Status::Dead, Some("550 no such user"))
    );

    let owner = uuid::Uuid::new_v4();
    store
        .claim(&[held.id], owner, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(
        !store.record(held.id, abandon()).await.expect("record"),
        "a claimed message is being sent"
    );
    let r = store.get(held.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Queued);
    store
        .claim(&[held.id], owner, Duration::ZERO)
        .await
        .expect("end the claim");
    assert!(store.record(held.id, abandon()).await.expect("record"));
    let r = store.get(held.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Abandoned);
}

/// A key committed before an external queue took its messages is pending: a second request
/// with it sees that (and is told to wait) until it is settled; once its time has passed
/// without a settle (the accepting process died mid-push), the key is claimed afresh.
pub async fn store_pending_keys(store: &dyn Store) {
    let now = mailroom::store::now_ms();
    let keyed = |key: &str, pending_until: Option<i64>| IdempotencyRecord {
        key: key.into(),
        request_hash: "h".into(),
        status: 202,
        response: "{}".into(),
        pending_until,
        created_at: mailroom::store::now_ms(),
    };
    let insert = |record: IdempotencyRecord| {
        store.insert(
            Acceptance {
                messages: vec![native(1)],
                idempotency: Some(record),
            },
            false,
        )
    };
    let lookup = |key: &'static str| store.idempotency(key, Duration::from_secs(60));

    let pushing = keyed("pushing", Some(now + 60_000));
    assert_eq!(
        insert(pushing.clone()).await.expect("insert"),
        Accepted::Inserted
    );
    let seen = lookup("pushing").await.expect("lookup").expect("found");
    assert!(seen.pending(mailroom::store::now_ms()), "{seen:?}");
    assert_eq!(
        replayed(insert(keyed("pushing", None)).await.expect("insert")),
        undated(Some(pushing)),
        "a second request finds it pending"
    );
    store
        .settle_idempotency("pushing", None)
        .await
        .expect("settle");
    assert_eq!(
        undated(lookup("pushing").await.expect("lookup")),
        undated(Some(keyed("pushing", None))),
        "settled"
    );
    // The queue took only some: the key is settled with the answer that says so.
    let partly = keyed("partly", Some(now + 60_000));
    assert_eq!(insert(partly).await.expect("insert"), Accepted::Inserted);
    let answer = r#"{"accepted":1,"rejected":1}"#;
    store
        .settle_idempotency("partly", Some((202, answer.into())))
        .await
        .expect("settle");
    let mut settled = keyed("partly", None);
    settled.response = answer.into();
    assert_eq!(
        undated(lookup("partly").await.expect("lookup")),
        undated(Some(settled)),
        "settled with its final answer"
    );

    // The request that died mid-push answered (or would have) with its message's id.
    let first = native(2);
    let mut died = keyed("died", Some(now - 1));
    died.response = serde_json::json!({"message_id": first.id, "status": "queued"}).to_string();
    let accepted = store
        .insert(
            Acceptance {
                messages: vec![first.clone()],
                idempotency: Some(died),
            },
            false,
        )
        .await
        .expect("insert");
    assert_eq!(accepted, Accepted::Inserted);
    assert_eq!(
        lookup("died").await.expect("lookup"),
        None,
        "a key left pending past its time no longer holds"
    );
    assert_eq!(
        insert(keyed("died", None)).await.expect("insert"),
        Accepted::Inserted,
        "a key whose push never settled in time is claimed afresh"
    );
    // The first request's copy, which the queue may have taken after all, goes unsent: the
    // resent request's copy is the one.
    let r = store.get(first.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Abandoned);
    let kinds: Vec<String> = store
        .events(first.id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["accepted", "abandoned"]);
    assert_eq!(
        undated(lookup("died").await.expect("lookup")),
        undated(Some(keyed("died", None)))
    );
}

/// A queued message is cancelled once; afterwards no worker's change takes it back to pending
/// (a deferral is refused), though a delivery already under way may still record that it was
/// sent. Delivered and unknown messages cannot be cancelled.
pub async fn store_cancel(store: &dyn Store) {
    let (m, sent) = (native(1), native(2));
    let acceptance = Acceptance {
        messages: vec![m.clone(), sent.clone()],
        idempotency: None,
    };
    store.insert(acceptance, true).await.expect("insert");
    assert_eq!(store.cancel(m.id).await.expect("cancel"), Cancel::Cancelled);
    assert_eq!(
        store.cancel(m.id).await.expect("cancel"),
        Cancel::Settled(Status::Cancelled)
    );
    let r = store.get(m.id).await.expect("get").expect("found");
    assert_eq!(r.status, Status::Cancelled);
    let events = store.events(m.id).await.expect("events");
    assert_eq!(events.last().expect("an event").kind, "cancelled");
    let deferral = Transition::Deferred {
        attempts: 1,
        error: "451 later".into(),
        retry_in: Duration::from_secs(1),
    };
    assert!(!store.record(m.id, deferral).await.expect("record"));
    let delivered = || Transition::Delivered {
        attempts: 1,
        detail: "250 ok".into(),
    };
    assert!(store.record(m.id, delivered()).await.expect("record"));

    assert!(store.record(sent.id, delivered()).await.expect("record"));
    assert_eq!(
        store.cancel(sent.id).await.expect("cancel"),
        Cancel::Settled(Status::Delivered)
    );
    assert_eq!(
        store.cancel(uuid::Uuid::now_v7()).await.expect("cancel"),
        Cancel::NotFound
    );
}

/// A worker's claim (external queues) refuses a cancel until the message's next status change:
/// a deferred message can be cancelled again, a claim that ran out no longer refuses, and a
/// cancelled message is not claimed (its worker reads `cancelled`). A live claim is its owner's
/// alone: a second copy of the message, taken by another pull, finds it held elsewhere.
pub async fn store_claim(store: &dyn Store) {
    let (m, other, cancelled) = (native(1), native(2), native(3));
    let acceptance = Acceptance {
        messages: vec![m.clone(), other.clone(), cancelled.clone()],
        idempotency: None,
    };
    // As with SQS or Kafka: the store's own queue does not carry them.
    store.insert(acceptance, false).await.expect("insert");
    assert_eq!(
        store.cancel(cancelled.id).await.expect("cancel"),
        Cancel::Cancelled
    );
    let ids = [m.id, other.id, cancelled.id];
    let minute = Duration::from_secs(60);
    let (owner, rival) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let claimed = store.claim(&ids, owner, minute).await.expect("claim");
    assert_eq!(claimed.statuses.get(&m.id), Some(&Status::Queued));
    assert_eq!(
        claimed.statuses.get(&cancelled.id),
        Some(&Status::Cancelled)
    );
    assert!(claimed.elsewhere.is_empty(), "{claimed:?}");
    assert_eq!(
        store.cancel(m.id).await.expect("cancel"),
        Cancel::InFlight,
        "claimed by a worker"
    );
    // A second copy of the message, taken by another pull, is not claimed under the first;
    // the first's owner renews its own claim.
    let second = store.claim(&[m.id], rival, minute).await.expect("claim");
    assert_eq!(second.statuses.get(&m.id), Some(&Status::Queued));
    assert!(second.elsewhere.contains(&m.id), "held by the first");
    let renewed = store.claim(&[m.id], owner, minute).await.expect("claim");
    assert!(renewed.elsewhere.is_empty(), "its own claim");
    let deferral = Transition::Deferred {
        attempts: 1,
        error: "451 later".into(),
        retry_in: Duration::from_secs(1),
    };
    assert!(store.record(m.id, deferral).await.expect("record"));
    assert_eq!(
        store.cancel(m.id).await.expect("cancel"),
        Cancel::Cancelled,
        "the deferral ended the claim"
    );
    // A claim its owner ends (a message given back at shutdown) leaves the next copy free.
    store
        .claim(&[other.id], owner, Duration::ZERO)
        .await
        .expect("end the claim");
    let next = store
        .claim(&[other.id], rival, minute)
        .await
        .expect("claim");
    assert!(next.elsewhere.is_empty(), "ended: {next:?}");
    store
        .claim(&[other.id], rival, Duration::ZERO)
        .await
        .expect("end the claim");
    // A claim that ran out (its worker died) refuses no longer, and another copy may claim.
    store
        .claim(&[other.id], owner, Duration::from_millis(200))
        .await
        .expect("claim");
    assert_eq!(
        store.cancel(other.id).await.expect("cancel"),
        Cancel::InFlight
    );
    let early = store
        .claim(&[other.id], rival, minute)
        .await
        .expect("claim");
    assert!(early.elsewhere.contains(&other.id), "still held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = store
        .claim(&[other.id], rival, minute)
        .await
        .expect("claim");
    assert!(late.elsewhere.is_empty(), "ran out: {late:?}");
    store
        .claim(&[other.id], rival, Duration::ZERO)
        .await
        .expect("end the claim");
    assert_eq!(
        store.cancel(other.id).await.expect("cancel"),
        Cancel::Cancelled
    );
}
