//! Operator actions behind the admin API: node stats, system messages, conversations created
//! on a user's behalf, listing and inspecting conversations, disconnecting and banning users.
//!
//! Bans: the store is the source of truth; every node keeps the banned set in memory
//! ([`Bans`]) so that checking a request costs a hash lookup, never a store round trip. A node
//! loads the set at start ([`Chat::start_bans`]) and then follows [`BusMessage::BanChanged`]
//! on the bus topic every node watches ([`Topic::Everyone`]); when its bus reports a gap
//! (lost messages), and every [`BANS_RECHECK`] whatever the bus says, it reloads the set from
//! the store, so a ban or unban whose bus message was lost silently still takes effect on
//! every node within that time. Banning also publishes [`BusMessage::Disconnect`], which every
//! transport on every node applies to that user's connections; should that be lost, the hub
//! closes a banned user's connections at its next one-second tick ([`Chat::is_banned`]).
//!
//! Operator disconnects converge the same way: the store keeps a mark per user ("close what
//! was opened before T"), the bus carries [`BusMessage::Disconnect`] at once, and every node
//! re-reads the recent marks with the bans ([`DisconnectMarks`]), so the hub's tick closes
//! a connection that a lost bus message left open.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use super::{Chat, ConversationPage, LIST_DEFAULT, LIST_MAX, decode_cursor, page_of};
use crate::core::error::ChatError;
use crate::core::model::new_id;
use crate::core::model::{
    Conversation, ConversationStatus, ConversationType, JsonObject, Message, MessageType, User,
};
use crate::core::moderation::{BANS_RECHECK, DISCONNECTS_FOLLOWED};
use crate::core::ports::{AppendOutcome, ConversationUpdate, NewMessage, Topic};
use crate::core::ports::{BusMessage, DisconnectReason};
use crate::core::presence::NodeConnections;
use crate::core::requests::CreateConversation;
use crate::core::time::Timestamp;
use crate::core::validate;

/// The `sender_id` of messages posted through the admin API (reserved: a message is a
/// system message by its `type`, which users cannot send).
pub const SYSTEM_SENDER: &str = "system";

/// A node's stats for the operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// This node's open connections by transport.
    pub connections: NodeConnections,
    /// Users with at least one connection on this node.
    pub users_online: usize,
    /// Messages committed through this node in the last 60 seconds.
    pub messages_per_minute: u64,
}

/// A user's standing for the operator.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserStatus {
    /// The user.
    pub user_id: String,
    /// Whether the user is banned.
    pub banned: bool,
    /// At least one connection open (on any node when presence is shared).
    pub online: bool,
    /// Connections open on this node.
    pub connections: usize,
}

/// A conversation created on behalf of `owner`, by the
/// same rules as one a user creates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationFor {
    /// The user who becomes the owner.
    pub owner: String,
    /// Direct (exactly one other member) or group.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// The other members; the owner may be listed too.
    pub members: Vec<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// What the conversation is about; a direct chat is unique per pair and context.
    #[serde(default)]
    pub context: Option<String>,
    /// Free-form data for the platform.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub metadata: Option<JsonObject>,
    /// Pushes for it never show message text (default false).
    #[serde(default)]
    pub private_preview: Option<bool>,
}

/// A system message from the operator.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemMessage {
    /// The text.
    pub content: String,
    /// Free-form data for the platform (absent or null: `{}`).
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub metadata: Option<JsonObject>,
}

/// A conversation's status, as the platform sets it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationStatusChange {
    /// `active`, `archived` or `blocked`.
    pub status: ConversationStatus,
    /// Why (shown to members); absent clears an earlier reason.
    #[serde(default)]
    pub status_reason: Option<String>,
}

/// Which conversations the operator lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConversationsFor {
    /// Only this user's conversations (with their unread counts); absent: every conversation.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Page size (default 20, at most 100).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Why a user is banned (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// Why, for the operators' records.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A user acting through the admin API: no connection of theirs is left out of echoes.
fn acting_as(user_id: String) -> User {
    User { id: user_id, name: None, connection: None, arrival: 0 }
}

impl Chat {
    /// Refuses a banned user (`forbidden`). Every transport calls it when it authenticates
    /// a request, a connection or an event: the one place the ban rule lives.
    pub fn refuse_banned(&self, user: &User) -> Result<(), ChatError> {
        if self.is_banned(&user.id) {
            return Err(ChatError::forbidden("this user is banned"));
        }
        Ok(())
    }

    /// Whether `user_id` is banned, as this node knows it (a hash lookup).
    pub fn is_banned(&self, user_id: &str) -> bool {
        self.bans.contains(user_id)
    }

    /// Loads the banned set and keeps it current from the bus (see the module docs). Called
    /// once at startup, inside a Tokio runtime.
    pub async fn start_bans(self: &Arc<Self>) -> Result<(), ChatError> {
        self.bus.watch(Topic::Everyone);
        let changes = self.bus.subscribe();
        self.bus.settled().await;
        self.bans.replace(self.store.banned_users().await?);
        self.tasks.spawn("follow bans", follow_bans(Arc::downgrade(self), changes));
        Ok(())
    }

    /// This node's connections, online users and message rate.
    pub fn stats(&self) -> Stats {
        let connections = self.presence.node_connections();
        Stats { users_online: connections.users, connections, messages_per_minute: self.rate.last_minute() }
    }

    /// Whether a user is banned and online, and their connections on this node.
    pub async fn user_status(&self, user_id: &str) -> Result<UserStatus, ChatError> {
        validate::identifier("user_id", user_id)?;
        let online = self.presence.info(&[user_id.to_owned()]).await.first().is_some_and(|info| info.online);
        Ok(UserStatus {
            user_id: user_id.to_owned(),
            banned: self.bans.contains(user_id),
            online,
            connections: self.presence.local_connections(user_id),
        })
    }

    /// Disconnects a user.
    ///
    /// Closes every connection of the user on every node; they may reconnect. Durable: a
    /// node that the bus message does not reach closes them within [`BANS_RECHECK`] and a
    /// second.
    pub async fn disconnect_user(&self, user_id: &str) -> Result<(), ChatError> {
        validate::identifier("user_id", user_id)?;
        let at = Timestamp::now();
        self.store.mark_disconnected(user_id, at).await?;
        self.disconnects.set(user_id, at);
        self.bus
            .publish(BusMessage::Disconnect { user_id: user_id.to_owned(), reason: DisconnectReason::Admin });
        Ok(())
    }

    /// Runs `read` over the recent operator disconnects this node knows (user → mark); the
    /// hub's tick closes connections opened before a mark. `read` must not block.
    pub fn with_disconnect_marks<R>(&self, read: impl FnOnce(&HashMap<String, Timestamp>) -> R) -> R {
        self.disconnects.read(read)
    }

    /// Bans a user.
    ///
    /// Durable; this node refuses the user at once, the others when the bus tells them; every
    /// connection of the user is closed.
    pub async fn ban(&self, user_id: &str, req: BanRequest) -> Result<(), ChatError> {
        validate::identifier("user_id", user_id)?;
        if let Some(reason) = &req.reason {
            validate::label("reason", reason, validate::MAX_LABEL_CHARS)?;
        }
        self.store.ban_user(user_id, req.reason, Timestamp::now()).await?;
        self.bans.set(user_id, true);
        self.bus.publish(BusMessage::BanChanged { user_id: user_id.to_owned(), banned: true });
        self.bus.publish(BusMessage::Disconnect {
            user_id: user_id.to_owned(),
            reason: DisconnectReason::Banned,
        });
        Ok(())
    }

    /// Lifts a user's ban.
    ///
    /// Idempotent: lifting a ban that does not exist succeeds.
    pub async fn unban(&self, user_id: &str) -> Result<(), ChatError> {
        validate::identifier("user_id", user_id)?;
        self.store.unban_user(user_id).await?;
        self.bans.set(user_id, false);
        self.bus.publish(BusMessage::BanChanged { user_id: user_id.to_owned(), banned: false });
        Ok(())
    }

    /// Opens a conversation for a user.
    ///
    /// Created on behalf of `owner`, exactly as if they had asked (members are told with
    /// `conversation:new`; a direct conversation is unique per pair and context).
    pub async fn create_conversation_for(
        &self,
        req: CreateConversationFor,
    ) -> Result<(Conversation, bool), ChatError> {
        validate::identifier("owner", &req.owner)?;
        let owner = acting_as(req.owner);
        let req = CreateConversation {
            kind: req.kind,
            members: req.members,
            name: req.name,
            context: req.context,
            metadata: req.metadata,
            private_preview: req.private_preview,
        };
        self.open_conversation(&owner, req).await
    }

    /// Lists conversations for the operator.
    ///
    /// One user's conversations (their unread counts), or every conversation (unread counts
    /// 0), newest activity first.
    pub async fn conversations_for(&self, req: ListConversationsFor) -> Result<ConversationPage, ChatError> {
        let limit = validate::page_limit(req.limit, LIST_DEFAULT, LIST_MAX)?;
        let after = req.cursor.as_deref().map(decode_cursor).transpose()?;
        let conversations = match &req.user_id {
            Some(user_id) => {
                validate::identifier("user_id", user_id)?;
                self.store.conversations_of(user_id, after, limit + 1, None).await?
            }
            None => self.store.all_conversations(after, limit + 1).await?,
        };
        Ok(page_of(conversations, limit))
    }

    /// Inspects a conversation.
    ///
    /// Any conversation with all its members; `unread_count` is 0 (it is nobody's view).
    pub async fn inspect_conversation(&self, id: &str) -> Result<Conversation, ChatError> {
        validate::identifier("id", id)?;
        self.store.conversation(id, "").await?.ok_or_else(|| ChatError::not_found("no such conversation"))
    }

    /// Sets a conversation's status as the platform: `blocked` (closed, e.g. a fraudulent
    /// listing), `archived` or `active` again, with an optional reason shown to members.
    /// Members are told with `conversation:updated`.
    pub async fn set_conversation_status(
        &self,
        id: &str,
        req: ConversationStatusChange,
    ) -> Result<Conversation, ChatError> {
        validate::identifier("id", id)?;
        if let Some(reason) = &req.status_reason {
            validate::text("status_reason", reason, validate::MAX_LABEL_CHARS)?;
        }
        let operator = User { id: SYSTEM_SENDER.to_owned(), name: None, connection: None, arrival: 0 };
        let update =
            ConversationUpdate { status: Some((req.status, req.status_reason)), ..Default::default() };
        self.apply_conversation_update(id, &operator, update).await.map(Conversation::shared)
    }

    /// Posts a system message.
    ///
    /// Appends a `system` message from [`SYSTEM_SENDER`]: committed, then fanned out and
    /// routed (notifications, pushes) to every member like any message.
    pub async fn post_system_message(
        &self,
        conversation_id: &str,
        req: SystemMessage,
    ) -> Result<Message, ChatError> {
        validate::identifier("conversation_id", conversation_id)?;
        validate::text("content", &req.content, self.limits.max_content_chars)?;
        if req.content.trim().is_empty() {
            return Err(ChatError::invalid("content must not be blank"));
        }
        let new = NewMessage {
            id: new_id(),
            conversation_id: conversation_id.to_owned(),
            sender_id: SYSTEM_SENDER.to_owned(),
            kind: MessageType::System,
            content: Some(req.content),
            client_id: None,
            reply_to_id: None,
            attachments: Vec::new(),
            metadata: req.metadata.unwrap_or_default(),
            thread_id: None,
            also_in_conversation: false,
            mentions: Vec::new(),
            mentions_all: false,
        };
        let on_commit = self.fan_out_on_commit(None, std::time::Instant::now());
        match self.store.append_message(new, on_commit).await? {
            AppendOutcome::Committed { message, .. } => Ok(message),
            AppendOutcome::NoConversation => Err(ChatError::not_found("no such conversation")),
            other => {
                Err(ChatError::Internal(format!("unexpected outcome of a system append: {other:?}").into()))
            }
        }
    }
}

/// Applies ban changes from the bus to a node's set while the core exists; reloads the set
/// from the store when the bus may have lost some, and every [`BANS_RECHECK`].
async fn follow_bans(chat: std::sync::Weak<Chat>, mut messages: broadcast::Receiver<Arc<BusMessage>>) {
    let mut recheck = tokio::time::interval(BANS_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    loop {
        let message = tokio::select! {
            message = messages.recv() => Some(message),
            _ = recheck.tick() => None,
        };
        let reload = match message {
            None => true,
            Some(Ok(message)) => match message.as_ref() {
                BusMessage::BanChanged { user_id, banned } => {
                    let Some(chat) = chat.upgrade() else { return };
                    chat.bans.set(user_id, *banned);
                    false
                }
                BusMessage::Gap => true,
                _ => false,
            },
            Some(Err(broadcast::error::RecvError::Lagged(_))) => true,
            Some(Err(broadcast::error::RecvError::Closed)) => return,
        };
        if reload {
            let Some(chat) = chat.upgrade() else { return };
            match chat.store.banned_users().await {
                Ok(banned) => chat.bans.replace(banned),
                Err(err) => tracing::warn!(error = %err, "reloading bans failed; keeping the known set"),
            }
            match chat.store.disconnected_since(Timestamp::now().minus(DISCONNECTS_FOLLOWED)).await {
                Ok(marks) => chat.disconnects.replace(marks),
                Err(err) => {
                    tracing::warn!(error = %err, "reloading disconnects failed; keeping the known marks")
                }
            }
        }
    }
}
