//! Delivery events (`EVENTS_TOPIC`): every status change the store applies (accepted, deferred,
//! delivered, archived, dead, redriven, abandoned) is published as a small JSON object keyed by
//! message id, so other services can react without polling the API.
//!
//! [`EventingStore`] wraps the store, so every path that changes a status (intake, worker,
//! redrive, CLI) publishes without knowing about it. Publishing never holds up the change: the
//! event is handed to the producer's queue and its outcome counted
//! (`mailroom_events_published_total{outcome}`). Events of one message share a key, hence a
//! partition, hence their order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::KafkaSettings;
use crate::message::Status;
use crate::store::{
    Acceptance, Accepted, Event, IdempotencyRecord, ListFilter, Record, Store, StoreError,
    Transition,
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

/// Where events go. `publish` must not wait for the broker.
pub trait Publisher: Send + Sync + 'static {
    fn publish(&self, event: DeliveryEvent);
}

/// Publishes to a Kafka topic, idempotently, keyed by message id.
pub struct KafkaEvents {
    producer: FutureProducer,
    topic: String,
}

impl KafkaEvents {
    pub fn new(
        settings: &KafkaSettings,
        topic: String,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = crate::kafka::client_config(settings)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .create()?;
        Ok(Self { producer, topic })
    }
}

impl Publisher for KafkaEvents {
    fn publish(&self, event: DeliveryEvent) {
        let Ok(payload) = serde_json::to_vec(&event) else {
            return;
        };
        let key = event.message_id.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    let outcome = match delivery.await {
                        Ok(Ok(_)) => "published",
                        Ok(Err((e, _))) => {
                            tracing::warn!(message_id = %event.message_id, event = event.event, error = %e, "A delivery event was not published.");
                            "failed"
                        }
                        Err(_) => "failed",
                    };
                    metrics::counter!("mailroom_events_published_total", "outcome" => outcome)
                        .increment(1);
                });
            }
            Err((e, _)) => {
                tracing::warn!(message_id = %event.message_id, error = %e, "A delivery event was dropped: the producer's queue is full.");
                metrics::counter!("mailroom_events_published_total", "outcome" => "dropped")
                    .increment(1);
            }
        }
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
            for message_id in ids {
                self.publisher.publish(DeliveryEvent {
                    message_id,
                    event: "accepted".into(),
                    status: Status::Queued.as_str().into(),
                    at,
                    attempts: Some(0),
                    detail: None,
                });
            }
        }
        Ok(accepted)
    }

    async fn record(&self, id: Uuid, transition: Transition) -> Result<bool, StoreError> {
        let event = DeliveryEvent {
            message_id: id,
            event: transition.event().into(),
            status: transition.status().as_str().into(),
            at: Utc::now(),
            attempts: transition.attempts(),
            detail: Some(transition.detail()),
        };
        let applied = self.inner.record(id, transition).await?;
        if applied {
            self.publisher.publish(event);
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

    async fn events(&self, id: Uuid) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id).await
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Record>, StoreError> {
        self.inner.list(filter).await
    }

    async fn statuses(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
        self.inner.statuses(ids).await
    }

    async fn counts(&self) -> Result<HashMap<Status, u64>, StoreError> {
        self.inner.counts().await
    }

    async fn purge_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        self.inner.purge_idempotency(ttl).await
    }

    async fn forget_idempotency(&self, key: &str) -> Result<(), StoreError> {
        self.inner.forget_idempotency(key).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
