//! Message search (`GET /api/search`): the caller's conversations only (their membership
//! now), the text of non-deleted messages, newest first, with the places each query word
//! occurs as highlights.

use super::*;
use crate::core::budget::BudgetKind;
use crate::core::ports::{SearchCursor, SearchQuery};
use crate::core::requests::SearchMessages;

/// Default page size of search results.
const SEARCH_DEFAULT: usize = 20;
/// Largest page size of search results.
const SEARCH_MAX: usize = 100;
/// Longest query, in characters after trimming.
const MAX_QUERY_CHARS: usize = 200;

/// One message found, with where the query's words occur in its `content`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The message as history shows it.
    pub message: Message,
    /// `[start, end)` ranges of `content` in Unicode scalar values (characters, not bytes
    /// or UTF-16 units), ascending, overlapping occurrences merged.
    #[schema(value_type = Vec<Vec<u32>>)]
    pub highlights: Vec<[usize; 2]>,
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResults {
    /// Newest first.
    pub results: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; null when nothing more can match. A page may
    /// hold fewer than `limit` results while a next page follows (queries of only one- or
    /// two-character words scan a bounded number of messages per page).
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Opaque search cursor: `<created millis>.<id>`.
fn encode_cursor(cursor: &SearchCursor) -> String {
    format!("{}.{}", cursor.created_at.millis(), cursor.id)
}

/// Reads a cursor made by [`encode_cursor`]; anything else is `invalid`. An empty id (after
/// a short-word scan's window) means "everything created before that time".
fn decode_cursor(cursor: &str) -> Result<SearchCursor, ChatError> {
    let bad = || ChatError::invalid("cursor is not one this server issued");
    let (millis, id) = cursor.split_once('.').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    Ok(SearchCursor { created_at: Timestamp(millis), id: id.to_owned() })
}

/// An RFC 3339 time from the query string.
fn parse_time(field: &str, value: &str) -> Result<Timestamp, ChatError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|time| Timestamp(time.timestamp_millis()))
        .map_err(|_| ChatError::invalid(format!("{field} must be an RFC 3339 time")))
}

/// The character as searches compare it: its lower case when that is one character.
fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(single), None) => single,
        _ => c,
    }
}

/// The distinct words of a query (1 to 200 characters after trimming), in order.
fn query_words(q: Option<&str>) -> Result<Vec<String>, ChatError> {
    let q = q.unwrap_or("").trim();
    let chars = q.chars().count();
    if chars == 0 {
        return Err(ChatError::invalid("q must not be empty"));
    }
    if chars > MAX_QUERY_CHARS {
        return Err(ChatError::invalid(format!("q must be at most {MAX_QUERY_CHARS} characters")));
    }
    let mut words: Vec<String> = Vec::new();
    for word in q.split_whitespace() {
        let folded: String = word.chars().map(fold).collect();
        if !words.iter().any(|seen| seen.chars().map(fold).eq(folded.chars())) {
            words.push(word.to_owned());
        }
    }
    Ok(words)
}

/// Every occurrence of each word in `content`, case-insensitively, as `[start, end)`
/// character ranges, ascending, overlapping ones merged.
pub(crate) fn highlights(content: &str, words: &[String]) -> Vec<[usize; 2]> {
    let text: Vec<char> = content.chars().map(fold).collect();
    let mut ranges = Vec::new();
    for word in words {
        let word: Vec<char> = word.chars().map(fold).collect();
        if word.is_empty() || word.len() > text.len() {
            continue;
        }
        for start in 0..=text.len() - word.len() {
            if text[start..start + word.len()] == word[..] {
                ranges.push([start, start + word.len()]);
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<[usize; 2]> = Vec::with_capacity(ranges.len());
    for [start, end] in ranges {
        match merged.last_mut() {
            Some(last) if start < last[1] => last[1] = last[1].max(end),
            _ => merged.push([start, end]),
        }
    }
    merged
}

impl Chat {
    /// # Search the caller's messages
    /// Every word of `q` must occur in the text (case-insensitive substrings, so Korean
    /// stems match words with particles attached). Only conversations the caller is a
    /// member of now; a `conversation_id` they are not in is `not_found`, like one that
    /// does not exist.
    pub async fn search_messages(
        &self,
        user: &User,
        req: SearchMessages,
    ) -> Result<SearchResults, ChatError> {
        let words = query_words(req.q.as_deref())?;
        let limit = validate::page_limit(req.limit, SEARCH_DEFAULT, SEARCH_MAX)?;
        let after = req.after.as_deref().map(|t| parse_time("after", t)).transpose()?;
        let before = req.before.as_deref().map(|t| parse_time("before", t)).transpose()?;
        let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
        self.spend(BudgetKind::Search, user).await?;
        if let Some(conversation_id) = &req.conversation_id {
            match self.require_member(conversation_id, user).await {
                Err(ChatError::NotAMember) => return Err(ChatError::not_found("no such conversation")),
                other => other?,
            };
        }
        let query = SearchQuery {
            user_id: user.id.clone(),
            words,
            conversation_id: req.conversation_id,
            sender_id: req.from,
            after,
            before,
            cursor,
            limit,
        };
        let words = query.words.clone();
        let page = self.store.search_messages(query).await?;
        let results = page
            .messages
            .into_iter()
            .map(|message| {
                let highlights =
                    message.content.as_deref().map(|c| highlights(c, &words)).unwrap_or_default();
                SearchHit { message, highlights }
            })
            .collect();
        Ok(SearchResults { results, next_cursor: page.next.as_ref().map(encode_cursor) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(q: &str) -> Vec<String> {
        query_words(Some(q)).expect("valid query")
    }

    #[test]
    fn highlights_count_characters_not_bytes() {
        assert_eq!(highlights("검색을 해보세요", &words("검색")), vec![[0, 2]]);
        assert_eq!(highlights("오늘은 Hello, hello!", &words("HELLO")), vec![[4, 9], [11, 16]]);
    }

    #[test]
    fn overlapping_occurrences_merge() {
        assert_eq!(highlights("aaaa b", &words("aa")), vec![[0, 4]]);
        assert_eq!(highlights("반갑습니다", &words("반갑 갑습")), vec![[0, 3]]);
    }

    #[test]
    fn blank_and_long_queries_are_invalid() {
        assert!(query_words(Some("   ")).is_err());
        assert!(query_words(None).is_err());
        assert!(query_words(Some(&"가".repeat(201))).is_err());
        assert_eq!(words(&format!("  {}  ", "가".repeat(200))).len(), 1);
    }

    #[test]
    fn repeated_words_count_once() {
        assert_eq!(words("Hello hello 검색"), vec!["Hello".to_owned(), "검색".to_owned()]);
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = SearchCursor { created_at: Timestamp(42), id: "01J.X".into() };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).expect("valid"), cursor);
        assert!(decode_cursor("nope").is_err());
    }
}
