//! Reactions, pins, threads and changes since a revision: what members add to messages after
//! they are sent, and how clients page through it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::core::model::Reaction;
use crate::core::ports::{Annotated, ReactionCursor};
use crate::core::server_events::{Notification, NotificationKind, ReactionChange};

/// Most distinct reactions one user puts on one message.
pub const MAX_REACTIONS_PER_USER: usize = 20;
/// Most pinned messages in one conversation.
pub const MAX_PINS: usize = 50;

const REACTIONS_DEFAULT: usize = 50;
const REACTIONS_MAX: usize = 200;
const THREAD_DEFAULT: usize = 50;
const THREAD_MAX: usize = 100;
const CHANGES_DEFAULT: usize = 100;
const CHANGES_MAX: usize = 500;

/// A page of a message's reactions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReactionPage {
    /// Oldest first.
    pub reactions: Vec<Reaction>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of a thread.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThreadPage {
    /// The thread's root, with its summary.
    pub root: Message,
    /// Replies, ascending by seq.
    pub messages: Vec<Message>,
    /// Whether more replies follow (page on with `after_seq` = the last one's seq).
    pub has_more: bool,
}

/// A conversation's pinned messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PinnedMessages {
    /// Most recently pinned first.
    pub messages: Vec<Message>,
}

/// Messages changed after a revision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangedMessages {
    /// Ascending by `revision`: each as it stands now.
    pub messages: Vec<Message>,
    /// Whether more follow (page on with `after_revision` = the last one's revision).
    pub has_more: bool,
}

fn encode_reaction_cursor(reaction: &Reaction) -> String {
    let key = (reaction.created_at.millis(), &reaction.user_id, &reaction.emoji);
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&key).unwrap_or_default())
}

fn decode_reaction_cursor(cursor: &str) -> Result<ReactionCursor, ChatError> {
    let bad = || ChatError::invalid("cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let (millis, user_id, emoji): (i64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(ReactionCursor { created_at: Timestamp(millis), user_id, emoji })
}

impl Chat {
    /// A reaction or pin change's outcome as the caller's answer: the message, or why not.
    fn annotated(outcome: Annotated, limit: &str) -> Result<(Message, bool), ChatError> {
        match outcome {
            Annotated::Changed(message) => Ok((message, true)),
            Annotated::Unchanged(message) => Ok((message, false)),
            Annotated::LimitReached => Err(ChatError::TooLarge(limit.to_owned())),
            Annotated::Deleted => Err(ChatError::conflict("the message was deleted")),
            Annotated::NoMessage => Err(ChatError::not_found("no such message")),
        }
    }

    /// # React to a message (members; idempotent)
    /// One reaction per (user, message, emoji); at most 20 distinct per user and message.
    /// Does not change unread counts; the message's author is notified in-app.
    pub async fn react(&self, user: &User, message_id: &str, emoji: &str) -> Result<Message, ChatError> {
        validate::identifier("message_id", message_id)?;
        validate::emoji(emoji)?;
        self.message_limiter.check(&user.id).await?;
        let (message, _, kind) = self.message_to_change(user, message_id).await?;
        self.refuse_blocked_direct(user, &message.conversation_id, kind).await?;
        let outcome = self
            .store
            .add_reaction(message_id, &user.id, emoji, Timestamp::now(), MAX_REACTIONS_PER_USER)
            .await?;
        let limit = format!("at most {MAX_REACTIONS_PER_USER} different reactions per user on one message");
        let (reacted, changed) = Self::annotated(outcome, &limit)?;
        if changed {
            let change = reaction_change(&reacted, user, emoji);
            let to = Audience::Conversation(reacted.conversation_id.clone());
            self.deliver(to, user, ServerEvent::ReactionAdded(change));
            self.notify_author_of_reaction(user, &reacted, emoji).await;
        }
        Ok(reacted)
    }

    /// # Take a reaction back (idempotent)
    pub async fn unreact(&self, user: &User, message_id: &str, emoji: &str) -> Result<Message, ChatError> {
        validate::identifier("message_id", message_id)?;
        validate::emoji(emoji)?;
        self.message_limiter.check(&user.id).await?;
        let (message, _, kind) = self.message_to_change(user, message_id).await?;
        self.refuse_blocked_direct(user, &message.conversation_id, kind).await?;
        let outcome = self.store.remove_reaction(message_id, &user.id, emoji).await?;
        let (message, changed) = Self::annotated(outcome, "")?;
        if changed {
            let change = reaction_change(&message, user, emoji);
            let to = Audience::Conversation(message.conversation_id.clone());
            self.deliver(to, user, ServerEvent::ReactionRemoved(change));
        }
        Ok(message)
    }

    /// Tells a message's author, in-app, that `user` reacted (not for their own reactions,
    /// nor when the author blocks the reactor). Best effort: the reaction is already made.
    async fn notify_author_of_reaction(&self, user: &User, message: &Message, emoji: &str) {
        let author = &message.sender_id;
        if *author == user.id {
            return;
        }
        match self.store.blocked_among(author, std::slice::from_ref(&user.id)).await {
            Ok(blocked) if blocked.is_empty() => {}
            Ok(_) => return,
            Err(err) => {
                telemetry::store_error();
                tracing::warn!(error = %err, "a reaction notification was not sent");
                return;
            }
        }
        let notification = Notification {
            id: None,
            kind: NotificationKind::Reaction,
            conversation_id: message.conversation_id.clone(),
            message_id: message.id.clone(),
            seq: message.seq,
            sender_id: user.id.clone(),
            preview: notification_routing::preview(message, self.limits.preview_chars),
            unread_count: 0,
            emoji: Some(emoji.to_owned()),
        };
        let unread = self.store.unread_counts(author).await.ok().and_then(|counts| {
            counts.into_iter().find(|(id, _)| *id == message.conversation_id).map(|(_, n)| n)
        });
        let notification = Notification { unread_count: unread.unwrap_or(0), ..notification };
        let new = NewNotification { user_id: author.clone(), notification, created_at: Timestamp::now() };
        notification_routing::record_and_publish(
            self.store.as_ref(),
            self.bus.as_ref(),
            vec![new],
            self.limits.notification_log_keep,
        )
        .await;
    }

    /// # List a message's reactions (members only)
    pub async fn reactions(
        &self,
        user: &User,
        message_id: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<ReactionPage, ChatError> {
        let limit = validate::page_limit(limit, REACTIONS_DEFAULT, REACTIONS_MAX)?;
        let after = cursor.map(decode_reaction_cursor).transpose()?;
        self.message_as_member(user, message_id).await?;
        let mut reactions = self.store.reactions(message_id, after, limit + 1).await?;
        let next_cursor = if reactions.len() > limit {
            reactions.truncate(limit);
            reactions.last().map(encode_reaction_cursor)
        } else {
            None
        };
        Ok(ReactionPage { reactions, next_cursor })
    }

    /// # Pin a message (a group's owner or admins; either member of a direct chat)
    /// At most 50 per conversation. Pinning a pinned message changes nothing. As for edits
    /// and reactions, nothing is pinned in a direct chat whose members block each other.
    pub async fn pin(&self, user: &User, message_id: &str) -> Result<Message, ChatError> {
        self.message_limiter.check(&user.id).await?;
        let (message, member, kind) = self.message_to_change(user, message_id).await?;
        if kind == ConversationType::Group && !member.role.is_manager() {
            return Err(ChatError::forbidden("only a group's owner or admins may pin messages"));
        }
        self.refuse_blocked_direct(user, &message.conversation_id, kind).await?;
        let outcome = self.store.pin_message(message_id, &user.id, Timestamp::now(), MAX_PINS).await?;
        let (pinned, changed) =
            Self::annotated(outcome, &format!("at most {MAX_PINS} pinned messages per conversation"))?;
        if changed {
            let to = Audience::Conversation(pinned.conversation_id.clone());
            self.deliver(to, user, ServerEvent::MessagePinned(pinned.clone()));
        }
        Ok(pinned)
    }

    /// # Unpin a message (who may pin it)
    pub async fn unpin(&self, user: &User, message_id: &str) -> Result<Message, ChatError> {
        self.message_limiter.check(&user.id).await?;
        let (message, member, kind) = self.message_to_change(user, message_id).await?;
        if kind == ConversationType::Group && !member.role.is_manager() {
            return Err(ChatError::forbidden("only a group's owner or admins may unpin messages"));
        }
        self.refuse_blocked_direct(user, &message.conversation_id, kind).await?;
        let (unpinned, changed) = Self::annotated(self.store.unpin_message(message_id).await?, "")?;
        if changed {
            let to = Audience::Conversation(unpinned.conversation_id.clone());
            self.deliver(to, user, ServerEvent::MessageUnpinned(unpinned.clone()));
        }
        Ok(unpinned)
    }

    /// # A conversation's pinned messages (members only)
    pub async fn pins(&self, user: &User, conversation_id: &str) -> Result<PinnedMessages, ChatError> {
        self.require_member(conversation_id, user).await?;
        Ok(PinnedMessages { messages: self.store.pinned_messages(conversation_id).await? })
    }

    /// # A page of a thread (members only)
    /// The root and its replies after `after_seq`, ascending.
    pub async fn thread(
        &self,
        user: &User,
        root_id: &str,
        after_seq: Option<i64>,
        limit: Option<i64>,
    ) -> Result<ThreadPage, ChatError> {
        let limit = validate::page_limit(limit, THREAD_DEFAULT, THREAD_MAX)?;
        let after_seq = after_seq.map(|s| validate::seq("after_seq", s)).transpose()?.unwrap_or(0);
        let (root, _, _) = self.message_as_member(user, root_id).await?;
        if root.thread_id.is_some() {
            return Err(ChatError::invalid("this message is a thread reply, not a thread's root"));
        }
        let (messages, has_more) = self.store.thread_replies(root_id, after_seq, limit).await?;
        Ok(ThreadPage { root, messages, has_more })
    }

    /// # Messages changed after a revision (members only)
    /// Those with seq ≤ `up_to_seq` (default: all) whose state changed (edit, delete,
    /// reaction, pin, thread reply) after `after_revision`, ascending by revision.
    pub async fn changed_messages(
        &self,
        user: &User,
        conversation_id: &str,
        after_revision: i64,
        up_to_seq: Option<i64>,
        limit: Option<i64>,
    ) -> Result<ChangedMessages, ChatError> {
        let limit = validate::page_limit(limit, CHANGES_DEFAULT, CHANGES_MAX)?;
        let after_revision = validate::seq("after_revision", after_revision)?;
        let up_to_seq = up_to_seq.map(|s| validate::seq("up_to_seq", s)).transpose()?.unwrap_or(i64::MAX);
        self.require_member(conversation_id, user).await?;
        let (messages, has_more) =
            self.store.changed_messages(conversation_id, after_revision, up_to_seq, limit).await?;
        Ok(ChangedMessages { messages, has_more })
    }
}

/// The `reaction:added` / `reaction:removed` payload for `user`'s `emoji` on `message`.
fn reaction_change(message: &Message, user: &User, emoji: &str) -> ReactionChange {
    ReactionChange {
        conversation_id: message.conversation_id.clone(),
        message_id: message.id.clone(),
        user_id: user.id.clone(),
        emoji: emoji.to_owned(),
        reaction_counts: message.reaction_counts.clone(),
        latest_reactions: message.latest_reactions.clone(),
        version: message.version,
        revision: message.revision,
        message: message.clone(),
    }
}
