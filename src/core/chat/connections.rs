//! Realtime sessions: connecting, presence, focus, typing, subscriptions and `sync`. Shared
//! by the Socket.IO and plain WebSocket transports.

use std::collections::{BTreeMap, HashSet};

use crate::core::Chat;
use crate::core::budget::BudgetKind;
use crate::core::error::ChatError;
use crate::core::lease::Lease;
use crate::core::model::ConnectionId;
use crate::core::model::User;
use crate::core::ports::{HistoryRange, Reach};
use crate::core::presence::announce_presence;
use crate::core::requests::{PresenceQuery, SyncRequest};
use crate::core::server_events::{
    ConversationPresence, PresenceChange, PresenceInfo, Ready, ServerEvent, SyncPage,
};
use crate::core::validate;

const SYNC_DEFAULT: usize = 500;
const SYNC_MAX: usize = 1000;
/// Most user ids one `presence:query` may name.
pub const PRESENCE_QUERY_MAX: usize = 100;

impl Chat {
    fn connection_of(user: &User) -> Result<&ConnectionId, ChatError> {
        user.connection.as_ref().ok_or_else(|| ChatError::invalid("this request needs a realtime connection"))
    }

    /// # A connection opened
    /// Registers it, announces `user:online` if it is the user's first, and returns `ready`
    /// (the transport subscribes the connection to every listed conversation).
    pub async fn connect(&self, user: &User) -> Result<Ready, ChatError> {
        let connection = Self::connection_of(user)?;
        // Checked again here, after the transport registered the connection: a ban made
        // since the handshake was admitted either reaches the registered connection or is
        // seen now.
        self.refuse_banned(user)?;
        // Read first, then change and announce in one step (see Presence::connect).
        let contacts = self.store.contacts(&user.id).await?;
        let conversations = self.store.conversation_heads(&user.id).await?;
        let (bus, user_id) = (self.bus.clone(), user.id.clone());
        self.presence.connect(&user.id, connection, move || {
            let change = PresenceChange { user_id, last_seen_at: None };
            announce_presence(bus.as_ref(), &contacts, ServerEvent::UserOnline(change));
        });
        Ok(Ready { user_id: user.id.clone(), conversations })
    }

    /// # A connection closed
    /// Stops its typing indicators; announces `user:offline` if it was the user's last.
    /// Safe to call more than once for a connection.
    pub async fn disconnect(&self, user: &User) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.typing.stop_connection(connection);
        // The connection is gone whatever the store says: clean up even without contacts.
        let contacts = self.store.contacts(&user.id).await.unwrap_or_else(|err| {
            crate::core::telemetry::store_error();
            tracing::warn!(error = %err, user = %user.id, "contacts unavailable; user:offline not announced");
            Vec::new()
        });
        let (bus, user_id) = (self.bus.clone(), user.id.clone());
        self.presence.disconnect(&user.id, connection, move |last_seen_at| {
            let change = PresenceChange { user_id, last_seen_at: Some(last_seen_at) };
            announce_presence(bus.as_ref(), &contacts, ServerEvent::UserOffline(change));
        });
        Ok(())
    }

    /// # `conversation:focus`: this connection is looking at the conversation (members only)
    pub async fn focus(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.require_member(conversation_id, user).await?;
        self.presence.focus(&user.id, connection, Some(conversation_id.to_owned()), user.arrival);
        Ok(())
    }

    /// # `conversation:unfocus`: this connection is looking at no conversation
    pub fn unfocus(&self, user: &User) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.presence.focus(&user.id, connection, None, user.arrival);
        Ok(())
    }

    /// # `conversation:join`: may this connection subscribe? (members only)
    pub async fn join(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.require_member(conversation_id, user).await.map(|_| ())
    }

    /// # `conversation:leave`: this connection stops listening to the conversation
    /// (membership unchanged); a focus on it ends too, so its messages notify again.
    pub fn leave(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        let connection = Self::connection_of(user)?;
        self.presence.unfocus_conversation(&user.id, connection, conversation_id, user.arrival);
        Ok(())
    }

    /// # `typing:start` (members only)
    pub async fn typing_start(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.spend(BudgetKind::Typing, user).await?;
        self.require_member(conversation_id, user).await?;
        self.typing.start(conversation_id, user);
        Ok(())
    }

    /// # `typing:stop` (members only)
    pub async fn typing_stop(&self, user: &User, conversation_id: &str) -> Result<(), ChatError> {
        self.spend(BudgetKind::Typing, user).await?;
        self.require_member(conversation_id, user).await?;
        self.typing.stop(conversation_id, &user.id);
        Ok(())
    }

    /// # `sync`: every message the user missed
    /// After the given seq per conversation (from 0 for conversations not listed), ascending
    /// per conversation, at most `limit`; `has_more` says to call again with the new seqs.
    pub async fn sync(&self, user: &User, req: SyncRequest) -> Result<SyncPage, ChatError> {
        self.spend(BudgetKind::Sync, user).await?;
        let limit = validate::page_limit(req.limit, SYNC_DEFAULT, SYNC_MAX)?;
        for (id, seq) in &req.conversations {
            validate::identifier("conversations key", id)?;
            validate::seq("conversations value", *seq)?;
        }
        for (id, revision) in &req.revisions {
            validate::identifier("revisions key", id)?;
            validate::seq("revisions value", *revision)?;
        }
        let conversations = self.store.conversation_heads(&user.id).await?;
        let mut messages = Vec::new();
        let mut changed = Vec::new();
        let mut has_more = false;
        // Changes first: to messages the client holds (seq ≤ what it sent), after the
        // revision it sent.
        for head in &conversations {
            let Some(&known_revision) = req.revisions.get(&head.id) else { continue };
            let held = req.conversations.get(&head.id).copied().unwrap_or(0);
            if head.last_revision <= known_revision || held == 0 {
                continue;
            }
            let remaining = limit - changed.len();
            if remaining == 0 {
                has_more = true;
                break;
            }
            let (page, more) = self.store.changed_messages(&head.id, known_revision, held, remaining).await?;
            changed.extend(page);
            if more {
                has_more = true;
                break;
            }
        }
        for head in &conversations {
            if has_more {
                break;
            }
            let known = req.conversations.get(&head.id).copied().unwrap_or(0);
            if head.last_seq <= known {
                continue;
            }
            let remaining = limit.saturating_sub(messages.len() + changed.len());
            if remaining == 0 {
                has_more = true;
                break;
            }
            let range = HistoryRange { after_seq: Some(known), before_seq: None, limit: remaining };
            let (page, more) = self.store.messages(&head.id, range).await?;
            messages.extend(page);
            if more {
                has_more = true;
                break;
            }
        }
        Ok(SyncPage { messages, changed, has_more, conversations })
    }

    /// # `auth:refresh`: a fresh token for a live connection
    /// `verified` is the new token as the verifier read it (user and `exp`). It must be valid
    /// and name the connection's user (else `forbidden`); the lease then runs to its `exp`,
    /// which is returned. On any failure the lease keeps its expiry.
    pub fn refresh_session(
        &self,
        user: &User,
        lease: &Lease,
        verified: Result<(User, u64), ChatError>,
    ) -> Result<u64, ChatError> {
        let (token_user, expires_at) = verified?;
        if token_user.id != user.id {
            return Err(ChatError::forbidden("the token is for another user"));
        }
        lease.extend_to(expires_at);
        Ok(expires_at)
    }

    /// # `presence:query`
    /// Need-to-know: only the caller and their contacts (users sharing a conversation with
    /// them, no block either way) are answered as they are; anyone else reads as offline and
    /// never seen. At most [`PRESENCE_QUERY_MAX`] ids (`too_large`).
    pub async fn presence(
        &self,
        user: &User,
        req: PresenceQuery,
    ) -> Result<BTreeMap<String, PresenceInfo>, ChatError> {
        self.spend(BudgetKind::Presence, user).await?;
        if req.user_ids.len() > PRESENCE_QUERY_MAX {
            return Err(ChatError::TooLarge(format!("at most {PRESENCE_QUERY_MAX} user_ids per query")));
        }
        for user_id in &req.user_ids {
            validate::identifier("user_ids[]", user_id)?;
        }
        let contacts: HashSet<String> = self.store.contacts(&user.id).await?.into_iter().collect();
        let visible: Vec<String> =
            req.user_ids.iter().filter(|id| **id == user.id || contacts.contains(*id)).cloned().collect();
        let found = if visible.is_empty() { Vec::new() } else { self.presence.info(&visible).await };
        let mut infos: BTreeMap<String, PresenceInfo> = visible.into_iter().zip(found).collect();
        let unknown = PresenceInfo { online: false, last_seen_at: None };
        Ok(req
            .user_ids
            .into_iter()
            .map(|id| {
                let info = infos.remove(&id).unwrap_or_else(|| unknown.clone());
                (id, info)
            })
            .collect())
    }
}

impl Chat {
    /// # Who is in a conversation now (members only)
    /// The members with a connection open (on any node) and those looking at it, leaving out
    /// members who block the caller or whom the caller blocks (as `presence:query` does).
    pub async fn conversation_presence(
        &self,
        user: &User,
        conversation_id: &str,
    ) -> Result<ConversationPresence, ChatError> {
        validate::identifier("conversation_id", conversation_id)?;
        self.spend(BudgetKind::Presence, user).await?;
        self.require_member(conversation_id, user).await?;
        let conversation = self.load_conversation(conversation_id, user).await?;
        let others: Vec<String> =
            conversation.members.iter().filter(|m| m.user_id != user.id).map(|m| m.user_id.clone()).collect();
        let hidden: HashSet<String> =
            self.store.blocked_among(&user.id, &others).await?.into_iter().collect();
        let members: Vec<String> =
            conversation.members.into_iter().map(|m| m.user_id).filter(|id| !hidden.contains(id)).collect();
        let local = self.presence.local_reach(&members, conversation_id);
        let reaches = match self.presence.directory() {
            None => local,
            Some(directory) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                directory.reach(
                    members.clone(),
                    conversation_id,
                    local,
                    Box::new(move |reaches| {
                        let _ = answer.send(reaches);
                    }),
                );
                answered
                    .await
                    .map_err(|_| ChatError::Unavailable("the presence directory did not answer".into()))?
            }
        };
        let mut presence = ConversationPresence::default();
        for (id, reach) in members.into_iter().zip(reaches) {
            if reach == Reach::Focused {
                presence.focused.push(id.clone());
            }
            if reach != Reach::Offline {
                presence.online.push(id);
            }
        }
        Ok(presence)
    }
}
