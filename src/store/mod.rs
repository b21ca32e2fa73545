//! Storage backends implementing [`crate::core::ports::Store`].

pub mod sqlite;
