//! The ceiling for one process: the GCRA reservation schedule in memory.
//!
//! governor's GCRA grants a permit only for "now", which loses the wake-up latency of every
//! waiter at burst 1 (see the module above); it has no way to book a future slot, so the dozen
//! lines of the schedule are kept here, shared with the Redis limiter's script.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{LimitError, RateLimiter, gcra_reserve};

pub struct LocalLimiter {
    epoch: Instant,
    /// The next free slot, in microseconds since `epoch`.
    tat: Mutex<u64>,
    interval_us: u64,
    tolerance_us: u64,
    horizon_us: u64,
    rate: f64,
}

impl LocalLimiter {
    /// `rate` slots per second, `burst` of them at once after an idle spell, booked at most
    /// `horizon` ahead. Fractional rates (0.5/s) work.
    pub fn new(rate: f64, burst: u32, horizon: Duration) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let interval_us = (1_000_000.0 / rate).round().max(1.0) as u64;
        Some(Self {
            epoch: Instant::now(),
            tat: Mutex::new(0),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            horizon_us: horizon.as_micros() as u64,
            rate,
        })
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn reserve(&self, cost: u32) -> Result<Duration, LimitError> {
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut tat = self
            .tat
            .lock()
            .expect("the lock is never poisoned: no panics inside");
        match gcra_reserve(
            *tat,
            now,
            self.interval_us,
            cost,
            self.tolerance_us,
            self.horizon_us,
        ) {
            Ok((next, wait)) => {
                *tat = next;
                Ok(Duration::from_micros(wait))
            }
            Err(retry) => Err(LimitError::NotUntil(Duration::from_micros(retry))),
        }
    }

    fn rate_per_second(&self) -> f64 {
        self.rate
    }

    async fn hold_off(&self, pause: Duration) -> Result<(), LimitError> {
        let until = (self.epoch.elapsed() + pause).as_micros() as u64;
        let mut tat = self
            .tat
            .lock()
            .expect("the lock is never poisoned: no panics inside");
        // With a burst, a slot is free `tolerance` before the schedule's time: the pause must
        // cover that too, or a burst would go out inside it.
        *tat = (*tat).max(until + self.tolerance_us);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::acquire;

    /// At 7/s, 71 sends through 32 concurrent waiters take exactly 10 s of (paused) time: the
    /// ceiling holds and no slot is lost to wake-up latency.
    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_get_the_exact_rate() {
        let limiter =
            std::sync::Arc::new(LocalLimiter::new(7.0, 1, Duration::from_secs(60)).expect("valid"));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for _ in 0..32 {
            let (l, sent) = (limiter.clone(), sent.clone());
            tasks.spawn(async move {
                loop {
                    if sent.lock().expect("lock").len() >= 71 {
                        return;
                    }
                    acquire(l.as_ref(), 1).await;
                    sent.lock().expect("lock").push(start.elapsed());
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut times = sent.lock().expect("lock").clone();
        times.sort();
        // The 71st send is at 70 intervals: 10 s.
        let t71 = times[70].as_secs_f64();
        assert!((t71 - 10.0).abs() < 0.001, "{t71}");
        // One interval apart, give or take the timer's 1 ms resolution.
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_micros(141_857), "{w:?}");
        }
    }

    /// A provider's "slow down" pauses every slot, a burst's included: at 7/s with a burst of
    /// 14, no slot is handed out within a 1 s pause.
    #[tokio::test(start_paused = true)]
    async fn hold_off_pauses_the_burst_too() {
        let l = LocalLimiter::new(7.0, 14, Duration::from_secs(60)).expect("valid");
        l.hold_off(Duration::from_secs(1)).await.expect("held off");
        let wait = l.reserve(1).await.expect("fits");
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
    }

    /// A booking of several slots (a message to several recipients, where the provider counts
    /// recipients) takes them back to back and goes out at the last: at 10/s, a message of 3
    /// waits 200 ms, the next one 300 ms, one of 50 after it 5.3 s.
    #[tokio::test(start_paused = true)]
    async fn a_booking_of_several_slots_holds_them_all() {
        let l = LocalLimiter::new(10.0, 1, Duration::from_secs(60)).expect("valid");
        for (cost, wait) in [(3, 200), (1, 300), (50, 5_300), (1, 5_400)] {
            let booked = l.reserve(cost).await.expect("fits");
            assert_eq!(booked, Duration::from_millis(wait), "cost {cost}");
        }
    }

    /// Bookings beyond the horizon are refused with the time until one fits.
    #[tokio::test(start_paused = true)]
    async fn horizon_caps_bookings() {
        let l = LocalLimiter::new(1.0, 1, Duration::from_secs(2)).expect("valid");
        for expected in [0, 1, 2] {
            assert_eq!(
                l.reserve(1).await.expect("fits"),
                Duration::from_secs(expected)
            );
        }
        match l.reserve(1).await {
            Err(LimitError::NotUntil(d)) => assert_eq!(d, Duration::from_secs(1)),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
