//! Read markers and unread counts.

use super::*;

/// The caller's unread counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unread {
    /// Sum over all conversations.
    pub total: i64,
    /// Per conversation, only those with unread messages.
    pub conversations: BTreeMap<String, i64>,
    /// Unread mentions of the caller per conversation, only those with some.
    pub mentions: BTreeMap<String, i64>,
}

impl Chat {
    /// # Mark read up to a seq (members only; never moves backwards)
    pub async fn mark_read(&self, user: &User, req: MarkRead) -> Result<i64, ChatError> {
        let conversation_id =
            req.conversation_id.ok_or_else(|| ChatError::invalid("conversation_id is required"))?;
        let seq = validate::seq("seq", req.seq)?;
        self.require_member(&conversation_id, user).await?;
        let (before, last_read_seq) =
            self.store.mark_read(&conversation_id, &user.id, seq).await?.ok_or(ChatError::NotAMember)?;
        if last_read_seq > before {
            let receipt = ReadReceipt {
                conversation_id: conversation_id.clone(),
                user_id: user.id.clone(),
                seq: last_read_seq,
            };
            self.deliver_to_others(&conversation_id, &user.id, ServerEvent::MessageRead(receipt));
        }
        Ok(last_read_seq)
    }

    /// # The caller's unread counts
    pub async fn unread(&self, user: &User) -> Result<Unread, ChatError> {
        let conversations: BTreeMap<String, i64> =
            self.store.unread_counts(&user.id).await?.into_iter().collect();
        let mentions: BTreeMap<String, i64> =
            self.store.unread_mentions(&user.id).await?.into_iter().collect();
        Ok(Unread { total: conversations.values().sum(), conversations, mentions })
    }
}
