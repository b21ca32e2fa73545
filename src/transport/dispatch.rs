//! The client→server event vocabulary of the realtime transports (Socket.IO and plain
//! WebSocket): one table from event name to core call, and the ack shapes. A transport only
//! frames bytes; a connection's subscriptions are the hub's ([`Link`]). Decoding
//! ([`ClientEvent::decode`]) is pure and separate from running ([`apply`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::Authenticator;
use crate::core::chat::SearchResults;
use crate::core::lease::Lease;
use crate::core::model::{Message, User};
use crate::core::requests::{ConversationRef, Empty, PresenceQuery, SearchMessages, SyncRequest};
use crate::core::requests::{DeleteMessage, EditMessage, MarkRead, ReactToMessage, SendMessage};
use crate::core::server_events::{ConversationPresence, PresenceInfo, SyncPage};
use crate::core::time::Timestamp;
use crate::core::{Chat, ChatError, telemetry};
use crate::hub::Link;

/// Every event name [`dispatch`] knows: the values of the `event` metric label (any other
/// name counts as `unknown`, so clients cannot add label values). The fuzz targets check
/// that [`ClientEvent::decode`] accepts exactly these.
pub const CLIENT_EVENTS: [&str; 17] = [
    "auth:refresh",
    "message:send",
    "message:edit",
    "message:delete",
    "message:react",
    "message:unreact",
    "message:read",
    "typing:start",
    "typing:stop",
    "conversation:focus",
    "conversation:unfocus",
    "conversation:join",
    "conversation:leave",
    "sync",
    "presence:query",
    "presence:conversation",
    "search",
];

/// The metric label of a client event name.
fn event_label(event: &str) -> &'static str {
    CLIENT_EVENTS.iter().find(|known| **known == event).copied().unwrap_or("unknown")
}

/// The calling connection's credentials: how to verify a new token, and the lease it moves.
pub struct Credentials<'a> {
    /// The token verifier.
    pub auth: &'a Authenticator,
    /// The connection's token expiry.
    pub lease: &'a Lease,
}

/// `auth:refresh` payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshToken {
    /// The new JWT; same `sub` as the connection's.
    pub token: String,
}

/// One client→server event, decoded and typed: what [`ClientEvent::decode`] makes of an event
/// name and its JSON payload, before anything runs.
#[derive(Debug)]
pub enum ClientEvent {
    /// `auth:refresh`
    AuthRefresh(RefreshToken),
    /// `message:send`
    MessageSend(SendMessage),
    /// `message:edit`
    MessageEdit(EditMessage),
    /// `message:delete`
    MessageDelete(DeleteMessage),
    /// `message:react`
    MessageReact(ReactToMessage),
    /// `message:unreact`
    MessageUnreact(ReactToMessage),
    /// `message:read`
    MessageRead(MarkRead),
    /// `typing:start`
    TypingStart(ConversationRef),
    /// `typing:stop`
    TypingStop(ConversationRef),
    /// `conversation:focus`
    ConversationFocus(ConversationRef),
    /// `conversation:unfocus`
    ConversationUnfocus,
    /// `conversation:join`
    ConversationJoin(ConversationRef),
    /// `conversation:leave`
    ConversationLeave(ConversationRef),
    /// `sync`
    Sync(SyncRequest),
    /// `presence:query`
    PresenceQuery(PresenceQuery),
    /// `presence:conversation`
    PresenceConversation(ConversationRef),
    /// `search`
    Search(SearchMessages),
}

impl ClientEvent {
    /// Decodes event `event` with payload `data` (`null` reads as `{}`; any other payload
    /// must be a JSON object). Pure: every failure is [`ChatError::Invalid`], so the fuzz
    /// targets (fuzz/) and both transports share one decoder.
    pub fn decode(event: &str, data: Value) -> Result<ClientEvent, ChatError> {
        Ok(match event {
            "auth:refresh" => ClientEvent::AuthRefresh(decode(data)?),
            "message:send" => ClientEvent::MessageSend(decode(data)?),
            "message:edit" => ClientEvent::MessageEdit(decode(data)?),
            "message:delete" => ClientEvent::MessageDelete(decode(data)?),
            "message:react" => ClientEvent::MessageReact(decode(data)?),
            "message:unreact" => ClientEvent::MessageUnreact(decode(data)?),
            "message:read" => ClientEvent::MessageRead(decode(data)?),
            "typing:start" => ClientEvent::TypingStart(decode(data)?),
            "typing:stop" => ClientEvent::TypingStop(decode(data)?),
            "conversation:focus" => ClientEvent::ConversationFocus(decode(data)?),
            "conversation:unfocus" => {
                decode::<Empty>(data)?;
                ClientEvent::ConversationUnfocus
            }
            "conversation:join" => ClientEvent::ConversationJoin(decode(data)?),
            "conversation:leave" => ClientEvent::ConversationLeave(decode(data)?),
            "sync" => ClientEvent::Sync(decode(data)?),
            "presence:query" => ClientEvent::PresenceQuery(decode(data)?),
            "presence:conversation" => ClientEvent::PresenceConversation(decode(data)?),
            "search" => ClientEvent::Search(decode(data)?),
            other => return Err(ChatError::invalid(format!("unknown event {other:?}"))),
        })
    }

    /// The event's wire name.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::AuthRefresh(_) => "auth:refresh",
            ClientEvent::MessageSend(_) => "message:send",
            ClientEvent::MessageEdit(_) => "message:edit",
            ClientEvent::MessageDelete(_) => "message:delete",
            ClientEvent::MessageReact(_) => "message:react",
            ClientEvent::MessageUnreact(_) => "message:unreact",
            ClientEvent::MessageRead(_) => "message:read",
            ClientEvent::TypingStart(_) => "typing:start",
            ClientEvent::TypingStop(_) => "typing:stop",
            ClientEvent::ConversationFocus(_) => "conversation:focus",
            ClientEvent::ConversationUnfocus => "conversation:unfocus",
            ClientEvent::ConversationJoin(_) => "conversation:join",
            ClientEvent::ConversationLeave(_) => "conversation:leave",
            ClientEvent::Sync(_) => "sync",
            ClientEvent::PresenceQuery(_) => "presence:query",
            ClientEvent::PresenceConversation(_) => "presence:conversation",
            ClientEvent::Search(_) => "search",
        }
    }
}

/// Decodes an event payload; a missing (`null`) payload reads as `{}`. Only an object is a
/// payload: serde would otherwise read a struct from a JSON array, field by position.
fn decode<T: DeserializeOwned>(data: Value) -> Result<T, ChatError> {
    let data = match data {
        Value::Null => Value::Object(Map::new()),
        Value::Object(_) => data,
        _ => return Err(ChatError::invalid("invalid payload: expected an object")),
    };
    serde_json::from_value(data).map_err(|err| ChatError::invalid(format!("invalid payload: {err}")))
}

/// Runs client event `event` for `user`: decodes `data`, calls the core, and returns what
/// the success ack carries. Unknown events are `invalid`. Accounts for the outcome
/// ([`record`]).
pub async fn dispatch(
    chat: &Chat,
    user: &User,
    event: &str,
    data: Value,
    connection: &Link,
    credentials: &Credentials<'_>,
) -> Result<Done, ChatError> {
    let result = match ClientEvent::decode(event, data) {
        Ok(decoded) => apply(chat, user, decoded, connection, credentials).await,
        Err(err) => Err(err),
    };
    record(Some(event), &result);
    result
}

/// Accounts for a client event's outcome, once per event answered: counts the event in
/// `chatd_events_total` (unknown names as `unknown`) and logs its outcome at debug (never
/// the payload), when its name could be read; a failure goes to [`rejected`].
pub fn record<T>(event: Option<&str>, result: &Result<T, ChatError>) {
    if let Some(event) = event {
        let label = event_label(event);
        telemetry::event_received(label);
        tracing::debug!(
            event = label,
            outcome = result.as_ref().map_or_else(ChatError::code, |_| "ok"),
            "event"
        );
    }
    if let Err(err) = result {
        rejected(event, err);
    }
}

/// The one place the realtime transports count and log the errors they answer (acks,
/// `error` pushes; `event` is the event answered, when known): counted in
/// `chatd_rejected_total`, and an internal error's cause logged. Encoding the answer
/// ([`ack`], [`error_body`]) is pure.
pub fn rejected(event: Option<&str>, err: &ChatError) {
    telemetry::rejected(err.code());
    if let ChatError::Internal(source) = err {
        tracing::error!(error = %source, event, "internal error");
    }
}

/// What a successful event answers besides `ok: true`: the ack's other fields, typed, so an
/// ack is serialized once, straight from the message it carries.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Done {
    /// `{}`.
    Nothing {},
    /// `{message}`: `message:send`, `message:edit`, `message:delete`, `message:react`,
    /// `message:unreact`.
    Message {
        /// The message as stored.
        message: Box<Message>,
    },
    /// `{last_read_seq}`: `message:read`.
    Read {
        /// The caller's read marker now.
        last_read_seq: i64,
    },
    /// `{expires_at}`: `auth:refresh`.
    Refreshed {
        /// When the connection's session now ends.
        expires_at: Timestamp,
    },
    /// `{messages, has_more, conversations}`: `sync`.
    Synced(SyncPage),
    /// `{online, focused}`: `presence:conversation`.
    Here(ConversationPresence),
    /// `{results, next_cursor}`: `search`.
    Found(SearchResults),
    /// `{presence}`: `presence:query`.
    Presence {
        /// Each asked user's presence.
        presence: BTreeMap<String, PresenceInfo>,
    },
}

/// An event's ack as sent: `{ok:true, …fields}` or `{ok:false, error:{code,message}}`.
#[derive(Debug, Serialize)]
pub struct Ack {
    ok: bool,
    #[serde(flatten)]
    done: Option<Done>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// Runs a decoded event for `user` and returns what its success ack carries.
pub async fn apply(
    chat: &Chat,
    user: &User,
    event: ClientEvent,
    connection: &Link,
    credentials: &Credentials<'_>,
) -> Result<Done, ChatError> {
    chat.refuse_banned(user)?;
    Ok(match event {
        ClientEvent::AuthRefresh(req) => {
            let verified = credentials.auth.verify_session(&req.token);
            let expires_at = chat.refresh_session(user, credentials.lease, verified)?;
            let millis = i64::try_from(expires_at).unwrap_or(i64::MAX).saturating_mul(1000);
            Done::Refreshed { expires_at: Timestamp(millis) }
        }
        ClientEvent::MessageSend(req) => {
            Done::Message { message: Box::new(chat.send_message(user, req).await?.message) }
        }
        ClientEvent::MessageEdit(req) => {
            Done::Message { message: Box::new(chat.edit_message(user, req).await?) }
        }
        ClientEvent::MessageDelete(req) => {
            Done::Message { message: Box::new(chat.delete_message(user, &req.message_id).await?) }
        }
        ClientEvent::MessageReact(req) => {
            Done::Message { message: Box::new(chat.react(user, &req.message_id, &req.emoji).await?) }
        }
        ClientEvent::MessageUnreact(req) => {
            Done::Message { message: Box::new(chat.unreact(user, &req.message_id, &req.emoji).await?) }
        }
        ClientEvent::MessageRead(req) => Done::Read { last_read_seq: chat.mark_read(user, req).await? },
        ClientEvent::TypingStart(req) => {
            chat.typing_start(user, &req.conversation_id).await?;
            Done::Nothing {}
        }
        ClientEvent::TypingStop(req) => {
            chat.typing_stop(user, &req.conversation_id).await?;
            Done::Nothing {}
        }
        ClientEvent::ConversationFocus(req) => {
            chat.focus(user, &req.conversation_id).await?;
            Done::Nothing {}
        }
        ClientEvent::ConversationUnfocus => {
            chat.unfocus(user)?;
            Done::Nothing {}
        }
        ClientEvent::ConversationJoin(req) => {
            chat.join(user, &req.conversation_id).await?;
            connection.subscribe(&req.conversation_id);
            chat.bus_settled().await;
            // A removal committed between the check and the subscription published its
            // unsubscribe too early to apply: check again now that the subscription exists.
            if let Err(err) = chat.join(user, &req.conversation_id).await {
                connection.unsubscribe(&req.conversation_id);
                return Err(err);
            }
            Done::Nothing {}
        }
        ClientEvent::ConversationLeave(req) => {
            chat.leave(user, &req.conversation_id)?;
            connection.unsubscribe(&req.conversation_id);
            Done::Nothing {}
        }
        ClientEvent::Sync(req) => Done::Synced(chat.sync(user, req).await?),
        ClientEvent::PresenceQuery(req) => Done::Presence { presence: chat.presence(user, req).await? },
        ClientEvent::PresenceConversation(req) => {
            Done::Here(chat.conversation_presence(user, &req.conversation_id).await?)
        }
        ClientEvent::Search(req) => Done::Found(chat.search_messages(user, req).await?),
    })
}

/// The ack for a result.
pub fn ack(result: Result<Done, ChatError>) -> Ack {
    match result {
        Ok(done) => Ack { ok: true, done: Some(done), error: None },
        Err(err) => Ack { ok: false, done: None, error: Some(error_body(None, &err)) },
    }
}

/// `{code, message}`, plus the event name when it goes out as an `error` event (a failure
/// the client asked no ack for). Pure: the transports account for the error ([`rejected`]).
pub fn error_body(event: Option<&str>, err: &ChatError) -> Value {
    let mut body = json!({ "code": err.code(), "message": err.to_string() });
    if let Some(event) = event {
        body["event"] = json!(event);
    }
    body
}
