//! Delivery events (`EVENTS_TOPIC`): every status change the store applies (accepted, deferred,
//! delivered, archived, dead, redriven, abandoned) is published as a small JSON object keyed by
//! message id, so other services can react without polling the API.
//!
//! [`EventingStore`] wraps the store, so every path that changes a status (intake, worker,
//! redrive, CLI) publishes without knowing about it. A change returns once its event is
//! acknowledged by the brokers (or has failed, which is logged and counted in
//! `mailroom_events_published_total{outcome}`; the change itself stands). So the worker settles a
//! message only after its event is out, and a crash in between redelivers the message, whose
//! next holder finds it sent and publishes its event again ([`Store::announce_again`]): events
//! are at least once. Events of one
//! message share a key, hence a partition, hence their order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::KafkaSettings;
use crate::message::{Message, Status};
use crate::store::{
    Acceptance, Accepted, CANCELLED_DETAIL, Cancel, Claimed, Event, IdempotencyRecord, ListFilter,
    Record, Store, StoreError, Transition,
};

/// One status change, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryEvent {
    pub message_id: Uuid,
    /// `accepted`, `deferred`, `delivered`, `archived`, `dead`, `redriven` or `abandoned`.
    pub event: String,
    /// The status the message has now.
    pub status: String,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where events go. Never fails the caller: a lost event is logged and counted.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    async fn publish(&self, events: Vec<DeliveryEvent>);
}

/// Publishes to a Kafka topic, idempotently, keyed by message id.
pub struct KafkaEvents {
    producer: FutureProducer,
    topic: String,
}

/// How long a status change waits for room in the producer's queue; the delivery itself is
/// bounded by `message.timeout.ms` (5 s). Together they bound what an unreachable cluster adds
/// to each status change, well inside a worker's lease.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

impl KafkaEvents {
    pub fn new(
        settings: &KafkaSettings,
        topic: String,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = crate::kafka::client_config(settings)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "5000")
            .create()?;
        Ok(Self { producer, topic })
    }
}

#[async_trait]
impl Publisher for KafkaEvents {
    async fn publish(&self, events: Vec<DeliveryEvent>) {
        let sends = events.iter().map(|event| async move {
            let payload = serde_json::to_vec(event).unwrap_or_default();
            let key = event.message_id.to_string();
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            let outcome = match self.producer.send(record, PUBLISH_TIMEOUT).await {
                Ok(_) => "published",
                Err((e, _)) => {
                    tracing::warn!(message_id = %event.message_id, event = event.event, error = %e, "A delivery event was not published.");
                    "failed"
                }
            };
            metrics::counter!("mailroom_events_published_total", "outcome" => outcome)
                .increment(1);
        });
        futures::future::join_all(sends).await;
    }
}

/// The event of a status change, timed as it is asked for.
fn change_event(message_id: Uuid, transition: &Transition) -> DeliveryEvent {
    DeliveryEvent {
        message_id,
        event: transition.event().into(),
        status: transition.status().as_str().into(),
        at: Utc::now(),
        attempts: transition.attempts(),
        detail: Some(transition.detail()),
    }
}

/// A store that publishes every status change it applies.
pub struct EventingStore {
    inner: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
}

impl EventingStore {
    pub fn new(inner: Arc<dyn Store>, publisher: Arc<dyn Publisher>) -> Self {
        Self { inner, publisher }
    }
}

#[async_trait]
impl Store for EventingStore {
    async fn insert(&self, acceptance: Acceptance, enqueue: bool) -> Result<Accepted, StoreError> {
        let ids: Vec<Uuid> = acceptance.messages.iter().map(|m| m.id).collect();
        let accepted = self.inner.insert(acceptance, enqueue).await?;
        if accepted == Accepted::Inserted {
            let at = Utc::now();
            let events = ids
                .into_iter()
                .map(|message_id| DeliveryEvent {
                    message_id,
                    event: "accepted".into(),
                    status: Status::Queued.as_str().into(),
                    at,
                    attempts: Some(0),
                    detail: None,
                })
                .collect();
            self.publisher.publish(events).await;
        }
        Ok(accepted)
    }

    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        let event = change_event(id, &transition);
        let applied = self.inner.record(id, transition).await?;
        if applied {
            self.publisher.publish(vec![event]).await;
        }
        Ok(applied)
    }

    async fn announce_again(&self, id: Uuid, transition: Transition) {
        self.publisher
            .publish(vec![change_event(id, &transition)])
            .await;
    }

    async fn redrive(&self, message: &Message) -> Result<bool, StoreError> {
        let event = change_event(message.id, &Transition::Redriven);
        let applied = self.inner.redrive(message).await?;
        if applied {
            self.publisher.publish(vec![event]).await;
        }
        Ok(applied)
    }

    async fn idempotency(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency(key, ttl).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }

    async fn cancel(&self, id: Uuid) -> Result<Cancel, StoreError> {
        let outcome = self.inner.cancel(id).await?;
        if outcome == Cancel::Cancelled {
            let event = DeliveryEvent {
                message_id: id,
                event: "cancelled".into(),
                status: Status::Cancelled.as_str().into(),
                at: Utc::now(),
                attempts: None,
                detail: Some(CANCELLED_DETAIL.into()),
            };
            self.publisher.publish(vec![event]).await;
        }
        Ok(outcome)
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
