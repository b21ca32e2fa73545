//! Typed requests shared by every transport. Each struct is one client request as it
//! arrives on the wire (REST body, Socket.IO or WebSocket event payload); serde rejects
//! unknown fields and wrong types, which transports report as `invalid`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::model::{ConversationStatus, ConversationType, JsonObject, MessageType, Role};

/// Create a conversation; the caller becomes its owner.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// Direct (exactly one other member) or group.
    #[serde(rename = "type")]
    pub kind: ConversationType,
    /// The other members; the caller may be listed too.
    pub members: Vec<String>,
    /// Display name.
    #[schema(max_length = 200)]
    #[serde(default)]
    pub name: Option<String>,
    /// What the conversation is about; a direct chat is unique per pair and context.
    #[schema(max_length = 200)]
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

/// Change a conversation: fields present are replaced.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversation {
    /// New display name.
    #[schema(max_length = 200)]
    #[serde(default)]
    pub name: Option<String>,
    /// New metadata (replaces the old object).
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub metadata: Option<JsonObject>,
    /// Whether pushes for it may show message text.
    #[serde(default)]
    pub private_preview: Option<bool>,
    /// `active` or `archived` (read-only for everyone); `blocked` is the platform's (admin
    /// API), and a blocked conversation's status only the platform changes.
    #[serde(default)]
    pub status: Option<ConversationStatus>,
}

/// Change the caller's notification settings: fields present are changed.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettingsUpdate {
    /// Push notifications at all.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Mentions still pushed in muted conversations.
    #[serde(default)]
    pub mentions_when_muted: Option<bool>,
}

/// Member additions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembers {
    /// Users to add; those already members are left as they are.
    #[schema(min_items = 1)]
    pub user_ids: Vec<String>,
    /// Role of the new members (default `member`; `owner` is not grantable).
    #[serde(default)]
    pub role: Option<Role>,
}

/// Send a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Target conversation; REST takes it from the path.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The text; required for `text` messages.
    #[serde(default)]
    pub content: Option<String>,
    /// Kind of message (default `text`).
    #[serde(rename = "type", default)]
    pub kind: MessageType,
    /// Idempotency key: a repeat from the same sender in the same conversation returns
    /// the original message.
    #[schema(min_length = 1, max_length = 128)]
    #[serde(default)]
    pub client_id: Option<String>,
    /// A message of the same conversation this one replies to.
    #[schema(min_length = 1, max_length = 128)]
    #[serde(default)]
    pub reply_to_id: Option<String>,
    /// Attachment descriptors (absent or null: none).
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(default, deserialize_with = "null_as_default")]
    pub attachments: Vec<JsonObject>,
    /// Free-form data for the platform (absent or null: `{}`).
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: JsonObject,
    /// The root of the thread this replies in (a message of the conversation that is not a
    /// thread reply itself).
    #[schema(min_length = 1, max_length = 128)]
    #[serde(default)]
    pub thread_id: Option<String>,
    /// A thread reply also posted to the conversation's timeline.
    #[serde(default)]
    pub also_in_conversation: bool,
    /// Users to mention (at most 50); only members other than the sender are kept. When
    /// absent, `metadata.mentions` is read instead (the earlier form).
    #[serde(default)]
    pub mentions: Option<Vec<String>>,
    /// Mention every member (owners and admins of groups only).
    #[serde(default)]
    pub mentions_all: bool,
}

/// Edit a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    /// The message to edit; REST takes it from the path.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The new text.
    pub content: String,
}

/// `message:delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteMessage {
    /// The message to delete.
    pub message_id: String,
}

/// `message:react` / `message:unreact`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactToMessage {
    /// The message.
    pub message_id: String,
    /// One emoji or a `:shortcode:`.
    pub emoji: String,
}

/// Mark a conversation read up to a seq.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    /// The conversation; REST takes it from the path.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Everything up to and including this seq has been read.
    #[schema(minimum = 0)]
    pub seq: i64,
}

/// Switch a conversation's notifications for the caller (mute).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetNotifications {
    /// Whether pushes are sent for this conversation.
    pub enabled: bool,
    /// With `enabled: false`: when the mute ends (notifications come back on then, within a
    /// minute); absent: muted until turned back on. Must be in the future.
    #[serde(default)]
    pub until: Option<crate::core::time::Timestamp>,
}

/// A page of a message's reactions.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReactionsQuery {
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size (default 50, at most 200).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
}

/// A page of a thread's replies.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadQuery {
    /// Only replies with a larger seq.
    #[param(minimum = 0)]
    #[serde(default)]
    pub after_seq: Option<i64>,
    /// Page size (default 50, at most 100).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Which changed messages to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// The conversation's `last_revision` the client knows: messages changed after it.
    #[param(minimum = 0)]
    pub after_revision: i64,
    /// Only messages with seq ≤ this (those the client holds); default all.
    #[param(minimum = 0)]
    #[serde(default)]
    pub up_to_seq: Option<i64>,
    /// Page size (default 100, at most 500).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Which page of a conversation's history to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only messages with a smaller seq.
    #[param(minimum = 0)]
    #[serde(default)]
    pub before_seq: Option<i64>,
    /// Only messages with a larger seq; the page then starts right after it.
    #[param(minimum = 0)]
    #[serde(default)]
    pub after_seq: Option<i64>,
    /// Page size (default 30, at most 100).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Which page of the caller's conversations to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConversations {
    /// `true`: only the conversations the caller archived; absent or `false`: the others.
    #[serde(default)]
    pub archived: Option<bool>,
    /// Page size (default 20, at most 100).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Search the caller's messages (`GET /api/search`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchMessages {
    /// The words to find, all of them, as substrings of the text, case-insensitively
    /// (1 to 200 characters after trimming).
    #[param(required = true, min_length = 1, max_length = 200)]
    #[serde(default)]
    pub q: Option<String>,
    /// Only this conversation (one the caller is a member of; otherwise `not_found`).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Only messages from this sender (a user id).
    #[serde(default)]
    pub from: Option<String>,
    /// Only messages created before this time (RFC 3339, exclusive).
    #[param(format = DateTime)]
    #[serde(default)]
    pub before: Option<String>,
    /// Only messages created after this time (RFC 3339, exclusive).
    #[param(format = DateTime)]
    #[serde(default)]
    pub after: Option<String>,
    /// Page size (default 20, at most 100).
    #[param(minimum = 1)]
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Reads an explicit JSON `null` as the type's default, as clients often send it for
/// "nothing" (`attachments: null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Register (or refresh) a device for push notifications.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Push service.
    pub platform: super::model::Platform,
    /// Provider token.
    #[schema(min_length = 1, max_length = 4096)]
    pub token: String,
    /// Push endpoint URL (required for `webpush` and `webhook`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Web Push keys `{p256dh, auth}` (required for `webpush`).
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub keys: Option<JsonObject>,
}

/// `sync` request: the newest seq the client has per conversation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Known newest seq per conversation id; conversations not listed sync from seq 0.
    #[serde(default)]
    pub conversations: BTreeMap<String, i64>,
    /// Most messages in this answer (default 500, at most 1000), changed ones included.
    #[serde(default)]
    pub limit: Option<i64>,
    /// Known `last_revision` per conversation id: messages the client holds (seq ≤ the seq
    /// it sent in `conversations`) that changed after it come back in `changed`.
    /// Conversations not listed get no `changed`.
    #[serde(default)]
    pub revisions: BTreeMap<String, i64>,
}

/// `presence:query` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// Users to look up (at most 500).
    pub user_ids: Vec<String>,
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

/// Open an upload (`POST /api/uploads`): what the client is about to upload, and where it
/// will be attached.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUpload {
    /// The conversation the file will be sent in (members only).
    #[schema(min_length = 1, max_length = 128)]
    pub conversation_id: String,
    /// The file's name as the user knows it (directories are dropped).
    #[schema(min_length = 1, max_length = 255)]
    pub filename: String,
    /// The MIME type the client believes it is (a hint: the bytes decide).
    #[schema(min_length = 1, max_length = 255)]
    pub content_type: String,
    /// The exact length in bytes.
    #[schema(minimum = 1)]
    pub size: u64,
    /// The SHA-256 of the bytes (hex), checked when the file is attached.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}
