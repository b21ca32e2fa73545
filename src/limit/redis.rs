//! The Redis rate limiter: one budget per user shared by every node, so a user spreading
//! writes over the nodes behind a load balancer gets the limit once, not once per node.
//!
//! Each check is one round trip: `EVALSHA` of a GCRA script (the same algorithm, rate, burst
//! and retry-after as the node-local limiter) on the key `<prefix>:rl:<user>`, which holds
//! the user's theoretical arrival time in microseconds of the Redis server's clock (one
//! clock for every node, so their clock skew does not matter). The key expires when the
//! bucket is full again, so idle users cost Redis nothing.
//!
//! When Redis does not answer (down, unreachable, or slower than [`CHECK_TIMEOUT`]) the
//! limiter fails open to the node-local limiter it was given: a send never fails or stalls
//! because Redis blipped, and during an outage each node enforces the limit on its own
//! (a user spread over N nodes may then get up to N times the limit). After a failure Redis
//! is left alone for [`RETRY_AFTER_FAILURE`], so a hung Redis costs one timeout per period,
//! not one per send. The fallback is logged at warn, at most once per [`WARN_EVERY`].

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::core::error::RateLimited;
use crate::core::ports::RateLimiter;

/// Longest a check waits for Redis before the node-local limiter decides.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// After Redis failed a check, checks go straight to the node-local limiter this long.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Fallbacks are logged at most this often (with how many happened meanwhile).
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// GCRA on one key, the same decision as `governor`'s: with emission interval `T` (µs per
/// write) and tolerance `tau = T * (burst - 1)`, a write at `now` is admitted when
/// `now >= tat - tau`, and moves the theoretical arrival time to `max(tat, now) + T`.
/// Returns 0 when admitted, else the microseconds until it would be.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tolerance
if now < earliest then
  return earliest - now
end
local next_tat = math.max(tat, now) + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
";

/// The Redis [`RateLimiter`], failing open to a node-local one.
pub struct RedisRateLimiter {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// Emission interval: microseconds of budget one write takes.
    interval_us: u64,
    /// Burst tolerance: `interval_us * (burst - 1)`.
    tolerance_us: u64,
    fallback: Arc<dyn RateLimiter>,
    /// Fallback bookkeeping; a `std` mutex, held for a few field updates and never across
    /// an `.await`.
    health: Mutex<Health>,
}

/// Whether Redis is being skipped, and what was logged about it.
#[derive(Default)]
struct Health {
    /// Checks skip Redis until then.
    skip_until: Option<Instant>,
    /// Redis failed and has not answered since.
    failing: bool,
    /// When the last fallback warning was logged.
    last_warn: Option<Instant>,
    /// Fallbacks since the last warning.
    unlogged: u64,
}

impl RedisRateLimiter {
    /// Connects to Redis at `url` (failing at once when it cannot, as the bus does) and
    /// limits each user to `per_second` writes with bursts of `burst` (at least 1), keys
    /// named under `prefix`. `fallback` decides while Redis is unreachable; give it the
    /// same rate and burst.
    pub async fn connect(
        url: &str,
        prefix: &str,
        per_second: NonZeroU32,
        burst: u32,
        fallback: Arc<dyn RateLimiter>,
    ) -> redis::RedisResult<RedisRateLimiter> {
        Ok(Self::over(Self::open(url).await?, prefix, per_second, burst, fallback))
    }

    /// A connection to Redis at `url` with the limiter's timeouts, which several limiters
    /// may share (it multiplexes; see [`RedisRateLimiter::over`]).
    pub async fn open(url: &str) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CHECK_TIMEOUT * 4))
            .set_response_timeout(Some(CHECK_TIMEOUT * 4))
            .set_max_delay(Duration::from_secs(2));
        redis::aio::ConnectionManager::new_with_config(client, config).await
    }

    /// [`RedisRateLimiter::connect`] over an open `connection` (from [`RedisRateLimiter::open`]).
    pub fn over(
        connection: redis::aio::ConnectionManager,
        prefix: &str,
        per_second: NonZeroU32,
        burst: u32,
        fallback: Arc<dyn RateLimiter>,
    ) -> RedisRateLimiter {
        // As governor's `Quota::per_second`: whole nanoseconds per write, here rounded down
        // to whole microseconds (exact for every rate dividing 1,000,000).
        let interval_us = (1_000_000 / u64::from(per_second.get())).max(1);
        let tolerance_us = interval_us.saturating_mul(u64::from(burst.max(1) - 1));
        RedisRateLimiter {
            connection,
            script: redis::Script::new(GCRA),
            prefix: prefix.to_owned(),
            interval_us,
            tolerance_us,
            fallback,
            health: Mutex::new(Health::default()),
        }
    }

    /// The key of `user_id`'s budget.
    pub fn key(&self, user_id: &str) -> String {
        format!("{}:rl:{user_id}", self.prefix)
    }

    /// One GCRA step in Redis: microseconds to wait, 0 when admitted.
    async fn ask_redis(&self, user_id: &str) -> redis::RedisResult<u64> {
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(self.key(user_id));
        invocation.arg(self.interval_us).arg(self.tolerance_us);
        invocation.invoke_async(&mut connection).await
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether Redis is being skipped after a recent failure.
    fn skipping(&self) -> bool {
        self.health().skip_until.is_some_and(|until| Instant::now() < until)
    }

    /// Notes that Redis answered (logging the recovery once).
    fn answered(&self) {
        let mut health = self.health();
        if health.failing {
            health.failing = false;
            health.skip_until = None;
            tracing::info!(
                fallbacks = health.unlogged,
                "redis rate limiter reachable again; limits are shared across nodes"
            );
            health.unlogged = 0;
        }
    }

    /// Notes a check decided by the node-local limiter; `failure` is why, when Redis was
    /// asked and failed (and not just skipped).
    fn fell_back(&self, failure: Option<String>) {
        let now = Instant::now();
        let mut health = self.health();
        if let Some(error) = failure {
            health.failing = true;
            health.skip_until = Some(now + RETRY_AFTER_FAILURE);
            if health.last_warn.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
                tracing::warn!(
                    %error,
                    fallbacks = health.unlogged + 1,
                    "redis rate limiter unavailable; this node enforces the limit on its own"
                );
                health.last_warn = Some(now);
                health.unlogged = 0;
                return;
            }
        }
        health.unlogged += 1;
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, user_id: &str) -> Result<(), RateLimited> {
        if !self.skipping() {
            match tokio::time::timeout(CHECK_TIMEOUT, self.ask_redis(user_id)).await {
                Ok(Ok(0)) => {
                    self.answered();
                    return Ok(());
                }
                Ok(Ok(wait_us)) => {
                    self.answered();
                    let retry_after = Duration::from_micros(wait_us).max(Duration::from_millis(1));
                    return Err(RateLimited { retry_after });
                }
                Ok(Err(err)) => self.fell_back(Some(err.to_string())),
                Err(_) => self.fell_back(Some(format!("no answer within {CHECK_TIMEOUT:?}"))),
            }
        } else {
            self.fell_back(None);
        }
        self.fallback.check(user_id).await
    }

    fn forget_idle(&self) {
        // Redis forgets by itself (keys expire once a bucket is full again).
        self.fallback.forget_idle();
    }
}
