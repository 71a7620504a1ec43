//! What runs beside the HTTP server and the worker: gauges and upkeep, template reloads on
//! SIGHUP, and the shutdown signals.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::backends::{depth, templates};
use crate::config::Settings;
use crate::message::LiveTemplates;
use crate::queue::Queue;
use crate::store::{IDEMPOTENCY_TTL, Store};

/// Loads `TEMPLATES_DIR` again on each SIGHUP, when this process serves the API (`live`). A set
/// that does not load (a template that does not compile, a directory that was set and cannot be
/// read) is logged, and the set in use stays. A worker alone has nothing to reload: it logs so
/// and goes on, since SIGHUP's default action would end it.
#[cfg(unix)]
pub(super) async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    settings: Settings,
    live: Option<Arc<LiveTemplates>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangup.recv() => if got.is_none() { return },
        }
        let Some(live) = &live else {
            tracing::info!("SIGHUP: a worker has nothing to reload.");
            continue;
        };
        match templates(&settings) {
            Ok(loaded) => {
                live.replace(loaded);
                tracing::info!("SIGHUP: the templates were reloaded.");
                metrics::counter!("mailroom_template_reloads_total", "outcome" => "reloaded")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!("mailroom_template_reloads_total", "outcome" => "failed")
                    .increment(1);
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
pub(super) async fn maintenance(
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
                if let Ok(depth) = depth(queue.as_ref(), held.as_deref()).await {
                    metrics::gauge!("mailroom_queue_depth").set(depth.messages as f64);
                    metrics::gauge!("mailroom_queue_oldest_age_seconds").set(depth.oldest_age_secs);
                    metrics::gauge!("mailroom_queue_scheduled").set(depth.scheduled as f64);
                }
                if let Ok(dead) = store.dead_letters().await {
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
