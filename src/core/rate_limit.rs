//! Per-user token buckets (GCRA via `governor`) for message writes.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ChatError;

/// A keyed limiter: each user gets `per_second` sustained with bursts of `burst`.
/// `None` inside means limiting is switched off (per_second = 0).
pub struct UserRateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl UserRateLimiter {
    /// A limiter allowing `per_second` requests per user with bursts of `burst`;
    /// `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        UserRateLimiter { limiter, clock: DefaultClock::default() }
    }

    /// Takes one token from the user's bucket, or says how long to wait.
    pub fn check(&self, user_id: &str) -> Result<(), ChatError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&user_id.to_owned()).map_err(|not_until| ChatError::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()).max(Duration::from_millis(1)),
        })
    }

    /// Forgets users whose buckets are full again, bounding memory; call periodically.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
