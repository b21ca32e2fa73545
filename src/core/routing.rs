//! Notification routing for a committed message, per recipient (the sender gets none):
//! focused on the conversation (any connection) → their read marker advances and the others
//! get `message:read`; online elsewhere → `notification` with their unread count; offline
//! with notifications on and a registered device → a durable push job. `message:new` itself
//! goes to the whole conversation before this runs.

use std::sync::Arc;

use super::chat::new_id;
use super::model::Message;
use super::ports::{Bus, PushJob, Recipient, Store};
use super::presence::Presence;
use super::realtime::{Audience, BusMessage, Delivery, Notification, ReadReceipt, ServerEvent};

/// The start of a message for previews: at most `max_chars` characters, none when deleted.
pub fn preview(message: &Message, max_chars: usize) -> Option<String> {
    let content = message.content.as_deref()?;
    Some(content.chars().take(max_chars).collect())
}

/// Routes one committed message to `recipients` (the members as of its commit), after the
/// sender's ack. Notifications go out at once; read markers of focused members and push jobs
/// need the store, so they run in a task on `runtime`, only when there are any. Callable
/// from any thread (it runs on the store's writer thread, in commit order).
pub fn route_new_message(
    runtime: &tokio::runtime::Handle,
    store: &Arc<dyn Store>,
    bus: &Arc<dyn Bus>,
    presence: &Presence,
    message: &Message,
    recipients: Vec<Recipient>,
    preview_chars: usize,
) {
    let conversation_id = &message.conversation_id;
    let preview = preview(message, preview_chars);
    let mut focused = Vec::new();
    let mut push = Vec::new();
    for recipient in recipients {
        let member = recipient.member;
        if member.user_id == message.sender_id {
            continue;
        }
        if presence.is_focused(&member.user_id, conversation_id) {
            focused.push(member);
        } else if presence.is_online(&member.user_id) {
            bus.publish(BusMessage::Deliver(Delivery {
                to: Audience::Users(vec![member.user_id]),
                except_connection: None,
                except_user: None,
                event: ServerEvent::Notification(Notification {
                    kind: "message",
                    conversation_id: conversation_id.clone(),
                    message_id: message.id.clone(),
                    seq: message.seq,
                    sender_id: message.sender_id.clone(),
                    preview: preview.clone(),
                    unread_count: recipient.unread_count,
                }),
            }));
        } else if member.notifications && recipient.has_devices {
            push.push(PushJob {
                id: new_id(),
                user_id: member.user_id,
                conversation_id: conversation_id.clone(),
                message_id: message.id.clone(),
                seq: message.seq,
                created_at: message.created_at,
            });
        }
    }
    if focused.is_empty() && push.is_empty() {
        return;
    }
    let (store, bus, message_id) = (store.clone(), bus.clone(), message.id.clone());
    let (conversation_id, seq) = (conversation_id.clone(), message.seq);
    runtime.spawn(async move {
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
                store.enqueue_push(push).await?;
            }
            Ok::<(), super::error::StoreError>(())
        };
        if let Err(err) = result.await {
            tracing::warn!(error = %err, %message_id, "notification routing failed");
        }
    });
}
