//! Notification routing for a committed message, per recipient (the sender gets none, nor
//! does a recipient who blocks the sender, see [`super::blocks::silences`]):
//! focused on the conversation (any connection) → their read marker advances and the others
//! get `message:read`; online elsewhere → `notification` with their unread count; offline
//! with notifications on (or muted but mentioned) and a registered device → a durable push
//! job. `message:new` itself goes to the whole conversation before this runs. A
//! `notification` to a recipient with a notification log (one who opened a notification
//! stream) is recorded there first, which gives it its `id` for the stream, then published;
//! to anyone else it is published at once, right behind `message:new`, so the two leave in
//! one write to each of their connections.

use std::sync::Arc;

use super::model::Message;
use super::model::new_id;
use super::ports::{Bus, NewNotification, Publications, PushJob, Reach, Recipient, Store};
use super::presence::Presence;
use super::time::Timestamp;
use crate::core::ports::{Audience, BusMessage, Delivery};
use crate::core::server_events::{Notification, NotificationKind, ReadReceipt, ServerEvent};

/// The start of a message for previews: at most `max_chars` characters, none when deleted.
/// A message without text shows its first attachment: "📷 Photo" for an image, else the
/// file's name.
pub fn preview(message: &Message, max_chars: usize) -> Option<String> {
    if message.deleted_at.is_some() {
        return None;
    }
    let content = message.content.as_deref().filter(|text| !text.trim().is_empty());
    let content = content.or_else(|| {
        let first = message.attachments.first()?;
        match first.get("kind").and_then(|kind| kind.as_str()) {
            Some("image") => Some("📷 Photo"),
            _ => first.get("name").and_then(|name| name.as_str()),
        }
    })?;
    Some(content.chars().take(max_chars).collect())
}

/// The settings routing follows.
#[derive(Debug, Clone, Copy)]
pub struct RoutingLimits {
    /// Most characters of a message shown in a notification's `preview`.
    pub preview_chars: usize,
    /// How long a push job waits before it is sent, so that a later message of the same
    /// conversation to the same user collapses it (zero: every message is pushed).
    pub push_delay: std::time::Duration,
    /// Notifications each user's log keeps at most (the newest).
    pub log_keep: usize,
}

/// Routes one committed message to `recipients` (the members as of its commit). Where each
/// recipient is comes from `presence`: at once on a single node, from the shared directory
/// (in commit order) with several. Notifications go out then (into `publications` when
/// known at once, so they leave with the commit group's `message:new`s); read markers of
/// focused members and push jobs need the store, so they run in a task on `runtime`, only
/// when there are any. Callable from any thread (it runs on the store's commit-hook thread,
/// in commit order).
#[allow(clippy::too_many_arguments)]
pub fn route_new_message(
    runtime: &tokio::runtime::Handle,
    store: &Arc<dyn Store>,
    bus: &Arc<dyn Bus>,
    presence: &Presence,
    message: &Message,
    recipients: Vec<Recipient>,
    limits: RoutingLimits,
    publications: &mut Publications,
) {
    let recipients: Vec<Recipient> =
        recipients.into_iter().filter(|r| r.member.user_id != message.sender_id).collect();
    if recipients.is_empty() {
        return;
    }
    let user_ids: Vec<String> = recipients.iter().map(|r| r.member.user_id.clone()).collect();
    let local = presence.local_reach(&user_ids, &message.conversation_id);
    let Some(directory) = presence.directory() else {
        let mut publish = |event| publications.push(bus, event);
        return route(runtime, store.clone(), bus.clone(), message, recipients, &local, limits, &mut publish);
    };
    let (runtime, store, bus, message) = (runtime.clone(), store.clone(), bus.clone(), message.clone());
    let conversation_id = message.conversation_id.clone();
    directory.reach(
        user_ids,
        &conversation_id,
        local,
        Box::new(move |reaches| {
            let publisher = bus.clone();
            let mut publish = |event| publisher.publish(event);
            route(&runtime, store, bus, &message, recipients, &reaches, limits, &mut publish)
        }),
    );
}

/// Acts on where each recipient is (`reaches[i]` for `recipients[i]`); notifications known
/// at once go to `publish`.
#[allow(clippy::too_many_arguments)]
fn route(
    runtime: &tokio::runtime::Handle,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    message: &Message,
    recipients: Vec<Recipient>,
    reaches: &[Reach],
    limits: RoutingLimits,
    publish: &mut dyn FnMut(BusMessage),
) {
    let preview = preview(message, limits.preview_chars);
    let conversation_id = &message.conversation_id;
    let mut focused = Vec::new();
    let mut push = Vec::new();
    let mut notify = Vec::new();
    for (recipient, reach) in recipients.into_iter().zip(reaches) {
        if *reach != Reach::Focused && silences(&recipient, &message.sender_id) {
            continue;
        }
        let member = recipient.member;
        match reach {
            Reach::Focused => focused.push(member),
            Reach::Online => {
                let kind = if message.mentions(&member.user_id) {
                    NotificationKind::Mention
                } else {
                    NotificationKind::Message
                };
                let notification = Notification {
                    id: None,
                    kind,
                    emoji: None,
                    conversation_id: conversation_id.clone(),
                    message_id: message.id.clone(),
                    seq: message.seq,
                    sender_id: message.sender_id.clone(),
                    preview: preview.clone(),
                    unread_count: recipient.unread_count,
                };
                if recipient.has_notification_log {
                    notify.push(NewNotification {
                        user_id: member.user_id,
                        notification,
                        created_at: Timestamp::now(),
                    });
                } else {
                    publish(notification_to(member.user_id, notification));
                }
            }
            // A muted member still gets a job for a mention; whether their settings let it
            // through is the worker's to check, off the send path.
            Reach::Offline
                if recipient.has_devices && (member.notifications || message.mentions(&member.user_id)) =>
            {
                push.push(PushJob {
                    id: new_id(),
                    user_id: member.user_id,
                    conversation_id: conversation_id.clone(),
                    message_id: message.id.clone(),
                    seq: message.seq,
                    created_at: message.created_at,
                })
            }
            Reach::Offline => {}
        }
    }
    if focused.is_empty() && push.is_empty() && notify.is_empty() {
        return;
    }
    let message_id = message.id.clone();
    let (conversation_id, seq) = (conversation_id.clone(), message.seq);
    runtime.spawn(async move {
        if !notify.is_empty() {
            record_and_publish(store.as_ref(), bus.as_ref(), notify, limits.log_keep).await;
        }
        let result = async {
            for member in focused {
                let Some((before, read)) = store.mark_read(&conversation_id, &member.user_id, seq).await?
                else {
                    continue;
                };
                if read > before {
                    let receipt = ReadReceipt {
                        conversation_id: conversation_id.clone(),
                        user_id: member.user_id.clone(),
                        seq: read,
                    };
                    bus.publish(BusMessage::Deliver(Delivery {
                        to: Audience::Conversation(conversation_id.clone()),
                        except_connection: None,
                        except_user: Some(member.user_id),
                        event: ServerEvent::MessageRead(receipt),
                    }));
                }
            }
            if !push.is_empty() {
                store.enqueue_push_delayed(push, limits.push_delay).await?;
            }
            Ok::<(), super::error::StoreError>(())
        };
        if let Err(err) = result.await {
            super::telemetry::store_error();
            tracing::warn!(error = %err, %message_id, "notification routing failed");
        }
    });
}

/// Records notifications in the logs of recipients who opened one (see
/// [`Store::open_notification_log`]), then publishes each to its recipient with the id it got
/// (none when the recipient has no log). If the log cannot record them they are published without an id:
/// realtime connections still get them, streams find them missing from the log.
pub(crate) async fn record_and_publish(
    store: &dyn Store,
    bus: &dyn Bus,
    notify: Vec<NewNotification>,
    keep: usize,
) {
    let ids = match store.record_notifications(notify.clone(), keep).await {
        Ok(ids) => ids,
        Err(err) => {
            super::telemetry::store_error();
            tracing::warn!(error = %err, "notification log unavailable; notifications sent without an id");
            vec![None; notify.len()]
        }
    };
    bus.publish_all(
        notify
            .into_iter()
            .zip(ids)
            .map(|(new, id)| notification_to(new.user_id, Notification { id, ..new.notification }))
            .collect(),
    );
}

/// One `notification` to its recipient's connections.
fn notification_to(user_id: String, notification: Notification) -> BusMessage {
    BusMessage::Deliver(Delivery {
        to: Audience::Users(vec![user_id]),
        except_connection: None,
        except_user: None,
        event: ServerEvent::Notification(notification),
    })
}

/// Whether `recipient` blocks `sender_id`, so that a message of theirs sends the recipient
/// no `notification` and no push.
pub fn silences(recipient: &Recipient, sender_id: &str) -> bool {
    recipient.blocks.iter().any(|blocked| blocked == sender_id)
}
