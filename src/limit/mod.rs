//! Rate limiter backends implementing [`crate::core::ports::RateLimiter`]: `local` keeps
//! each node's budgets in memory, `redis` shares one budget per user across nodes;
//! `handshake` limits realtime handshakes per client IP.

pub mod handshake;
pub mod local;
pub mod redis;
