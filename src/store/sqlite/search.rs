//! Message search: the FTS5 trigram index `messages_search` (see
//! migrations/sqlite/0011_search.sql) for words of three or more characters, `LIKE` for
//! shorter ones; a query of only short words scans at most [`SHORT_QUERY_SCAN`] of the
//! caller's newest messages per page.

use rusqlite::types::Value;

use super::*;
use crate::core::ports::{SHORT_QUERY_SCAN, SearchCursor, SearchPage, SearchQuery, SearchStore};
use crate::store::search_terms::{contains_pattern, fts_all_of, indexed};

/// The conditions every search applies except the words (membership, deletion, filters,
/// cursor), as SQL on `messages m` with their parameters appended to `params`.
fn scope_conditions(query: &SearchQuery, params: &mut Vec<Value>) -> String {
    let mut bind = |value: Value| {
        params.push(value);
        format!("?{}", params.len())
    };
    let mut conditions = vec![
        "m.deleted_at IS NULL".to_owned(),
        format!(
            "m.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = {})",
            bind(Value::Text(query.user_id.clone()))
        ),
    ];
    if let Some(conversation_id) = &query.conversation_id {
        conditions.push(format!("m.conversation_id = {}", bind(Value::Text(conversation_id.clone()))));
    }
    if let Some(sender_id) = &query.sender_id {
        conditions.push(format!("m.sender_id = {}", bind(Value::Text(sender_id.clone()))));
    }
    if let Some(after) = query.after {
        conditions.push(format!("m.created_at > {}", bind(Value::Integer(after.millis()))));
    }
    if let Some(before) = query.before {
        conditions.push(format!("m.created_at < {}", bind(Value::Integer(before.millis()))));
    }
    if let Some(cursor) = &query.cursor {
        let at = bind(Value::Integer(cursor.created_at.millis()));
        let id = bind(Value::Text(cursor.id.clone()));
        conditions.push(format!("(m.created_at < {at} OR (m.created_at = {at} AND m.id < {id}))"));
    }
    conditions.join(" AND ")
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

/// A page of at most `limit` from `messages` fetched with one more: the cursor of its last
/// message when more follow.
fn page(mut messages: Vec<Message>, limit: usize) -> SearchPage {
    let next = if messages.len() > limit {
        messages.truncate(limit);
        messages.last().map(|m| SearchCursor { created_at: m.created_at, id: m.id.clone() })
    } else {
        None
    };
    SearchPage { messages, next }
}

/// Search with at least one word long enough for the trigram index.
fn indexed_search(conn: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let mut params = Vec::new();
    let mut conditions = vec![scope_conditions(query, &mut params)];
    params.push(Value::Text(fts_all_of(query.words.iter().filter(|w| indexed(w)).map(String::as_str))));
    conditions.push(format!(
        "m.rowid IN (SELECT rowid FROM messages_search WHERE messages_search MATCH ?{})",
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
