//! The send rate shared by every worker replica: the GCRA reservation schedule of
//! [`super::gcra_reserve`] in one atomic Lua script on Redis, timed by Redis's own clock so
//! replicas with skewed clocks still share one schedule. One call books one message's slots.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{LimitError, RateLimiter};

/// KEYS[1]: the schedule's key. ARGV: emission interval, burst tolerance, horizon (all µs),
/// and the booking's cost in slots (1 if absent): [`super::gcra_reserve`], step for step.
/// Returns {1, wait} with a booked slot `wait` µs ahead, or {0, retry} when the schedule is
/// booked past the horizon.
///
/// The key is kept for a day after its last use, so an idle schedule is still there (its time
/// in the past). A missing key is a schedule Redis lost (a restart without persistence, a
/// failover, an eviction) while slots up to the horizon may still be booked and waited for:
/// none is booked again before the horizon has passed, or the rate would double meanwhile.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local fits = math.max(math.floor(horizon / math.max(interval, 1)), 1)
local cost = math.min(math.max(tonumber(ARGV[4]) or 1, 1), fits)
local stored = redis.call('GET', KEYS[1])
local tat = now + horizon + tolerance
if stored then
  tat = tonumber(stored)
end
local next = math.max(tat, now)
local slot = math.max(next + interval * (cost - 1) - tolerance, now)
local wait = slot - now
if wait > horizon then
  return {0, wait - horizon}
end
redis.call('SET', KEYS[1], next + interval * cost, 'PX', 86400000)
return {1, wait}
"#;

/// KEYS[1]: the schedule's key. ARGV[1]: a pause in µs, ARGV[2]: the burst tolerance (µs),
/// ARGV[3]: the horizon (µs). No slot is free before now + pause, the burst included. A
/// missing key is a lost schedule, as in [`GCRA`]: the pause is then no shorter than the wait
/// for slots that may still be booked, which a shorter one would overlap.
const HOLD_OFF: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = 0
if stored then
  tat = tonumber(stored)
else
  until_ = math.max(until_, now + tonumber(ARGV[3]) + tonumber(ARGV[2]))
end
if until_ > tat then
  redis.call('SET', KEYS[1], until_, 'PX', 86400000)
end
return 1
"#;

/// The furthest ahead a shared schedule books: what a schedule Redis loses can still have
/// booked, and so how long sending pauses after such a loss (see [`GCRA`]).
const HORIZON_MAX: Duration = Duration::from_secs(2);

/// A connection that is made on first use and remade after a loss, with short timeouts: a
/// Redis outage must surface as an error quickly, not as a hung delivery.
pub fn connect(url: &str) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("invalid REDIS_URL: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("REDIS_URL: {e}"))
}

pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    hold_off: redis::Script,
    key: String,
    interval_us: u64,
    tolerance_us: u64,
    horizon_us: u64,
    rate: f64,
}

impl RedisLimiter {
    /// `rate` slots per second across every replica using `key`, `burst` at once after an idle
    /// spell, booked at most `horizon` ahead.
    pub fn new(
        conn: ConnectionManager,
        key: &str,
        rate: f64,
        burst: u32,
        horizon: Duration,
    ) -> Self {
        let interval_us = (1_000_000.0 / rate).round().max(1.0) as u64;
        Self {
            conn,
            script: redis::Script::new(GCRA),
            hold_off: redis::Script::new(HOLD_OFF),
            key: key.to_string(),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1) - 1),
            horizon_us: horizon.min(HORIZON_MAX).as_micros() as u64,
            rate,
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn reserve(&self, cost: u32) -> Result<Duration, LimitError> {
        let mut conn = self.conn.clone();
        let (booked, us): (u8, u64) = self
            .script
            .key(&self.key)
            .arg(self.interval_us)
            .arg(self.tolerance_us)
            .arg(self.horizon_us)
            .arg(cost.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LimitError::Unavailable(e.to_string()))?;
        match booked {
            1 => Ok(Duration::from_micros(us)),
            _ => Err(LimitError::NotUntil(Duration::from_micros(us))),
        }
    }

    fn rate_per_second(&self) -> f64 {
        self.rate
    }

    async fn hold_off(&self, pause: Duration) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        self.hold_off
            .key(&self.key)
            .arg(pause.as_micros() as u64)
            .arg(self.tolerance_us)
            .arg(self.horizon_us)
            .invoke_async::<u8>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| LimitError::Unavailable(e.to_string()))
    }

    async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| LimitError::Unavailable(e.to_string()))
    }
}
