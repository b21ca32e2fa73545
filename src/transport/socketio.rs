//! Socket.IO v4 (Engine.IO v4, websocket + polling) via socketioxide: authenticates the
//! handshake, decodes each event into the core's request types, answers through the ack,
//! and turns bus messages into room emits. No chat rule lives here.
//!
//! Rooms: `c:<conversation id>` (subscribers of a conversation), `u:<user id>` (every
//! connection of a user), `s:<socket id>` (one connection, for "everyone but the sender").

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderValue, Uri};
use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use tokio::sync::broadcast;

use crate::core::ChatError;
use crate::core::model::User;
use crate::core::ports::{Bus, Topic};
use crate::core::realtime::{Audience, BusMessage};
use crate::server::MAX_PAYLOAD_BYTES;
use crate::state::AppState;
use crate::transport::dispatch::{self, Subscriptions, dispatch, error_body};

/// Where socketioxide serves (its default).
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Initial read buffer of a Socket.IO websocket.
const WS_READ_BUFFER_BYTES: usize = 1024;

fn conversation_room(id: &str) -> String {
    format!("c:{id}")
}

fn user_room(id: &str) -> String {
    format!("u:{id}")
}

fn socket_room(id: &str) -> String {
    format!("s:{id}")
}

/// The conversations a socket is subscribed to, kept beside its rooms so the node watches
/// each conversation's bus topic once per subscribed socket; `None` once the socket is gone.
#[derive(Clone, Default)]
struct Watched(Arc<Mutex<Option<HashSet<String>>>>);

impl Watched {
    fn of(socket: &SocketRef) -> Option<Watched> {
        socket.extensions.get::<Watched>()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<HashSet<String>>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// Subscribes a socket to a conversation (its room, and the node to its topic).
fn join_conversation(socket: &SocketRef, bus: &dyn Bus, conversation_id: &str) {
    let Some(watched) = Watched::of(socket) else { return };
    watched.with(|set| {
        let Some(set) = set.as_mut() else { return };
        socket.join(conversation_room(conversation_id));
        if set.insert(conversation_id.to_owned()) {
            bus.watch(Topic::Conversation(conversation_id.to_owned()));
        }
    });
}

/// Unsubscribes a socket from a conversation.
fn leave_conversation(socket: &SocketRef, bus: &dyn Bus, conversation_id: &str) {
    let Some(watched) = Watched::of(socket) else { return };
    watched.with(|set| {
        socket.leave(conversation_room(conversation_id));
        if set.as_mut().is_some_and(|set| set.remove(conversation_id)) {
            bus.unwatch(Topic::Conversation(conversation_id.to_owned()));
        }
    });
}

/// Undoes every watch of a socket that is gone; safe to call more than once.
fn forget(socket: &SocketRef, bus: &dyn Bus, user_id: &str) {
    let Some(watched) = Watched::of(socket) else { return };
    let Some(conversations) = watched.with(Option::take) else { return };
    for conversation_id in conversations {
        bus.unwatch(Topic::Conversation(conversation_id));
    }
    bus.unwatch(Topic::User(user_id.to_owned()));
}

/// Builds the Socket.IO layer for the router and starts relaying bus messages to sockets.
/// Must be called inside a Tokio runtime.
pub fn layer(state: &AppState) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_PAYLOAD_BYTES as u64)
        .ws_max_message_size(MAX_PAYLOAD_BYTES)
        .ws_max_frame_size(MAX_PAYLOAD_BYTES)
        // Each websocket keeps this buffer for life; tungstenite's 128 KiB default is most
        // of an idle connection's memory. Larger frames still arrive, in more reads.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .with_state(state.clone())
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    tokio::spawn(relay(io.clone(), state.bus.clone(), state.bus.subscribe()));
    (layer, io)
}

/// Copies a Socket.IO request's URI and header values out of the connection's read buffer.
/// socketioxide keeps each socket's handshake request for the socket's life, and hyper parses
/// the URI and header values as slices of the (16 KiB) buffer the request was read into: left
/// shared, every idle socket would pin a whole buffer. Other requests pass untouched.
pub async fn detach_handshake(mut request: Request) -> Request {
    if !request.uri().path().starts_with(SOCKET_IO_PATH) {
        return request;
    }
    for value in request.headers_mut().values_mut() {
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    if let Some(OriginalUri(original)) = request.extensions_mut().get_mut::<OriginalUri>()
        && let Ok(uri) = Uri::try_from(original.to_string())
    {
        *original = uri;
    }
    request
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

/// Connect middleware: verifies the JWT, refuses banned users (`forbidden`) and attaches the
/// [`User`] to the socket.
async fn authenticate(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    let token = handshake_token(&socket, auth.ok()).ok_or(Refused("unauthorized"))?;
    let (mut user, _) = state.authenticate(&token).map_err(|err| Refused(err.code()))?;
    user.connection = Some(socket.id.to_string());
    // Handlers and personal rooms are in place before the client learns it is connected,
    // so an event sent right after `connect` is never dropped.
    register_events(&socket);
    socket.join(user_room(&user.id));
    socket.join(socket_room(&socket.id.to_string()));
    state.bus.watch(Topic::User(user.id.clone()));
    socket.extensions.insert(Watched(Arc::new(Mutex::new(Some(HashSet::new())))));
    socket.extensions.insert(user);
    socket.extensions.insert(Arc::new(AtomicU64::new(0)));
    Ok(())
}

/// A connected socket: register it with the core, subscribe it, say `ready`.
async fn on_connect(socket: SocketRef, State(state): State<AppState>, Extension(user): Extension<User>) {
    match state.chat.connect(&user).await {
        Ok(ready) => {
            for conversation in &ready.conversations {
                join_conversation(&socket, state.bus.as_ref(), &conversation.id);
            }
            state.bus.settled().await;
            let sent = socket.emit("ready", &ready);
            // A socket that closed during the handshake never sees its disconnect handler
            // run: clean up here, or presence and rooms would keep it forever.
            if sent.is_err() || !socket.connected() {
                socket.leave_all();
                forget(&socket, state.bus.as_ref(), &user.id);
                if let Err(err) = state.chat.disconnect(&user).await {
                    tracing::warn!(error = %err, user = %user.id, "cleanup after early close failed");
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, user = %user.id, "connect failed");
            forget(&socket, state.bus.as_ref(), &user.id);
            let _ = socket.emit("error", &error_body(None, &err));
            let _ = socket.disconnect();
        }
    }
}

/// Registers the event handler and the disconnect handler. One fallback handler serves every
/// event (the dispatch table knows the names and refuses unknown ones): a handler per event
/// name would cost each socket a dozen boxed closures.
fn register_events(socket: &SocketRef) {
    socket.on_fallback(
        |socket: SocketRef,
         State(state): State<AppState>,
         Caller(user): Caller,
         Event(event): Event,
         TryData(data): TryData<Value>,
         AckRequested(wants_ack): AckRequested,
         ack: AckSender| async move {
            let result = match data {
                Ok(data) => {
                    let rooms = SocketRooms(&socket, state.bus.as_ref());
                    dispatch(&state.chat, &user, &event, data, &rooms).await
                }
                Err(err) => Err(ChatError::invalid(format!("unreadable payload: {err}"))),
            };
            respond(&socket, &event, wants_ack, ack, result);
        },
    );
    socket.on_disconnect(
        |socket: SocketRef, State(state): State<AppState>, Extension(user): Extension<User>| async move {
            forget(&socket, state.bus.as_ref(), &user.id);
            if let Err(err) = state.chat.disconnect(&user).await {
                tracing::warn!(error = %err, user = %user.id, "disconnect bookkeeping failed");
            }
        },
    );
}

/// A socket's conversation rooms.
struct SocketRooms<'a>(&'a SocketRef, &'a dyn Bus);

impl Subscriptions for SocketRooms<'_> {
    fn subscribe(&self, conversation_id: &str) {
        join_conversation(self.0, self.1, conversation_id);
    }

    fn unsubscribe(&self, conversation_id: &str) {
        leave_conversation(self.0, self.1, conversation_id);
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
async fn relay(io: SocketIo, bus: Arc<dyn Bus>, mut messages: broadcast::Receiver<Arc<BusMessage>>) {
    loop {
        match messages.recv().await {
            Ok(message) => apply(&io, bus.as_ref(), &message).await,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "socket.io relay fell behind; clients repair with sync");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Applies one bus message. Operators come from `io.of("/")`, which is gone once the server
/// closed Socket.IO at shutdown (then there is nobody to deliver to).
async fn apply(io: &SocketIo, bus: &dyn Bus, message: &BusMessage) {
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
            for socket in root().map(|root| root.to(user_room(user_id)).sockets()).unwrap_or_default() {
                join_conversation(&socket, bus, conversation_id);
            }
        }
        BusMessage::Unsubscribe { user_id, conversation_id } => {
            for socket in root().map(|root| root.to(user_room(user_id)).sockets()).unwrap_or_default() {
                leave_conversation(&socket, bus, conversation_id);
            }
        }
        BusMessage::Disconnect { user_id, .. } => {
            // The client sees the server's disconnect ("io server disconnect") and does not
            // reconnect by itself.
            if let Some(root) = root()
                && let Err(err) = root.to(user_room(user_id)).disconnect().await
            {
                tracing::debug!(error = %err, user = %user_id, "disconnecting a user's sockets failed");
            }
        }
        BusMessage::BanChanged { .. } => {}
        BusMessage::Gap => {
            // Socket.IO clients find the gap by seq on their next message and `sync`.
            tracing::warn!("the bus may have lost messages; socket.io clients repair with sync");
        }
    }
}
