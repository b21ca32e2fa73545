//! Storage backends implementing [`crate::core::ports::Store`], and the message-append rules
//! both of them apply.

mod append_rules;
pub mod postgres;
mod search_terms;
pub mod sqlite;
mod upload_rows;

/// A page of at most `limit` from `messages`, fetched with one more than asked, and whether
/// more follow.
fn page_of_messages(
    mut messages: Vec<crate::core::model::Message>,
    limit: usize,
) -> (Vec<crate::core::model::Message>, bool) {
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    (messages, has_more)
}
