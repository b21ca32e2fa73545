//! Bus backends implementing [`crate::core::ports::Bus`].

pub mod local;
pub mod redis;
