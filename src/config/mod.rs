//! Settings: defaults, then an optional TOML file, then environment variables, turned into typed
//! [`Settings`] once. A bad value stops start-up with a sentence naming the variable and what it
//! accepts.

mod archive;
mod delivery;
mod kafka;
mod raw;
mod resolve;
mod settings;
mod token;

pub use archive::S3Settings;
pub use delivery::DeliverySettings;
pub use kafka::{KafkaSecurity, KafkaSettings};
pub use raw::RawConfig;
pub use settings::{AwsSettings, QueueBackend, RetrySettings, Settings, SqsConfig};
pub use token::{MIN_TOKEN_CHARS, TokenSettings};

/// Every environment variable mailroom reads. Deployment files are checked against this list.
pub const ENV_VARS: &[&str] = &[
    "PORT",
    "BIND_ADDRESS",
    "METRICS_PORT",
    "DATA_DIR",
    "API_TOKEN",
    "API_TOKEN_FILE",
    "SSM_TOKEN_PARAMETER",
    "SSM_TOKEN_TTL_SECS",
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "DATABASE_STATEMENT_TIMEOUT_MS",
    "QUEUE_BACKEND",
    "SQS_QUEUE_URL",
    "SQS_DLQ_URL",
    "SQS_POLL_INTERVAL",
    "SQS_WAIT_TIME_SECS",
    "VISIBILITY_TIMEOUT_SECS",
    "KAFKA_BROKERS",
    "KAFKA_TOPIC",
    "KAFKA_GROUP_ID",
    "KAFKA_CREATE_TOPICS",
    "KAFKA_PARTITIONS",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_SESSION_TIMEOUT_SECS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA_LOCATION",
    "EVENTS_TOPIC",
    "DELIVERY",
    "SMTP_URL",
    "SMTP_TIMEOUT_SECS",
    "ARCHIVE_URL",
    "S3_BUCKET_NAME",
    "S3_SERVER_SIDE_ENCRYPTION",
    "S3_SSE_KMS_KEY_ID",
    "SES_CONFIGURATION_SET",
    "SEND_RATE_PER_SECOND",
    "SEND_BURST",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "MAX_ATTEMPTS",
    "RETRY_BASE_MS",
    "RETRY_MAX_MS",
    "WORKER_CONCURRENCY",
    "POLL_INTERVAL_MS",
    "MAX_BODY_BYTES",
    "SHUTDOWN_GRACE_SECS",
    "COMPAT_RECIPIENT",
    "DEFAULT_FROM",
    "TEMPLATES_DIR",
    "LOG_FORMAT",
    "INSTANCE_ID",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
];

/// Variables read outside [`RawConfig`]: the config file's own location and the log filter.
pub const OTHER_ENV_VARS: &[&str] = &["CONFIG_FILE", "RUST_LOG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Invalid setting {var}={value:?}: {accepted}.")]
    Invalid {
        var: &'static str,
        value: String,
        accepted: String,
    },
    #[error("Setting {var} is required {why}.")]
    Missing {
        var: &'static str,
        why: &'static str,
    },
    #[error("{0}")]
    Source(String),
}

/// `value` when it is within `range`; otherwise an error naming `var` and what it accepts.
fn within<T: PartialOrd + ToString>(
    var: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    accepted: impl Into<String>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(var, value, accepted))
    }
}

impl ConfigError {
    fn invalid(var: &'static str, value: impl ToString, accepted: impl Into<String>) -> Self {
        Self::Invalid {
            var,
            value: value.to_string(),
            accepted: accepted.into(),
        }
    }
}
