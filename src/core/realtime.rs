//! Realtime vocabulary shared by every transport: server→client events, who receives them,
//! and the messages the core publishes on the [`Bus`](super::ports::Bus).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Conversation, Message};
use super::time::Timestamp;

pub use super::model::ConnectionId;

/// Why the server closes every connection of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// An operator disconnected the user (they may reconnect).
    Admin,
    /// The user was banned (reconnecting is refused with `forbidden`).
    Banned,
}

impl DisconnectReason {
    /// The close reason transports send (WebSocket close frame text).
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::Admin => "disconnected by an operator",
            DisconnectReason::Banned => "forbidden: banned",
        }
    }
}

/// `message:read` payload: `user_id` has read `conversation_id` up to `seq`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadReceipt {
    /// The conversation.
    pub conversation_id: String,
    /// Who read.
    pub user_id: String,
    /// Their new read marker.
    pub seq: i64,
}

/// `typing:start` / `typing:stop` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Typing {
    /// The conversation.
    pub conversation_id: String,
    /// Who is (or stopped) typing.
    pub user_id: String,
}

/// `user:online` / `user:offline` payload; `last_seen_at` only when going offline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceChange {
    /// Whose presence changed.
    pub user_id: String,
    /// When their last connection closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
}

/// `notification` payload: a new message for a member online but not looking at it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Its place in the recipient's notification log (per user, from 1, gap-free; the SSE
    /// `id:`). Absent only when the log could not record it (the store failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The conversation.
    pub conversation_id: String,
    /// The new message.
    pub message_id: String,
    /// Its seq.
    pub seq: i64,
    /// Its sender.
    pub sender_id: String,
    /// The start of its content (null for media without text).
    pub preview: Option<String>,
    /// The recipient's unread messages in this conversation.
    pub unread_count: i64,
}

/// An event pushed to clients. Serializes as its payload; [`ServerEvent::name`] is the event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerEvent {
    /// `message:new`
    MessageNew(Message),
    /// `message:updated`
    MessageUpdated(Message),
    /// `message:deleted`
    MessageDeleted(Message),
    /// `message:read`
    MessageRead(ReadReceipt),
    /// `typing:start`
    TypingStart(Typing),
    /// `typing:stop`
    TypingStop(Typing),
    /// `user:online`
    UserOnline(PresenceChange),
    /// `user:offline`
    UserOffline(PresenceChange),
    /// `notification`
    Notification(Notification),
    /// `conversation:new`
    ConversationNew(Conversation),
    /// `conversation:updated`
    ConversationUpdated(Conversation),
    /// `sync:required`: this node may have missed bus messages for the connection; its
    /// subscriptions were repaired, and the client should `sync` from the seqs it holds.
    SyncRequired(SyncRequired),
    /// An event received from another node, already encoded there.
    Relayed(RelayedEvent),
}

/// An event as it crossed a shared bus: its name and its payload's JSON, passed on as is.
#[derive(Debug, Clone)]
pub struct RelayedEvent {
    /// The wire name of the event.
    pub name: String,
    /// The payload, encoded once by the publishing node.
    pub data: Box<serde_json::value::RawValue>,
    /// For `message:new`, the message's commit time (its `created_at`), so that receiving
    /// nodes measure commit-to-delivery latency without decoding the payload.
    pub committed_at: Option<Timestamp>,
}

impl PartialEq for RelayedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.data.get() == other.data.get()
    }
}

impl Serialize for RelayedEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(serializer)
    }
}

/// Every event name the server sends.
const SERVER_EVENTS: [&str; 12] = [
    "message:new",
    "message:updated",
    "message:deleted",
    "message:read",
    "typing:start",
    "typing:stop",
    "user:online",
    "user:offline",
    "notification",
    "conversation:new",
    "conversation:updated",
    "sync:required",
];

impl ServerEvent {
    /// The wire name of the event.
    pub fn name(&self) -> &str {
        match self {
            ServerEvent::Relayed(event) => &event.name,
            other => other.label(),
        }
    }

    /// The wire name as a static string, for metric labels: a relayed event's name is looked
    /// up among the known ones (`unknown` if this version does not know it).
    pub fn label(&self) -> &'static str {
        match self {
            ServerEvent::Relayed(event) => {
                SERVER_EVENTS.iter().find(|name| **name == event.name).copied().unwrap_or("unknown")
            }
            ServerEvent::MessageNew(_) => "message:new",
            ServerEvent::MessageUpdated(_) => "message:updated",
            ServerEvent::MessageDeleted(_) => "message:deleted",
            ServerEvent::MessageRead(_) => "message:read",
            ServerEvent::TypingStart(_) => "typing:start",
            ServerEvent::TypingStop(_) => "typing:stop",
            ServerEvent::UserOnline(_) => "user:online",
            ServerEvent::UserOffline(_) => "user:offline",
            ServerEvent::Notification(_) => "notification",
            ServerEvent::ConversationNew(_) => "conversation:new",
            ServerEvent::ConversationUpdated(_) => "conversation:updated",
            ServerEvent::SyncRequired(_) => "sync:required",
        }
    }

    /// When the message of a `message:new` was committed (`None` for other events).
    pub fn committed_at(&self) -> Option<Timestamp> {
        match self {
            ServerEvent::MessageNew(message) => Some(message.created_at),
            ServerEvent::Relayed(event) => event.committed_at,
            _ => None,
        }
    }
}

/// Who receives a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every connection subscribed to the conversation.
    Conversation(String),
    /// Every connection of these users (each connection once).
    Users(Vec<String>),
    /// Every connection subscribed to the conversation whose user is one of `members` (sorted:
    /// the conversation's members as of the event's commit). A connection whose subscription
    /// outlived its user's membership, because the bus lost the unsubscribe, gets nothing.
    Members {
        /// The conversation.
        conversation_id: String,
        /// Its members when the event committed, sorted.
        members: Vec<String>,
    },
}

impl Audience {
    /// The connections of `members` subscribed to `conversation_id` (see [`Audience::Members`]).
    pub fn members(conversation_id: String, mut members: Vec<String>) -> Audience {
        members.sort_unstable();
        Audience::Members { conversation_id, members }
    }
}

/// An event for an audience, minus one connection or one user's connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Who receives it.
    pub to: Audience,
    /// Left out: the connection the action came from.
    pub except_connection: Option<ConnectionId>,
    /// Left out: every connection of this user (the actor).
    pub except_user: Option<String>,
    /// What they receive.
    pub event: ServerEvent,
}

/// What the core publishes on the bus, in order; transports apply it to their connections.
// Each message is built once and shared behind an `Arc`, so the variants' size difference
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// Push an event.
    Deliver(Delivery),
    /// Subscribe every connection of a user to a conversation (they were added to it).
    Subscribe {
        /// The user.
        user_id: String,
        /// The conversation.
        conversation_id: String,
    },
    /// Unsubscribe every connection of a user from a conversation (they left or were removed).
    Unsubscribe {
        /// The user.
        user_id: String,
        /// The conversation.
        conversation_id: String,
    },
    /// Close every connection of a user, on every node (admin disconnect, ban).
    Disconnect {
        /// The user.
        user_id: String,
        /// Why (WebSocket connections get it as their close reason).
        reason: DisconnectReason,
    },
    /// A user was banned or unbanned: every node updates its in-memory banned set.
    BanChanged {
        /// The user.
        user_id: String,
        /// Banned now (true) or no longer (false).
        banned: bool,
    },
    /// Messages may have been lost before this one (the bus reconnected): connections must
    /// catch up with `sync`. Never published; a bus backend puts it in its node's stream.
    Gap,
    /// Several messages published together (one commit group's, see
    /// [`Bus::publish_all`](super::ports::Bus::publish_all)), to apply in order. Only the
    /// in-process bus carries them; never nested.
    Batch(Vec<BusMessage>),
}

impl BusMessage {
    /// The topic a shared bus carries this message on; `None` for a delivery to several
    /// users, which a shared bus publishes once per user.
    pub fn topic(&self) -> Option<super::ports::Topic> {
        use super::ports::Topic;
        match self {
            BusMessage::Deliver(Delivery {
                to: Audience::Conversation(id) | Audience::Members { conversation_id: id, .. },
                ..
            }) => Some(Topic::Conversation(id.clone())),
            BusMessage::Deliver(Delivery { to: Audience::Users(users), .. }) => match users.as_slice() {
                [user] => Some(Topic::User(user.clone())),
                _ => None,
            },
            BusMessage::Subscribe { user_id, .. }
            | BusMessage::Unsubscribe { user_id, .. }
            | BusMessage::Disconnect { user_id, .. } => Some(Topic::User(user_id.clone())),
            BusMessage::BanChanged { .. } => Some(Topic::Everyone),
            BusMessage::Gap | BusMessage::Batch(_) => None,
        }
    }
}

/// `ready` payload, sent when a connection is established.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// The authenticated user.
    pub user_id: String,
    /// Every conversation of the user with its newest seq.
    pub conversations: Vec<ConversationHead>,
}

/// `sync:required` payload: every conversation of the user with its newest seq, as in
/// `ready`; the client syncs those whose seq is ahead of what it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRequired {
    /// Every conversation of the user with its newest seq.
    pub conversations: Vec<ConversationHead>,
}

/// A conversation id and its newest seq.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationHead {
    /// Conversation id.
    pub id: String,
    /// Seq of its newest message.
    pub last_seq: i64,
}

/// `sync` request: the newest seq the client has per conversation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Known newest seq per conversation id; conversations not listed sync from seq 0.
    #[serde(default)]
    pub conversations: BTreeMap<String, i64>,
    /// Most messages in this answer (default 500, at most 1000).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `sync` answer.
#[derive(Debug, Serialize)]
pub struct SyncPage {
    /// Missed messages, ascending per conversation.
    pub messages: Vec<Message>,
    /// Whether another call would return more.
    pub has_more: bool,
    /// Every conversation of the user with its newest seq.
    pub conversations: Vec<ConversationHead>,
}

/// `presence:query` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// Users to look up (at most 500).
    pub user_ids: Vec<String>,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceInfo {
    /// At least one connection open.
    pub online: bool,
    /// When the last connection closed (null when online or never seen).
    pub last_seen_at: Option<Timestamp>,
}

/// A `{conversation_id}` payload (typing, focus, join, leave).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationRef {
    /// The conversation.
    pub conversation_id: String,
}

/// An empty payload (`conversation:unfocus`); tolerates `{}` or nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}
