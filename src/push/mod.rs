//! Push providers: each implements [`crate::core::ports::Push`] for one platform.

pub mod webhook;
pub mod webpush;
