//! # mailroom
//!
//! Reliable outbound email: an application posts a message over HTTP; mailroom answers 202 once
//! it is durable, queues it, delivers it at a global rate, archives it as JSON, records its
//! status, retries temporary failures with backoff and dead-letters permanent ones.
//!
//! # Layout
//! - [`config`]: settings from defaults, a TOML file and the environment, checked once.
//! - [`message`]: the accepted message shapes (compat and native), their validation and status.
//! - [`api`]: the HTTP interface (axum): routes, authentication, JSON errors, request metrics.
//! - [`auth`]: where the API token comes from, and constant-time verification.
//! - [`intake`]: durable acceptance (store, then queue, then 202) and redrive.
//! - [`store`]: records, status events, idempotency keys and dead letters (`Store`; SQLite,
//!   PostgreSQL, a Redis idempotency cache).
//! - [`queue`]: leases with visibility timeouts, retries and attempts (`Queue`; the database,
//!   SQS, Kafka).
//! - [`delivery`]: MIME building and the `Delivery` backends (file, SMTP, SES, none).
//! - [`archive`]: one JSON object per message through `object_store` (a directory, or S3).
//! - [`limiter`]: the global send rate (`RateLimiter`; in-process, or shared through Redis).
//! - [`worker`]: pulls leases, waits for the limiter, delivers, archives and settles them.
//! - [`scheduler`]: hands messages due later (`send_at`), held in the store's database queue,
//!   to an external queue (SQS, Kafka) when their time comes.
//! - `aws` (features `sqs`, `ssm`, `ses`): the AWS SDK configuration their clients share.
//! - `kafka` and `events` (feature `kafka`): Kafka client settings and topics; delivery events
//!   published to `EVENTS_TOPIC` for every status change.
//! - [`telemetry`]: logs (pretty, or ECS JSON) and the Prometheus recorder.
//! - [`startup`]: builds every backend, listener and task from the settings.
//! - [`cli`]: the `mailroom` command line.

pub mod api;
pub mod archive;
pub mod auth;
#[cfg(any(feature = "sqs", feature = "ssm", feature = "ses"))]
pub mod aws;
pub mod cli;
pub mod config;
pub mod delivery;
#[cfg(feature = "kafka")]
pub mod events;
pub mod intake;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod limiter;
pub mod message;
pub mod queue;
pub mod scheduler;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
