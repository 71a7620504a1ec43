//! Builds every backend, listener and task from [`Settings`]: the one place infrastructure is
//! made. [`Backends::build`] serves the CLI commands; [`Application::build`] adds the HTTP
//! listeners and the worker for `serve`, `api` and `worker`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::archive::Archive;
use crate::auth::{self, StaticToken, TokenVerifier};
use crate::config::{DeliverySettings, QueueBackend, Settings, TokenSettings};
use crate::delivery::file::FileDelivery;
use crate::delivery::mime::MimeSettings;
use crate::delivery::smtp::SmtpDelivery;
use crate::delivery::{Delivery, NoDelivery};
use crate::intake::Intake;
use crate::limiter::RateLimiter;
use crate::limiter::local::LocalLimiter;
use crate::message::{LiveTemplates, Status, Templates};
use crate::queue::Queue;
use crate::queue::sqlite::SqliteQueue;
use crate::scheduler::{HELD_VISIBILITY, Scheduler};
use crate::store::Store;
use crate::store::sqlite::{Db, SqliteStore};
use crate::telemetry;
use crate::worker::Worker;

pub use crate::store::IDEMPOTENCY_TTL;

/// The templates of `TEMPLATES_DIR`; none when it is unset and `$DATA_DIR/templates` does not
/// exist. A directory that was set but cannot be read, or a template that does not compile,
/// stops start-up.
fn templates(settings: &Settings) -> anyhow::Result<Templates> {
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

/// Which roles this process plays.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
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
                )
                .await;
                let ses = Arc::new(crate::delivery::ses::SesDelivery::new(
                    aws_sdk_sesv2::Client::new(&aws),
                    settings.ses_configuration_set.clone(),
                ));
                tokio::spawn(warn_over_ses_quota(
                    ses.clone(),
                    settings.send_rate_per_second,
                ));
                ses
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
    /// [`reload_templates_on_sighup`]).
    pub fn load_templates(&self) -> anyhow::Result<()> {
        self.templates.replace(templates(&self.settings)?);
        Ok(())
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
            mime: MimeSettings {
                default_from: s.default_from.clone(),
                compat_recipient: s.compat_recipient.clone(),
            },
            retry: s.retry.clone(),
            concurrency: s.worker_concurrency,
            poll_interval: s.poll_interval,
            wake: self.wake.clone(),
            shutdown_grace: s.shutdown_grace,
        })
    }
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
            )
            .await;
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

/// At start-up with `DELIVERY=ses`: warns when the configured rate is above what the account
/// may send.
#[cfg(feature = "ses")]
async fn warn_over_ses_quota(ses: Arc<crate::delivery::ses::SesDelivery>, rate: Option<f64>) {
    match ses.quota().await {
        Ok(q) => {
            tracing::info!(
                max_send_rate = q.max_send_rate,
                max_24_hour_send = q.max_24_hour_send,
                sending_enabled = q.sending_enabled,
                "SES account quota read."
            );
            if rate.is_none_or(|r| r > q.max_send_rate) && q.max_send_rate > 0.0 {
                tracing::warn!(
                    send_rate_per_second = rate.unwrap_or(f64::INFINITY),
                    max_send_rate = q.max_send_rate,
                    "SEND_RATE_PER_SECOND is above the SES account's MaxSendRate: SES will throttle; set it to at most MaxSendRate."
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the SES send quota; SEND_RATE_PER_SECOND is not checked against it.")
        }
    }
}

/// Resolves the API token. Returns the verifier and, on a first start, the token just made.
pub async fn token(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn TokenVerifier>, Option<SecretString>)> {
    let (token, generated) = match &settings.token {
        TokenSettings::Value(t) => (t.clone(), None),
        TokenSettings::File(path) => (
            auth::read_token_file(path)
                .with_context(|| format!("Failed to read API_TOKEN_FILE {}", path.display()))?,
            None,
        ),
        TokenSettings::Generated(path) => {
            let (t, made) = auth::load_or_generate(path).with_context(|| {
                format!("Failed to load or save the token at {}", path.display())
            })?;
            let generated = made.then(|| t.clone());
            (t, generated)
        }
        #[cfg(feature = "ssm")]
        TokenSettings::Ssm { parameter, ttl } => {
            let aws = crate::aws::sdk_config(
                settings.aws.region.as_deref(),
                settings.aws.endpoint_url.as_deref(),
            )
            .await;
            let verifier = crate::auth::ssm::SsmToken::start(
                aws_sdk_ssm::Client::new(&aws),
                parameter.clone(),
                *ttl,
            )
            .await
            .context("Failed to read the API token (SSM_TOKEN_PARAMETER)")?;
            return Ok((verifier, None));
        }
        #[cfg(not(feature = "ssm"))]
        TokenSettings::Ssm { .. } => {
            bail!("SSM_TOKEN_PARAMETER needs a build with the `ssm` feature")
        }
    };
    if token.expose_secret().is_empty() {
        bail!("The API token is empty");
    }
    Ok((Arc::new(StaticToken::new(&token)), generated))
}

/// A running mailroom process: listeners bound, worker built, nothing started yet.
pub struct Application {
    backends: Backends,
    roles: Roles,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    token: Option<Arc<dyn TokenVerifier>>,
    /// Set on the first start with no token configured: the token made and saved.
    pub generated_token: Option<SecretString>,
    metrics: PrometheusHandle,
    worker: Arc<Worker>,
}

impl Application {
    pub async fn build(settings: Settings, roles: Roles) -> anyhow::Result<Self> {
        let metrics = telemetry::metrics(settings.instance_id.as_deref());
        // `/metrics` and `/health` on their own port: METRICS_PORT when set (and then it must be
        // free), and PORT for a worker alone (it serves no API there), so that every role can be
        // scraped and health-checked.
        let metrics_listener = match (settings.metrics_addr, roles.api) {
            (Some(addr), _) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("Failed to listen on {addr} (METRICS_PORT)"))?,
            ),
            // Beside an api on one machine, PORT may be taken: the worker runs all the same.
            (None, false) => match TcpListener::bind(settings.http_addr).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::warn!(address = %settings.http_addr, error = %e, "Cannot listen on PORT: this worker serves no /health or /metrics (give it its own PORT or METRICS_PORT).");
                    None
                }
            },
            (None, true) => None,
        };
        let (listener, token, generated_token) = if roles.api {
            let listener = TcpListener::bind(settings.http_addr)
                .await
                .with_context(|| {
                    format!(
                        "Failed to listen on {} (PORT, BIND_ADDRESS)",
                        settings.http_addr
                    )
                })?;
            let (token, generated) = token(&settings).await?;
            (Some(listener), Some(token), generated)
        } else {
            (None, None, None)
        };
        let backends = Backends::build(settings).await?;
        if roles.api {
            backends.load_templates()?;
        }
        let worker = backends.worker();
        Ok(Self {
            backends,
            roles,
            listener,
            metrics_listener,
            token,
            generated_token,
            metrics,
            worker,
        })
    }

    /// The bound HTTP address (port 0 in tests becomes a real port here).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The worker, for tests that drive it step by step with [`Worker::run_once`].
    pub fn worker(&self) -> Arc<Worker> {
        self.worker.clone()
    }

    /// Serves and works until `shutdown` is cancelled, then drains and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let s = &self.backends.settings;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(maintenance(
            self.backends.store.clone(),
            self.backends.queue.clone(),
            self.backends.held.clone(),
            self.metrics.clone(),
            s.send_rate_per_second.unwrap_or(0.0),
            shutdown.clone(),
        ));
        let separate_metrics = self.metrics_listener.is_some();
        if let Some(listener) = self.metrics_listener {
            let app = api::metrics_router(self.metrics.clone());
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
        #[cfg(unix)]
        if self.roles.api {
            // Listening before the API answers, so that a SIGHUP never finds its default action
            // (ending the process).
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("Failed to listen for SIGHUP")?;
            tasks.spawn(reload_templates_on_sighup(
                hangup,
                self.backends.settings.clone(),
                self.backends.templates.clone(),
                shutdown.clone(),
            ));
        }
        if let (Some(listener), Some(token)) = (self.listener, self.token) {
            let state = AppState {
                intake: self.backends.intake.clone(),
                token,
                default_from: s.default_from.clone(),
                templates: self.backends.templates.clone(),
                max_body_bytes: s.max_body_bytes,
                idempotency_ttl: IDEMPOTENCY_TTL,
                limiter: self.backends.limiter.clone(),
                metrics: (!separate_metrics).then(|| self.metrics.clone()),
                delivery: self.roles.worker.then(|| self.backends.delivery.clone()),
            };
            let app = api::router(state);
            let stop = shutdown.clone();
            tracing::info!(address = %listener.local_addr()?, "HTTP API listening.");
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                {
                    tracing::error!(error = %e, "HTTP server failed.");
                }
            });
        }
        if self.roles.worker
            && let Some(scheduler) = self.backends.scheduler()
        {
            tasks.spawn(scheduler.run(shutdown.clone()));
        }
        if self.roles.worker {
            let queue = self.backends.queue.clone();
            let worker = self.worker.clone().run(shutdown.clone());
            tasks.spawn(async move {
                worker.await;
                queue.close().await;
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.context("A task panicked")?;
        }
        Ok(())
    }
}

/// Loads `TEMPLATES_DIR` again on each SIGHUP. A set that does not load (a template that does
/// not compile, a directory that was set and cannot be read) is logged, and the set in use stays.
#[cfg(unix)]
async fn reload_templates_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    settings: Settings,
    live: Arc<LiveTemplates>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangup.recv() => if got.is_none() { return },
        }
        match templates(&settings) {
            Ok(loaded) => live.replace(loaded),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: the templates were not reloaded; the ones in use stay."
                );
            }
        }
    }
}

/// Every few seconds: queue depth and dead-letter gauges, histogram upkeep; hourly: expired
/// idempotency keys.
async fn maintenance(
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    held: Option<Arc<dyn Queue>>,
    metrics: PrometheusHandle,
    rate: f64,
    shutdown: CancellationToken,
) {
    metrics::gauge!("mailroom_rate_limit_per_second").set(rate);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut purge = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = purge.tick() => {
                if let Err(e) = store.purge_idempotency(IDEMPOTENCY_TTL).await {
                    tracing::warn!(error = %e, "Could not purge expired idempotency keys.");
                }
            }
            _ = tick.tick() => {
                metrics.run_upkeep();
                if let Ok(depth) = queue.depth().await {
                    metrics::gauge!("mailroom_queue_depth").set(depth.messages as f64);
                    metrics::gauge!("mailroom_queue_oldest_age_seconds").set(depth.oldest_age_secs);
                    let held = match &held {
                        Some(held) => held.depth().await.map(|d| d.scheduled).ok(),
                        None => Some(0),
                    };
                    if let Some(held) = held {
                        metrics::gauge!("mailroom_queue_scheduled").set((depth.scheduled + held) as f64);
                    }
                }
                if let Ok(counts) = store.counts().await {
                    let dead = counts.get(&Status::Dead).copied().unwrap_or(0);
                    metrics::gauge!("mailroom_dead_letters").set(dead as f64);
                }
            }
        }
    }
}

/// Cancels the returned token on SIGTERM (how ECS and Auto Scaling stop a task) or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler succeeds on Unix");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Shutdown signal received.");
        t.cancel();
    });
    token
}
