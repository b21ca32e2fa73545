//! What both backends share of a search: the scope conditions, the paging, and how words
//! become SQL (`LIKE` patterns, FTS5 phrases).

use crate::core::model::Message;
use crate::core::ports::{INDEXED_WORD_CHARS, SearchCursor, SearchPage, SearchQuery};

/// A value a search condition binds, before a backend turns it into its own parameter type.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    /// A text parameter.
    Text(String),
    /// An integer parameter.
    Integer(i64),
}

/// Which rows a set of scope conditions describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The messages a search may return.
    Rows,
    /// What a short-word search scans, on the columns of `messages_by_time` alone
    /// (conversation, creation time) so the window's start is found in the index: deleted
    /// messages and other senders' included, the cursor's time inclusive.
    Window,
}

/// The conditions every search applies except the words (membership, deletion, filters,
/// cursor), as SQL on `messages m`. Their values are appended to `params`, each written as
/// `placeholder(n)` with `n` its 1-based position. `member_of` makes the membership
/// condition on `m.conversation_id` from a query of the caller's conversation ids.
pub(crate) fn scope_conditions(
    query: &SearchQuery,
    scope: Scope,
    placeholder: fn(usize) -> String,
    member_of: fn(&str) -> String,
    params: &mut Vec<Bound>,
) -> String {
    let mut bind = |value: Bound| {
        params.push(value);
        placeholder(params.len())
    };
    let conversations = format!(
        "SELECT conversation_id FROM members WHERE user_id = {}",
        bind(Bound::Text(query.user_id.clone()))
    );
    let mut conditions = vec![member_of(&conversations)];
    if scope == Scope::Rows {
        conditions.push("m.deleted_at IS NULL".to_owned());
    }
    if let Some(conversation_id) = &query.conversation_id {
        conditions.push(format!("m.conversation_id = {}", bind(Bound::Text(conversation_id.clone()))));
    }
    if let (Some(sender_id), Scope::Rows) = (&query.sender_id, scope) {
        conditions.push(format!("m.sender_id = {}", bind(Bound::Text(sender_id.clone()))));
    }
    if let Some(after) = query.after {
        conditions.push(format!("m.created_at > {}", bind(Bound::Integer(after.millis()))));
    }
    if let Some(before) = query.before {
        conditions.push(format!("m.created_at < {}", bind(Bound::Integer(before.millis()))));
    }
    match (&query.cursor, scope) {
        (Some(cursor), Scope::Rows) => {
            let at = bind(Bound::Integer(cursor.created_at.millis()));
            let id = bind(Bound::Text(cursor.id.clone()));
            conditions.push(format!("(m.created_at < {at} OR (m.created_at = {at} AND m.id < {id}))"));
        }
        (Some(cursor), Scope::Window) => {
            conditions.push(format!("m.created_at <= {}", bind(Bound::Integer(cursor.created_at.millis()))));
        }
        (None, _) => {}
    }
    conditions.join(" AND ")
}

/// A page of at most `limit` from `messages` fetched with one more: the cursor of its last
/// message when more follow.
pub(crate) fn page(mut messages: Vec<Message>, limit: usize) -> SearchPage {
    let next = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(|m| SearchCursor { created_at: m.created_at, id: m.id.clone() })
    } else {
        None
    };
    SearchPage { messages, next }
}

/// Whether a trigram index can look `word` up (it has at least three characters).
pub(crate) fn indexed(word: &str) -> bool {
    word.chars().nth(INDEXED_WORD_CHARS - 1).is_some()
}

/// `%word%` with `\`, `%` and `_` escaped by `\` (for `LIKE … ESCAPE '\'`, PostgreSQL's
/// default escape too).
pub(crate) fn contains_pattern(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len() + 2);
    pattern.push('%');
    for c in word.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// An FTS5 query requiring every word as a substring: each word a quoted phrase (inner
/// quotes doubled), joined by `AND`.
pub(crate) fn fts_all_of<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The cursor of the page after a short-word scan whose window started at `window_start`:
/// everything older. An empty id sorts before every id, so the next page holds only
/// messages created before `window_start` (those at it were all in this window).
pub(crate) fn after_window(window_start: i64) -> SearchCursor {
    SearchCursor { created_at: crate::core::time::Timestamp(window_start), id: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn fts_phrases_double_their_quotes() {
        assert_eq!(fts_all_of(["say\"hi", "검색을"]), "\"say\"\"hi\" AND \"검색을\"");
    }

    #[test]
    fn three_characters_are_indexed_two_are_not() {
        assert!(indexed("검색을"));
        assert!(!indexed("검색"));
        assert!(indexed("hel"));
    }
}
