//! Message search: `content ILIKE '%word%'` for every word, which the `pg_trgm` GIN index
//! (migrations/postgres/0011_search.sql) serves for words of three or more characters; a
//! query of only shorter words scans at most [`SHORT_QUERY_SCAN`] of the caller's newest
//! messages per page. At start, [`check_korean_trigrams`] warns when the database cannot
//! extract trigrams from Korean text.

use super::*;
use crate::core::ports::{SHORT_QUERY_SCAN, SearchPage, SearchQuery, SearchStore};
use crate::store::search_terms::{Bound, Scope, after_window, contains_pattern, indexed, page};

/// A query parameter owned by the query being built.
type Param = Box<dyn ToSql + Sync + Send>;

/// [`crate::store::search_terms::scope_conditions`] with PostgreSQL's `$n` and values.
fn scope_conditions(query: &SearchQuery, scope: Scope, params: &mut Vec<Param>) -> String {
    let mut bound = Vec::new();
    // The caller's conversations as an array (`= ANY`), not `IN (subquery)`: the planner
    // can then look them up in `messages_by_time` as a bitmap and AND it with the trigram
    // index's, so only matching messages in scope are read. With `IN` it either read every
    // match in the whole store (a common word for a user in 500 conversations: ~420 ms at
    // 1M messages) or every message in scope; see benches/RESULTS.md, "Search at 1M
    // messages".
    let conditions = crate::store::search_terms::scope_conditions(
        query,
        scope,
        |n| format!("${n}"),
        |conversations| format!("m.conversation_id = ANY(ARRAY({conversations}))"),
        &mut bound,
    );
    params.extend(bound.into_iter().map(|value| -> Param {
        match value {
            Bound::Text(text) => Box::new(text),
            Bound::Integer(n) => Box::new(n),
        }
    }));
    conditions
}

/// `ILIKE` conditions on `m.content` for every word, parameters appended to `params`.
fn word_conditions(words: &[String], params: &mut Vec<Param>) -> String {
    words
        .iter()
        .map(|word| {
            params.push(Box::new(contains_pattern(word)));
            format!("m.content ILIKE ${}", params.len())
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn borrowed(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|param| param.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl PostgresStore {
    /// Logs a warning unless the database extracts trigrams from Korean text (`show_trgm`
    /// of a Korean word is empty when the database's LC_CTYPE is `C`): then Korean searches
    /// still find what they should, but by scanning instead of through the index.
    pub(super) async fn check_korean_trigrams(&self) -> Result<(), StoreError> {
        let rows = self
            .query(
                "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
                 WHERE e.extname = 'pg_trgm'",
                &[],
            )
            .await?;
        let Some(row) = rows.first() else {
            tracing::warn!("the pg_trgm extension is missing: message search cannot use its index");
            return Ok(());
        };
        let schema: String = get(row, 0)?;
        let sql = format!(
            "SELECT cardinality({}.show_trgm('검색을')), current_setting('lc_ctype')",
            quote_identifier(&schema)
        );
        let row = self.query(&sql, &[]).await?;
        let Some(row) = row.first() else { return Ok(()) };
        let trigrams: Option<i32> = get(row, 0)?;
        let ctype: String = get(row, 1)?;
        if trigrams.unwrap_or(0) == 0 {
            tracing::warn!(
                lc_ctype = %ctype,
                "this PostgreSQL database extracts no trigrams from Korean text (LC_CTYPE {ctype}): \
                 Korean message search works but scans instead of using its index; create the database \
                 with a UTF-8 LC_CTYPE (e.g. CREATE DATABASE … LC_CTYPE 'C.UTF-8' TEMPLATE template0)"
            );
        }
        Ok(())
    }
}

impl PostgresStore {
    /// Runs a search statement prepared for this call only. A cached statement would switch
    /// to a generic plan after a few runs, and a generic plan cannot see that the `ILIKE`
    /// pattern is selective: it walks the caller's messages by time instead of asking the
    /// trigram index (milliseconds against microseconds for a rare word, and growing with
    /// the history). A fresh statement is always planned with its parameters.
    async fn query_with_fresh_plan(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        Ok(self.client().await?.query(sql, params).await?)
    }
}

/// `name` as a double-quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl SearchStore for PostgresStore {
    async fn search_messages(&self, query: SearchQuery) -> Result<SearchPage, StoreError> {
        let fetch = as_i64(query.limit).saturating_add(1);
        let mut params: Vec<Param> = Vec::new();
        let mut conditions = vec![scope_conditions(&query, Scope::Rows, &mut params)];
        if query.words.iter().any(|word| indexed(word)) {
            conditions.push(word_conditions(&query.words, &mut params));
            params.push(Box::new(fetch));
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {} ORDER BY m.created_at DESC, m.id DESC LIMIT ${}",
                conditions.join(" AND "),
                params.len()
            );
            let rows = self.query_with_fresh_plan(&sql, &borrowed(&params)).await?;
            return Ok(page(messages_from(&rows)?, query.limit));
        }
        // Only short words: no trigram to look up. Scan a window of the newest messages in
        // scope, found in `messages_by_time` alone (see the SQLite store).
        let mut window_params: Vec<Param> = Vec::new();
        let window = scope_conditions(&query, Scope::Window, &mut window_params);
        let start = format!(
            "SELECT m.created_at FROM messages m WHERE {window} ORDER BY m.created_at DESC LIMIT 1 OFFSET {}",
            SHORT_QUERY_SCAN - 1
        );
        let rows = self.query_with_fresh_plan(&start, &borrowed(&window_params)).await?;
        let window_start: Option<i64> = rows.first().map(|row| get(row, 0)).transpose()?;
        if let Some(start) = window_start {
            params.push(Box::new(start));
            conditions.push(format!("m.created_at >= ${}", params.len()));
        }
        conditions.push(word_conditions(&query.words, &mut params));
        params.push(Box::new(fetch));
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {} ORDER BY m.created_at DESC, m.id DESC LIMIT ${}",
            conditions.join(" AND "),
            params.len()
        );
        let rows = self.query_with_fresh_plan(&sql, &borrowed(&params)).await?;
        let found = page(messages_from(&rows)?, query.limit);
        match (found.next, window_start) {
            (None, Some(start)) => {
                Ok(SearchPage { messages: found.messages, next: Some(after_window(start)) })
            }
            (next, _) => Ok(SearchPage { messages: found.messages, next }),
        }
    }
}
