//! The backends the settings name, built once for the CLI commands and the long-running roles.

use std::sync::Arc;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;
use tokio::sync::Notify;

use crate::archive::Archive;
use crate::config::{DeliverySettings, QueueBackend, Settings};
use crate::delivery::file::FileDelivery;
use crate::delivery::mime::MimeSettings;
use crate::delivery::smtp::SmtpDelivery;
use crate::delivery::{Delivery, NoDelivery};
use crate::intake::Intake;
use crate::limiter::RateLimiter;
use crate::limiter::local::LocalLimiter;
use crate::message::{LiveTemplates, Templates};
use crate::queue::sqlite::SqliteQueue;
use crate::queue::{Depth, Queue, QueueError};
use crate::scheduler::{HELD_VISIBILITY, Scheduler};
use crate::store::Store;
use crate::store::sqlite::{Db, SqliteStore};
use crate::worker::Worker;

/// The templates of `TEMPLATES_DIR`; none when it is unset and `$DATA_DIR/templates` does not
/// exist. A directory that was set but cannot be read, or a template that does not compile,
/// stops start-up.
pub(super) fn templates(settings: &Settings) -> anyhow::Result<Templates> {
    let dir = &settings.templates_dir;
    if !settings.templates_required && !dir.exists() {
        return Ok(Templates::default());
    }
    let templates = Templates::load(dir, settings.max_body_bytes)
        .map_err(|e| anyhow::anyhow!("Invalid setting TEMPLATES_DIR={}: {e}.", dir.display()))?;
    let names: Vec<&str> = templates.names().collect();
    tracing::info!(dir = %dir.display(), templates = %names.join(", "), "Message templates loaded.");
    Ok(templates)
}

/// The store, queue, delivery, archive and limiter chosen by the settings.
pub struct Backends {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub intake: Intake,
    pub delivery: Arc<dyn Delivery>,
    pub archive: Option<Archive>,
    pub limiter: Option<Arc<dyn RateLimiter>>,
    pub wake: Arc<Notify>,
    /// The message templates of `TEMPLATES_DIR`, rendered by the API: none until
    /// [`Backends::load_templates`] (a worker renders nothing and needs no template files).
    pub templates: Arc<LiveTemplates>,
    /// With an external queue: the store's database queue, where messages due later wait.
    pub held: Option<Arc<dyn Queue>>,
}

impl Backends {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Refused in every role, as the other backends are, though only the API reads the token:
        // a worker started with it would otherwise run, and its API beside it would not.
        #[cfg(not(feature = "ssm"))]
        if let crate::config::TokenSettings::Ssm { .. } = settings.token {
            bail!("SSM_TOKEN_PARAMETER needs a build with the `ssm` feature");
        }
        let templates = Arc::new(LiveTemplates::default());
        let wake = Arc::new(Notify::new());
        let (store, queues) = store_and_queue(&settings, &wake).await?;
        let Queues {
            queue,
            in_store: queue_in_store,
            held,
        } = queues;
        let redis = redis_connection(&settings)?;
        let store = cached_store(&settings, store, redis.as_ref());
        let store = evented_store(&settings, store).await?;
        let delivery: Arc<dyn Delivery> = match &settings.delivery {
            #[cfg(feature = "ses")]
            DeliverySettings::Ses => {
                let aws = crate::aws::sdk_config(
                    settings.aws.region.as_deref(),
                    settings.aws.endpoint_url.as_deref(),
                    "DELIVERY=ses",
                )
                .await?;
                Arc::new(crate::delivery::ses::SesDelivery::new(
                    crate::delivery::ses::client(&aws),
                    settings.ses_configuration_set.clone(),
                ))
            }
            DeliverySettings::File { dir } => Arc::new(FileDelivery::new(dir.clone())),
            DeliverySettings::Smtp { url, timeout } => {
                let pool = settings.worker_concurrency.min(32) as u32;
                Arc::new(
                    SmtpDelivery::new(url.expose_secret(), *timeout, pool)
                        .map_err(|e| anyhow::anyhow!("Invalid setting SMTP_URL: {e}"))?,
                )
            }
            #[cfg(not(feature = "ses"))]
            DeliverySettings::Ses => bail!("DELIVERY=ses needs a build with the `ses` feature"),
            DeliverySettings::None => Arc::new(NoDelivery),
        };
        let archive = settings
            .archive_url
            .as_ref()
            .map(|url| Archive::from_url(url, &settings.s3))
            .transpose()
            .context("Failed to open the archive (ARCHIVE_URL)")?;
        let limiter = match settings.send_rate_per_second {
            Some(rate) => Some(limiter(&settings, rate, redis.as_ref())?),
            None => None,
        };
        let intake = Intake {
            store: store.clone(),
            queue: queue.clone(),
            queue_in_store,
            wake: wake.clone(),
        };
        Ok(Self {
            settings,
            store,
            queue,
            intake,
            delivery,
            archive,
            limiter,
            wake,
            templates,
            held,
        })
    }

    /// Loads `TEMPLATES_DIR`, for a process that accepts messages (again on SIGHUP: see
    /// `tasks::reload_on_sighup`).
    pub fn load_templates(&self) -> anyhow::Result<()> {
        self.templates.replace(templates(&self.settings)?);
        Ok(())
    }

    /// How much work is waiting: see [`depth`].
    pub async fn depth(&self) -> Result<Depth, QueueError> {
        depth(self.queue.as_ref(), self.held.as_deref()).await
    }

    /// What hands messages due later to an external queue when their time comes; `None` when
    /// the queue is the database's own, which holds them itself.
    pub fn scheduler(&self) -> Option<Arc<Scheduler>> {
        let held = self.held.clone()?;
        Some(Arc::new(Scheduler {
            held,
            queue: self.queue.clone(),
            store: self.store.clone(),
            shutdown_grace: self.settings.shutdown_grace,
        }))
    }

    pub fn worker(&self) -> Arc<Worker> {
        let s = &self.settings;
        Arc::new(Worker {
            queue: self.queue.clone(),
            store: self.store.clone(),
            delivery: self.delivery.clone(),
            archive: self.archive.clone(),
            limiter: self.limiter.clone(),
            places: self
                .delivery
                .max_in_flight()
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            mime: MimeSettings {
                default_from: s.default_from.clone(),
                compat_recipient: s.compat_recipient.clone(),
            },
            retry: s.retry.clone(),
            concurrency: s.worker_concurrency,
            poll_interval: s.poll_interval,
            wake: self.wake.clone(),
            shutdown_grace: s.shutdown_grace,
            visibility: s.visibility_timeout,
            claims: !self.intake.queue_in_store,
        })
    }
}

/// `queue`'s depth, with the messages `held` for later (`send_at`) counted in `scheduled`.
pub(super) async fn depth(
    queue: &dyn Queue,
    held: Option<&dyn Queue>,
) -> Result<Depth, QueueError> {
    let mut depth = queue.depth().await?;
    if let Some(held) = held {
        depth.scheduled += held.depth().await?.scheduled;
    }
    Ok(depth)
}

/// The queues the settings name.
struct Queues {
    queue: Arc<dyn Queue>,
    /// The queue lives in the store's database: one transaction writes both.
    in_store: bool,
    /// With an external queue that cannot hold a message for later: the store's database
    /// queue, which holds the messages due later (`send_at`) for the scheduler to hand over.
    held: Option<Arc<dyn Queue>>,
}

impl Queues {
    fn in_store(queue: Arc<dyn Queue>) -> Self {
        Queues {
            queue,
            in_store: true,
            held: None,
        }
    }

    /// `database`, the store's own queue, holds what `queue` cannot (its leases last
    /// [`HELD_VISIBILITY`], whatever the workers' visibility timeout).
    fn external(queue: Arc<dyn Queue>, database: Arc<dyn Queue>) -> Self {
        Queues {
            held: (!queue.schedules()).then_some(database),
            queue,
            in_store: false,
        }
    }
}

/// The store the settings name, and the queue: in the store's own database (one transaction for
/// both) unless an external queue is configured.
async fn store_and_queue(
    settings: &Settings,
    wake: &Arc<Notify>,
) -> anyhow::Result<(Arc<dyn Store>, Queues)> {
    let db_url = settings.database_url.expose_secret().to_string();
    #[cfg(not(feature = "postgres"))]
    let _ = wake;
    if db_url.starts_with("sqlite:") {
        let db = Arc::new(
            Db::open(&db_url)
                .await
                .context("Failed to open the SQLite database (DATABASE_URL)")?,
        );
        let store: Arc<dyn Store> = Arc::new(SqliteStore::new(db.clone()));
        return match settings.queue {
            QueueBackend::Database => {
                let queue = SqliteQueue::new(db, settings.visibility_timeout);
                Ok((store, Queues::in_store(Arc::new(queue))))
            }
            _ => {
                let held = Arc::new(SqliteQueue::new(db, HELD_VISIBILITY));
                Ok((
                    store,
                    Queues::external(external_queue(settings).await?, held),
                ))
            }
        };
    }
    #[cfg(feature = "postgres")]
    {
        use crate::queue::postgres::PostgresQueue;
        use crate::store::postgres::{self, PgSettings, PgStore};
        let pool = postgres::connect(&PgSettings {
            url: db_url,
            pool_size: settings.database_pool_size,
            statement_timeout: settings.database_statement_timeout,
        })
        .await
        .context("Failed to connect to PostgreSQL (DATABASE_URL)")?;
        let store: Arc<dyn Store> = Arc::new(PgStore::new(pool.clone()));
        match settings.queue {
            QueueBackend::Database => {
                let queue = PostgresQueue::new(pool, settings.visibility_timeout);
                queue
                    .listen(wake.clone())
                    .await
                    .context("Failed to LISTEN for queue notifications")?;
                Ok((store, Queues::in_store(Arc::new(queue))))
            }
            _ => {
                let held = Arc::new(PostgresQueue::new(pool, HELD_VISIBILITY));
                Ok((
                    store,
                    Queues::external(external_queue(settings).await?, held),
                ))
            }
        }
    }
    #[cfg(not(feature = "postgres"))]
    bail!("DATABASE_URL=postgres://... needs a build with the `postgres` feature")
}

async fn external_queue(settings: &Settings) -> anyhow::Result<Arc<dyn Queue>> {
    match settings.queue {
        #[cfg(feature = "sqs")]
        QueueBackend::Sqs => {
            use crate::queue::sqs::{SqsQueue, SqsSettings};
            let sqs = settings
                .sqs
                .as_ref()
                .context("QUEUE_BACKEND=sqs needs SQS_QUEUE_URL")?;
            let aws = crate::aws::sdk_config(
                settings.aws.region.as_deref(),
                settings.aws.endpoint_url.as_deref(),
                "QUEUE_BACKEND=sqs",
            )
            .await?;
            let queue = SqsQueue::open(
                aws_sdk_sqs::Client::new(&aws),
                SqsSettings {
                    queue_url: sqs.queue_url.clone(),
                    dlq_url: sqs.dlq_url.clone(),
                    visibility: settings.visibility_timeout,
                    wait: sqs.wait,
                    pollers: settings.worker_concurrency.div_ceil(10).clamp(1, 10),
                },
                settings.retry.max_attempts,
            )
            .await;
            Ok(Arc::new(queue))
        }
        #[cfg(not(feature = "sqs"))]
        QueueBackend::Sqs => bail!("QUEUE_BACKEND=sqs needs a build with the `sqs` feature"),
        #[cfg(feature = "kafka")]
        QueueBackend::Kafka => {
            let kafka = settings
                .kafka
                .as_ref()
                .context("QUEUE_BACKEND=kafka needs KAFKA_BROKERS")?;
            crate::kafka::ensure_topics(kafka, &crate::kafka::topics(kafka, true)).await?;
            let queue = crate::queue::kafka::KafkaQueue::new(
                kafka,
                settings.visibility_timeout,
                settings.worker_concurrency * 4,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(Arc::new(queue))
        }
        #[cfg(not(feature = "kafka"))]
        QueueBackend::Kafka => bail!("QUEUE_BACKEND=kafka needs a build with the `kafka` feature"),
        QueueBackend::Database => bail!("QUEUE_BACKEND=database needs the store's database"),
    }
}

#[cfg(feature = "redis")]
type RedisConnection = redis::aio::ConnectionManager;
#[cfg(not(feature = "redis"))]
type RedisConnection = std::convert::Infallible;

fn redis_connection(settings: &Settings) -> anyhow::Result<Option<RedisConnection>> {
    let Some(url) = &settings.redis_url else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        crate::limiter::redis::connect(url.expose_secret())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("Invalid setting {e}"))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        bail!("REDIS_URL needs a build with the `redis` feature")
    }
}

/// With `EVENTS_TOPIC` set, every status change the store applies is also published.
async fn evented_store(
    settings: &Settings,
    store: Arc<dyn Store>,
) -> anyhow::Result<Arc<dyn Store>> {
    let Some(kafka) = settings.kafka.as_ref().filter(|k| k.events_topic.is_some()) else {
        return Ok(store);
    };
    #[cfg(feature = "kafka")]
    {
        let topic = kafka.events_topic.clone().unwrap_or_default();
        crate::kafka::ensure_topics(kafka, std::slice::from_ref(&topic)).await?;
        let publisher = crate::events::KafkaEvents::new(kafka, topic)
            .map_err(|e| anyhow::anyhow!("Kafka events producer: {e}"))?;
        Ok(Arc::new(crate::events::EventingStore::new(
            store,
            Arc::new(publisher),
        )))
    }
    #[cfg(not(feature = "kafka"))]
    {
        let _ = (kafka, store);
        bail!("EVENTS_TOPIC needs a build with the `kafka` feature")
    }
}

fn cached_store(
    settings: &Settings,
    store: Arc<dyn Store>,
    redis: Option<&RedisConnection>,
) -> Arc<dyn Store> {
    #[cfg(not(feature = "redis"))]
    let _ = settings;
    match redis {
        #[cfg(feature = "redis")]
        Some(conn) => Arc::new(crate::store::redis_cache::RedisCachedStore::new(
            store,
            conn.clone(),
            &settings.redis_key_prefix,
        )),
        _ => store,
    }
}

/// The global ceiling: shared through Redis when it is configured, else in this process.
fn limiter(
    settings: &Settings,
    rate: f64,
    redis: Option<&RedisConnection>,
) -> anyhow::Result<Arc<dyn RateLimiter>> {
    match redis {
        #[cfg(feature = "redis")]
        Some(conn) => Ok(Arc::new(crate::limiter::redis::RedisLimiter::new(
            conn.clone(),
            &format!("{}:send-rate", settings.redis_key_prefix),
            rate,
            settings.send_burst,
            crate::limiter::horizon(settings.visibility_timeout),
        ))),
        _ => LocalLimiter::new(
            rate,
            settings.send_burst,
            crate::limiter::horizon(settings.visibility_timeout),
        )
        .map(|l| Arc::new(l) as Arc<dyn RateLimiter>)
        .context("Invalid setting SEND_RATE_PER_SECOND: too small to make a period"),
    }
}

/// A build without a backend's feature (the default build has none) names the feature when a
/// setting asks for that backend, instead of starting without it.
#[cfg(all(
    test,
    not(all(
        feature = "postgres",
        feature = "redis",
        feature = "sqs",
        feature = "kafka",
        feature = "ses"
    ))
))]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::RawConfig;

    /// The error `Backends::build` stops with, once `change` is made to valid settings.
    async fn refused(change: impl FnOnce(&mut RawConfig)) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raw = RawConfig {
            data_dir: dir.path().to_path_buf(),
            api_token: Some(SecretString::from("unit-test-token-0123456789")),
            delivery: "none".into(),
            ..RawConfig::default()
        };
        change(&mut raw);
        let settings = raw.into_settings().expect("valid settings");
        match Backends::build(settings).await {
            Ok(_) => panic!("built without the backend's feature"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_needs_its_feature() {
        let e = refused(|r| {
            r.database_url = Some(SecretString::from("postgres://u:p@127.0.0.1:1/mailroom"));
        })
        .await;
        assert!(e.contains("`postgres` feature"), "{e}");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis_needs_its_feature() {
        let e = refused(|r| r.redis_url = Some(SecretString::from("redis://127.0.0.1:1"))).await;
        assert!(e.contains("`redis` feature"), "{e}");
    }

    #[cfg(not(feature = "sqs"))]
    #[tokio::test]
    async fn sqs_needs_its_feature() {
        let e = refused(|r| {
            r.queue_backend = Some("sqs".into());
            r.sqs_queue_url = Some("http://127.0.0.1:1/000000000000/mailroom".into());
        })
        .await;
        assert!(e.contains("`sqs` feature"), "{e}");
    }

    #[cfg(not(feature = "kafka"))]
    #[tokio::test]
    async fn kafka_needs_its_feature() {
        let e = refused(|r| {
            r.queue_backend = Some("kafka".into());
            r.kafka_brokers = Some("127.0.0.1:1".into());
        })
        .await;
        assert!(e.contains("`kafka` feature"), "{e}");
    }

    #[cfg(not(feature = "ses"))]
    #[tokio::test]
    async fn ses_needs_its_feature() {
        let e = refused(|r| r.delivery = "ses".into()).await;
        assert!(e.contains("`ses` feature"), "{e}");
    }
}
