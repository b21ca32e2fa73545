//! Socket.IO v4 (Engine.IO v4, websocket + polling) via socketioxide: authenticates the
//! handshake, decodes each event into the core's request types, answers through the ack,
//! and turns bus messages into room emits. No chat rule lives here.
//!
//! Rooms: `c:<conversation id>` (subscribers of a conversation), `u:<user id>` (every
//! connection of a user), `s:<socket id>` (one connection, for "everyone but the sender").

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use tokio::sync::broadcast;

use crate::core::ChatError;
use crate::core::model::User;
use crate::core::realtime::{Audience, BusMessage};
use crate::server::MAX_PAYLOAD_BYTES;
use crate::state::AppState;
use crate::transport::dispatch::{self, CLIENT_EVENTS, Subscriptions, dispatch, error_body};

fn conversation_room(id: &str) -> String {
    format!("c:{id}")
}

fn user_room(id: &str) -> String {
    format!("u:{id}")
}

fn socket_room(id: &str) -> String {
    format!("s:{id}")
}

/// Builds the Socket.IO layer for the router and starts relaying bus messages to sockets.
/// Must be called inside a Tokio runtime.
pub fn layer(state: &AppState) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_PAYLOAD_BYTES as u64)
        .ws_max_message_size(MAX_PAYLOAD_BYTES)
        .ws_max_frame_size(MAX_PAYLOAD_BYTES)
        .with_state(state.clone())
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    tokio::spawn(relay(io.clone(), state.bus.subscribe()));
    (layer, io)
}

/// The handshake's `auth` object (other fields are the client's business).
#[derive(Deserialize)]
struct HandshakeAuth {
    #[serde(default)]
    token: Option<String>,
}

/// A refused handshake; the client sees `connect_error` with `err.message` = the code.
#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The token from `auth: {token}`, else `?token=`, else `Authorization: Bearer`.
fn handshake_token(socket: &Socket, auth: Option<HandshakeAuth>) -> Option<String> {
    if let Some(token) = auth.and_then(|a| a.token).filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let parts = socket.req_parts();
    let from_query = parts.uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(|t| t.to_owned())
            .filter(|t| !t.is_empty())
    });
    from_query.or_else(|| super::http::bearer_token(parts).map(str::to_owned))
}

/// Connect middleware: verifies the JWT and attaches the [`User`] to the socket.
async fn authenticate(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    let token = handshake_token(&socket, auth.ok()).ok_or(Refused("unauthorized"))?;
    let mut user = state.auth.verify(&token).map_err(|err| Refused(err.code()))?;
    user.connection = Some(socket.id.to_string());
    // Handlers and personal rooms are in place before the client learns it is connected,
    // so an event sent right after `connect` is never dropped.
    register_events(&socket);
    socket.join(user_room(&user.id));
    socket.join(socket_room(&socket.id.to_string()));
    socket.extensions.insert(user);
    socket.extensions.insert(Arc::new(AtomicU64::new(0)));
    Ok(())
}

/// A connected socket: register it with the core, subscribe it, say `ready`.
async fn on_connect(socket: SocketRef, State(state): State<AppState>, Extension(user): Extension<User>) {
    match state.chat.connect(&user).await {
        Ok(ready) => {
            let rooms: Vec<String> = ready.conversations.iter().map(|c| conversation_room(&c.id)).collect();
            socket.join(rooms);
            let sent = socket.emit("ready", &ready);
            // A socket that closed during the handshake never sees its disconnect handler
            // run: clean up here, or presence and rooms would keep it forever.
            if sent.is_err() || !socket.connected() {
                socket.leave_all();
                if let Err(err) = state.chat.disconnect(&user).await {
                    tracing::warn!(error = %err, user = %user.id, "cleanup after early close failed");
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, user = %user.id, "connect failed");
            let _ = socket.emit("error", &error_body(None, &err));
            let _ = socket.disconnect();
        }
    }
}

/// Registers every client event and the disconnect handler.
fn register_events(socket: &SocketRef) {
    for event in CLIENT_EVENTS {
        socket.on(
            event,
            move |socket: SocketRef,
                  State(state): State<AppState>,
                  Caller(user): Caller,
                  TryData(data): TryData<Value>,
                  AckRequested(wants_ack): AckRequested,
                  ack: AckSender| async move {
                let result = match data {
                    Ok(data) => dispatch(&state.chat, &user, event, data, &SocketRooms(&socket)).await,
                    Err(err) => Err(ChatError::invalid(format!("unreadable payload: {err}"))),
                };
                respond(&socket, event, wants_ack, ack, result);
            },
        );
    }
    socket.on_disconnect(|State(state): State<AppState>, Extension(user): Extension<User>| async move {
        if let Err(err) = state.chat.disconnect(&user).await {
            tracing::warn!(error = %err, user = %user.id, "disconnect bookkeeping failed");
        }
    });
}

/// A socket's conversation rooms.
struct SocketRooms<'a>(&'a SocketRef);

impl Subscriptions for SocketRooms<'_> {
    fn subscribe(&self, conversation_id: &str) {
        self.0.join(conversation_room(conversation_id));
    }

    fn unsubscribe(&self, conversation_id: &str) {
        self.0.leave(conversation_room(conversation_id));
    }
}

/// The socket's user, stamped with this event's arrival position on the socket. Handlers run
/// concurrently, but extractors run in the order events arrive, so the stamp orders them.
struct Caller(User);

/// The socket has no authenticated user (cannot happen after the connect middleware).
#[derive(Debug)]
struct NoCaller;

impl std::fmt::Display for NoCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("socket without an authenticated user")
    }
}

impl std::error::Error for NoCaller {}

impl<A: Adapter> FromMessageParts<A> for Caller {
    type Error = NoCaller;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, NoCaller> {
        let mut user = socket.extensions.get::<User>().ok_or(NoCaller)?;
        let arrivals = socket.extensions.get::<Arc<AtomicU64>>().ok_or(NoCaller)?;
        user.arrival = arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Caller(user))
    }
}

/// Whether the client asked for an ack (socketioxide's `AckSender` does not say).
struct AckRequested(bool);

impl<A: Adapter> FromMessageParts<A> for AckRequested {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(AckRequested(ack_id.is_some()))
    }
}

/// Answers through the ack; a failure without an ack callback becomes an `error` event.
fn respond(
    socket: &SocketRef,
    event: &str,
    wants_ack: bool,
    ack: AckSender,
    result: Result<Value, ChatError>,
) {
    let sent = match result {
        Err(err) if !wants_ack => socket.emit("error", &error_body(Some(event), &err)),
        result => ack.send(&dispatch::ack(result)),
    };
    if let Err(err) = sent {
        tracing::debug!(error = %err, event, "could not answer");
    }
}

/// Applies bus messages to sockets, in order, until the bus closes.
async fn relay(io: SocketIo, mut messages: broadcast::Receiver<Arc<BusMessage>>) {
    loop {
        match messages.recv().await {
            Ok(message) => apply(&io, &message).await,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "socket.io relay fell behind; clients repair with sync");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Applies one bus message. Operators come from `io.of("/")`, which is gone once the server
/// closed Socket.IO at shutdown (then there is nobody to deliver to).
async fn apply(io: &SocketIo, message: &BusMessage) {
    let root = || io.of("/");
    match message {
        BusMessage::Deliver(delivery) => {
            let rooms: Vec<String> = match &delivery.to {
                Audience::Conversation(id) => vec![conversation_room(id)],
                Audience::Users(ids) => ids.iter().map(|id| user_room(id)).collect(),
            };
            let target = || {
                let mut target = root()?.to(rooms.clone());
                if let Some(connection) = &delivery.except_connection {
                    target = target.except(socket_room(connection));
                }
                if let Some(user) = &delivery.except_user {
                    target = target.except(user_room(user));
                }
                Some(target)
            };
            // Most deliveries of a busy node have nobody listening here (offline members,
            // REST-only users): a room lookup is far cheaper than encoding the event.
            if target().is_none_or(|target| target.sockets().is_empty()) {
                return;
            }
            let Some(target) = target() else { return };
            if let Err(err) = target.emit(delivery.event.name(), &delivery.event).await {
                tracing::debug!(error = %err, event = delivery.event.name(), "emit failed");
            }
        }
        BusMessage::Subscribe { user_id, conversation_id } => {
            if let Some(root) = root() {
                let _ = root.to(user_room(user_id)).join(conversation_room(conversation_id)).await;
            }
        }
        BusMessage::Unsubscribe { user_id, conversation_id } => {
            if let Some(root) = root() {
                let _ = root.to(user_room(user_id)).leave(conversation_room(conversation_id)).await;
            }
        }
    }
}
