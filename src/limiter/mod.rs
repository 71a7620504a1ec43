//! The global send rate: a ceiling over every concurrent delivery.
//!
//! A limiter does not sleep: [`RateLimiter::try_acquire`] takes a permit or says how long until
//! one is free, and the caller decides whether to wait (and can stop waiting at shutdown).

pub mod local;

use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// No permit now; the next one is free after this long.
    #[error("rate limited for {0:?}")]
    NotUntil(Duration),
    /// The shared limiter cannot be reached: pause rather than exceed the rate.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    async fn try_acquire(&self) -> Result<(), LimitError>;

    /// The configured ceiling in messages per second.
    fn rate_per_second(&self) -> f64;
}

/// Waits until the limiter grants a permit; returns how long that took.
pub async fn acquire(limiter: &dyn RateLimiter) -> Duration {
    let started = std::time::Instant::now();
    loop {
        match limiter.try_acquire().await {
            Ok(()) => return started.elapsed(),
            Err(LimitError::NotUntil(wait)) => tokio::time::sleep(wait).await,
            Err(LimitError::Unavailable(e)) => {
                tracing::warn!(error = %e, "Rate limiter unavailable; delivery paused.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
