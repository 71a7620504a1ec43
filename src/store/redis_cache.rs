//! Idempotency keys cached in Redis for the API replicas: a repeated request is answered from
//! Redis without a database read. The store stays the authority: its unique key decides races,
//! and any Redis failure falls through to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{
    Acceptance, Accepted, Cancel, Claimed, Event, IDEMPOTENCY_TTL, IdempotencyRecord, ListFilter,
    Record, Store, StoreError, Transition, now_ms,
};
use crate::message::{Message, Status};

/// When a key stops holding (Unix ms). A record cached by a release that did not keep
/// `created_at` reads as long expired, and the store is asked.
fn expires_at(record: &IdempotencyRecord) -> i64 {
    record.created_at + IDEMPOTENCY_TTL.as_millis() as i64
}

pub struct RedisCachedStore {
    inner: Arc<dyn Store>,
    conn: ConnectionManager,
    prefix: String,
}

impl RedisCachedStore {
    /// `prefix` namespaces the keys (`REDIS_KEY_PREFIX`): `{prefix}:idempotency:{key}`.
    pub fn new(inner: Arc<dyn Store>, conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            inner,
            conn,
            prefix: prefix.to_string(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:idempotency:{key}", self.prefix)
    }

    /// Caches an answer to give again until the key's 24 hours from its first use are over (a
    /// later write does not extend them); not a pending one, whose push may still fail (the
    /// store is asked again until it is settled).
    async fn remember(&self, record: &IdempotencyRecord) {
        let left = expires_at(record) - now_ms();
        if record.pending_until.is_some() || left <= 0 {
            return;
        }
        let Ok(value) = serde_json::to_string(record) else {
            return;
        };
        let mut conn = self.conn.clone();
        let result: redis::RedisResult<()> = conn
            .pset_ex(self.key(&record.key), value, left as u64)
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "Idempotency cache write skipped.");
        }
    }
}

#[async_trait]
impl Store for RedisCachedStore {
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError> {
        let idempotency = acceptance.idempotency.clone();
        let accepted = self.inner.insert(acceptance, enqueue).await?;
        match (&accepted, idempotency) {
            (Accepted::Inserted, Some(claimed)) => self.remember(&claimed).await,
            (Accepted::Replay(first), _) => self.remember(first).await,
            _ => {}
        }
        Ok(accepted)
    }

    async fn idempotency(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let cached: redis::RedisResult<Option<String>> = conn.get(self.key(key)).await;
        if let Ok(Some(text)) = cached
            && let Ok(record) = serde_json::from_str::<IdempotencyRecord>(&text)
            && expires_at(&record) > now_ms()
        {
            return Ok(Some(record));
        }
        let found = self.inner.idempotency(key, ttl).await?;
        if let Some(record) = &found {
            self.remember(record).await;
        }
        Ok(found)
    }

    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        self.inner.record(id, transition).await
    }

    async fn redrive(&self, message: &Message) -> Result<bool, StoreError> {
        self.inner.redrive(message).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }

    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError> {
        self.inner.cancel(id).await
    }

    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Record>, StoreError> {
        self.inner.list(filter).await
    }

    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
        self.inner.statuses(ids).await
    }

    async fn claim(&self, ids: &[Uuid], owner: Uuid, ttl: Duration) -> Result<Claimed, StoreError> {
        self.inner.claim(ids, owner, ttl).await
    }

    async fn announce_again(&self, id: Uuid, transition: Transition) {
        self.inner.announce_again(id, transition).await
    }

    async fn dead_letters(&self) -> Result<u64, StoreError> {
        self.inner.dead_letters().await
    }

    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        self.inner.purge_idempotency(ttl).await
    }

    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError> {
        self.inner.forget_idempotency(key).await?;
        let mut conn = self.conn.clone();
        // Left in the cache, the key would replay an answer the store no longer stands by.
        let removed: redis::RedisResult<()> = conn.del(self.key(key)).await;
        removed.map_err(|e| StoreError::Unavailable(format!("idempotency cache: {e}")))
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
