//! The storage port: what the core asks of a database, split by concern. Both backends
//! (`store::sqlite`, `store::postgres`) implement every sub-trait and run one test suite
//! (tests/store).

use async_trait::async_trait;

use std::sync::Arc;
use std::time::Duration;

use crate::core::error::StoreError;
use crate::core::model::{
    Block, Conversation, ConversationStatus, ConversationType, Device, JsonObject, Member, Message,
    MessageType, NotificationSettings, Platform, Role,
};
use crate::core::ports::BusMessage;
use crate::core::requests::NotificationSettingsUpdate;
use crate::core::server_events::{ConversationHead, Notification};
use crate::core::time::Timestamp;

use super::{AnnotationStore, Bus, PushOutbox, SearchStore, UploadStore};

/// A conversation to create. For a direct conversation `direct_key` identifies the pair and
/// context; the store returns the existing conversation instead of creating a second one.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Fresh time-ordered id.
    pub id: String,
    /// Direct or group.
    pub kind: ConversationType,
    /// Display name.
    pub name: Option<String>,
    /// Context, e.g. `product:981`.
    pub context: Option<String>,
    /// Free-form data.
    pub metadata: JsonObject,
    /// Unique key of a direct conversation (pair + context); `None` for groups.
    pub direct_key: Option<String>,
    /// Members and their roles; exactly one owner.
    pub members: Vec<(String, Role)>,
    /// Creation time; also the joined_at of the members.
    pub created_at: Timestamp,
    /// Pushes for it never show message text.
    pub private_preview: bool,
}

impl NewConversation {
    /// What the block rule of creating it checks: its owner, the other members, and whether
    /// a block counts either way (a direct pair) or only against the owner (a group). `None`
    /// without an owner.
    pub fn block_check(&self) -> Option<(&str, Vec<&str>, bool)> {
        let (owner, _) = self.members.iter().find(|(_, role)| *role == Role::Owner)?;
        let others = self.members.iter().map(|(id, _)| id.as_str()).filter(|id| id != owner).collect();
        Some((owner, others, self.direct_key.is_some()))
    }
}

/// Fields of a conversation to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ConversationUpdate {
    /// New display name.
    pub name: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<JsonObject>,
    /// Whether pushes for it may show message text.
    pub private_preview: Option<bool>,
    /// A new status, with its reason (none clears the reason).
    pub status: Option<(ConversationStatus, Option<String>)>,
}

/// A message to append. The store assigns `seq` and `created_at` inside the transaction.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Fresh time-ordered id.
    pub id: String,
    /// Target conversation.
    pub conversation_id: String,
    /// Sender.
    pub sender_id: String,
    /// Kind of content.
    pub kind: MessageType,
    /// The text.
    pub content: Option<String>,
    /// Idempotency key.
    pub client_id: Option<String>,
    /// Replied-to message; must be in the same conversation.
    pub reply_to_id: Option<String>,
    /// Attachment descriptors.
    pub attachments: Vec<JsonObject>,
    /// Free-form data.
    pub metadata: JsonObject,
    /// The thread root this message replies in: a message of the conversation that is not
    /// itself a reply in a thread.
    pub thread_id: Option<String>,
    /// A thread reply also shown in the timeline.
    pub also_in_conversation: bool,
    /// Users mentioned; the store keeps only members other than the sender.
    pub mentions: Vec<String>,
    /// Mentions every member: refused unless the sender is an owner or admin of a group.
    pub mentions_all: bool,
}

impl NewMessage {
    /// The message as committed with `seq` at `created_at` (neither edited nor deleted).
    pub fn committed(self, seq: i64, created_at: Timestamp) -> Message {
        Message {
            id: self.id,
            conversation_id: self.conversation_id,
            seq,
            sender_id: self.sender_id,
            kind: self.kind,
            content: self.content,
            client_id: self.client_id,
            reply_to_id: self.reply_to_id,
            attachments: self.attachments,
            metadata: self.metadata,
            created_at,
            edited_at: None,
            deleted_at: None,
            version: 1,
            revision: 0,
            also_in_conversation: self.thread_id.is_some() && self.also_in_conversation,
            thread_id: self.thread_id,
            thread: None,
            mentions: self.mentions,
            mentions_all: self.mentions_all,
            reaction_counts: Default::default(),
            latest_reactions: Vec::new(),
            pinned_at: None,
            pinned_by: None,
        }
    }
}

/// Result of [`MessageStore::append_message`]. The store checks the sender's membership, blocks
/// between the two members of a direct conversation, and the replied-to message inside the
/// appending transaction, so a member removed (or blocked) concurrently cannot slip a
/// message in.
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Written with the next seq and committed; `recipients` are the conversation's members
    /// as of that commit (for notification routing).
    Committed {
        /// The committed message.
        message: Message,
        /// Every member, the sender included.
        recipients: Vec<Recipient>,
        /// For a thread reply: its root and followers after it.
        thread: Option<Box<ThreadReply>>,
    },
    /// `client_id` matched an earlier message of this sender here; nothing was written.
    Duplicate(Message),
    /// The sender is not a member of the conversation.
    NotMember,
    /// The conversation is direct and one of its two members blocks the other.
    Blocked,
    /// No conversation has that id.
    NoConversation,
    /// `reply_to_id` is not a message of this conversation.
    ReplyNotFound,
    /// `thread_id` is not a message of this conversation, is deleted, or is itself a thread
    /// reply.
    ThreadNotFound,
    /// `mentions_all` from a member who is not an owner or admin of a group.
    MentionsAllRefused,
    /// The conversation is read-only (archived or blocked); the reason, if one was given.
    ReadOnly(ConversationStatus, Option<String>),
}

/// What a committed thread reply changed besides itself.
#[derive(Debug, Clone)]
pub struct ThreadReply {
    /// The root as it stands after the reply (its summary, version and revision moved).
    pub root: Message,
    /// Who follows the thread after the reply (the root's author, every replier, every user
    /// a reply mentioned), in order of following; they are notified of replies.
    pub followers: Vec<String>,
}

/// Result of [`ConversationStore::create_conversation`].
#[derive(Debug, Clone)]
pub struct Created {
    /// Id of the new (or, for a repeated direct conversation, existing) conversation.
    pub id: String,
    /// False when an existing direct conversation was returned.
    pub created: bool,
}

/// Work to run right after an append committed (see [`MessageStore::append_message`]). What it
/// publishes goes into its commit group's [`Publications`].
pub type CommitHook = Box<dyn FnOnce(&AppendOutcome, &mut Publications) + Send>;

/// What the commit hooks of one commit group publish. A store runs every hook of a group
/// with the same `Publications`, then [`Publications::publish`]es them, before it answers any
/// of the group's callers: one bus message per group however many messages it committed
/// (see [`Bus::publish_all`]).
#[derive(Default)]
pub struct Publications {
    bus: Option<Arc<dyn Bus>>,
    messages: Vec<BusMessage>,
}

impl Publications {
    /// Adds `message`, to be published on `bus` with the rest of the group.
    pub fn push(&mut self, bus: &Arc<dyn Bus>, message: BusMessage) {
        if self.bus.as_ref().is_some_and(|current| !std::ptr::addr_eq(Arc::as_ptr(current), Arc::as_ptr(bus)))
        {
            self.publish();
        }
        self.bus.get_or_insert_with(|| bus.clone());
        self.messages.push(message);
    }

    /// Publishes what was added, in order, and starts over empty.
    pub fn publish(&mut self) {
        if let Some(bus) = self.bus.take()
            && !self.messages.is_empty()
        {
            bus.publish_all(std::mem::take(&mut self.messages));
        }
    }
}

/// A user's standing in a conversation, looked up in one query.
#[derive(Debug, Clone)]
pub enum Membership {
    /// No conversation has that id.
    NoConversation,
    /// The conversation exists; the user is not in it.
    NotMember,
    /// The user is a member.
    Member {
        /// The member entry.
        member: Member,
        /// The conversation's type.
        kind: ConversationType,
        /// The conversation's status.
        status: ConversationStatus,
    },
}

/// Which slice of a conversation's history to read. With `after_seq` the page runs forward
/// from it; otherwise it runs backward from `before_seq` (or the newest message). Either
/// way the result is ascending by seq.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRange {
    /// Exclusive lower bound.
    pub after_seq: Option<i64>,
    /// Exclusive upper bound.
    pub before_seq: Option<i64>,
    /// Page size (at least 1).
    pub limit: usize,
}

/// Position in a user's conversation list: activity time, then id, both descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCursor {
    /// Activity time of the last conversation on the previous page.
    pub activity_at: Timestamp,
    /// Its id, to break ties.
    pub id: String,
}

/// A notification to append to its recipient's log (see [`NotificationStore::record_notifications`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The recipient, whose log it joins.
    pub user_id: String,
    /// What it says; its `id` is ignored (the store assigns it).
    pub notification: Notification,
    /// When it was recorded (what the age limit of the log counts from).
    pub created_at: Timestamp,
}

/// A device to register for a user.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Fresh time-ordered id (kept only if the device is new).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Push service.
    pub platform: Platform,
    /// Provider token; `(user, platform, token)` is unique.
    pub token: String,
    /// Push endpoint URL.
    pub endpoint: Option<String>,
    /// Web Push keys.
    pub keys: Option<JsonObject>,
    /// Registration (or refresh) time.
    pub created_at: Timestamp,
}

/// A member as notification routing needs it.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The member entry.
    pub member: Member,
    /// Whether the user has at least one registered device.
    pub has_devices: bool,
    /// Whether the user has a notification log (has opened a notification stream): their
    /// `notification`s are recorded there first, to get their ids.
    pub has_notification_log: bool,
    /// The member's unread count, this message included.
    pub unread_count: i64,
    /// The members of the conversation this member blocks: their messages send this member
    /// no `notification` and no push (see [`super::blocks`]).
    pub blocks: Vec<String>,
    /// The member archived the conversation (a new message brings it back, unless muted).
    pub archived: bool,
}

/// How long the store keeps an operator's disconnect mark ([`ModerationStore::mark_disconnected`]):
/// far longer than any node takes to notice it.
pub const DISCONNECT_MARKS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Durable storage of conversations, members and messages.
///
/// Invariants every backend keeps: `seq` is gap-free per conversation and assigned at
/// commit; `(conversation_id, sender_id, client_id)` is unique; a method returns only after
/// its write is durably committed; a push job is leased to at most one worker at a time
/// (across nodes) and never claimed once finished (sent or dropped).
#[async_trait]
pub trait Store:
    ConversationStore
    + MemberStore
    + MessageStore
    + NotificationStore
    + PushOutbox
    + DeviceStore
    + ModerationStore
    + UploadStore
    + SearchStore
    + AnnotationStore
{
    /// Succeeds when the store can serve requests (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Conversations: creating them, reading them as a member sees them, and listing them.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates a conversation with its members, or returns the existing direct one. `None`,
    /// and nothing written, when a block forbids it: a group whose members include one who
    /// blocks its owner, a direct pair of which one blocks the other. The check runs in the
    /// write's transaction, serialized with [`ModerationStore::block_user`], so a block
    /// committed at the same moment is never missed.
    async fn create_conversation(&self, new: NewConversation) -> Result<Option<Created>, StoreError>;

    /// The conversation as seen by `viewer` (their unread count), with members and last message.
    async fn conversation(&self, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError>;

    /// The user's conversations, newest activity first, starting after `after`: all of
    /// them (`archived` none), or only those the user archived (`Some(true)`) or did not.
    async fn conversations_of(
        &self,
        user_id: &str,
        after: Option<ActivityCursor>,
        limit: usize,
        archived: Option<bool>,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// Replaces the given fields; false when the conversation does not exist.
    async fn update_conversation(&self, id: &str, update: ConversationUpdate) -> Result<bool, StoreError>;

    /// Every conversation (of any user), newest activity first, starting after `after`; as
    /// seen by nobody (`unread_count` 0). For the admin API.
    async fn all_conversations(
        &self,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// Every conversation of the user with its newest seq.
    async fn conversation_heads(&self, user_id: &str) -> Result<Vec<ConversationHead>, StoreError>;

    /// Everyone who shares at least one conversation with the user (not the user), except
    /// users who block the user or whom the user blocks (presence is hidden between them).
    async fn contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError>;
}

/// Members: who belongs, their roles, read markers and mute switches.
#[async_trait]
pub trait MemberStore: Send + Sync + 'static {
    /// The user's standing in a conversation.
    async fn membership(&self, conversation_id: &str, user_id: &str) -> Result<Membership, StoreError>;

    /// Adds users who are not yet members with `role`, their read marker at the current
    /// last seq (earlier history is visible but not unread); returns those actually added.
    /// `None`, and nobody added, when one of `user_ids` blocks `by` (who adds them); checked
    /// in the write's transaction, as for [`ConversationStore::create_conversation`].
    async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: Vec<String>,
        role: Role,
        joined_at: Timestamp,
        by: &str,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// Removes a member; false when the user was not a member. A group left with members but
    /// no owner gets one in the same transaction (serialized with every other change of its
    /// members): the longest-standing admin, else the longest-standing member (ties: the
    /// first listed). So concurrent leaves, the owner's among them, never leave it ownerless.
    async fn remove_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, StoreError>;

    /// Sets the member's notification switch, and when a mute ends (`until`, only with
    /// `enabled` false; none: until turned back on); false if not a member.
    async fn set_notifications(
        &self,
        conversation_id: &str,
        user_id: &str,
        enabled: bool,
        until: Option<Timestamp>,
    ) -> Result<bool, StoreError>;

    /// Archives the conversation for the member, or brings it back; false if not a member.
    async fn set_archived(
        &self,
        conversation_id: &str,
        user_id: &str,
        archived: bool,
    ) -> Result<bool, StoreError>;

    /// Turns notifications back on for every mute that ended at or before `now`; returns how
    /// many.
    async fn end_mutes(&self, now: Timestamp) -> Result<usize, StoreError>;

    /// Raises the member's `last_read_seq` to `seq` (capped at the conversation's last seq,
    /// never lowered); returns the marker before and after, `None` if not a member.
    async fn mark_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        seq: i64,
    ) -> Result<Option<(i64, i64)>, StoreError>;

    /// Unread counts of every conversation of the user that has unread messages.
    async fn unread_counts(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Messages: appends with gap-free seqs, edits, deletes and history pages.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Appends a message with the next seq if the sender is a member (and the replied-to
    /// message is in the conversation), or returns the original on a `client_id` repeat.
    /// A [`MessageType::System`] message needs no membership (its sender is the operator's
    /// reserved id) and is never blocked; any other message into a direct conversation whose
    /// members block each other (either way) is refused with [`AppendOutcome::Blocked`].
    /// `on_commit` runs once the append is durable, before this returns, in seq order within
    /// the conversation on this node (so fan-out follows seq), even if the caller is
    /// cancelled meanwhile.
    /// It must not block.
    async fn append_message(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError>;

    /// A message by id.
    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError>;

    /// Replaces the content of a message that is not deleted; `None` if there is none.
    async fn edit_message(
        &self,
        id: &str,
        content: String,
        at: Timestamp,
    ) -> Result<Option<Message>, StoreError>;

    /// Soft-deletes a message (content cleared); returns it and whether this call deleted it
    /// (false when it already was), `None` if it does not exist.
    async fn delete_message(&self, id: &str, at: Timestamp) -> Result<Option<(Message, bool)>, StoreError>;

    /// A page of history, ascending, and whether more lies beyond it in the page's direction.
    async fn messages(
        &self,
        conversation_id: &str,
        range: HistoryRange,
    ) -> Result<(Vec<Message>, bool), StoreError>;
}

/// Notifications: each user's settings and their notification log (the SSE stream's backlog).
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// The user's notification settings (the defaults when never set).
    async fn notification_settings(&self, user_id: &str) -> Result<NotificationSettings, StoreError>;

    /// Changes the fields of the user's notification settings that `update` has; returns
    /// the settings now in force.
    async fn update_notification_settings(
        &self,
        user_id: &str,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, StoreError>;

    /// Appends notifications to their recipients' logs, in order, in one transaction, and
    /// returns the ids given (one per entry, in order). Only users whose log is open (see
    /// [`NotificationStore::open_notification_log`]) are recorded; the others get `None`, so users who
    /// never opened a notification stream cost nothing. Ids are per user, from 1, gap-free,
    /// and commit in id order per user, across every node sharing the database: once a
    /// reader sees id `n` of a user, every id below `n` of that user is committed too (or
    /// was trimmed). Each user's log then keeps only its newest `keep` entries (at least 1).
    async fn record_notifications(
        &self,
        notifications: Vec<NewNotification>,
        keep: usize,
    ) -> Result<Vec<Option<i64>>, StoreError>;

    /// Opens the user's notification log if it is not yet (from then on their notifications
    /// are recorded) and returns the newest id given so far (0 if none).
    async fn open_notification_log(&self, user_id: &str) -> Result<i64, StoreError>;

    /// Up to `limit` of the user's kept notifications with an id above `after`, ascending by
    /// id, each with its `id` set.
    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError>;

    /// The newest id ever given to a notification of the user (kept or not); 0 if none.
    async fn latest_notification_id(&self, user_id: &str) -> Result<i64, StoreError>;

    /// Deletes up to `limit` notifications (of any user) recorded before `before`, oldest
    /// first; returns how many. The users' counters stay, so ids are never reused.
    async fn prune_notifications(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError>;
}

/// Devices: each user's push endpoints.
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Registers a device, or refreshes the endpoint and keys of the same
    /// `(user, platform, token)`; returns it. Either way the device counts as refreshed at
    /// `device.created_at`; the user then keeps at most `max_per_user` devices (at least
    /// this one): the least recently registered or refreshed others are deleted, in the same
    /// transaction.
    async fn upsert_device(&self, device: NewDevice, max_per_user: usize) -> Result<Device, StoreError>;

    /// The user's devices, oldest first.
    async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError>;

    /// Removes one of the user's devices; false if they have none with that id.
    async fn remove_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError>;
}

/// Moderation: bans, operator disconnects and blocks between users.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// Bans a user, or replaces the reason of an existing ban; true when newly banned.
    async fn ban_user(
        &self,
        user_id: &str,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Lifts a ban; false when the user was not banned.
    async fn unban_user(&self, user_id: &str) -> Result<bool, StoreError>;

    /// Every banned user id (each node loads them into memory at start).
    async fn banned_users(&self) -> Result<Vec<String>, StoreError>;

    /// Records an operator disconnect: every connection `user_id` opened before `at` is to be
    /// closed (a later mark replaces an earlier one). Prunes marks older than a day.
    async fn mark_disconnected(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError>;

    /// The disconnect marks made at or after `since`, as (user id, mark), in no order.
    async fn disconnected_since(&self, since: Timestamp) -> Result<Vec<(String, Timestamp)>, StoreError>;

    /// Records that `blocker` blocks `blocked`; true when new (false: already blocked).
    async fn block_user(&self, blocker: &str, blocked: &str, at: Timestamp) -> Result<bool, StoreError>;

    /// Lifts a block; false when `blocker` did not block `blocked`.
    async fn unblock_user(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError>;

    /// The users `blocker` blocks, oldest block first.
    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError>;

    /// Those of `others` who block `user_id` or whom `user_id` blocks, in no particular order.
    async fn blocked_among(&self, user_id: &str, others: &[String]) -> Result<Vec<String>, StoreError>;
}
