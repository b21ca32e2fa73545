//! What the server sends to clients: every server→client event, and the answers to the
//! realtime requests (`ready`, a `sync` page, presence). Shared by every transport, which
//! only frames them.

use serde::Serialize;

use super::model::{Conversation, Message};
use super::time::Timestamp;

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

/// What a `notification` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// A new message.
    Message,
    /// A new message that mentions the recipient (by name or everyone).
    Mention,
    /// A reaction to the recipient's message (`emoji` says which; `sender_id` is who reacted).
    Reaction,
}

impl NotificationKind {
    /// The wire (and storage) name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Message => "message",
            NotificationKind::Mention => "mention",
            NotificationKind::Reaction => "reaction",
        }
    }

    /// Parses the wire (and storage) name.
    pub fn parse(name: &str) -> Option<Self> {
        [NotificationKind::Message, NotificationKind::Mention, NotificationKind::Reaction]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// `notification` payload: a new message for a member online but not looking at it, or a
/// reaction to their message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Its place in the recipient's notification log (per user, from 1, gap-free; the SSE
    /// `id:`). Absent only when the log could not record it (the store failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// `message`, `mention` or `reaction`.
    #[serde(rename = "type")]
    pub kind: NotificationKind,
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
    /// For a reaction: the emoji.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

/// `reaction:added` / `reaction:removed` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactionChange {
    /// The conversation.
    pub conversation_id: String,
    /// The message reacted to.
    pub message_id: String,
    /// Who reacted.
    pub user_id: String,
    /// With what.
    pub emoji: String,
    /// The message's counts after the change.
    pub reaction_counts: std::collections::BTreeMap<String, i64>,
    /// The message's newest reactions after the change.
    pub latest_reactions: Vec<super::model::ReactionRef>,
    /// The message's version after the change (keep the highest, as for messages).
    pub version: i64,
    /// The message's revision after the change.
    pub revision: i64,
    /// The whole message after the change: a client that keeps the highest `version` takes
    /// it as the message's state (the fields above alone would miss an edit made before).
    pub message: Message,
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
    /// `reaction:added`
    ReactionAdded(ReactionChange),
    /// `reaction:removed`
    ReactionRemoved(ReactionChange),
    /// `message:pinned`
    MessagePinned(Message),
    /// `message:unpinned`
    MessageUnpinned(Message),
    /// `thread:updated`: a thread's root with its new summary.
    ThreadUpdated(Message),
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
const SERVER_EVENTS: [&str; 17] = [
    "message:new",
    "message:updated",
    "message:deleted",
    "reaction:added",
    "reaction:removed",
    "message:pinned",
    "message:unpinned",
    "thread:updated",
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
            ServerEvent::ReactionAdded(_) => "reaction:added",
            ServerEvent::ReactionRemoved(_) => "reaction:removed",
            ServerEvent::MessagePinned(_) => "message:pinned",
            ServerEvent::MessageUnpinned(_) => "message:unpinned",
            ServerEvent::ThreadUpdated(_) => "thread:updated",
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
    /// Its change counter: every change to one of its messages after it was sent (edit,
    /// delete, reaction, pin, thread reply) takes the next value, which the message carries
    /// as `revision`. A client that holds the messages up to some seq and revision asks
    /// `sync` for those changed after that revision.
    pub last_revision: i64,
}

/// `sync` answer.
#[derive(Debug, Serialize)]
pub struct SyncPage {
    /// Missed messages, ascending per conversation.
    pub messages: Vec<Message>,
    /// Messages the client holds that changed after the revisions it sent (edits, deletes,
    /// reactions, pins, thread summaries), as they stand now, ascending by revision per
    /// conversation.
    pub changed: Vec<Message>,
    /// Whether another call would return more.
    pub has_more: bool,
    /// Every conversation of the user with its newest seq.
    pub conversations: Vec<ConversationHead>,
}

/// Who is in a conversation now: `presence:conversation`'s answer and
/// `GET /api/conversations/{id}/presence`.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ConversationPresence {
    /// Members with at least one connection open, on any node (the caller included).
    pub online: Vec<String>,
    /// Members with a connection looking at the conversation (`conversation:focus`).
    pub focused: Vec<String>,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceInfo {
    /// At least one connection open.
    pub online: bool,
    /// When the last connection closed (null when online or never seen).
    pub last_seen_at: Option<Timestamp>,
}
