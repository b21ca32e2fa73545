//! Blocking between users. While either of two users blocks the other:
//! - messages into their direct conversation are refused with `forbidden`, both ways and on
//!   every transport (the store checks it inside the appending transaction, see
//!   [`Store::append_message`](super::ports::Store::append_message): no extra round trip on
//!   the send path, and no race with a block made meanwhile);
//! - a new direct conversation between them cannot be created (`forbidden`);
//! - neither edits a message of their direct conversation (`forbidden`);
//! - neither sees the other's presence: no `user:online` / `user:offline` between them (the
//!   store leaves them out of each other's contacts), and `presence:query` answers
//!   `online: false, last_seen_at: null`.
//!
//! In groups, a block works one way: the blocked user cannot create a group with the user
//! who blocks them, nor add them to one (`forbidden`); in a group both already belong to,
//! the blocked user's messages still reach the blocker (history, `message:new`) but send
//! them no `notification` and no push ([`silences`], fed by what the store loads with the
//! recipients: no query per message).

use serde::Deserialize;

use super::{Chat, DIRECT_WITH_BLOCKER};
use crate::core::error::ChatError;
use crate::core::model::{Block, ConversationType, User};
use crate::core::time::Timestamp;
use crate::core::validate;

/// Block a user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// The user to block.
    pub user_id: String,
}

impl Chat {
    /// Blocks `user_id`; returns the block and whether it is new (blocking again is harmless).
    pub async fn block(&self, user: &User, req: BlockRequest) -> Result<(Block, bool), ChatError> {
        validate::identifier("user_id", &req.user_id)?;
        if req.user_id == user.id {
            return Err(ChatError::invalid("you cannot block yourself"));
        }
        let created = self.store.block_user(&user.id, &req.user_id, Timestamp::now()).await?;
        let block = self
            .store
            .blocks_of(&user.id)
            .await?
            .into_iter()
            .find(|block| block.user_id == req.user_id)
            // Unblocked again by a concurrent request: answer with what was asked.
            .unwrap_or(Block { user_id: req.user_id, created_at: Timestamp::now() });
        Ok((block, created))
    }

    /// Lifts the caller's block of `user_id`; `not_found` unless the caller blocks that user.
    pub async fn unblock(&self, user: &User, user_id: &str) -> Result<(), ChatError> {
        validate::identifier("user_id", user_id)?;
        if !self.store.unblock_user(&user.id, user_id).await? {
            return Err(ChatError::not_found("you do not block this user"));
        }
        Ok(())
    }

    /// The users the caller blocks, oldest block first.
    pub async fn blocks(&self, user: &User) -> Result<Vec<Block>, ChatError> {
        Ok(self.store.blocks_of(&user.id).await?)
    }

    /// Refuses a direct conversation between users of whom one blocks the other.
    pub(super) async fn refuse_blocked_pair(&self, user_id: &str, other: &str) -> Result<(), ChatError> {
        if !self.store.blocked_among(user_id, &[other.to_owned()]).await?.is_empty() {
            return Err(ChatError::forbidden(DIRECT_WITH_BLOCKER));
        }
        Ok(())
    }
}

impl Chat {
    /// Refuses a write by `user` into conversation `conversation_id` of type `kind` when it
    /// is direct and one of its two members blocks the other.
    pub(super) async fn refuse_blocked_direct(
        &self,
        user: &User,
        conversation_id: &str,
        kind: ConversationType,
    ) -> Result<(), ChatError> {
        if kind != ConversationType::Direct {
            return Ok(());
        }
        let Some(conversation) = self.store.conversation(conversation_id, &user.id).await? else {
            return Ok(());
        };
        match conversation.members.iter().find(|member| member.user_id != user.id) {
            Some(other) => self.refuse_blocked_pair(&user.id, &other.user_id).await,
            None => Ok(()),
        }
    }
}
