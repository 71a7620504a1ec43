//! The Kafka settings (`QUEUE_BACKEND=kafka`, `EVENTS_TOPIC`): brokers, topics, group, and TLS /
//! SASL for managed clusters, checked once.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::settings::QueueBackend;
use super::{ConfigError, RawConfig};

/// The Kafka cluster (`QUEUE_BACKEND=kafka`, or `EVENTS_TOPIC` with any queue).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,host:port`.
    pub brokers: String,
    /// The main topic; retries go to `{topic}.retry`, dead letters to `{topic}.dlq`.
    pub topic: String,
    pub group_id: String,
    /// Create missing topics at start-up instead of refusing to start.
    pub create_topics: bool,
    /// Partitions and replication factor of topics mailroom creates (-1: the broker's default).
    pub partitions: i32,
    pub replication_factor: i32,
    /// A worker that stops heartbeating (killed) loses its partitions after this.
    pub session_timeout: Duration,
    pub security: KafkaSecurity,
    /// Delivery events go here when set.
    pub events_topic: Option<String>,
}

/// TLS and SASL for managed clusters such as Amazon MSK.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with SASL.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<SecretString>,
    /// A PEM bundle of CAs to trust instead of the system's.
    pub ssl_ca_location: Option<PathBuf>,
}

impl KafkaSettings {
    pub fn retry_topic(&self) -> String {
        format!("{}.retry", self.topic)
    }

    /// The consumer group that reads the retry topic: a group of its own, so each group holds
    /// members of one subscription and shares out one topic.
    pub fn retry_group_id(&self) -> String {
        format!("{}.retry", self.group_id)
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}

impl RawConfig {
    pub(super) fn kafka_settings(
        &self,
        queue: &QueueBackend,
    ) -> Result<Option<KafkaSettings>, ConfigError> {
        let brokers = match (&self.kafka_brokers, queue, &self.events_topic) {
            (Some(b), _, _) => b.clone(),
            (None, QueueBackend::Kafka, _) => {
                return Err(ConfigError::Missing {
                    var: "KAFKA_BROKERS",
                    why: "when QUEUE_BACKEND=kafka",
                });
            }
            (None, _, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "KAFKA_BROKERS",
                    why: "when EVENTS_TOPIC is set (events are published to Kafka)",
                });
            }
            (None, _, None) => return Ok(None),
        };
        if brokers
            .split(',')
            .any(|b| b.trim().rsplit_once(':').is_none())
        {
            return Err(ConfigError::invalid(
                "KAFKA_BROKERS",
                &brokers,
                "expected host:port, comma-separated",
            ));
        }
        for (var, value) in [
            ("KAFKA_TOPIC", &self.kafka_topic),
            ("EVENTS_TOPIC", &self.events_topic),
        ] {
            if let Some(v) = value
                && (v.is_empty()
                    || v.len() > 240
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(ConfigError::invalid(
                    var,
                    v,
                    "expected a Kafka topic name: 1 to 240 of a-z, A-Z, 0-9, '.', '_', '-'",
                ));
            }
        }
        if self.kafka_partitions < 1 {
            return Err(ConfigError::invalid(
                "KAFKA_PARTITIONS",
                self.kafka_partitions,
                "expected at least 1",
            ));
        }
        if self.kafka_replication_factor == 0 || self.kafka_replication_factor < -1 {
            return Err(ConfigError::invalid(
                "KAFKA_REPLICATION_FACTOR",
                self.kafka_replication_factor,
                "expected at least 1, or -1 for the broker's default",
            ));
        }
        if !(1..=300).contains(&self.kafka_session_timeout_secs) {
            return Err(ConfigError::invalid(
                "KAFKA_SESSION_TIMEOUT_SECS",
                self.kafka_session_timeout_secs,
                "expected 1 to 300 seconds (and within the brokers' group.min/max.session.timeout.ms)",
            ));
        }
        let protocol = self
            .kafka_security_protocol
            .as_deref()
            .unwrap_or("plaintext")
            .to_ascii_lowercase();
        if !matches!(
            protocol.as_str(),
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
        ) {
            return Err(ConfigError::invalid(
                "KAFKA_SECURITY_PROTOCOL",
                &protocol,
                "expected plaintext, ssl, sasl_plaintext or sasl_ssl",
            ));
        }
        let sasl = protocol.starts_with("sasl_");
        let sasl_mechanism = match (&self.kafka_sasl_mechanism, sasl) {
            (Some(m), true) => {
                let m = m.to_ascii_uppercase();
                if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                    return Err(ConfigError::invalid(
                        "KAFKA_SASL_MECHANISM",
                        m,
                        "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    ));
                }
                Some(m)
            }
            (None, true) => Some("SCRAM-SHA-512".to_string()),
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    "KAFKA_SASL_MECHANISM",
                    self.kafka_sasl_mechanism.as_deref().unwrap_or_default(),
                    "takes effect only with KAFKA_SECURITY_PROTOCOL=sasl_plaintext or sasl_ssl",
                ));
            }
            (None, false) => None,
        };
        if sasl && (self.kafka_sasl_username.is_none() || self.kafka_sasl_password.is_none()) {
            return Err(ConfigError::Missing {
                var: "KAFKA_SASL_USERNAME",
                why: "with KAFKA_SASL_PASSWORD when KAFKA_SECURITY_PROTOCOL uses SASL",
            });
        }
        Ok(Some(KafkaSettings {
            brokers,
            topic: self
                .kafka_topic
                .clone()
                .unwrap_or_else(|| "mailroom-messages".into()),
            group_id: self
                .kafka_group_id
                .clone()
                .unwrap_or_else(|| "mailroom-workers".into()),
            create_topics: self.kafka_create_topics,
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication_factor,
            session_timeout: Duration::from_secs(self.kafka_session_timeout_secs),
            security: KafkaSecurity {
                protocol,
                sasl_mechanism,
                sasl_username: self.kafka_sasl_username.clone(),
                sasl_password: self.kafka_sasl_password.clone(),
                ssl_ca_location: self.kafka_ssl_ca_location.clone(),
            },
            events_topic: self.events_topic.clone(),
        }))
    }
}
