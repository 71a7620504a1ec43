//! Builds every backend, listener and task from [`Settings`]: the one place infrastructure is
//! made. [`Backends::build`] serves the CLI commands; [`Application::build`] adds the HTTP
//! listeners and the worker for `serve`, `api` and `worker`.
//!
//! - `backends`: the store, queues, delivery, archive, limiter and templates the settings name.
//! - `tasks`: what runs beside the server and the worker (gauges, template reloads, signals).

mod backends;
mod tasks;

pub use backends::Backends;
use tasks::maintenance;
#[cfg(unix)]
use tasks::reload_on_sighup;
pub use tasks::shutdown_on_signals;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::{self, StaticToken, TokenVerifier};
use crate::config::{MIN_TOKEN_CHARS, Settings, TokenSettings};
use crate::store::IDEMPOTENCY_TTL;
use crate::telemetry;
use crate::worker::Worker;

/// Which roles this process plays.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
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
                "SSM_TOKEN_PARAMETER",
            )
            .await?;
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
    // API_TOKEN was checked with the settings; a file (or a saved token edited by hand) is
    // held to the same minimum.
    let length = token.expose_secret().chars().count();
    if length < MIN_TOKEN_CHARS {
        bail!(
            "The API token in {} is {length} characters; it must be at least {MIN_TOKEN_CHARS}",
            match &settings.token {
                TokenSettings::File(path) | TokenSettings::Generated(path) =>
                    path.display().to_string(),
                _ => "API_TOKEN".to_string(),
            }
        );
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
        if roles.worker {
            let (delivery, rate) = (
                backends.delivery.clone(),
                backends.settings.send_rate_per_second,
            );
            tokio::spawn(async move { delivery.warn_over_limits(rate).await });
        }
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
        {
            // Listening before the API answers, so that a SIGHUP never finds its default action
            // (ending the process).
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("Failed to listen for SIGHUP")?;
            tasks.spawn(reload_on_sighup(
                hangup,
                self.backends.settings.clone(),
                self.roles.api.then(|| self.backends.templates.clone()),
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
            let closing = crate::worker::shutdown_tail(self.worker.shutdown_grace) / 2;
            let worker = self.worker.clone().run(shutdown.clone());
            tasks.spawn(async move {
                worker.await;
                if tokio::time::timeout(closing, queue.close()).await.is_err() {
                    tracing::warn!("The queue did not close within the grace period; what it had not committed is delivered again.");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.context("A task panicked")?;
        }
        Ok(())
    }
}
