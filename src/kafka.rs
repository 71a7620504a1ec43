//! What the Kafka queue and the delivery events share: the client settings (brokers, TLS,
//! SASL), the topics mailroom needs, and checking or creating them.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use secrecy::ExposeSecret;

use crate::config::KafkaSettings;

/// How long a metadata or admin request may take before the broker counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection settings every mailroom client (producer, consumer, admin) starts from.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "mailroom")
        .set("security.protocol", &settings.security.protocol);
    let security = &settings.security;
    if let Some(mechanism) = &security.sasl_mechanism {
        config.set("sasl.mechanisms", mechanism);
    }
    if let Some(user) = &security.sasl_username {
        config.set("sasl.username", user);
    }
    if let Some(password) = &security.sasl_password {
        config.set("sasl.password", password.expose_secret());
    }
    if let Some(ca) = &security.ssl_ca_location {
        config.set("ssl.ca.location", ca.to_string_lossy());
    }
    config
}

/// The topics this process uses: the queue's three when Kafka is the queue, and the events
/// topic when set.
pub fn topics(settings: &KafkaSettings, queue: bool) -> Vec<String> {
    let mut topics = Vec::new();
    if queue {
        topics.extend([
            settings.topic.clone(),
            settings.retry_topic(),
            settings.dlq_topic(),
        ]);
    }
    topics.extend(settings.events_topic.clone());
    topics
}

/// Makes sure every topic in `topics` exists: missing ones are created when
/// `KAFKA_CREATE_TOPICS=true`, and named in the error otherwise. Returns the ones created.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[String],
) -> anyhow::Result<Vec<String>> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        client_config(settings)
            .create()
            .map_err(|e| anyhow::anyhow!("Invalid Kafka client settings: {e}"))?,
    );
    let missing = missing_topics(admin.clone(), &settings.brokers, topics).await?;
    if missing.is_empty() {
        return Ok(missing);
    }
    if !settings.create_topics {
        anyhow::bail!(
            "Kafka topic(s) {} do not exist on {}: create them, or set KAFKA_CREATE_TOPICS=true to let mailroom create them",
            missing.join(", "),
            settings.brokers
        );
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin.create_topics(&new, &options).await.map_err(|e| {
        anyhow::anyhow!("Could not create Kafka topics on {}: {e}", settings.brokers)
    })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = name, "Created Kafka topic."),
            // Another replica created it first.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("Could not create Kafka topic {name}: {code}"),
        }
    }
    Ok(missing)
}

/// Which of `topics` the cluster does not have. Reads the metadata of every topic (asking for
/// one by name can create it on brokers with `auto.create.topics.enable`).
async fn missing_topics(
    admin: Arc<AdminClient<DefaultClientContext>>,
    brokers: &str,
    topics: &[String],
) -> anyhow::Result<Vec<String>> {
    let metadata =
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, REQUEST_TIMEOUT))
            .await?
            .map_err(|e| anyhow::anyhow!("Kafka brokers {brokers} unreachable: {e}"))?;
    Ok(topics
        .iter()
        .filter(|t| {
            !metadata
                .topics()
                .iter()
                .any(|m| m.name() == t.as_str() && m.error().is_none())
        })
        .cloned()
        .collect())
}

/// `mailroom check`: the brokers answer and the topics exist (created if allowed).
pub async fn check(settings: &KafkaSettings, topics: &[String]) -> Result<String, String> {
    match ensure_topics(settings, topics).await {
        Ok(created) if created.is_empty() => Ok(format!(
            "brokers {} reachable; topics {} exist",
            settings.brokers,
            topics.join(", ")
        )),
        Ok(created) => Ok(format!(
            "brokers {} reachable; created topic(s) {}",
            settings.brokers,
            created.join(", ")
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}
