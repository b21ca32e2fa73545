//! Storage backends implementing [`crate::core::ports::Store`].

pub mod postgres;
pub mod sqlite;
