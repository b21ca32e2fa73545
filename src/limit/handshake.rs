//! The per-client-IP handshake limiter of the realtime transports: a keyed token bucket
//! (GCRA via `governor`) in this node's memory. Buckets of quiet IPs are forgotten at each
//! housekeeping round, so memory follows the IPs seen recently, not all ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::core::ChatError;

/// Handshakes per client IP; `None` inside when switched off.
pub struct HandshakeLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl HandshakeLimiter {
    /// `per_second` handshakes per IP with bursts of `burst`; `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        HandshakeLimiter { limiter, clock: DefaultClock::default() }
    }

    /// Takes one handshake from `ip`'s bucket, or `rate_limited` with the wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), ChatError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&ip).map_err(|not_until| ChatError::RateLimited {
            retry_after: not_until.wait_time_from(self.clock.now()).max(Duration::from_millis(1)),
        })
    }

    /// Forgets IPs whose buckets are full again.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
