//! The global send rate: a ceiling over every concurrent delivery.
//!
//! A limiter hands out *reservations*: [`RateLimiter::reserve`] books the next free slot of a
//! GCRA schedule and says how long until it comes; the caller sleeps that long and sends. Slots
//! are booked back to back (one emission interval apart), so a caller that wakes a little late
//! does not push the schedule back: the long-run rate is the ceiling, never above it and not
//! below it by the sum of everyone's wake-up latency (which a grant-now-or-retry limiter loses
//! at burst 1: measured 128/s of a 150/s ceiling with three workers).

pub mod local;
#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The schedule is booked further ahead than the limiter's horizon; ask again after this.
    #[error("rate limited for {0:?}")]
    NotUntil(Duration),
    /// The shared limiter cannot be reached: pause rather than exceed the rate.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Books `cost` send slots back to back (one per message, or one per recipient where the
    /// provider counts recipients); returns how long until the first comes (zero: send now).
    /// The next booking starts after the last of them.
    async fn reserve(&self, cost: u32) -> Result<Duration, LimitError>;

    /// The configured ceiling in slots per second.
    fn rate_per_second(&self) -> f64;

    /// The provider said "slow down" (SES throttling, SMTP 421/454): no slot is handed out to
    /// anyone sharing this limiter before `pause` has passed.
    async fn hold_off(&self, pause: Duration) -> Result<(), LimitError>;

    /// Can the limiter be reached? (A shared limiter can be down; an in-process one cannot.)
    async fn ping(&self) -> Result<(), LimitError> {
        Ok(())
    }
}

/// How far ahead slots may be booked: a message waiting for its slot holds a lease, and must
/// not hold it past the visibility timeout.
pub fn horizon(visibility_timeout: Duration) -> Duration {
    visibility_timeout / 3
}

/// Books `cost` slots and waits for the first; returns how long that took.
pub async fn acquire(limiter: &dyn RateLimiter, cost: u32) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        match limiter.reserve(cost).await {
            Ok(wait) => {
                tokio::time::sleep(wait).await;
                return started.elapsed();
            }
            Err(LimitError::NotUntil(wait)) => tokio::time::sleep(wait).await,
            Err(LimitError::Unavailable(e)) => {
                tracing::warn!(error = %e, "Rate limiter unavailable; delivery paused.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One GCRA reservation step, shared by the in-process limiter (and mirrored by the Redis
/// script): with the theoretical arrival time `tat` (the next free slot), book `cost` slots of
/// `interval` each at `now`. The booking is sent at the last of its slots, so a message of
/// several slots waits for all of them (50 recipients at 14/s wait 3.5 s) and no second ever
/// sees more than the rate and the burst. A cost whose slots span more than the horizon is
/// booked as the most slots the horizon holds, or it could never fit.
/// Returns the new `tat` and the wait, or how long until the booking fits in `horizon`.
pub fn gcra_reserve(
    tat: u64,
    now: u64,
    interval: u64,
    cost: u32,
    tolerance: u64,
    horizon: u64,
) -> Result<(u64, u64), u64> {
    let fits = (horizon / interval.max(1)).max(1);
    let cost = u64::from(cost).clamp(1, fits);
    let next = tat.max(now);
    let last = next + interval * (cost - 1);
    let slot = last.saturating_sub(tolerance).max(now);
    let wait = slot - now;
    if wait > horizon {
        return Err(wait - horizon);
    }
    Ok((next + interval * cost, wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots are booked one interval apart, burst slots are free at once, and bookings past the
    /// horizon are refused with the time until they would fit.
    #[test]
    fn gcra_reservations() {
        // 10/s (100 ms), burst 1, horizon 250 ms, from an idle start at t = 1000.
        let (tat, wait) = gcra_reserve(0, 1000, 100, 1, 0, 250).expect("free");
        assert_eq!((tat, wait), (1100, 0));
        let (tat, wait) = gcra_reserve(tat, 1000, 100, 1, 0, 250).expect("booked");
        assert_eq!((tat, wait), (1200, 100));
        let (tat, wait) = gcra_reserve(tat, 1001, 100, 1, 0, 250).expect("booked");
        assert_eq!((tat, wait), (1300, 199));
        assert_eq!(gcra_reserve(1400, 1000, 100, 1, 0, 250), Err(150));
        // Slots are booked in advance, so a waiter that wakes late does not move the next
        // booking: with 1300 booked, the next caller at 1050 still gets 1300.
        assert_eq!(gcra_reserve(1300, 1050, 100, 1, 0, 250), Ok((1400, 250)));
        // Idle time is not banked beyond the burst: after an idle spell the schedule restarts.
        assert_eq!(gcra_reserve(1300, 5000, 100, 1, 0, 250), Ok((5100, 0)));
        // A booking of 3 slots is sent at its last: 200 ms on; the next one 300 ms on.
        let (tat, wait) = gcra_reserve(0, 1000, 100, 3, 0, 1000).expect("fits");
        assert_eq!((tat, wait), (1300, 200));
        assert_eq!(gcra_reserve(tat, 1000, 100, 1, 0, 1000), Ok((1400, 300)));
        // More slots than the horizon holds are booked as the horizon's worth.
        assert_eq!(gcra_reserve(0, 1000, 100, 50, 0, 250), Ok((1200, 100)));
        // Burst 3: the first three slots are free at once.
        let mut tat = 0;
        for expected in [0, 0, 0, 100] {
            let (t, wait) = gcra_reserve(tat, 1000, 100, 1, 200, 1000).expect("fits");
            assert_eq!(wait, expected);
            tat = t;
        }
    }
}
