//! Push providers: each implements [`crate::core::ports::Push`] for one platform.

pub mod apns;
pub mod fcm;
pub mod webhook;
pub mod webpush;
