//! In-process GCRA through `governor`: the ceiling for one process.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use super::{LimitError, RateLimiter};

pub struct LocalLimiter {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    rate: f64,
}

impl LocalLimiter {
    /// `rate` permits per second, at most `burst` at once. Fractional rates (0.5/s) work.
    pub fn new(rate: f64, burst: u32) -> Option<Self> {
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(Self {
            limiter: DefaultDirectRateLimiter::direct(quota),
            clock: DefaultClock::default(),
            rate,
        })
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn try_acquire(&self) -> Result<(), LimitError> {
        self.limiter
            .check()
            .map_err(|not_until| LimitError::NotUntil(not_until.wait_time_from(self.clock.now())))
    }

    fn rate_per_second(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With burst 1 the limiter grants one permit, then asks to wait about one period.
    #[tokio::test]
    async fn grants_then_waits_one_period() {
        let l = LocalLimiter::new(10.0, 1).expect("valid quota");
        assert!(l.try_acquire().await.is_ok());
        match l.try_acquire().await {
            Err(LimitError::NotUntil(d)) => {
                assert!(
                    d <= Duration::from_millis(100) && d >= Duration::from_millis(80),
                    "{d:?}"
                )
            }
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    /// Over one second of real time at 20/s, no more than rate + burst permits are granted.
    #[tokio::test]
    async fn never_exceeds_rate() {
        let l = LocalLimiter::new(20.0, 1).expect("valid quota");
        let start = std::time::Instant::now();
        let mut granted = 0;
        while start.elapsed() < Duration::from_secs(1) {
            if l.try_acquire().await.is_ok() {
                granted += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!((19..=21).contains(&granted), "granted {granted}");
    }
}
