//! Message search: the FTS5 trigram index `messages_search` (see
//! migrations/sqlite/0011_search.sql) for words of three or more characters, `LIKE` for
//! shorter ones; a query of only short words scans at most [`SHORT_QUERY_SCAN`] of the
//! caller's newest messages per page.

use rusqlite::types::Value;

use super::*;
use crate::core::ports::{SHORT_QUERY_SCAN, SearchCursor, SearchPage, SearchQuery, SearchStore};
use crate::store::search_terms::{Bound, contains_pattern, fts_all_of, indexed, page};

/// [`crate::store::search_terms::scope_conditions`] with SQLite's `?n` and values.
fn scope_conditions(query: &SearchQuery, params: &mut Vec<Value>) -> String {
    let mut bound = Vec::new();
    let conditions = crate::store::search_terms::scope_conditions(
        query,
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
    let mut conditions = vec![scope_conditions(query, &mut params)];
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

/// Search with only short words: `LIKE` over at most [`SHORT_QUERY_SCAN`] of the newest
/// messages in scope. When the scan was cut short, the next page starts after the last
/// message scanned (so a page may hold fewer than `limit` results and still have a next).
fn scanning_search(conn: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let mut params = Vec::new();
    let scope = scope_conditions(query, &mut params);
    let scanned = format!(
        "SELECT * FROM messages m WHERE {scope} ORDER BY m.created_at DESC, m.id DESC LIMIT {SHORT_QUERY_SCAN}"
    );
    let scope_params = params.clone();
    let likes = like_conditions(query.words.iter(), &mut params);
    params.push(Value::Integer(i64::try_from(query.limit + 1).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM ({scanned}) m WHERE {} ORDER BY m.created_at DESC, m.id DESC LIMIT ?{}",
        likes.join(" AND "),
        params.len()
    );
    let found = page(query_messages(conn, &sql, rusqlite::params_from_iter(params))?, query.limit);
    if found.next.is_some() {
        return Ok(found);
    }
    let last_scanned = format!(
        "SELECT m.created_at, m.id FROM messages m WHERE {scope} ORDER BY m.created_at DESC, m.id DESC \
         LIMIT 1 OFFSET {}",
        SHORT_QUERY_SCAN - 1
    );
    let next = conn
        .prepare_cached(&last_scanned)?
        .query_row(rusqlite::params_from_iter(scope_params), |row| {
            Ok(SearchCursor { created_at: Timestamp(row.get(0)?), id: row.get(1)? })
        })
        .optional()?;
    Ok(SearchPage { messages: found.messages, next })
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
