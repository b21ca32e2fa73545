//! The search port: finding the caller's messages by their text (`GET /api/search`).

use async_trait::async_trait;

use crate::core::error::StoreError;
use crate::core::model::Message;
use crate::core::time::Timestamp;

/// Most messages a search made only of short words (fewer than [`INDEXED_WORD_CHARS`]
/// characters, which no trigram index serves) scans per page, newest first. A page of it may
/// hold fewer matches than asked, even none, while a next page still follows.
pub const SHORT_QUERY_SCAN: usize = 10_000;

/// Words at least this long (in characters) are looked up in a trigram index; shorter ones
/// are matched by scanning.
pub const INDEXED_WORD_CHARS: usize = 3;

/// Position in a search's results: creation time, then id, both descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCursor {
    /// Creation time of the last message of the previous page (or the last one scanned).
    pub created_at: Timestamp,
    /// Its id, to break ties.
    pub id: String,
}

/// What to search for, already validated and scoped by the core.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The searcher: only conversations they are a member of now are searched.
    pub user_id: String,
    /// Words that must all appear in the content, case-insensitively (each non-empty, no
    /// whitespace).
    pub words: Vec<String>,
    /// Only this conversation (the caller's membership was checked).
    pub conversation_id: Option<String>,
    /// Only messages from this sender.
    pub sender_id: Option<String>,
    /// Only messages created after this time (exclusive).
    pub after: Option<Timestamp>,
    /// Only messages created before this time (exclusive).
    pub before: Option<Timestamp>,
    /// Continue after this position.
    pub cursor: Option<SearchCursor>,
    /// Most results (at least 1).
    pub limit: usize,
}

/// A page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Non-deleted matching messages, newest first (creation time, then id, descending).
    pub messages: Vec<Message>,
    /// Where the next page starts; `None` when nothing more can match.
    pub next: Option<SearchCursor>,
}

/// Message search over the text of non-deleted messages.
#[async_trait]
pub trait SearchStore: Send + Sync + 'static {
    /// The messages matching `query` in conversations `query.user_id` is a member of, newest
    /// first. The store keeps its index in step with appends, edits and deletes in the same
    /// transaction, so a committed edit is found by its new text and never by its old one.
    async fn search_messages(&self, query: SearchQuery) -> Result<SearchPage, StoreError>;
}
