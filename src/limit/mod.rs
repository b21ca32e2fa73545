//! Rate limiter backends implementing [`crate::core::ports::RateLimiter`]: `local` keeps
//! each node's budgets in memory, `redis` shares one budget per user across nodes.

pub mod local;
pub mod redis;
