//! Messages: sending (durable before fan-out), editing, deleting, history pages, and the commit hook that fans a committed message out.

use super::*;

const HISTORY_DEFAULT: usize = 30;

const HISTORY_MAX: usize = 100;

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

impl Chat {
    /// What runs when an append commits: count it, publish `message:new` to the conversation
    /// (minus the sending connection, which gets its ack) with its commit group, and route
    /// notifications. In commit order, and even if the request is cancelled after the commit. `received`: when
    /// the send arrived (for the send→commit latency).
    pub(crate) fn fan_out_on_commit(&self, origin: Option<String>, received: Instant) -> CommitHook {
        let (store, bus, presence, rate) =
            (self.store.clone(), self.bus.clone(), self.presence.clone(), self.rate.clone());
        let limits = notification_routing::RoutingLimits {
            preview_chars: self.limits.preview_chars,
            push_delay: self.limits.push_collapse,
            log_keep: self.limits.notification_log_keep,
        };
        let runtime = tokio::runtime::Handle::current();
        Box::new(move |outcome, publications| {
            if let AppendOutcome::Committed { message, recipients, thread } = outcome {
                rate.record();
                telemetry::message_committed(received);
                let members = || {
                    Audience::members(
                        message.conversation_id.clone(),
                        recipients.iter().map(|r| r.member.user_id.clone()).collect(),
                    )
                };
                publications.push(
                    &bus,
                    BusMessage::Deliver(Delivery {
                        to: members(),
                        except_connection: origin,
                        except_user: None,
                        event: ServerEvent::MessageNew(message.clone()),
                    }),
                );
                // A thread reply: every member learns the root's new summary; only the
                // thread's followers (and the mentioned) are notified, unless it is also
                // in the timeline.
                let mut notified = recipients.clone();
                if let Some(thread) = thread {
                    publications.push(
                        &bus,
                        BusMessage::Deliver(Delivery {
                            to: members(),
                            except_connection: None,
                            except_user: None,
                            event: ServerEvent::ThreadUpdated(thread.root.clone()),
                        }),
                    );
                    if !message.also_in_conversation {
                        notified.retain(|r| {
                            thread.followers.contains(&r.member.user_id)
                                || message.mentions(&r.member.user_id)
                        });
                    }
                }
                notification_routing::route_new_message(
                    &runtime,
                    &store,
                    &bus,
                    &presence,
                    message,
                    notified,
                    limits,
                    publications,
                );
            }
        })
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
        let mentions = validate::message_mentions(req.mentions, &req.metadata)?;
        if let Some(thread_id) = &req.thread_id {
            validate::identifier("thread_id", thread_id)?;
        }
        validate::kind_metadata(req.kind, &req.metadata)?;
        self.message_limiter.check(&user.id).await?;
        // Membership, blocks and the reply target are checked by the store inside the
        // appending transaction (one round trip, and no race with a concurrent removal or
        // block). Fan-out runs on commit, in commit order (so `message:new` follows seq),
        // and even if this request is cancelled after the commit.
        let id = new_id();
        let attachments = self
            .attach_uploads(user, &conversation_id, &id, req.client_id.as_deref(), req.attachments)
            .await?;
        let on_commit = self.fan_out_on_commit(user.connection.clone(), received);
        let outcome = self
            .store
            .append_message(
                NewMessage {
                    id,
                    conversation_id,
                    sender_id: user.id.clone(),
                    kind: req.kind,
                    content,
                    client_id: req.client_id,
                    reply_to_id: req.reply_to_id,
                    attachments,
                    metadata: req.metadata,
                    thread_id: req.thread_id,
                    also_in_conversation: req.also_in_conversation,
                    mentions,
                    mentions_all: req.mentions_all,
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
            AppendOutcome::ThreadNotFound => Err(ChatError::invalid(
                "thread_id is not a live message of this conversation, or is a thread reply itself (threads do not nest)",
            )),
            AppendOutcome::ReadOnly(status, reason) => Err(read_only(status, reason)),
            AppendOutcome::MentionsAllRefused => {
                Err(ChatError::forbidden("only a group's owner or admins may mention everyone"))
            }
        }
    }

    /// # Edit a message (its sender only; not once deleted)
    pub async fn edit_message(&self, user: &User, req: EditMessage) -> Result<Message, ChatError> {
        let message_id = req.message_id.ok_or_else(|| ChatError::invalid("message_id is required"))?;
        validate::text("content", &req.content, self.limits.max_content_chars)?;
        if req.content.trim().is_empty() {
            return Err(ChatError::invalid("content must not be blank"));
        }
        self.message_limiter.check(&user.id).await?;
        let (message, _, kind) = self.message_to_change(user, &message_id).await?;
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
            if let Some(root_id) = &deleted.thread_id
                && let Some(root) = self.store.message(root_id).await?
            {
                // To every connection: the deleting one's ack carries only the reply.
                let to = Audience::Conversation(deleted.conversation_id.clone());
                self.deliver(
                    to,
                    &User { connection: None, ..user.clone() },
                    ServerEvent::ThreadUpdated(root),
                );
            }
        }
        Ok(deleted)
    }
}
