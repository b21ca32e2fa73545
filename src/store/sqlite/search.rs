//! Message search: the FTS5 trigram index `messages_search` (see
//! migrations/sqlite/0011_search.sql) for words of three or more characters, `LIKE` for
//! shorter ones; a query of only short words scans at most [`SHORT_QUERY_SCAN`] of the
//! caller's newest messages per page.

use rusqlite::types::Value;

use super::*;
use crate::core::ports::{SHORT_QUERY_SCAN, SearchPage, SearchQuery, SearchStore};
use crate::store::search_terms::{Bound, Scope, after_window, contains_pattern, fts_all_of, indexed, page};

/// [`crate::store::search_terms::scope_conditions`] with SQLite's `?n` and values.
fn scope_conditions(query: &SearchQuery, scope: Scope, params: &mut Vec<Value>) -> String {
    let mut bound = Vec::new();
    let conditions = crate::store::search_terms::scope_conditions(
        query,
        scope,
        |n| format!("?{n}"),
        |conversations| format!("m.conversation_id IN ({conversations})"),
        &mut bound,
    );
    params.extend(bound.into_iter().map(|value| match value {
        Bound::Text(text) => Value::Text(text),
        Bound::Integer(n) => Value::Integer(n),
    }));
    conditions
}

/// `LIKE` conditions on `m.content` for `words`, parameters appended to `params`.
fn like_conditions<'a>(words: impl Iterator<Item = &'a String>, params: &mut Vec<Value>) -> Vec<String> {
    words
        .map(|word| {
            params.push(Value::Text(contains_pattern(word)));
            format!("m.content LIKE ?{} ESCAPE '\\'", params.len())
        })
        .collect()
}

/// Search with at least one word long enough for the trigram index.
fn indexed_search(conn: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let mut params = Vec::new();
    let mut conditions = vec![scope_conditions(query, Scope::Rows, &mut params)];
    params.push(Value::Text(fts_all_of(query.words.iter().filter(|w| indexed(w)).map(String::as_str))));
    // The unary `+` keeps SQLite from driving the search by the matched rowids: it walks the
    // caller's conversations (their index gives each message's rowid) and keeps the rowids
    // in the match set (a list with a Bloom filter). Driven by the matches instead, a common
    // word cost one row lookup per match in the whole store (5 % of 1M messages: ~55 ms)
    // against ~6 ms this way; see benches/RESULTS.md, "Search at 1M messages".
    conditions.push(format!(
        "+m.rowid IN (SELECT rowid FROM messages_search WHERE messages_search MATCH ?{})",
        params.len()
    ));
    conditions.extend(like_conditions(query.words.iter().filter(|w| !indexed(w)), &mut params));
    params.push(Value::Integer(i64::try_from(query.limit + 1).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {} ORDER BY m.created_at DESC, m.id DESC LIMIT ?{}",
        conditions.join(" AND "),
        params.len()
    );
    Ok(page(query_messages(conn, &sql, rusqlite::params_from_iter(params))?, query.limit))
}

/// Search with only short words: `LIKE` over a window of the newest [`SHORT_QUERY_SCAN`]
/// messages in scope (deleted ones counted). The window's start is found in
/// `messages_by_time` alone (conversation, time: no row is read, a few hundred KiB sorted for
/// a user in 500 conversations), then only the rows inside it are read and matched. When a
/// window holds fewer matches than a page, the next page starts before the window.
fn scanning_search(conn: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let mut params = Vec::new();
    let window = scope_conditions(query, Scope::Window, &mut params);
    let window_start: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT m.created_at FROM messages m WHERE {window} ORDER BY m.created_at DESC LIMIT 1 OFFSET {}",
            SHORT_QUERY_SCAN - 1
        ))?
        .query_row(rusqlite::params_from_iter(params), |row| row.get(0))
        .optional()?;
    let mut params = Vec::new();
    let mut conditions = vec![scope_conditions(query, Scope::Rows, &mut params)];
    if let Some(start) = window_start {
        params.push(Value::Integer(start));
        conditions.push(format!("m.created_at >= ?{}", params.len()));
    }
    conditions.extend(like_conditions(query.words.iter(), &mut params));
    params.push(Value::Integer(i64::try_from(query.limit + 1).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {} ORDER BY m.created_at DESC, m.id DESC LIMIT ?{}",
        conditions.join(" AND "),
        params.len()
    );
    let found = page(query_messages(conn, &sql, rusqlite::params_from_iter(params))?, query.limit);
    match (found.next, window_start) {
        (None, Some(start)) => Ok(SearchPage { messages: found.messages, next: Some(after_window(start)) }),
        (next, _) => Ok(SearchPage { messages: found.messages, next }),
    }
}

#[async_trait]
impl SearchStore for SqliteStore {
    async fn search_messages(&self, query: SearchQuery) -> Result<SearchPage, StoreError> {
        self.read(move |conn| {
            if query.words.iter().any(|word| indexed(word)) {
                indexed_search(conn, &query)
            } else {
                scanning_search(conn, &query)
            }
        })
        .await
    }
}
