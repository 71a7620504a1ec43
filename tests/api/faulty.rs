//! A store that fails in one chosen way over a real one, for the paths a real database cannot be
//! made to take on cue: a write that fails or hangs just when it matters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mailroom::message::{Message, Status};
use mailroom::store::{
    Acceptance, Accepted, Cancel, Claimed, Event, IdempotencyRecord, ListFilter, Record, Store,
    StoreError, Transition,
};
use uuid::Uuid;

pub enum StoreFault {
    /// Writes of `abandoned` fail (the database went away just then).
    AbandonsFail,
    /// A delivery's outcome (`delivered`, `archived`) is written only after this long (a
    /// connection to a database that failed over, answering late).
    SlowOutcome(Duration),
}

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    fault: StoreFault,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, fault: StoreFault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError> {
        self.inner.insert(acceptance, enqueue).await
    }
    async fn idempotency(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(key, ttl).await
    }
    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        match (&self.fault, &transition) {
            (StoreFault::AbandonsFail, Transition::Abandoned { .. }) => {
                return Err(StoreError::Unavailable("database gone".into()));
            }
            (
                StoreFault::SlowOutcome(hold),
                Transition::Delivered { .. } | Transition::Archived { .. },
            ) => tokio::time::sleep(*hold).await,
            _ => {}
        }
        self.inner.record(id, transition).await
    }
    async fn redrive(&self, message: &Message) -> Result<bool, StoreError> {
        self.inner.redrive(message).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }
    async fn list(&self, filter: ListFilter) -> Result<Vec<Record>, StoreError> {
        self.inner.list(filter).await
    }
    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError> {
        self.inner.cancel(id).await
    }
    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
        self.inner.statuses(ids).await
    }
    async fn claim(&self, ids: &[Uuid], owner: Uuid, ttl: Duration) -> Result<Claimed, StoreError> {
        self.inner.claim(ids, owner, ttl).await
    }
    async fn dead_letters(&self) -> Result<u64, StoreError> {
        self.inner.dead_letters().await
    }
    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        self.inner.purge_idempotency(ttl).await
    }
    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError> {
        self.inner.forget_idempotency(key).await
    }
    async fn settle_idempotency(
        &self,
        key: &str,
        answer: Option<(u16, String)>,
    ) -> Result<(), StoreError> {
        self.inner.settle_idempotency(key, answer).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
