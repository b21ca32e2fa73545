//! The rate-limit port: per-user admission of message writes.

use async_trait::async_trait;

use crate::core::error::RateLimited;

/// Per-user admission control for message writes (send, edit, delete): each user has a
/// budget of `per_second` writes with bursts of `burst` (GCRA, a token bucket without a
/// refill task). One node's limiter, or one shared by every node of a cluster.
///
/// A limiter never fails the caller for reasons of its own: a backend that loses its shared
/// state falls back to something local (and says so in the log) rather than refusing or
/// erroring a send.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one write from `user_id`'s budget, or refuses with how long until the next
    /// write would be admitted.
    async fn check(&self, user_id: &str) -> Result<(), RateLimited>;

    /// Periodic housekeeping (about once a minute): forgets the state of users whose budget
    /// is full again, bounding memory.
    fn forget_idle(&self) {}
}
