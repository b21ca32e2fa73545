//! The message-append rules, written once for both backends. Each backend gathers the facts
//! its own way (SQLite asks its member cache and the database one fact at a time; PostgreSQL
//! reads a whole commit group's facts in one query) and lets [`judge`] decide, so the rules
//! and their order cannot drift apart between stores.

use crate::core::error::StoreError;
use crate::core::model::MessageType;
use crate::core::ports::{AppendOutcome, NewMessage};

/// What a backend knows, or can look up, about one append. [`judge`] asks in the rules'
/// order and only what the rules need, so a backend may look each fact up lazily.
pub(crate) trait AppendFacts {
    /// What stands for an earlier message with the same `client_id` (the message itself, or
    /// where to find it).
    type Earlier;

    /// Whether the conversation exists.
    fn conversation_exists(&mut self) -> Result<bool, StoreError>;

    /// Whether the sender is a member of it.
    fn sender_is_member(&mut self) -> Result<bool, StoreError>;

    /// Whether it is a direct conversation whose members block each other (either way).
    fn direct_members_block_each_other(&mut self) -> Result<bool, StoreError>;

    /// The earlier message of the sender with the same `client_id` (asked only when the new
    /// message has one).
    fn earlier_with_client_id(&mut self) -> Result<Option<Self::Earlier>, StoreError>;

    /// Whether the replied-to message is in the conversation (asked only for a reply).
    fn reply_in_conversation(&mut self) -> Result<bool, StoreError>;
}

/// What the rules decided about one append.
pub(crate) enum Verdict<Earlier> {
    /// Write it with the conversation's next seq.
    Accept,
    /// A repeat of an earlier send (same sender and `client_id`): answer with that message.
    Repeat(Earlier),
    /// Refused: nothing is written.
    Refuse(Refusal),
}

/// Why the rules refused an append.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// The conversation does not exist.
    NoConversation,
    /// The sender is not a member.
    NotMember,
    /// The direct conversation's members block each other.
    Blocked,
    /// The replied-to message is not in the conversation.
    ReplyNotFound,
}

impl From<Refusal> for AppendOutcome {
    fn from(refusal: Refusal) -> AppendOutcome {
        match refusal {
            Refusal::NoConversation => AppendOutcome::NoConversation,
            Refusal::NotMember => AppendOutcome::NotMember,
            Refusal::Blocked => AppendOutcome::Blocked,
            Refusal::ReplyNotFound => AppendOutcome::ReplyNotFound,
        }
    }
}

/// The append rules, in order: the conversation must exist; unless the message is a
/// [`MessageType::System`] one (the operator's, which needs no membership and is never
/// blocked) the sender must be a member and the direct conversation must not be blocked; a
/// repeated `client_id` answers with the original; a reply must point into the conversation.
pub(crate) fn judge<F: AppendFacts>(
    new: &NewMessage,
    facts: &mut F,
) -> Result<Verdict<F::Earlier>, StoreError> {
    if !facts.conversation_exists()? {
        return Ok(Verdict::Refuse(Refusal::NoConversation));
    }
    if new.kind != MessageType::System {
        if !facts.sender_is_member()? {
            return Ok(Verdict::Refuse(Refusal::NotMember));
        }
        if facts.direct_members_block_each_other()? {
            return Ok(Verdict::Refuse(Refusal::Blocked));
        }
    }
    if new.client_id.is_some()
        && let Some(earlier) = facts.earlier_with_client_id()?
    {
        return Ok(Verdict::Repeat(earlier));
    }
    if new.reply_to_id.is_some() && !facts.reply_in_conversation()? {
        return Ok(Verdict::Refuse(Refusal::ReplyNotFound));
    }
    Ok(Verdict::Accept)
}
