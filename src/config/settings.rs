//! The typed settings every part of mailroom is built from, checked once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{
    ConfigError, DeliverySettings, KafkaSettings, RawConfig, S3Settings, TokenSettings, within,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueBackend {
    Database,
    Sqs,
    Kafka,
}

impl QueueBackend {
    /// Its `QUEUE_BACKEND` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueBackend::Database => "database",
            QueueBackend::Sqs => "sqs",
            QueueBackend::Kafka => "kafka",
        }
    }
}

/// Where the AWS clients point: `None` leaves it to the SDK's own chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The SQS queue (`QUEUE_BACKEND=sqs`).
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// Long-poll wait of each receive (`SQS_WAIT_TIME_SECS`, 0 to 20).
    pub wait: Duration,
}

#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

/// The typed settings every part of mailroom is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub token: TokenSettings,
    pub database_url: SecretString,
    pub database_pool_size: u32,
    pub database_statement_timeout: Duration,
    pub queue: QueueBackend,
    /// Set when `queue` is [`QueueBackend::Sqs`].
    pub sqs: Option<SqsConfig>,
    /// Set when `queue` is [`QueueBackend::Kafka`] or `EVENTS_TOPIC` is set.
    pub kafka: Option<KafkaSettings>,
    pub visibility_timeout: Duration,
    pub delivery: DeliverySettings,
    /// `None` disables archiving.
    pub archive_url: Option<url::Url>,
    pub s3: S3Settings,
    pub aws: AwsSettings,
    pub ses_configuration_set: Option<String>,
    /// `None` means no ceiling.
    pub send_rate_per_second: Option<f64>,
    pub send_burst: u32,
    /// Shares the send ceiling and the idempotency cache across replicas.
    pub redis_url: Option<SecretString>,
    /// Namespaces the Redis keys, so deployments sharing one Redis do not share a ceiling.
    pub redis_key_prefix: String,
    pub retry: RetrySettings,
    pub worker_concurrency: usize,
    pub poll_interval: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub compat_recipient: Option<lettre::message::Mailbox>,
    pub default_from: Option<lettre::message::Mailbox>,
    /// Where the message templates are, and whether the directory must exist (it was set).
    pub templates_dir: PathBuf,
    pub templates_required: bool,
    pub log_json: Option<bool>,
    pub instance_id: Option<String>,
    pub raw: RawConfig,
}

impl Settings {
    pub async fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        RawConfig::load(file).await?.into_settings()
    }
}

/// The longest retry delay: 12 hours, as long as SQS can hide a message (and a due time far
/// beyond any use stays far from overflowing the queues' millisecond clocks).
const MAX_RETRY_MS: u64 = 12 * 3600 * 1000;

/// The most sends at once after an idle spell.
const MAX_BURST: u32 = 10_000;

/// `BIND_ADDRESS` as an IP address.
pub(super) fn bind_ip(value: &str) -> Result<IpAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            "BIND_ADDRESS",
            value,
            "expected an IP address such as 127.0.0.1 or 0.0.0.0",
        )
    })
}

impl RawConfig {
    /// Checks every value and turns it into its typed form.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let ip = bind_ip(&self.bind_address)?;
        if self.metrics_port == Some(self.port) && self.port != 0 {
            return Err(ConfigError::invalid(
                "METRICS_PORT",
                self.port,
                "must differ from PORT (leave it unset to serve /metrics on PORT)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "DATA_DIR",
                "",
                "expected a directory (unset, it is ./mailroom-data)",
            ));
        }
        let data_dir = self.data_dir.clone();
        let token = self.token_settings(&data_dir)?;
        let database_url = self.database_url.clone().unwrap_or_else(|| {
            SecretString::from(format!(
                "sqlite://{}",
                data_dir.join("mailroom.db").display()
            ))
        });
        let db = database_url.expose_secret();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres:")
            || db.starts_with("postgresql:"))
        {
            return Err(ConfigError::invalid(
                "DATABASE_URL",
                "[redacted]",
                "expected sqlite://PATH or postgres://...",
            ));
        }
        within(
            "DATABASE_POOL_SIZE",
            self.database_pool_size,
            1..=1000,
            "expected 1 to 1000 connections",
        )?;
        within(
            "DATABASE_STATEMENT_TIMEOUT_MS",
            self.database_statement_timeout_ms,
            100..=u64::MAX,
            "expected at least 100 ms",
        )?;
        if self.redis_key_prefix.is_empty()
            || !self
                .redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(ConfigError::invalid(
                "REDIS_KEY_PREFIX",
                &self.redis_key_prefix,
                "expected letters, digits and - _ . :",
            ));
        }
        if let Some(url) = &self.redis_url {
            let u = url.expose_secret();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(ConfigError::invalid(
                    "REDIS_URL",
                    "[redacted]",
                    "expected redis://host:port or rediss://host:port",
                ));
            }
        }
        let queue = match self.queue_backend.as_deref() {
            None if self.sqs_queue_url.is_some() => QueueBackend::Sqs,
            None | Some("database") => QueueBackend::Database,
            Some("sqs") => QueueBackend::Sqs,
            Some("kafka") => QueueBackend::Kafka,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "QUEUE_BACKEND",
                    other,
                    "expected one of database, sqs, kafka",
                ));
            }
        };
        if queue == QueueBackend::Sqs && self.sqs_queue_url.is_none() {
            return Err(ConfigError::Missing {
                var: "SQS_QUEUE_URL",
                why: "when QUEUE_BACKEND=sqs",
            });
        }
        within(
            "SQS_WAIT_TIME_SECS",
            self.sqs_wait_time_secs,
            0..=20,
            "expected 0 to 20 seconds (SQS long polling waits at most 20)",
        )?;
        let sqs = match (&queue, &self.sqs_queue_url) {
            (QueueBackend::Sqs, Some(url)) => Some(SqsConfig {
                queue_url: url.clone(),
                dlq_url: self.sqs_dlq_url.clone(),
                wait: Duration::from_secs(self.sqs_wait_time_secs),
            }),
            _ => None,
        };
        let kafka = self.kafka_settings(&queue)?;
        within(
            "VISIBILITY_TIMEOUT_SECS",
            self.visibility_timeout_secs,
            1..=43_200,
            "expected 1 to 43200 seconds",
        )?;
        let delivery = self.delivery_settings(&data_dir)?;
        let archive_url = self.archive_url(&data_dir)?;
        if !self.send_rate_per_second.is_finite() || self.send_rate_per_second < 0.0 {
            return Err(ConfigError::invalid(
                "SEND_RATE_PER_SECOND",
                self.send_rate_per_second,
                "expected a number of messages per second, or 0 for no ceiling",
            ));
        }
        within(
            "SEND_BURST",
            self.send_burst,
            1..=MAX_BURST,
            format!("expected 1 to {MAX_BURST}"),
        )?;
        within(
            "MAX_ATTEMPTS",
            self.max_attempts,
            1..=100,
            "expected 1 to 100",
        )?;
        within(
            "RETRY_MAX_MS",
            self.retry_max_ms,
            0..=MAX_RETRY_MS,
            format!(
                "expected at most {MAX_RETRY_MS} (12 hours, the longest SQS can hide a message)"
            ),
        )?;
        within(
            "RETRY_BASE_MS",
            self.retry_base_ms,
            1..=self.retry_max_ms,
            format!(
                "expected 1 to RETRY_MAX_MS ({}), the longest wait between attempts",
                self.retry_max_ms
            ),
        )?;
        within(
            "WORKER_CONCURRENCY",
            self.worker_concurrency,
            1..=10_000,
            "expected 1 to 10000",
        )?;
        within(
            "MAX_BODY_BYTES",
            self.max_body_bytes,
            1024..=usize::MAX,
            "expected at least 1024 bytes",
        )?;
        let mailbox = |var: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    crate::message::deliverable(v).map_err(|_| {
                        ConfigError::invalid(
                            var,
                            v,
                            "expected an email address, optionally as Name <address>, with an ASCII part before the @ and a host name after it",
                        )
                    })
                })
                .transpose()
        };
        let compat_recipient = mailbox("COMPAT_RECIPIENT", &self.compat_recipient)?;
        let default_from = mailbox("DEFAULT_FROM", &self.default_from)?;
        if compat_recipient.is_some() && default_from.is_none() {
            return Err(ConfigError::Missing {
                var: "DEFAULT_FROM",
                why: "when COMPAT_RECIPIENT is set (compat messages name no sender address)",
            });
        }
        let log_json = match self.log_format.as_deref() {
            None => None,
            Some("json") => Some(true),
            Some("pretty") => Some(false),
            Some(other) => {
                return Err(ConfigError::invalid(
                    "LOG_FORMAT",
                    other,
                    "expected json or pretty",
                ));
            }
        };
        let poll_interval = match &sqs {
            // Between empty long polls; never a busy loop of short polls.
            Some(q) => {
                Duration::from_secs(self.sqs_poll_interval.unwrap_or(0)).max(if q.wait.is_zero() {
                    Duration::from_secs(1)
                } else {
                    Duration::ZERO
                })
            }
            // A Kafka pull waits for the consumer itself.
            None if queue == QueueBackend::Kafka => Duration::ZERO,
            None => Duration::from_millis(self.poll_interval_ms.max(1)),
        };
        Ok(Settings {
            http_addr: SocketAddr::new(ip, self.port),
            metrics_addr: self.metrics_port.map(|p| SocketAddr::new(ip, p)),
            data_dir,
            token,
            database_url,
            database_pool_size: self.database_pool_size,
            database_statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
            queue,
            sqs,
            kafka,
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            delivery,
            archive_url,
            s3: S3Settings {
                region: self.aws_region.clone(),
                endpoint_url: self.aws_endpoint_url.clone(),
                server_side_encryption: self.s3_server_side_encryption.clone(),
                kms_key_id: self.s3_sse_kms_key_id.clone(),
            },
            aws: AwsSettings {
                region: self.aws_region.clone(),
                endpoint_url: self.aws_endpoint_url.clone(),
            },
            ses_configuration_set: self.ses_configuration_set.clone(),
            send_rate_per_second: (self.send_rate_per_second > 0.0)
                .then_some(self.send_rate_per_second),
            send_burst: self.send_burst,
            redis_url: self.redis_url.clone(),
            redis_key_prefix: self.redis_key_prefix.clone(),
            retry: RetrySettings {
                max_attempts: self.max_attempts,
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_millis(self.retry_max_ms),
            },
            worker_concurrency: self.worker_concurrency,
            poll_interval,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            compat_recipient,
            default_from,
            templates_dir: self
                .templates_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("templates")),
            templates_required: self.templates_dir.is_some(),
            log_json,
            instance_id: self.instance_id.clone(),
            raw: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawConfig {
        RawConfig {
            data_dir: PathBuf::from("/tmp/mailroom-test"),
            ..RawConfig::default()
        }
    }

    /// The defaults alone make a working embedded configuration.
    #[test]
    fn defaults_are_valid() {
        let s = raw().into_settings().expect("defaults are valid");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.queue, QueueBackend::Database);
        assert_eq!(s.delivery.name(), "file");
        assert_eq!(s.send_rate_per_second, Some(7.0));
        assert!(matches!(s.token, TokenSettings::Generated(_)));
        assert_eq!(
            s.archive_url.expect("archive on by default").as_str(),
            "file:///tmp/mailroom-test/archive/"
        );
    }

    /// SMTP_TIMEOUT_SECS must be below the visibility timeout only where a relay is used: a
    /// short visibility timeout with the file delivery is not refused for its default.
    #[test]
    fn smtp_timeout_binds_only_smtp() {
        let short = |delivery: &str| RawConfig {
            delivery: delivery.into(),
            smtp_url: Some("smtp://127.0.0.1:2525".to_string().into()),
            visibility_timeout_secs: 10,
            ..raw()
        };
        assert!(short("file").into_settings().is_ok());
        let err = short("smtp").into_settings().unwrap_err().to_string();
        assert!(
            err.contains("SMTP_TIMEOUT_SECS") && err.contains("VISIBILITY_TIMEOUT_SECS (10)"),
            "{err}"
        );
    }

    /// Retry delays and bursts have a ceiling: a due time past any use, or a burst that books
    /// years of slots at once, is refused with its variable's name.
    #[test]
    fn retry_and_burst_have_ceilings() {
        let err = |raw: RawConfig| raw.into_settings().unwrap_err().to_string();
        let e = err(RawConfig {
            retry_max_ms: u64::MAX,
            ..raw()
        });
        assert!(e.contains("RETRY_MAX_MS") && e.contains("43200000"), "{e}");
        // A bad base is named as the base, with its own value (it was reported as RETRY_MAX_MS).
        for base in [0, 4_000_000] {
            let e = err(RawConfig {
                retry_base_ms: base,
                ..raw()
            });
            assert!(e.contains(&format!("RETRY_BASE_MS=\"{base}\"")), "{e}");
        }
        let e = err(RawConfig {
            send_burst: u32::MAX,
            ..raw()
        });
        assert!(e.contains("SEND_BURST") && e.contains("1 to 10000"), "{e}");
    }

    /// A bad value names its variable and what is accepted.
    #[test]
    fn bad_values_name_the_variable() {
        let err = RawConfig {
            delivery: "pigeon".into(),
            ..raw()
        }
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DELIVERY") && err.contains("file, smtp, ses, none"),
            "{err}"
        );

        let err = RawConfig {
            delivery: "smtp".into(),
            ..raw()
        }
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(err.contains("SMTP_URL"), "{err}");

        let err = RawConfig {
            compat_recipient: Some("ops@example.com".into()),
            ..raw()
        }
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(err.contains("DEFAULT_FROM"), "{err}");
    }

    /// The addresses from settings go into every compat message's headers: a line break in
    /// them (an environment value pasted with one) is refused at start, as in a request.
    #[test]
    fn line_breaks_in_setting_addresses_are_refused() {
        for value in [
            "Evil\r\nBcc: x@evil.example <noreply@example.com>",
            "Name <noreply@example.com>\r\nBcc: x@evil.example",
            "\"Evil\nBcc: x@evil.example\" <noreply@example.com>",
        ] {
            let from = RawConfig {
                default_from: Some(value.into()),
                ..raw()
            }
            .into_settings();
            assert!(
                from.as_ref()
                    .is_err_and(|e| e.to_string().contains("DEFAULT_FROM")),
                "{value:?}: {:?}",
                from.map(|s| s.default_from)
            );
            let to = RawConfig {
                default_from: Some("noreply@example.com".into()),
                compat_recipient: Some(value.into()),
                ..raw()
            }
            .into_settings();
            assert!(
                to.as_ref()
                    .is_err_and(|e| e.to_string().contains("COMPAT_RECIPIENT")),
                "{value:?}: {:?}",
                to.map(|s| s.compat_recipient)
            );
        }
    }

    /// `S3_BUCKET_NAME` alone means an S3 archive; `SQS_QUEUE_URL` alone picks the SQS queue.
    #[test]
    fn seed_variables_pick_backends() {
        let s = RawConfig {
            s3_bucket_name: Some("mail-archive".into()),
            sqs_queue_url: Some("http://127.0.0.1:1/q".into()),
            ..raw()
        }
        .into_settings()
        .expect("valid");
        assert_eq!(s.archive_url.expect("s3").as_str(), "s3://mail-archive");
        assert_eq!(s.queue, QueueBackend::Sqs);
        // Not a bucket name: refused under its own name, not taken as a bucket called `s3`.
        let prefixed = RawConfig {
            s3_bucket_name: Some("mail-archive/prod".into()),
            ..raw()
        }
        .into_settings()
        .expect("a bucket with a prefix");
        let url = prefixed.archive_url.expect("s3");
        assert_eq!(url.as_str(), "s3://mail-archive/prod");
        for bad in [
            "s3://mail-archive",
            "my bucket",
            "",
            "/prefix",
            "mail:archive",
        ] {
            let err = RawConfig {
                s3_bucket_name: Some(bad.into()),
                ..raw()
            }
            .into_settings()
            .unwrap_err()
            .to_string();
            assert!(err.contains("S3_BUCKET_NAME"), "{bad}: {err}");
        }
    }

    /// Values that would quietly put mailroom's files somewhere unexpected are refused: an empty
    /// DATA_DIR (the current directory), and a `file://` URL whose "directory" is a host name.
    #[test]
    fn places_that_are_no_directory_are_refused() {
        let err = RawConfig {
            data_dir: PathBuf::new(),
            ..raw()
        }
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("Invalid setting DATA_DIR=\"\""), "{err}");
        for bad in ["file://relative", "file://archive/dir"] {
            let err = RawConfig {
                archive_url: Some(bad.into()),
                ..raw()
            }
            .into_settings()
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("ARCHIVE_URL") && err.contains("file:///"),
                "{bad}: {err}"
            );
        }
        let ok = RawConfig {
            archive_url: Some("file:///srv/archive".into()),
            ..raw()
        }
        .into_settings()
        .expect("an absolute directory");
        assert_eq!(ok.archive_url.expect("file").path(), "/srv/archive");
    }

    /// `config` output never shows a secret.
    #[test]
    fn secrets_are_redacted_when_serialized() {
        let r = RawConfig {
            api_token: Some(SecretString::from("super-secret-token-value")),
            smtp_url: Some(SecretString::from("smtp://u:hunter2@relay:587")),
            database_url: Some(SecretString::from(
                "postgres://mailroom:pg-secret@db:5432/mail?sslmode=require&password=q-secret",
            )),
            redis_url: Some(SecretString::from("not a url with r-secret")),
            ..raw()
        };
        let shown = toml::to_string(&r).expect("serializable");
        for secret in [
            "super-secret",
            "hunter2",
            "pg-secret",
            "q-secret",
            "r-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("api_token = \"[redacted]\""), "{shown}");
        // A URL keeps what tells the operator where it goes.
        assert!(
            shown.contains("smtp_url = \"smtp://***:***@relay:587\"")
                && shown.contains(
                    "database_url = \"postgres://***:***@db:5432/mail?sslmode=require&password=***\""
                )
                && shown.contains("redis_url = \"[redacted]\""),
            "{shown}"
        );
        // A user name alone may be the credential; a URL without a host is hidden whole.
        for (url, hidden) in [
            ("smtp://token-secret@relay:587", "smtp://***@relay:587"),
            ("postgres:user:pw-secret@db/x", "[redacted]"),
        ] {
            let r = RawConfig {
                smtp_url: Some(SecretString::from(url)),
                ..raw()
            };
            let shown = toml::to_string(&r).expect("serializable");
            assert!(
                shown.contains(&format!("smtp_url = \"{hidden}\"")) && !shown.contains("secret"),
                "{shown}"
            );
        }
        for sqlite in [
            "sqlite:///srv/mailroom/mailroom.db",
            "sqlite://./mailroom-data/mailroom.db",
            "sqlite:mailroom.db?mode=rwc",
        ] {
            let r = RawConfig {
                database_url: Some(SecretString::from(sqlite)),
                ..raw()
            };
            let shown = toml::to_string(&r).expect("serializable");
            assert!(
                shown.contains(&format!("database_url = \"{sqlite}\"")),
                "{shown}"
            );
        }
    }
}
