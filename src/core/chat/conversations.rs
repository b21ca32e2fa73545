//! Conversations: opening (direct ones are unique per pair and context), listing by activity, reading and updating one.

use super::*;

/// Default page size of conversation lists.
pub(crate) const LIST_DEFAULT: usize = 20;

/// Largest page size of conversation lists.
pub(crate) const LIST_MAX: usize = 100;

/// A page of the caller's conversations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The activity time a conversation sorts by.
fn activity_at(conversation: &Conversation) -> Timestamp {
    conversation.last_message_at.unwrap_or(conversation.created_at)
}

/// Opaque list cursor: `<activity millis>.<id>` of the last conversation of a page.
fn encode_cursor(conversation: &Conversation) -> String {
    format!("{}.{}", activity_at(conversation).millis(), conversation.id)
}

/// A page of at most `limit` from `conversations` (fetched with one more, which tells
/// whether another page follows).
pub(crate) fn page_of(mut conversations: Vec<Conversation>, limit: usize) -> ConversationPage {
    let next_cursor = if conversations.len() > limit {
        conversations.truncate(limit);
        conversations.last().map(encode_cursor)
    } else {
        None
    };
    ConversationPage { conversations, next_cursor }
}

/// Reads a cursor made by [`encode_cursor`]; anything else is `invalid`.
pub(crate) fn decode_cursor(cursor: &str) -> Result<ActivityCursor, ChatError> {
    let bad = || ChatError::invalid("cursor is not one this server issued");
    let (millis, id) = cursor.split_once('.').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok(ActivityCursor { activity_at: Timestamp(millis), id: id.to_owned() })
}

impl Chat {
    /// # Create a conversation
    /// The caller becomes the owner. A direct conversation is unique per pair of users and
    /// context: creating it again returns the existing one with `created == false`. Counts
    /// in the caller's creation budget.
    pub async fn create_conversation(
        &self,
        user: &User,
        req: CreateConversation,
    ) -> Result<(Conversation, bool), ChatError> {
        self.spend(BudgetKind::CreateConversation, user).await?;
        self.open_conversation(user, req).await
    }

    /// # List the caller's conversations
    /// Newest activity (last message, else creation) first, in cursor pages.
    pub async fn list_conversations(
        &self,
        user: &User,
        req: ListConversations,
    ) -> Result<ConversationPage, ChatError> {
        let limit = validate::page_limit(req.limit, LIST_DEFAULT, LIST_MAX)?;
        let after = req.cursor.as_deref().map(decode_cursor).transpose()?;
        let archived = Some(req.archived.unwrap_or(false));
        let conversations = self.store.conversations_of(&user.id, after, limit + 1, archived).await?;
        let conversations = conversations.into_iter().map(|c| c.viewed_by(&user.id)).collect();
        Ok(page_of(conversations, limit))
    }

    /// # Get one conversation (members only)
    pub async fn conversation(&self, user: &User, id: &str) -> Result<Conversation, ChatError> {
        let conversation = self.load_conversation(id, user).await?;
        if conversation.member(&user.id).is_none() {
            return Err(ChatError::NotAMember);
        }
        Ok(conversation.viewed_by(&user.id))
    }

    /// # Rename, re-describe, archive or reopen a conversation (owner/admin)
    /// `status`: `active` or `archived`; a `blocked` conversation is the platform's to change.
    pub async fn update_conversation(
        &self,
        user: &User,
        id: &str,
        req: UpdateConversation,
    ) -> Result<Conversation, ChatError> {
        let (member, _, status) = self.membership_with_status(id, user).await?;
        if !member.role.is_manager() {
            return Err(ChatError::forbidden("only the owner or an admin may change the conversation"));
        }
        if let Some(name) = &req.name {
            validate::label("name", name, validate::MAX_LABEL_CHARS)?;
        }
        if req.status == Some(ConversationStatus::Blocked) {
            return Err(ChatError::forbidden("only the platform (admin API) blocks a conversation"));
        }
        if status == ConversationStatus::Blocked {
            return Err(read_only(status, None));
        }
        let update = ConversationUpdate {
            name: req.name,
            metadata: req.metadata,
            private_preview: req.private_preview,
            status: req.status.map(|status| (status, None)),
        };
        self.apply_conversation_update(id, user, update).await.map(|c| c.viewed_by(&user.id))
    }

    /// Writes `update` if it changes anything and tells the members (`conversation:updated`);
    /// returns the conversation as `user` sees it.
    pub(super) async fn apply_conversation_update(
        &self,
        id: &str,
        user: &User,
        update: ConversationUpdate,
    ) -> Result<Conversation, ChatError> {
        let changed = update.name.is_some()
            || update.metadata.is_some()
            || update.private_preview.is_some()
            || update.status.is_some();
        if changed && !self.store.update_conversation(id, update).await? {
            return Err(ChatError::not_found("no such conversation"));
        }
        let conversation = self.load_conversation(id, user).await?;
        if changed {
            let event = ServerEvent::ConversationUpdated(conversation.clone().shared());
            self.deliver(Audience::Conversation(id.to_owned()), user, event);
        }
        Ok(conversation)
    }
}
