//! The chat service: one method per client request, shared by every transport. Every rule
//! (membership, roles, limits, idempotency, read markers) is enforced here and nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::admin::{Bans, DisconnectMarks, MessageRate};
use super::budget::{BudgetKind, BudgetLimiters, EventBudgets};
use super::endpoint::EndpointPolicy;
use super::error::ChatError;
use super::events::{
    AddMembers, CreateConversation, EditMessage, HistoryQuery, ListConversations, MarkRead,
    NotificationSettingsUpdate, RegisterDevice, SendMessage, UpdateConversation,
};
use super::model::{
    Conversation, ConversationType, Device, Member, Message, MessageType, NotificationSettings, Platform,
    Role, User,
};
use super::pii;
use super::ports::{
    ActivityCursor, AppendOutcome, Bus, CommitHook, ConversationUpdate, HistoryRange, Membership,
    NewConversation, NewDevice, NewMessage, PresenceDirectory, RateLimiter, Store,
};
use super::presence::Presence;
use super::realtime::{Audience, BusMessage, Delivery, ReadReceipt, ServerEvent};
use super::routing;
use super::session::{self, TypingTracker};
use super::telemetry;
use super::time::Timestamp;
use super::validate;

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
        }
    }
}

/// Longest device token or endpoint, in characters.
const MAX_DEVICE_FIELD_CHARS: usize = 4096;
const HISTORY_DEFAULT: usize = 30;
const HISTORY_MAX: usize = 100;
/// Default page size of conversation lists.
pub(super) const LIST_DEFAULT: usize = 20;
/// Largest page size of conversation lists.
pub(super) const LIST_MAX: usize = 100;

/// A page of the caller's conversations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    /// Newest activity first.
    pub conversations: Vec<Conversation>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A page of a conversation's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    /// Ascending by seq.
    pub messages: Vec<Message>,
    /// Whether more messages lie beyond this page in its direction.
    pub has_more: bool,
}

/// Result of a send.
#[derive(Debug)]
pub struct Sent {
    /// The committed message.
    pub message: Message,
    /// True when this was a `client_id` repeat and the original is returned.
    pub duplicate: bool,
}

/// The caller's unread counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unread {
    /// Sum over all conversations.
    pub total: i64,
    /// Per conversation, only those with unread messages.
    pub conversations: BTreeMap<String, i64>,
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
}

/// A fresh time-ordered id.
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
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
    ) -> Self {
        Self::with_presence(store, bus, message_limiter, limits, None)
    }

    /// [`Chat::new`] with presence shared through `directory` when there is one (several
    /// nodes). With a directory, must be called inside a Tokio runtime: it starts announcing
    /// the users of nodes that die.
    pub fn with_presence(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        message_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
        directory: Option<Arc<dyn PresenceDirectory>>,
    ) -> Self {
        let typing = Arc::new(TypingTracker::new(bus.clone(), limits.typing_timeout));
        if let Some(departures) = directory.as_ref().and_then(|d| d.departures()) {
            tokio::spawn(session::announce_departures(store.clone(), bus.clone(), departures));
        }
        let presence = Arc::new(Presence::new(directory));
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
        let fresh = Conversation { unread_count: 0, ..conversation.clone() };
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
    /// rate-limit state of idle users and prunes notifications past the log's age limit.
    pub fn housekeeping(&self) {
        self.message_limiter.forget_idle();
        self.budgets.forget_idle();
        let store = self.store.clone();
        let before = Timestamp::now().minus(self.limits.notification_log_max_age);
        tokio::spawn(async move {
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
    }

    /// What runs when an append commits: count it, publish `message:new` to the conversation
    /// (minus the sending connection, which gets its ack) with its commit group, and route
    /// notifications. In commit order, and even if the request is cancelled after the commit. `received`: when
    /// the send arrived (for the send→commit latency).
    pub(super) fn fan_out_on_commit(&self, origin: Option<String>, received: Instant) -> CommitHook {
        let (store, bus, presence, rate) =
            (self.store.clone(), self.bus.clone(), self.presence.clone(), self.rate.clone());
        let limits = routing::RoutingLimits {
            preview_chars: self.limits.preview_chars,
            push_delay: self.limits.push_collapse,
            log_keep: self.limits.notification_log_keep,
        };
        let runtime = tokio::runtime::Handle::current();
        Box::new(move |outcome, publications| {
            if let AppendOutcome::Committed { message, recipients } = outcome {
                rate.record();
                telemetry::message_committed(received);
                publications.push(
                    &bus,
                    BusMessage::Deliver(Delivery {
                        to: Audience::members(
                            message.conversation_id.clone(),
                            recipients.iter().map(|r| r.member.user_id.clone()).collect(),
                        ),
                        except_connection: origin,
                        except_user: None,
                        event: ServerEvent::MessageNew(message.clone()),
                    }),
                );
                routing::route_new_message(
                    &runtime,
                    &store,
                    &bus,
                    &presence,
                    message,
                    recipients.clone(),
                    limits,
                    publications,
                );
            }
        })
    }

    /// The caller's member entry and the conversation type, or `not_found` / `not_a_member`.
    pub(super) async fn require_member(
        &self,
        conversation_id: &str,
        user: &User,
    ) -> Result<(Member, ConversationType), ChatError> {
        match self.store.membership(conversation_id, &user.id).await? {
            Membership::Member { member, kind } => Ok((member, kind)),
            Membership::NotMember => Err(ChatError::NotAMember),
            Membership::NoConversation => Err(ChatError::not_found("no such conversation")),
        }
    }

    /// Loads the conversation as the caller sees it (after a write, to answer with it).
    async fn load_conversation(&self, id: &str, user: &User) -> Result<Conversation, ChatError> {
        self.store
            .conversation(id, &user.id)
            .await?
            .ok_or_else(|| ChatError::not_found("no such conversation"))
    }

    /// # Create a conversation
    /// The caller becomes the owner. A direct conversation is unique per pair of users and
    /// context: creating it again returns the existing one with `created == false`. Counts
    /// in the caller's creation budget.
    pub async fn create_conversation(
        &self,
        user: &User,
        req: CreateConversation,
    ) -> Result<(Conversation, bool), ChatError> {
        self.spend(BudgetKind::CreateConversation, user).await?;
        self.open_conversation(user, req).await
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
        let direct_key = match req.kind {
            ConversationType::Direct => {
                let [other] = others.as_slice() else {
                    return Err(ChatError::invalid("a direct conversation needs exactly one other member"));
                };
                self.refuse_blocked_pair(&user.id, other).await?;
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
                self.refuse_group_with_blockers(&user.id, &others).await?;
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
        let conversation = self.load_conversation(&created.id, user).await?;
        if created.created {
            let members: Vec<String> = conversation.members.iter().map(|m| m.user_id.clone()).collect();
            self.announce_new_members(&conversation, &members);
        }
        Ok((conversation.viewed_by(&user.id), created.created))
    }

    /// # List the caller's conversations
    /// Newest activity (last message, else creation) first, in cursor pages.
    pub async fn list_conversations(
        &self,
        user: &User,
        req: ListConversations,
    ) -> Result<ConversationPage, ChatError> {
        let limit = validate::page_limit(req.limit, LIST_DEFAULT, LIST_MAX)?;
        let after = req.cursor.as_deref().map(decode_cursor).transpose()?;
        let conversations = self.store.conversations_of(&user.id, after, limit + 1).await?;
        let conversations = conversations.into_iter().map(|c| c.viewed_by(&user.id)).collect();
        Ok(page_of(conversations, limit))
    }

    /// # Get one conversation (members only)
    pub async fn conversation(&self, user: &User, id: &str) -> Result<Conversation, ChatError> {
        let conversation = self.load_conversation(id, user).await?;
        if conversation.member(&user.id).is_none() {
            return Err(ChatError::NotAMember);
        }
        Ok(conversation.viewed_by(&user.id))
    }

    /// # Rename or re-describe a conversation (owner/admin)
    pub async fn update_conversation(
        &self,
        user: &User,
        id: &str,
        req: UpdateConversation,
    ) -> Result<Conversation, ChatError> {
        let (member, _) = self.require_member(id, user).await?;
        if !member.role.is_manager() {
            return Err(ChatError::forbidden("only the owner or an admin may change the conversation"));
        }
        if let Some(name) = &req.name {
            validate::label("name", name, validate::MAX_LABEL_CHARS)?;
        }
        let changed = req.name.is_some() || req.metadata.is_some() || req.private_preview.is_some();
        if changed {
            let update = ConversationUpdate {
                name: req.name,
                metadata: req.metadata,
                private_preview: req.private_preview,
            };
            self.store.update_conversation(id, update).await?;
        }
        let conversation = self.load_conversation(id, user).await?;
        if changed {
            let event = ServerEvent::ConversationUpdated(conversation.clone());
            self.deliver(Audience::Conversation(id.to_owned()), user, event);
        }
        Ok(conversation.viewed_by(&user.id))
    }

    /// # Add members (owner/admin; groups only)
    /// Admins may add ordinary members; only the owner may add admins.
    pub async fn add_members(
        &self,
        user: &User,
        id: &str,
        req: AddMembers,
    ) -> Result<Conversation, ChatError> {
        self.spend(BudgetKind::AddMembers, user).await?;
        let (member, kind) = self.require_member(id, user).await?;
        if kind == ConversationType::Direct {
            return Err(ChatError::conflict("a direct conversation has fixed members"));
        }
        if !member.role.is_manager() {
            return Err(ChatError::forbidden("only the owner or an admin may add members"));
        }
        let role = req.role.unwrap_or(Role::Member);
        match role {
            Role::Owner => return Err(ChatError::invalid("role must be member or admin")),
            Role::Admin if member.role != Role::Owner => {
                return Err(ChatError::forbidden("only the owner may add admins"));
            }
            _ => {}
        }
        if req.user_ids.is_empty() {
            return Err(ChatError::invalid("user_ids must not be empty"));
        }
        for uid in &req.user_ids {
            validate::identifier("user_ids[]", uid)?;
        }
        let current = self.load_conversation(id, user).await?;
        let newcomers = req.user_ids.iter().filter(|uid| current.member(uid).is_none()).count();
        if current.members.len() + newcomers > self.limits.max_members {
            return Err(ChatError::TooLarge(format!(
                "a group has at most {} members",
                self.limits.max_members
            )));
        }
        self.refuse_group_with_blockers(&user.id, &req.user_ids).await?;
        let added = self.store.add_members(id, req.user_ids, role, Timestamp::now()).await?;
        let conversation = self.load_conversation(id, user).await?;
        if !added.is_empty() {
            let event = ServerEvent::ConversationUpdated(conversation.clone());
            self.deliver(Audience::Conversation(id.to_owned()), user, event);
            self.announce_new_members(&conversation, &added);
        }
        Ok(conversation.viewed_by(&user.id))
    }

    /// # Remove a member
    /// Anyone may leave; the owner may remove anyone, an admin only ordinary members. When
    /// the owner leaves a group, the longest-standing admin (else member) becomes owner.
    pub async fn remove_member(&self, user: &User, id: &str, target: &str) -> Result<(), ChatError> {
        let (member, kind) = self.require_member(id, user).await?;
        if kind == ConversationType::Direct {
            return Err(ChatError::conflict("a direct conversation has fixed members"));
        }
        let conversation = self.load_conversation(id, user).await?;
        let Some(target_member) = conversation.member(target) else {
            return Err(ChatError::not_found("no such member"));
        };
        if target != user.id {
            let allowed = match member.role {
                Role::Owner => true,
                Role::Admin => target_member.role == Role::Member,
                Role::Member => false,
            };
            if !allowed {
                return Err(ChatError::forbidden("your role does not allow removing this member"));
            }
        }
        // The store passes ownership on, in the same transaction (see `Store::remove_member`).
        if self.store.remove_member(id, target).await? {
            // Stop their connections' traffic at once, then tell everyone, them included.
            self.bus.publish(BusMessage::Unsubscribe {
                user_id: target.to_owned(),
                conversation_id: id.to_owned(),
            });
            let conversation = self.load_conversation(id, user).await?;
            let event = ServerEvent::ConversationUpdated(conversation);
            self.deliver(Audience::Conversation(id.to_owned()), user, event.clone());
            self.deliver(Audience::Users(vec![target.to_owned()]), user, event);
        }
        Ok(())
    }

    /// # Read history (members only)
    /// Default: the newest 30. `before_seq` pages backward, `after_seq` forward; ascending.
    pub async fn history(&self, user: &User, id: &str, req: HistoryQuery) -> Result<MessagePage, ChatError> {
        let limit = validate::page_limit(req.limit, HISTORY_DEFAULT, HISTORY_MAX)?;
        let after_seq = req.after_seq.map(|s| validate::seq("after_seq", s)).transpose()?;
        let before_seq = req.before_seq.map(|s| validate::seq("before_seq", s)).transpose()?;
        self.require_member(id, user).await?;
        let (messages, has_more) =
            self.store.messages(id, HistoryRange { after_seq, before_seq, limit }).await?;
        Ok(MessagePage { messages, has_more })
    }

    /// # Send a message (members only)
    /// Validate → rate limit → durable append, conditional on membership. Returns only after commit; a
    /// `client_id` repeat returns the original message with `duplicate == true`.
    pub async fn send_message(&self, user: &User, req: SendMessage) -> Result<Sent, ChatError> {
        let received = Instant::now();
        let conversation_id =
            req.conversation_id.ok_or_else(|| ChatError::invalid("conversation_id is required"))?;
        if req.kind == MessageType::System {
            return Err(ChatError::invalid("system messages cannot be sent by users"));
        }
        let content = match req.content {
            Some(content) => {
                validate::text("content", &content, self.limits.max_content_chars)?;
                if content.trim().is_empty() {
                    return Err(ChatError::invalid("content must not be blank"));
                }
                Some(self.masked(content))
            }
            None if req.kind == MessageType::Text => {
                return Err(ChatError::invalid("content is required for text messages"));
            }
            None => None,
        };
        if let Some(client_id) = &req.client_id {
            validate::identifier("client_id", client_id)?;
        }
        if req.attachments.len() > self.limits.max_attachments {
            return Err(ChatError::invalid(format!(
                "at most {} attachments per message",
                self.limits.max_attachments
            )));
        }
        if let Some(reply_to) = &req.reply_to_id {
            validate::identifier("reply_to_id", reply_to)?;
        }
        validate::mentions(&req.metadata)?;
        self.message_limiter.check(&user.id).await?;
        // Membership, blocks and the reply target are checked by the store inside the
        // appending transaction (one round trip, and no race with a concurrent removal or
        // block). Fan-out runs on commit, in commit order (so `message:new` follows seq),
        // and even if this request is cancelled after the commit.
        let on_commit = self.fan_out_on_commit(user.connection.clone(), received);
        let outcome = self
            .store
            .append_message(
                NewMessage {
                    id: new_id(),
                    conversation_id,
                    sender_id: user.id.clone(),
                    kind: req.kind,
                    content,
                    client_id: req.client_id,
                    reply_to_id: req.reply_to_id,
                    attachments: req.attachments,
                    metadata: req.metadata,
                },
                on_commit,
            )
            .await?;
        match outcome {
            AppendOutcome::Committed { message, .. } => Ok(Sent { message, duplicate: false }),
            AppendOutcome::Duplicate(message) => Ok(Sent { message, duplicate: true }),
            AppendOutcome::NotMember => Err(ChatError::NotAMember),
            AppendOutcome::Blocked => {
                Err(ChatError::forbidden("one of you blocks the other: direct messages are refused"))
            }
            AppendOutcome::NoConversation => Err(ChatError::not_found("no such conversation")),
            AppendOutcome::ReplyNotFound => {
                Err(ChatError::invalid("reply_to_id is not a message of this conversation"))
            }
        }
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

    /// # Edit a message (its sender only; not once deleted)
    pub async fn edit_message(&self, user: &User, req: EditMessage) -> Result<Message, ChatError> {
        let message_id = req.message_id.ok_or_else(|| ChatError::invalid("message_id is required"))?;
        validate::text("content", &req.content, self.limits.max_content_chars)?;
        if req.content.trim().is_empty() {
            return Err(ChatError::invalid("content must not be blank"));
        }
        self.message_limiter.check(&user.id).await?;
        let (message, _, kind) = self.message_as_member(user, &message_id).await?;
        if message.sender_id != user.id {
            return Err(ChatError::forbidden("only the sender may edit a message"));
        }
        self.refuse_blocked_direct(user, &message.conversation_id, kind).await?;
        if message.deleted_at.is_some() {
            return Err(ChatError::conflict("the message was deleted"));
        }
        let content = self.masked(req.content);
        let edited = self
            .store
            .edit_message(&message_id, content, Timestamp::now())
            .await?
            .ok_or_else(|| ChatError::conflict("the message was deleted"))?;
        let to = Audience::Conversation(edited.conversation_id.clone());
        self.deliver(to, user, ServerEvent::MessageUpdated(edited.clone()));
        Ok(edited)
    }

    /// # Delete a message (its sender, or a group's owner/admin)
    /// Soft delete: the seq stays, content becomes null. Deleting twice is harmless. In a
    /// direct conversation nobody moderates: only the sender may delete.
    pub async fn delete_message(&self, user: &User, message_id: &str) -> Result<Message, ChatError> {
        self.message_limiter.check(&user.id).await?;
        let (message, member, kind) = self.message_as_member(user, message_id).await?;
        let moderator = kind == ConversationType::Group && member.role.is_manager();
        if message.sender_id != user.id && !moderator {
            return Err(ChatError::forbidden(
                "only the sender or a group's owner or admin may delete a message",
            ));
        }
        let (deleted, newly) = self
            .store
            .delete_message(message_id, Timestamp::now())
            .await?
            .ok_or_else(|| ChatError::not_found("no such message"))?;
        if newly {
            let to = Audience::Conversation(deleted.conversation_id.clone());
            self.deliver(to, user, ServerEvent::MessageDeleted(deleted.clone()));
        }
        Ok(deleted)
    }

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

    /// # Switch push notifications for one conversation (members only)
    pub async fn set_notifications(&self, user: &User, id: &str, enabled: bool) -> Result<(), ChatError> {
        self.require_member(id, user).await?;
        if !self.store.set_notifications(id, &user.id, enabled).await? {
            return Err(ChatError::NotAMember);
        }
        Ok(())
    }

    /// # The caller's push notification settings
    pub async fn notification_settings(&self, user: &User) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.notification_settings(&user.id).await?)
    }

    /// # Change the caller's push notification settings
    /// Fields left out keep their value; returns the settings now in force.
    pub async fn update_notification_settings(
        &self,
        user: &User,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.update_notification_settings(&user.id, update).await?)
    }

    /// # Register a device for push notifications
    /// Registering the same `(platform, token)` again refreshes it and returns the same id.
    pub async fn register_device(&self, user: &User, req: RegisterDevice) -> Result<Device, ChatError> {
        validate::text("token", &req.token, MAX_DEVICE_FIELD_CHARS)?;
        if req.token.trim().is_empty() {
            return Err(ChatError::invalid("token must not be empty"));
        }
        if let Some(endpoint) = &req.endpoint {
            validate::text("endpoint", endpoint, MAX_DEVICE_FIELD_CHARS)?;
            self.limits.push_endpoints.check(endpoint).map_err(ChatError::Invalid)?;
        }
        match req.platform {
            Platform::Webpush => {
                let keys = req.keys.as_ref().ok_or_else(|| ChatError::invalid("webpush needs keys"))?;
                if req.endpoint.is_none() {
                    return Err(ChatError::invalid("webpush needs an endpoint"));
                }
                for key in ["p256dh", "auth"] {
                    let present = keys.get(key).and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty());
                    if !present {
                        return Err(ChatError::invalid(format!("webpush keys need a {key} string")));
                    }
                }
            }
            Platform::Webhook if req.endpoint.is_none() => {
                return Err(ChatError::invalid("webhook needs an endpoint"));
            }
            _ => {}
        }
        let device = NewDevice {
            id: new_id(),
            user_id: user.id.clone(),
            platform: req.platform,
            token: req.token,
            endpoint: req.endpoint,
            keys: req.keys,
            created_at: Timestamp::now(),
        };
        Ok(self.store.upsert_device(device, self.limits.max_devices_per_user.max(1)).await?)
    }

    /// # The caller's devices
    pub async fn devices(&self, user: &User) -> Result<Vec<Device>, ChatError> {
        Ok(self.store.devices(&user.id).await?)
    }

    /// # Remove one of the caller's devices
    pub async fn remove_device(&self, user: &User, device_id: &str) -> Result<(), ChatError> {
        if !self.store.remove_device(&user.id, device_id).await? {
            return Err(ChatError::not_found("no such device"));
        }
        Ok(())
    }

    /// # The caller's unread counts
    pub async fn unread(&self, user: &User) -> Result<Unread, ChatError> {
        let conversations: BTreeMap<String, i64> =
            self.store.unread_counts(&user.id).await?.into_iter().collect();
        Ok(Unread { total: conversations.values().sum(), conversations })
    }

    /// Content as stored: masked when `mask_pii` is on.
    fn masked(&self, content: String) -> String {
        if self.limits.mask_pii { pii::mask(&content).into_owned() } else { content }
    }
}

/// The activity time a conversation sorts by.
fn activity_at(conversation: &Conversation) -> Timestamp {
    conversation.last_message_at.unwrap_or(conversation.created_at)
}

/// Opaque list cursor: `<activity millis>.<id>` of the last conversation of a page.
fn encode_cursor(conversation: &Conversation) -> String {
    format!("{}.{}", activity_at(conversation).millis(), conversation.id)
}

/// A page of at most `limit` from `conversations` (fetched with one more, which tells
/// whether another page follows).
pub(super) fn page_of(mut conversations: Vec<Conversation>, limit: usize) -> ConversationPage {
    let next_cursor = if conversations.len() > limit {
        conversations.truncate(limit);
        conversations.last().map(encode_cursor)
    } else {
        None
    };
    ConversationPage { conversations, next_cursor }
}

/// Reads a cursor made by [`encode_cursor`]; anything else is `invalid`.
pub(super) fn decode_cursor(cursor: &str) -> Result<ActivityCursor, ChatError> {
    let bad = || ChatError::invalid("cursor is not one this server issued");
    let (millis, id) = cursor.split_once('.').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok(ActivityCursor { activity_at: Timestamp(millis), id: id.to_owned() })
}
