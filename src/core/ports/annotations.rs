//! What members add to messages after they are sent: reactions and pins, and the reading
//! side of threads and of changes (for clients that were away). Part of [`super::Store`].

use async_trait::async_trait;

use crate::core::error::StoreError;
use crate::core::model::{Message, Reaction};
use crate::core::time::Timestamp;

/// Result of a reaction or pin change.
#[derive(Debug, Clone)]
pub enum Annotated {
    /// Changed: the message as it stands now (its version and revision moved).
    Changed(Message),
    /// Already so (the same reaction there, or not there; pinned, or not): nothing written.
    Unchanged(Message),
    /// Refused by a limit (reactions per user and message, pins per conversation).
    LimitReached,
    /// The message is deleted: nothing can be added to it.
    Deleted,
    /// No message has that id.
    NoMessage,
}

/// Where a page of reactions starts: after this one (in `created_at`, `user_id`, `emoji` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCursor {
    /// The last reaction's time.
    pub created_at: Timestamp,
    /// Its user.
    pub user_id: String,
    /// Its emoji.
    pub emoji: String,
}

/// Reactions and pins. Every change bumps the conversation's revision and the message's
/// version and revision in one transaction, and keeps the message row's summary
/// (`reaction_counts`, `latest_reactions`, `pinned_at`/`pinned_by`) exact.
#[async_trait]
pub trait AnnotationStore: Send + Sync + 'static {
    /// Adds `user_id`'s `emoji` to a message not deleted, unless the user already has
    /// `max_per_user` distinct reactions on it ([`Annotated::LimitReached`]).
    async fn add_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
        at: Timestamp,
        max_per_user: usize,
    ) -> Result<Annotated, StoreError>;

    /// Removes `user_id`'s `emoji` from a message.
    async fn remove_reaction(
        &self,
        message_id: &str,
        user_id: &str,
        emoji: &str,
    ) -> Result<Annotated, StoreError>;

    /// A page of a message's reactions, oldest first, after `after`.
    async fn reactions(
        &self,
        message_id: &str,
        after: Option<ReactionCursor>,
        limit: usize,
    ) -> Result<Vec<Reaction>, StoreError>;

    /// Pins a message not deleted, unless its conversation already has `max_pins` pinned
    /// ([`Annotated::LimitReached`]).
    async fn pin_message(
        &self,
        message_id: &str,
        user_id: &str,
        at: Timestamp,
        max_pins: usize,
    ) -> Result<Annotated, StoreError>;

    /// Unpins a message.
    async fn unpin_message(&self, message_id: &str) -> Result<Annotated, StoreError>;

    /// A conversation's pinned messages, most recently pinned first.
    async fn pinned_messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError>;

    /// A page of a thread's replies, ascending by seq, after `after_seq`, and whether more
    /// follow.
    async fn thread_replies(
        &self,
        root_id: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError>;

    /// A conversation's messages with seq ≤ `up_to_seq` changed after revision
    /// `after_revision`, ascending by revision, and whether more follow.
    async fn changed_messages(
        &self,
        conversation_id: &str,
        after_revision: i64,
        up_to_seq: i64,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StoreError>;

    /// A user's unread mentions per conversation (only those with some).
    async fn unread_mentions(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError>;
}
