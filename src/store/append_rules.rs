//! The message-append rules, written once for both backends. Each backend gathers the facts
//! its own way (SQLite asks its member cache and the database one fact at a time; PostgreSQL
//! reads a whole commit group's facts in one query) and lets [`judge`] decide, so the rules
//! and their order cannot drift apart between stores.

use crate::core::error::StoreError;
use crate::core::model::{ConversationStatus, MessageType, THREAD_PARTICIPANTS_SHOWN};
use crate::core::ports::{AppendOutcome, NewMessage};

/// What a backend knows, or can look up, about one append. [`judge`] asks in the rules'
/// order and only what the rules need, so a backend may look each fact up lazily.
pub(crate) trait AppendFacts {
    /// What stands for an earlier message with the same `client_id` (the message itself, or
    /// where to find it).
    type Earlier;

    /// Whether the conversation exists.
    fn conversation_exists(&mut self) -> Result<bool, StoreError>;

    /// The conversation's status and its reason (asked once it exists).
    fn conversation_status(&mut self) -> Result<(ConversationStatus, Option<String>), StoreError>;

    /// Whether the sender is a member of it.
    fn sender_is_member(&mut self) -> Result<bool, StoreError>;

    /// Whether it is a direct conversation whose members block each other (either way).
    fn direct_members_block_each_other(&mut self) -> Result<bool, StoreError>;

    /// The earlier message of the sender with the same `client_id` (asked only when the new
    /// message has one).
    fn earlier_with_client_id(&mut self) -> Result<Option<Self::Earlier>, StoreError>;

    /// Whether the replied-to message is in the conversation (asked only for a reply).
    fn reply_in_conversation(&mut self) -> Result<bool, StoreError>;

    /// Whether the thread root is a message of the conversation, not deleted and not itself a
    /// thread reply (asked only for a thread reply).
    fn thread_root_in_conversation(&mut self) -> Result<bool, StoreError>;

    /// Whether the conversation is a group and the sender one of its owners or admins (asked
    /// only for `mentions_all`).
    fn sender_manages_group(&mut self) -> Result<bool, StoreError>;
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
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// The conversation does not exist.
    NoConversation,
    /// The sender is not a member.
    NotMember,
    /// The direct conversation's members block each other.
    Blocked,
    /// The replied-to message is not in the conversation.
    ReplyNotFound,
    /// The thread root is not a root message of the conversation.
    ThreadNotFound,
    /// `mentions_all` from someone who does not manage a group.
    MentionsAllRefused,
    /// The conversation is read-only.
    ReadOnly(ConversationStatus, Option<String>),
}

impl From<Refusal> for AppendOutcome {
    fn from(refusal: Refusal) -> AppendOutcome {
        match refusal {
            Refusal::NoConversation => AppendOutcome::NoConversation,
            Refusal::NotMember => AppendOutcome::NotMember,
            Refusal::Blocked => AppendOutcome::Blocked,
            Refusal::ReplyNotFound => AppendOutcome::ReplyNotFound,
            Refusal::ThreadNotFound => AppendOutcome::ThreadNotFound,
            Refusal::MentionsAllRefused => AppendOutcome::MentionsAllRefused,
            Refusal::ReadOnly(status, reason) => AppendOutcome::ReadOnly(status, reason),
        }
    }
}

/// The append rules, in order: the conversation must exist; unless the message is a
/// [`MessageType::System`] one (the operator's, which needs no membership, is never blocked
/// and may go into a read-only conversation) the sender must be a member, the conversation
/// active and the direct conversation not blocked; a
/// repeated `client_id` answers with the original; a reply must point into the conversation,
/// a thread reply at a root of it; only a group's owners and admins may mention everyone.
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
        let (status, reason) = facts.conversation_status()?;
        if status.is_read_only() {
            return Ok(Verdict::Refuse(Refusal::ReadOnly(status, reason)));
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
    if new.thread_id.is_some() && !facts.thread_root_in_conversation()? {
        return Ok(Verdict::Refuse(Refusal::ThreadNotFound));
    }
    if new.mentions_all && !facts.sender_manages_group()? {
        return Ok(Verdict::Refuse(Refusal::MentionsAllRefused));
    }
    Ok(Verdict::Accept)
}

/// Of an accepted message's `mentions`, the members other than the sender, each once, in
/// the order given (mentions of anyone else are dropped, not refused).
pub(crate) fn member_mentions(new: &NewMessage, is_member: impl Fn(&str) -> bool) -> Vec<String> {
    let mut kept: Vec<String> = Vec::with_capacity(new.mentions.len());
    for id in &new.mentions {
        if *id != new.sender_id && is_member(id) && !kept.contains(id) {
            kept.push(id.clone());
        }
    }
    kept
}

/// The members an accepted message mentions, for their unread mentions: every member but the
/// sender for `mentions_all`, else `kept` (its [`member_mentions`]).
pub(crate) fn mentioned_members<'a>(
    new: &NewMessage,
    kept: &'a [String],
    members: impl Iterator<Item = &'a str>,
) -> Vec<&'a str> {
    if new.mentions_all {
        members.filter(|id| *id != new.sender_id).collect()
    } else {
        kept.iter().map(String::as_str).collect()
    }
}

/// Whether an accepted message counts as unread for the other members: the timeline shows it.
pub(crate) fn shown_in_timeline(new: &NewMessage) -> bool {
    new.thread_id.is_none() || new.also_in_conversation
}

/// A thread summary's participants after `user_id` replied: added at the end if new and
/// there is room (the first [`THREAD_PARTICIPANTS_SHOWN`] are kept).
pub(crate) fn with_participant(mut participants: Vec<String>, user_id: &str) -> Vec<String> {
    if participants.len() < THREAD_PARTICIPANTS_SHOWN && !participants.iter().any(|p| p == user_id) {
        participants.push(user_id.to_owned());
    }
    participants
}
