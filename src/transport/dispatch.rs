//! The client→server event vocabulary of the realtime transports (Socket.IO and plain
//! WebSocket): one table from event name to core call, and the ack shapes. A transport only
//! frames bytes and keeps its own room bookkeeping ([`Subscriptions`]).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::core::events::{DeleteMessage, EditMessage, MarkRead, SendMessage};
use crate::core::model::User;
use crate::core::realtime::{ConversationRef, Empty, PresenceQuery, SyncRequest};
use crate::core::{Chat, ChatError};

/// The calling connection's subscriptions, as its transport keeps them.
pub trait Subscriptions {
    /// Deliver the conversation's events to this connection from now on.
    fn subscribe(&self, conversation_id: &str);
    /// Stop delivering the conversation's events to this connection.
    fn unsubscribe(&self, conversation_id: &str);
}

/// Decodes an event payload; a missing (`null`) payload reads as `{}`.
fn decode<T: DeserializeOwned>(data: Value) -> Result<T, ChatError> {
    let data = if data.is_null() { Value::Object(Map::new()) } else { data };
    serde_json::from_value(data).map_err(|err| ChatError::invalid(format!("invalid payload: {err}")))
}

/// Runs client event `event` for `user`: decodes `data`, calls the core, and returns the
/// success ack's fields (without `ok`). Unknown events are `invalid`.
pub async fn dispatch(
    chat: &Chat,
    user: &User,
    event: &str,
    data: Value,
    connection: &impl Subscriptions,
) -> Result<Value, ChatError> {
    chat.admit(user)?;
    Ok(match event {
        "message:send" => {
            json!({ "message": chat.send_message(user, decode::<SendMessage>(data)?).await?.message })
        }
        "message:edit" => json!({ "message": chat.edit_message(user, decode::<EditMessage>(data)?).await? }),
        "message:delete" => {
            let req: DeleteMessage = decode(data)?;
            json!({ "message": chat.delete_message(user, &req.message_id).await? })
        }
        "message:read" => json!({ "last_read_seq": chat.mark_read(user, decode::<MarkRead>(data)?).await? }),
        "typing:start" => {
            chat.typing_start(user, &decode::<ConversationRef>(data)?.conversation_id).await?;
            json!({})
        }
        "typing:stop" => {
            chat.typing_stop(user, &decode::<ConversationRef>(data)?.conversation_id).await?;
            json!({})
        }
        "conversation:focus" => {
            chat.focus(user, &decode::<ConversationRef>(data)?.conversation_id).await?;
            json!({})
        }
        "conversation:unfocus" => {
            decode::<Empty>(data)?;
            chat.unfocus(user)?;
            json!({})
        }
        "conversation:join" => {
            let req: ConversationRef = decode(data)?;
            chat.join(user, &req.conversation_id).await?;
            connection.subscribe(&req.conversation_id);
            chat.bus_settled().await;
            // A removal committed between the check and the subscription published its
            // unsubscribe too early to apply: check again now that the subscription exists.
            if let Err(err) = chat.join(user, &req.conversation_id).await {
                connection.unsubscribe(&req.conversation_id);
                return Err(err);
            }
            json!({})
        }
        "conversation:leave" => {
            let req: ConversationRef = decode(data)?;
            chat.leave(user, &req.conversation_id)?;
            connection.unsubscribe(&req.conversation_id);
            json!({})
        }
        "sync" => {
            let page = chat.sync(user, decode::<SyncRequest>(data)?).await?;
            json!({ "messages": page.messages, "has_more": page.has_more, "conversations": page.conversations })
        }
        "presence:query" => json!({ "presence": chat.presence(user, decode::<PresenceQuery>(data)?).await? }),
        other => return Err(ChatError::invalid(format!("unknown event {other:?}"))),
    })
}

/// The ack for a result: `{ok:true, …fields}` or `{ok:false, error:{code,message}}`.
pub fn ack(result: Result<Value, ChatError>) -> Value {
    match result {
        Ok(mut body) => {
            if let Value::Object(fields) = &mut body {
                fields.insert("ok".into(), Value::Bool(true));
            }
            body
        }
        Err(err) => json!({ "ok": false, "error": error_body(None, &err) }),
    }
}

/// `{code, message}`, plus the event name when it goes out as an `error` event (a failure
/// the client asked no ack for). Internal errors are logged here, once.
pub fn error_body(event: Option<&str>, err: &ChatError) -> Value {
    if let ChatError::Internal(source) = err {
        tracing::error!(error = %source, event, "internal error");
    }
    let mut body = json!({ "code": err.code(), "message": err.to_string() });
    if let Some(event) = event {
        body["event"] = json!(event);
    }
    body
}
