//! The node-local rate limiter: per-user token buckets (GCRA via `governor`) in this
//! process's memory. Right for a single node; behind a load balancer each node keeps its own
//! budget, so a user spreading writes over N nodes gets N times the limit (the Redis limiter
//! shares one budget instead, and falls back to this one while Redis is unreachable).

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::core::error::RateLimited;
use crate::core::ports::RateLimiter;

/// A keyed limiter: each user gets `per_second` sustained with bursts of `burst`.
/// `None` inside means limiting is switched off (per_second = 0).
pub struct LocalRateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl LocalRateLimiter {
    /// A limiter allowing `per_second` requests per user with bursts of `burst` (at least 1);
    /// `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        LocalRateLimiter { limiter, clock: DefaultClock::default() }
    }

    /// Takes one token from the user's bucket, or says how long to wait (at least 1 ms).
    pub fn check_now(&self, user_id: &str) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&user_id.to_owned()).map_err(|not_until| RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()).max(Duration::from_millis(1)),
        })
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, user_id: &str) -> Result<(), RateLimited> {
        self.check_now(user_id)
    }

    /// Forgets users whose buckets are full again.
    fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
