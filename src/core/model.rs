//! The chat domain's data: conversations, members, messages, exactly as the wire contract
//! shapes them (snake_case JSON, RFC 3339 timestamps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::time::Timestamp;

/// A JSON object, as used for `metadata` fields and attachment descriptors.
pub type JsonObject = Map<String, Value>;

/// Identifies one realtime connection across the nodes: `<transport>:<node>:<n>`, named by
/// the hub (`telemetry::Transport::of_connection` reads the transport back).
pub type ConnectionId = String;

/// A fresh time-ordered id (UUIDv7) for a conversation, message or notification.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The caller: identity established by a verified JWT, and the realtime connection the
/// request came from, if any (so the core can leave that connection out of echoes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The platform's user id (the token's `sub`).
    pub id: String,
    /// Optional display name (the token's `name`).
    pub name: Option<String>,
    /// The realtime connection making the request; `None` for REST.
    pub connection: Option<ConnectionId>,
    /// Arrival position of this request among its connection's events (0 for REST). Event
    /// handlers run concurrently; per-connection state (focus) keeps the latest arrival.
    pub arrival: u64,
}

/// Kind of conversation. A direct conversation has exactly two members, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationType {
    /// One-to-one; unique per pair of users and `context`.
    Direct,
    /// Any number of members with roles.
    Group,
}

/// Whether a conversation takes new messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// Open (the default).
    #[default]
    Active,
    /// Closed by its owner or admins, or the platform: read-only for everyone.
    Archived,
    /// Closed by the platform (e.g. a fraudulent listing): read-only, with a reason.
    Blocked,
}

impl ConversationStatus {
    /// Whether members may still send, edit, react and pin.
    pub fn is_read_only(self) -> bool {
        self != ConversationStatus::Active
    }
}

/// A member's role. Owners and admins manage the conversation; owners outrank admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ordinary member.
    Member,
    /// May rename, add members and remove ordinary members or messages.
    Admin,
    /// The creator; may do everything an admin may, and manage admins.
    Owner,
}

impl Role {
    /// Whether this role may manage the conversation (rename, add, remove, moderate).
    pub fn is_manager(self) -> bool {
        self >= Role::Admin
    }
}

/// Kind of message content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Plain text (the default); `content` is required.
    #[default]
    Text,
    /// An image; described by `attachments`.
    Image,
    /// A file; described by `attachments`.
    File,
    /// A location; described by `metadata`.
    Location,
    /// A product card (marketplace); described by `metadata`.
    Product,
    /// Posted by the server or an operator, never by a user.
    System,
}

/// A member of a conversation, as listed in the conversation object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Member {
    /// The member's user id.
    pub user_id: String,
    /// The member's role.
    pub role: Role,
    /// When the user joined the conversation.
    pub joined_at: Timestamp,
    /// The highest seq the user has read; never moves backwards.
    pub last_read_seq: i64,
    /// Whether the user receives push notifications for this conversation. Private to the
    /// member, so never serialized as such: see `shown_notifications`.
    #[serde(skip)]
    pub notifications: bool,
    /// `notifications` as the wire shows it: only in the member's own entry of a view made
    /// for them ([`Conversation::viewed_by`]); absent everywhere else (other members'
    /// entries, events sent to several members).
    #[serde(rename = "notifications", skip_serializing_if = "Option::is_none")]
    pub shown_notifications: Option<bool>,
}

/// A message. `seq` is per conversation, starts at 1 and has no gaps; a deleted message
/// keeps its seq, has `deleted_at` set and `content` null.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Message {
    /// Time-ordered id (UUIDv7).
    pub id: String,
    /// The conversation this message belongs to.
    pub conversation_id: String,
    /// Position in the conversation, assigned at commit.
    pub seq: i64,
    /// Who sent it.
    pub sender_id: String,
    /// Kind of content.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The text; null for deleted messages and for media without a caption.
    #[schema(required = true)]
    pub content: Option<String>,
    /// The sender's idempotency key, if given.
    #[schema(required = true)]
    pub client_id: Option<String>,
    /// The message this one replies to, in the same conversation.
    #[schema(required = true)]
    pub reply_to_id: Option<String>,
    /// Attachment descriptors (objects), at most the configured number.
    #[schema(value_type = Vec<Object>)]
    pub attachments: Vec<JsonObject>,
    /// Free-form data for the platform (product ids, coordinates, ...).
    #[schema(value_type = Object)]
    pub metadata: JsonObject,
    /// When the message was committed.
    pub created_at: Timestamp,
    /// When the content was last edited.
    #[schema(required = true)]
    pub edited_at: Option<Timestamp>,
    /// When the message was deleted.
    #[schema(required = true)]
    pub deleted_at: Option<Timestamp>,
    /// 1 when sent, one more with every change (edit, delete, reaction, pin, thread reply).
    /// Events about one message may arrive out of order (from different requests or nodes):
    /// a client keeps the highest version.
    pub version: i64,
    /// The conversation's change counter at this message's latest change after it was sent
    /// (0: never changed); see [`ConversationHead::last_revision`](super::ports::ConversationHead).
    pub revision: i64,
    /// The root of the thread this message replies in; null outside threads (roots included).
    #[schema(required = true)]
    pub thread_id: Option<String>,
    /// A thread reply the sender also posted to the conversation's timeline (counted as
    /// unread like any message there). Always false outside threads.
    pub also_in_conversation: bool,
    /// On a thread's root: its replies so far; null while it has none.
    #[schema(required = true)]
    pub thread: Option<ThreadSummary>,
    /// Members the message mentions (validated against the members at send: others are
    /// dropped).
    pub mentions: Vec<String>,
    /// Mentions every member (`@channel`; owners and admins of groups only).
    pub mentions_all: bool,
    /// Reactions per emoji, e.g. `{"👍": 3}` (emoji with none are absent).
    pub reaction_counts: BTreeMap<String, i64>,
    /// The newest reactions, newest first, at most [`LATEST_REACTIONS`].
    pub latest_reactions: Vec<ReactionRef>,
    /// When it was pinned; null when not pinned.
    #[schema(required = true)]
    pub pinned_at: Option<Timestamp>,
    /// Who pinned it; null when not pinned.
    #[schema(required = true)]
    pub pinned_by: Option<String>,
}

/// How many of the newest reactions a message object carries.
pub const LATEST_REACTIONS: usize = 10;

/// How many participants a thread summary names.
pub const THREAD_PARTICIPANTS_SHOWN: usize = 10;

/// One reaction as a message object shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReactionRef {
    /// Who reacted.
    pub user_id: String,
    /// With what: one emoji (a grapheme cluster) or a `:shortcode:`.
    pub emoji: String,
}

/// A reaction as the reaction list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Reaction {
    /// Who reacted.
    pub user_id: String,
    /// With what.
    pub emoji: String,
    /// When.
    pub created_at: Timestamp,
}

/// The replies of a thread, as its root carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ThreadSummary {
    /// Replies not deleted.
    pub reply_count: i64,
    /// When the newest reply was sent.
    #[schema(required = true)]
    pub last_reply_at: Option<Timestamp>,
    /// The root's author, then repliers in order of their first reply; at most
    /// [`THREAD_PARTICIPANTS_SHOWN`].
    pub participants: Vec<String>,
}

impl ThreadSummary {
    /// The summary a root shows for these stored values: none before the first reply.
    pub fn of(reply_count: i64, last_reply_at: Option<Timestamp>, participants: Vec<String>) -> Option<Self> {
        last_reply_at.map(|_| ThreadSummary { reply_count, last_reply_at, participants })
    }
}

impl Message {
    /// Whether the message mentions `user_id`: named in `mentions`, or everyone
    /// (`mentions_all`) and `user_id` is not the sender.
    pub fn mentions(&self, user_id: &str) -> bool {
        (self.mentions_all && user_id != self.sender_id) || self.mentions.iter().any(|id| id == user_id)
    }

    /// Whether the conversation's timeline shows it (not a thread-only reply): only such
    /// messages count as unread.
    pub fn in_timeline(&self) -> bool {
        self.thread_id.is_none() || self.also_in_conversation
    }
}

/// A conversation as seen by one user (`unread_count` is that user's).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Conversation {
    /// Time-ordered id (UUIDv7).
    pub id: String,
    /// Direct or group.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// Display name (groups, usually).
    #[schema(required = true)]
    pub name: Option<String>,
    /// What the conversation is about, e.g. `product:981`; part of a direct chat's identity.
    #[schema(required = true)]
    pub context: Option<String>,
    /// Free-form data for the platform.
    #[schema(value_type = Object)]
    pub metadata: JsonObject,
    /// Every member, oldest first.
    pub members: Vec<Member>,
    /// Seq of the newest message; 0 when there is none.
    pub last_seq: i64,
    /// The newest message, if any.
    #[schema(required = true)]
    pub last_message: Option<Message>,
    /// When the newest message was sent.
    #[schema(required = true)]
    pub last_message_at: Option<Timestamp>,
    /// When the conversation was created.
    pub created_at: Timestamp,
    /// Messages after the viewer's `last_read_seq`, not sent by the viewer, not deleted,
    /// shown in the timeline (thread-only replies are not counted).
    pub unread_count: i64,
    /// Of the messages after the viewer's `last_read_seq`, those that mention the viewer
    /// (by name or `mentions_all`), thread replies included; not deleted.
    pub unread_mentions: i64,
    /// Pushes for this conversation never show message text (extension).
    pub private_preview: bool,
    /// `active`, or read-only: `archived` or `blocked`.
    pub status: ConversationStatus,
    /// Why it is archived or blocked, when the one who closed it said.
    #[schema(required = true)]
    pub status_reason: Option<String>,
    /// The viewer archived it (hidden from their default list until a new message comes,
    /// unless they muted it).
    pub archived: bool,
    /// The viewer muted it until then (notifications come back on at that time).
    #[schema(required = true)]
    pub muted_until: Option<Timestamp>,
}

impl Conversation {
    /// The member entry of `user_id`, if they are a member.
    pub fn member(&self, user_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.user_id == user_id)
    }

    /// The conversation as every member may see it, for events fanned out to several users
    /// (the same bytes for each): no per-viewer fields, so the unread counts are 0 and no mute
    /// flag is shown.
    pub fn shared(mut self) -> Conversation {
        self.unread_count = 0;
        self.unread_mentions = 0;
        self.archived = false;
        self.muted_until = None;
        for member in &mut self.members {
            member.shown_notifications = None;
        }
        self
    }

    /// The conversation as `viewer` may see it: their own mute flag shown, nobody else's.
    pub fn viewed_by(mut self, viewer: &str) -> Conversation {
        for member in &mut self.members {
            member.shown_notifications = (member.user_id == viewer).then_some(member.notifications);
        }
        self
    }
}

/// Lower-case names, identical to the wire form, for storage backends.
macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire (and storage) name.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),+ }
            }

            /// Parses the wire (and storage) name.
            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(<$ty>::$variant),)+ _ => None }
            }
        }
    };
}

names!(ConversationType { Direct => "direct", Group => "group" });
names!(Role { Member => "member", Admin => "admin", Owner => "owner" });
names!(ConversationStatus { Active => "active", Archived => "archived", Blocked => "blocked" });
names!(MessageType {
    Text => "text", Image => "image", File => "file",
    Location => "location", Product => "product", System => "system",
});

/// A user's push notification settings, for all their conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct NotificationSettings {
    /// Push notifications at all; off: none, whatever the conversations say.
    pub enabled: bool,
    /// A message that mentions the user (`metadata.mentions`) is pushed even in a
    /// conversation they muted.
    pub mentions_when_muted: bool,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings { enabled: true, mentions_when_muted: true }
    }
}

/// Push service a device is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, web); `token` is the registration token.
    Fcm,
    /// Apple Push Notification service; `token` is the device token.
    Apns,
    /// Web Push (RFC 8030/8291); `endpoint` and `keys` {p256dh, auth} are required.
    Webpush,
    /// A signed JSON POST to the platform's own `endpoint`.
    Webhook,
}

names!(Platform { Fcm => "fcm", Apns => "apns", Webpush => "webpush", Webhook => "webhook" });

/// A device registered by a user to receive push notifications.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Device {
    /// Time-ordered id.
    pub id: String,
    /// Push service.
    pub platform: Platform,
    /// Provider token (registration token, device token, or the platform's label).
    pub token: String,
    /// Push endpoint URL (Web Push, webhook).
    #[schema(required = true)]
    pub endpoint: Option<String>,
    /// Web Push subscription keys (`p256dh`, `auth`).
    #[schema(required = true, value_type = Option<Object>)]
    pub keys: Option<JsonObject>,
    /// When it was registered.
    pub created_at: Timestamp,
}

/// A user blocked by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Block {
    /// The blocked user.
    pub user_id: String,
    /// When the block was made.
    pub created_at: Timestamp,
}

/// What an attachment holds, from its verified bytes (never the declared type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    /// A photo (re-encoded without metadata, with a thumbnail when it could be decoded).
    Image,
    /// A video, stored as uploaded.
    Video,
    /// A sound recording, stored as uploaded.
    Audio,
    /// Any other allowed file (PDF, text, office documents), stored as uploaded.
    File,
}

/// Size of an attachment's thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ThumbnailSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A server-made attachment, as messages carry it: the same object for every recipient.
/// Its bytes are at `GET /api/attachments/{id}` (and `…/thumbnail`), for members only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    /// The attachment's id (not the upload's).
    pub id: String,
    /// What it holds.
    pub kind: AttachmentKind,
    /// The verified MIME type.
    pub content_type: String,
    /// Bytes stored (after re-encoding for images).
    pub size: u64,
    /// The file name the uploader gave.
    pub name: String,
    /// Width in pixels, after EXIF orientation (images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, after EXIF orientation (images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The thumbnail's size, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<ThumbnailSize>,
}
