//! Rate limiter backends implementing [`crate::core::ports::RateLimiter`]: `local` keeps
//! each node's budgets in memory.

pub mod local;
