//! The chat service: one method per client request, shared by every transport. Every rule
//! (membership, roles, limits, idempotency, read markers) is enforced here and nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::budget::{BudgetKind, BudgetLimiters, EventBudgets};
use super::error::ChatError;
use super::media::MediaLimits;
use super::model::{
    Conversation, ConversationStatus, ConversationType, Device, Member, Message, MessageType,
    NotificationSettings, Platform, Role, User, new_id,
};
use super::moderation::{Bans, DisconnectMarks};
use super::notification_routing;
use super::pii;
use super::ports::{
    ActivityCursor, AppendOutcome, Bus, CommitHook, ConversationUpdate, HistoryRange, Media, MediaError,
    Membership, NewConversation, NewDevice, NewMessage, NewNotification, PresenceDirectory, RateLimiter,
    Store,
};
use super::presence::Presence;
use super::push_endpoints::EndpointPolicy;
use super::requests::{
    AddMembers, CreateConversation, EditMessage, HistoryQuery, ListConversations, MarkRead,
    NotificationSettingsUpdate, RegisterDevice, SendMessage, UpdateConversation,
};
use super::telemetry;
use super::telemetry::MessageRate;
use super::time::Timestamp;
use super::typing::TypingTracker;
use super::validate;
use crate::core::ports::{Audience, BusMessage, Delivery};
use crate::core::server_events::{ReadReceipt, ServerEvent};
use crate::tasks::Tasks;

pub mod admin;
mod annotations;
mod blocks;
mod connections;
mod conversations;
mod devices;
mod members;
mod messages;
mod reads;
mod search;
mod settings;
mod uploads;

pub use annotations::{
    ChangedMessages, MAX_PINS, MAX_REACTIONS_PER_USER, PinnedMessages, ReactionPage, ThreadPage,
};
pub use blocks::BlockRequest;
pub use conversations::ConversationPage;
pub(crate) use conversations::{LIST_DEFAULT, LIST_MAX, decode_cursor, page_of};
pub use messages::{MessagePage, Sent};
pub use reads::Unread;
pub use search::{SearchHit, SearchResults};
pub use uploads::{AttachmentDownload, THUMBNAIL_EDGE, UploadTicket};

/// The refusal of a change to a read-only conversation, with the reason given for closing
/// it, if any.
pub(crate) fn read_only(status: ConversationStatus, reason: Option<String>) -> ChatError {
    let what = match status {
        ConversationStatus::Blocked => "the conversation was closed by the platform",
        _ => "the conversation is archived (read-only)",
    };
    match reason {
        Some(reason) => ChatError::forbidden(format!("{what}: {reason}")),
        None => ChatError::forbidden(what),
    }
}

/// Why a group with, or an addition of, a user who blocks the caller is refused.
pub(crate) const GROUP_WITH_BLOCKER: &str = "a user you named blocks you: no group with them";
/// Why a direct conversation between users of whom one blocks the other is refused.
pub(crate) const DIRECT_WITH_BLOCKER: &str = "one of you blocks the other: no direct conversation";

/// Limits the core enforces; defaults are the contract's.
#[derive(Debug, Clone)]
pub struct ChatLimits {
    /// Longest message content, in characters.
    pub max_content_chars: usize,
    /// Most attachments on one message.
    pub max_attachments: usize,
    /// Most members in a group conversation.
    pub max_members: usize,
    /// Message writes (send, edit, delete) per user per second; 0 disables the limit.
    pub messages_per_second: u32,
    /// Burst size of the per-user message bucket.
    pub message_burst: u32,
    /// Per-user budgets of typing, presence queries, `sync`, conversation creation and
    /// member additions (see [`super::budget`]).
    pub budgets: EventBudgets,
    /// Mask phone and bank account numbers in stored content.
    pub mask_pii: bool,
    /// After this long without a new `typing:start`, the server sends `typing:stop`.
    pub typing_timeout: Duration,
    /// Most characters of a message shown in a notification's `preview`.
    pub preview_chars: usize,
    /// How long a push waits for later messages of the same conversation, which collapse
    /// it into one push for the newest (zero: off).
    pub push_collapse: Duration,
    /// Notifications each user's log keeps at most (the newest), for SSE resumption.
    pub notification_log_keep: usize,
    /// Notifications older than this leave the log (at the next housekeeping round).
    pub notification_log_max_age: Duration,
    /// Which webhook and Web Push endpoints users may register (and chatd will call).
    pub push_endpoints: EndpointPolicy,
    /// Most push devices one user keeps; registering one more replaces the least recently
    /// registered or refreshed (at least 1).
    pub max_devices_per_user: usize,
    /// Upload sizes, quotas and how long media are kept.
    pub media: MediaLimits,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_content_chars: 4000,
            max_attachments: 10,
            max_members: 1000,
            messages_per_second: 10,
            message_burst: 20,
            budgets: EventBudgets::default(),
            mask_pii: false,
            typing_timeout: Duration::from_secs(5),
            preview_chars: 100,
            push_collapse: Duration::ZERO,
            notification_log_keep: 1000,
            notification_log_max_age: Duration::from_secs(7 * 24 * 3600),
            push_endpoints: EndpointPolicy::default(),
            max_devices_per_user: 10,
            media: MediaLimits::default(),
        }
    }
}

/// The chat service. Cheap to share: hold it in an `Arc`.
pub struct Chat {
    pub(super) store: Arc<dyn Store>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) presence: Arc<Presence>,
    pub(super) typing: Arc<TypingTracker>,
    pub(super) limits: ChatLimits,
    message_limiter: Arc<dyn RateLimiter>,
    /// Budgets of the other expensive requests; none until [`Chat::with_budgets`].
    pub(super) budgets: BudgetLimiters,
    /// Users banned (this node's copy; see [`super::admin`]).
    pub(super) bans: Arc<Bans>,
    /// Recent operator disconnects (this node's copy; see [`super::admin`]).
    pub(super) disconnects: Arc<DisconnectMarks>,
    /// Messages committed through this node, for the admin stats.
    pub(super) rate: Arc<MessageRate>,
    /// Where the service's background loops run.
    pub(super) tasks: Tasks,
    /// Where uploads and attachments are stored; none until [`Chat::with_media`].
    media: Option<Arc<dyn Media>>,
    /// Turns of image processing (`limits.media.concurrent_processing` at once).
    processing: Arc<tokio::sync::Semaphore>,
}

impl Chat {
    /// A service over `store`, publishing on `bus`, enforcing `limits`, with presence kept
    /// on this node; message writes are admitted by `message_limiter` (built for
    /// `limits.messages_per_second`/`message_burst`).
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        message_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
        tasks: &Tasks,
    ) -> Self {
        Self::with_presence(store, bus, message_limiter, limits, None, tasks)
    }

    /// [`Chat::new`] with presence shared through `directory` when there is one (several
    /// nodes). The service's background loops (announcing the users of nodes that die,
    /// following bans) run as `tasks`; with a directory, must be called inside a Tokio
    /// runtime.
    pub fn with_presence(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        message_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
        directory: Option<Arc<dyn PresenceDirectory>>,
        tasks: &Tasks,
    ) -> Self {
        let typing = Arc::new(TypingTracker::new(bus.clone(), limits.typing_timeout));
        if let Some(departures) = directory.as_ref().and_then(|d| d.departures()) {
            let announcing = super::presence::announce_departures(store.clone(), bus.clone(), departures);
            tasks.spawn("announce departed users", announcing);
        }
        let presence = Arc::new(Presence::new(directory));
        let processing = Arc::new(tokio::sync::Semaphore::new(limits.media.concurrent_processing.max(1)));
        Chat {
            store,
            bus,
            presence,
            typing,
            limits,
            message_limiter,
            budgets: BudgetLimiters::default(),
            bans: Arc::default(),
            disconnects: Arc::default(),
            rate: Arc::default(),
            tasks: tasks.clone(),
            media: None,
            processing,
        }
    }

    /// This service with `budgets` admitting the budgeted requests (built for
    /// `limits.budgets`); without it they are not limited.
    pub fn with_budgets(mut self, budgets: BudgetLimiters) -> Self {
        self.budgets = budgets;
        self
    }

    /// Publishes `event` to `to`, leaving out the actor's own connection.
    pub(super) fn deliver(&self, to: Audience, actor: &User, event: ServerEvent) {
        self.bus.publish(BusMessage::Deliver(Delivery {
            to,
            except_connection: actor.connection.clone(),
            except_user: None,
            event,
        }));
    }

    /// Publishes `event` to a conversation's members other than `user_id`.
    pub(super) fn deliver_to_others(&self, conversation_id: &str, user_id: &str, event: ServerEvent) {
        self.bus.publish(BusMessage::Deliver(Delivery {
            to: Audience::Conversation(conversation_id.to_owned()),
            except_connection: None,
            except_user: Some(user_id.to_owned()),
            event,
        }));
    }

    /// Subscribes every connection of `user_ids` to a conversation and tells them.
    fn announce_new_members(&self, conversation: &Conversation, user_ids: &[String]) {
        for user_id in user_ids {
            self.bus.publish(BusMessage::Subscribe {
                user_id: user_id.clone(),
                conversation_id: conversation.id.clone(),
            });
        }
        // New members have read nothing they could have missed: their count is 0.
        let fresh = conversation.clone().shared();
        self.bus.publish(BusMessage::Deliver(Delivery {
            to: Audience::Users(user_ids.to_vec()),
            except_connection: None,
            except_user: None,
            event: ServerEvent::ConversationNew(fresh),
        }));
    }

    /// Resolves once the bus subscriptions the transports asked for so far are in effect.
    pub async fn bus_settled(&self) {
        self.bus.settled().await;
    }

    /// The limits in force.
    pub fn limits(&self) -> &ChatLimits {
        &self.limits
    }

    /// Whether the store answers (for readiness probes); keeps `chatd_backend_up` fresh.
    pub async fn ready(&self) -> Result<(), ChatError> {
        let answer = self.store.ping().await;
        telemetry::backend_up("store", answer.is_ok());
        Ok(answer?)
    }

    /// Refreshes the backend gauges: probes the store and the bus's backend (each bounded by
    /// `timeout`) and counts the push outbox. Runs periodically (never on a metrics scrape,
    /// never on the send path).
    pub async fn observe_backends(&self, timeout: Duration) {
        let store_up = matches!(tokio::time::timeout(timeout, self.store.ping()).await, Ok(Ok(())));
        telemetry::backend_up("store", store_up);
        if let Ok(Some(health)) = tokio::time::timeout(timeout, self.bus.health()).await {
            telemetry::backend_up(health.backend, health.up);
        }
        match tokio::time::timeout(timeout, self.store.push_outbox_depth()).await {
            Ok(Ok(depth)) => telemetry::push_outbox_depth(depth),
            Ok(Err(err)) => {
                telemetry::store_error();
                tracing::warn!(error = %err, "counting the push outbox failed");
            }
            Err(_) => tracing::warn!("counting the push outbox timed out"),
        }
        if !store_up {
            telemetry::store_error();
        }
    }

    /// Periodic housekeeping (about once a minute, inside a Tokio runtime): forgets
    /// rate-limit state of idle users, prunes notifications past the log's age limit, and
    /// turns notifications back on where a timed mute ended.
    pub fn housekeeping(&self) {
        self.message_limiter.forget_idle();
        self.budgets.forget_idle();
        let store = self.store.clone();
        let before = Timestamp::now().minus(self.limits.notification_log_max_age);
        self.tasks.spawn("prune the notification log", async move {
            // Bounded rounds so no round holds the database for long.
            const ROUND: usize = 10_000;
            loop {
                match store.prune_notifications(before, ROUND).await {
                    Ok(n) if n == ROUND => continue,
                    Ok(_) => break,
                    Err(err) => {
                        telemetry::store_error();
                        tracing::warn!(error = %err, "pruning the notification log failed");
                        break;
                    }
                }
            }
        });
        let store = self.store.clone();
        self.tasks.spawn("end timed mutes", async move {
            if let Err(err) = store.end_mutes(Timestamp::now()).await {
                telemetry::store_error();
                tracing::warn!(error = %err, "ending timed mutes failed");
            }
        });
    }

    /// The caller's member entry and the conversation type, or `not_found` / `not_a_member`.
    pub(super) async fn require_member(
        &self,
        conversation_id: &str,
        user: &User,
    ) -> Result<(Member, ConversationType), ChatError> {
        let (member, kind, _) = self.membership_with_status(conversation_id, user).await?;
        Ok((member, kind))
    }

    /// [`Chat::require_member`] with the conversation's status.
    pub(super) async fn membership_with_status(
        &self,
        conversation_id: &str,
        user: &User,
    ) -> Result<(Member, ConversationType, ConversationStatus), ChatError> {
        match self.store.membership(conversation_id, &user.id).await? {
            Membership::Member { member, kind, status } => Ok((member, kind, status)),
            Membership::NotMember => Err(ChatError::NotAMember),
            Membership::NoConversation => Err(ChatError::not_found("no such conversation")),
        }
    }

    /// [`Chat::message_as_member`] for a change to the message (edit, reaction, pin):
    /// refused with `forbidden` in a read-only (archived or blocked) conversation.
    pub(super) async fn message_to_change(
        &self,
        user: &User,
        message_id: &str,
    ) -> Result<(Message, Member, ConversationType), ChatError> {
        let message =
            self.store.message(message_id).await?.ok_or_else(|| ChatError::not_found("no such message"))?;
        let (member, kind, status) = self.membership_with_status(&message.conversation_id, user).await?;
        if status.is_read_only() {
            return Err(read_only(status, None));
        }
        Ok((message, member, kind))
    }

    /// Loads the conversation as the caller sees it (after a write, to answer with it).
    pub(super) async fn load_conversation(&self, id: &str, user: &User) -> Result<Conversation, ChatError> {
        self.store
            .conversation(id, &user.id)
            .await?
            .ok_or_else(|| ChatError::not_found("no such conversation"))
    }

    /// [`Chat::create_conversation`] without the budget (the admin API acts for users).
    pub(super) async fn open_conversation(
        &self,
        user: &User,
        req: CreateConversation,
    ) -> Result<(Conversation, bool), ChatError> {
        if let Some(name) = &req.name {
            validate::label("name", name, validate::MAX_LABEL_CHARS)?;
        }
        if let Some(context) = &req.context {
            validate::label("context", context, validate::MAX_LABEL_CHARS)?;
        }
        let mut others: Vec<String> = Vec::with_capacity(req.members.len());
        for id in req.members {
            validate::identifier("members[]", &id)?;
            if id != user.id && !others.contains(&id) {
                others.push(id);
            }
        }
        let kind = req.kind;
        let direct_key = match req.kind {
            ConversationType::Direct => {
                let [other] = others.as_slice() else {
                    return Err(ChatError::invalid("a direct conversation needs exactly one other member"));
                };
                let (a, b) = if user.id < *other { (&user.id, other) } else { (other, &user.id) };
                Some(serde_json::json!([a, b, req.context]).to_string())
            }
            ConversationType::Group => {
                if others.len() + 1 > self.limits.max_members {
                    return Err(ChatError::TooLarge(format!(
                        "a group has at most {} members",
                        self.limits.max_members
                    )));
                }
                None
            }
        };
        let mut members = Vec::with_capacity(others.len() + 1);
        members.push((user.id.clone(), Role::Owner));
        members.extend(others.into_iter().map(|id| (id, Role::Member)));
        let created = self
            .store
            .create_conversation(NewConversation {
                id: new_id(),
                kind: req.kind,
                name: req.name,
                context: req.context,
                metadata: req.metadata.unwrap_or_default(),
                direct_key,
                members,
                created_at: Timestamp::now(),
                private_preview: req.private_preview.unwrap_or(false),
            })
            .await?;
        let Some(created) = created else {
            return Err(ChatError::forbidden(match kind {
                ConversationType::Direct => DIRECT_WITH_BLOCKER,
                ConversationType::Group => GROUP_WITH_BLOCKER,
            }));
        };
        let conversation = self.load_conversation(&created.id, user).await?;
        if created.created {
            let members: Vec<String> = conversation.members.iter().map(|m| m.user_id.clone()).collect();
            self.announce_new_members(&conversation, &members);
        }
        Ok((conversation.viewed_by(&user.id), created.created))
    }

    /// The message, the caller's member entry in its conversation, and the conversation type.
    async fn message_as_member(
        &self,
        user: &User,
        message_id: &str,
    ) -> Result<(Message, Member, ConversationType), ChatError> {
        let message =
            self.store.message(message_id).await?.ok_or_else(|| ChatError::not_found("no such message"))?;
        let (member, kind) = self.require_member(&message.conversation_id, user).await?;
        Ok((message, member, kind))
    }

    /// Content as stored: masked when `mask_pii` is on.
    fn masked(&self, content: String) -> String {
        if self.limits.mask_pii { pii::mask(&content).into_owned() } else { content }
    }
}

impl Chat {
    /// Takes one request of `kind` from the caller's budget (`rate_limited` when spent).
    pub(super) async fn spend(&self, kind: BudgetKind, user: &User) -> Result<(), ChatError> {
        self.budgets.spend(kind, &user.id).await
    }
}
