//! The intake in front of an external queue (SQS, Kafka) whose push reports a failure: what the
//! queue did not take is abandoned for the client to send again, but a push that reported a
//! failure may have landed (an answer lost on the way back), and a message a worker already
//! holds is being sent: it counts as queued, never as one to send again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mailroom::intake::{Intake, IntakeError};
use mailroom::message::{Message, Status};
use mailroom::queue::{Depth, Lease, Queue, QueueError};
use mailroom::store::{Acceptance, Accepted, IdempotencyRecord, Store};
use uuid::Uuid;

use crate::conformance::store::native;
use crate::faulty::{FaultyStore, StoreFault};

/// A queue whose pushes report a failure, but for the messages at the indexes of `taken`. The
/// messages at the indexes of `landed` reached it all the same, and a worker received and
/// claimed each of them before the answer came back.
struct LandsThenFails {
    store: Arc<dyn Store>,
    landed: HashSet<usize>,
    taken: HashSet<usize>,
}

#[async_trait::async_trait]
impl Queue for LandsThenFails {
    async fn push(&self, messages: &[Message]) -> Vec<Result<(), QueueError>> {
        let worker = Uuid::new_v4();
        let mut results = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if self.taken.contains(&i) {
                results.push(Ok(()));
            } else if self.landed.contains(&i) {
                self.store
                    .claim(&[m.id], worker, Duration::from_secs(60))
                    .await
                    .expect("the worker's claim");
                results.push(Err(QueueError::Unavailable("answer lost".into())));
            } else {
                results.push(Err(QueueError::Unavailable("refused".into())));
            }
        }
        results
    }
    async fn pull(&self, _max: usize) -> Result<Vec<Lease>, QueueError> {
        Ok(Vec::new())
    }
    async fn ack(&self, _lease: Lease) -> Result<(), QueueError> {
        Ok(())
    }
    async fn retry(&self, _lease: Lease, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn postpone(&self, _lease: Lease, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead(&self, _lease: Lease, _error: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn depth(&self) -> Result<Depth, QueueError> {
        Ok(Depth::default())
    }
    fn name(&self) -> &'static str {
        "lands-then-fails"
    }
}

async fn intake(landed: &[usize]) -> (tempfile::TempDir, Arc<dyn Store>, Intake) {
    intake_over(landed, &[], false).await
}

/// An intake over a fresh SQLite store (whose abandons fail, with `abandons_fail`) and a
/// [`LandsThenFails`] queue.
async fn intake_over(
    landed: &[usize],
    taken: &[usize],
    abandons_fail: bool,
) -> (tempfile::TempDir, Arc<dyn Store>, Intake) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("i.db").display());
    let db = Arc::new(mailroom::store::sqlite::Db::open(&url).await.expect("open"));
    let store: Arc<dyn Store> = Arc::new(mailroom::store::sqlite::SqliteStore::new(db));
    let queue = LandsThenFails {
        store: store.clone(),
        landed: landed.iter().copied().collect(),
        taken: taken.iter().copied().collect(),
    };
    let intake_store: Arc<dyn Store> = if abandons_fail {
        Arc::new(FaultyStore::new(store.clone(), StoreFault::AbandonsFail))
    } else {
        store.clone()
    };
    let intake = Intake {
        store: intake_store,
        queue: Arc::new(queue),
        queue_in_store: false,
        wake: Arc::default(),
    };
    (dir, store, intake)
}

/// The key's record as a retry with it finds it: pending (told to wait) or settled.
async fn pending(intake: &Intake, messages: &[Message], key: &str) -> bool {
    match intake.accept(keyed(messages, key)).await {
        Ok(Accepted::Replay(first)) => first
            .pending_until
            .is_some_and(|until| until > mailroom::store::now_ms()),
        other => panic!("expected the first answer or a wait, got {other:?}"),
    }
}

fn keyed(messages: &[Message], key: &str) -> Acceptance {
    let ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
    Acceptance {
        messages: messages.to_vec(),
        idempotency: Some(IdempotencyRecord {
            key: key.into(),
            request_hash: "c1:same".into(),
            status: 202,
            response: serde_json::json!({ "message_ids": ids }).to_string(),
            pending_until: None,
            created_at: 0,
        }),
    }
}

async fn status(store: &dyn Store, m: &Message) -> Status {
    store.get(m.id).await.expect("get").expect("stored").status
}

/// A message the queue reported as not taken, but that a worker already holds, is accepted
/// (202, its key settled: a retry is answered from it), not abandoned beside the copy being
/// sent while the client sends it again.
#[tokio::test]
async fn a_failed_push_whose_message_is_being_sent_counts_as_queued() {
    let (_dir, store, intake) = intake(&[0]).await;
    let m = native(1);
    let accepted = intake.accept(keyed(std::slice::from_ref(&m), "held")).await;
    assert_eq!(accepted.expect("accepted"), Accepted::Inserted);
    assert_eq!(status(store.as_ref(), &m).await, Status::Queued);
    let again = intake
        .accept(keyed(&[native(2)], "held"))
        .await
        .expect("answered");
    assert!(matches!(again, Accepted::Replay(_)), "{again:?}");
}

/// A message the queue did not take, and no worker holds, is abandoned and the request is a
/// 503; its key is let go, so the client's retry is accepted afresh.
#[tokio::test]
async fn a_failed_push_nobody_holds_is_abandoned() {
    let (_dir, store, intake) = intake(&[]).await;
    let m = native(1);
    let refused = intake.accept(keyed(std::slice::from_ref(&m), "lost")).await;
    assert!(
        matches!(refused, Err(IntakeError::Unavailable(_))),
        "{refused:?}"
    );
    assert_eq!(status(store.as_ref(), &m).await, Status::Abandoned);
    let retry = intake.accept(keyed(&[native(2)], "lost")).await;
    assert!(
        matches!(retry, Err(IntakeError::Unavailable(_))),
        "a retry is taken afresh (and this queue refuses it too): {retry:?}"
    );
}

/// A batch whose push failed for both messages, one of which a worker holds: that one stays
/// accepted, only the other is refused for the client to send again.
#[tokio::test]
async fn a_failed_batch_push_refuses_only_what_nobody_holds() {
    let (_dir, store, intake) = intake(&[0]).await;
    let (held, lost) = (native(1), native(2));
    let accepted = intake
        .accept(keyed(&[held.clone(), lost.clone()], "batch"))
        .await
        .expect("answered");
    match accepted {
        Accepted::Partly(failed) => {
            let ids: Vec<Uuid> = failed.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, [lost.id]);
        }
        other => panic!("expected a partial answer, got {other:?}"),
    }
    assert_eq!(status(store.as_ref(), &held).await, Status::Queued);
    assert_eq!(status(store.as_ref(), &lost).await, Status::Abandoned);
}

/// When a message the queue did not take cannot be abandoned (the store failed just then), it
/// may still be sent (a push that reported a failure may have landed): the request's key is not
/// let go, nor settled with an answer that tells the client to send it again. A retry with the
/// key is told to wait until the pending time has passed, and then takes the key over,
/// abandoning in the same transaction what is not being sent (one copy, or two, never none).
#[tokio::test]
async fn a_message_that_could_not_be_abandoned_keeps_its_key_pending() {
    // Nothing queued: the request is a 503, and the key stays pending rather than forgotten.
    let (_dir, _store, intake) = intake_over(&[], &[], true).await;
    let m = native(1);
    let refused = intake
        .accept(keyed(std::slice::from_ref(&m), "doubt"))
        .await;
    assert!(
        matches!(refused, Err(IntakeError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(
        pending(&intake, &[native(2)], "doubt").await,
        "not forgotten"
    );

    // One of two queued: the partial answer is given, but the key is not settled with it.
    let (_dir, _store, intake) = intake_over(&[], &[0], true).await;
    let (queued, doubtful) = (native(3), native(4));
    let answer = intake
        .accept(keyed(&[queued.clone(), doubtful.clone()], "partly"))
        .await
        .expect("answered");
    assert!(
        matches!(&answer, Accepted::Partly(failed) if failed.len() == 1 && failed[0].0 == doubtful.id),
        "{answer:?}"
    );
    assert!(
        pending(&intake, &[native(5)], "partly").await,
        "not settled"
    );
}
