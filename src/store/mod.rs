//! Storage backends implementing [`crate::core::ports::Store`], and the message-append rules
//! both of them apply.

mod append_rules;
pub mod postgres;
mod search_terms;
pub mod sqlite;
mod upload_rows;
