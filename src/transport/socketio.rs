//! Socket.IO v4 (Engine.IO v4, websocket + polling) via socketioxide: authenticates the
//! handshake, decodes each event into the core's request types, answers through the ack,
//! and turns bus messages into room emits. No chat rule lives here.
//!
//! Limits: the connect middleware runs the shared handshake checks ([`super::guard`]) and
//! the core's admission; the socket keeps its [`Permit`] and its token [`Lease`] (at expiry
//! it gets `auth:expired` and is disconnected). At shutdown, events already running finish
//! and are acked before every socket is disconnected (see [`InFlight`]).
//!
//! Rooms: `c:<conversation id>` (subscribers of a conversation), `u:<user id>` (every
//! connection of a user), `s:<socket id>` (one connection, for "everyone but the sender").

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderValue, Uri};
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::{Notify, broadcast};
use tracing::{Instrument, Span};

use crate::core::ChatError;
use crate::core::admission::Permit;
use crate::core::model::User;
use crate::core::ports::{Bus, Topic};
use crate::core::realtime::{Audience, BusMessage};
use crate::core::session::{Lease, LeaseEnd};
use crate::core::telemetry::{self, ConnectionMetrics, Disconnect, Transport};
use crate::core::validate;
use crate::server::MAX_PAYLOAD_BYTES;
use crate::state::AppState;
use crate::transport::dispatch::{self, Credentials, Subscriptions, dispatch, error_body};
use crate::transport::guard::check_handshake;

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

/// Counts Socket.IO events being handled, so a shutdown can wait for their acks.
#[derive(Default)]
pub struct InFlight {
    running: AtomicUsize,
    idle: Notify,
}

/// One running event; the count goes down when dropped.
struct Running(Arc<InFlight>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Resolves once no event is running (new ones are refused while draining).
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Builds the Socket.IO layer for the router and starts relaying bus messages to sockets.
/// Must be called inside a Tokio runtime.
pub fn layer(state: &AppState) -> (SocketIoLayer, SocketIo, Arc<InFlight>) {
    let in_flight = Arc::new(InFlight::default());
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_PAYLOAD_BYTES as u64)
        .ws_max_message_size(MAX_PAYLOAD_BYTES)
        .ws_max_frame_size(MAX_PAYLOAD_BYTES)
        // Each websocket keeps this buffer for life; tungstenite's 128 KiB default is most
        // of an idle connection's memory. Larger frames still arrive, in more reads.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        // Packets queued per socket; a broadcast finding it full is logged (see `apply`), and
        // the heartbeat closes a socket that stopped reading (no pong, or no room to ping).
        .max_buffer_size(state.config.connections.max_outbound_queue)
        // The plain-WebSocket keepalive settings: a ping every interval, closed when the
        // pong has not come back before the idle timeout.
        .ping_interval(state.config.ws.ping_interval)
        .ping_timeout(socketio_ping_timeout(&state.config.ws))
        .with_state(state.clone())
        .with_state(in_flight.clone())
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    tokio::spawn(relay(io.clone(), state.bus.clone(), state.bus.subscribe()));
    (layer, io, in_flight)
}

/// How long a Socket.IO client has to answer a ping: what is left of the idle timeout after
/// the ping interval (at least one second).
fn socketio_ping_timeout(ws: &crate::config::WsConfig) -> std::time::Duration {
    ws.idle_timeout.saturating_sub(ws.ping_interval).max(std::time::Duration::from_secs(1))
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

/// The socket's `connection` span (transport, id, user), which its handlers run in.
fn span_of(socket: &SocketRef) -> Span {
    socket.extensions.get::<Span>().unwrap_or_else(Span::none)
}

/// The metrics label of a Socket.IO disconnect reason.
fn disconnect_reason(reason: DisconnectReason) -> Disconnect {
    match reason {
        DisconnectReason::TransportClose | DisconnectReason::ClientNSDisconnect => Disconnect::ClientClosed,
        DisconnectReason::HeartbeatTimeout => Disconnect::PingTimeout,
        DisconnectReason::ClosingServer => Disconnect::ServerShutdown,
        DisconnectReason::ServerNSDisconnect => Disconnect::Kicked,
        DisconnectReason::PacketParsingError | DisconnectReason::MultipleHttpPollingError => {
            Disconnect::ProtocolError
        }
        DisconnectReason::TransportError => Disconnect::Error,
    }
}

/// Connect middleware: runs the handshake checks, verifies the JWT, refuses banned users
/// (`forbidden`), admits the connection and attaches the [`User`], its [`Permit`] and its
/// [`Lease`] to the socket (see [`admit`]).
/// A refusal is counted like every error answer.
async fn authenticate(
    socket: SocketRef,
    state: State<AppState>,
    auth: TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    let result = admit(socket, state, auth);
    if let Err(Refused(code)) = &result {
        telemetry::rejected(code);
    }
    result
}

/// Authenticates the handshake and sets the socket up: handlers, personal rooms, its user,
/// its `connection` span and its place in the connection metrics (which leaves them when
/// the socket is dropped, whichever way it ends).
fn admit(
    socket: SocketRef,
    State(state): State<AppState>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    check_handshake(&state, socket.req_parts()).map_err(|err| Refused(err.code()))?;
    let token = handshake_token(&socket, auth.ok()).ok_or(Refused("unauthorized"))?;
    let (mut user, expires_at) = state.authenticate(&token).map_err(|err| Refused(err.code()))?;
    let permit = state.admission.admit(&user.id).map_err(|refusal| Refused(refusal.socketio_code()))?;
    socket.extensions.insert(Arc::new(permit));
    socket.extensions.insert(Arc::new(Lease::new(expires_at)));
    user.connection = Some(socket.id.to_string());
    let span = tracing::info_span!("connection", transport = "socketio", id = %socket.id, user = %user.id);
    socket.extensions.insert(span);
    socket.extensions.insert(Arc::new(ConnectionMetrics::open(Transport::SocketIo)));
    // Handlers and personal rooms are in place before the client learns it is connected,
    // so an event sent right after `connect` is never dropped.
    register_events(&socket);
    socket.join(user_room(&user.id));
    socket.join(socket_room(&socket.id.to_string()));
    state.bus.watch(Topic::User(user.id.clone()));
    socket.extensions.insert(Watched(Arc::new(Mutex::new(Some(HashSet::new())))));
    socket.extensions.insert(user);
    socket.extensions.insert(Arc::new(AtomicU64::new(0)));
    socket.extensions.insert(MaxDepth(state.config.connections.max_json_depth));
    Ok(())
}

/// A connected socket: register it with the core, subscribe it, say `ready`.
async fn on_connect(socket: SocketRef, State(state): State<AppState>, Extension(user): Extension<User>) {
    let span = span_of(&socket);
    connected(socket, state, user).instrument(span).await;
}

async fn connected(socket: SocketRef, state: AppState, user: User) {
    tracing::debug!("connected");
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
                release(&socket);
                if let Err(err) = state.chat.disconnect(&user).await {
                    tracing::warn!(error = %err, user = %user.id, "cleanup after early close failed");
                }
            } else {
                watch_expiry(&socket);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, user = %user.id, "connect failed");
            forget(&socket, state.bus.as_ref(), &user.id);
            release(&socket);
            let _ = socket.emit("error", &error_body(None, &err));
            let _ = socket.disconnect();
        }
    }
}

/// Closes the socket when its token expires: `auth:expired` `{code, message}`, then a
/// server-side disconnect. Ends early when the socket disconnects (its lease is ended).
fn watch_expiry(socket: &SocketRef) {
    let Some(lease) = socket.extensions.get::<Arc<Lease>>() else { return };
    let socket = socket.clone();
    tokio::spawn(async move {
        if lease.wait().await == LeaseEnd::Expired {
            let _ =
                socket.emit("auth:expired", &json!({ "code": "token_expired", "message": "token expired" }));
            let _ = socket.disconnect();
        }
    });
}

/// Gives back the socket's admission place and stops its expiry timer; safe to repeat.
fn release(socket: &SocketRef) {
    if let Some(lease) = socket.extensions.get::<Arc<Lease>>() {
        lease.end();
    }
    socket.extensions.remove::<Arc<Permit>>();
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
         State(in_flight): State<Arc<InFlight>>,
         Depth(depth): Depth,
         TryData(data): TryData<Value>,
         AckRequested(wants_ack): AckRequested,
         Extension(lease): Extension<Arc<Lease>>,
         ack: AckSender| async move {
            let span = span_of(&socket);
            async move {
                // Counted before the draining check, so a shutdown that saw no event running
                // cannot miss one that started meanwhile.
                let _running = in_flight.enter();
                let result = match (depth, data) {
                    _ if state.is_draining() => Err(ChatError::Unavailable("draining: reconnect".into())),
                    (Err(err), _) => Err(err),
                    (Ok(()), Ok(data)) => {
                        let rooms = SocketRooms(&socket, state.bus.as_ref());
                        let credentials = Credentials { auth: &state.auth, lease: &lease };
                        dispatch(&state.chat, &user, &event, data, &rooms, &credentials).await
                    }
                    (Ok(()), Err(err)) => Err(ChatError::invalid(format!("unreadable payload: {err}"))),
                };
                respond(&socket, &event, wants_ack, ack, result);
            }
            .instrument(span)
            .await;
        },
    );
    socket.on_disconnect(
        |socket: SocketRef,
         State(state): State<AppState>,
         Extension(user): Extension<User>,
         reason: DisconnectReason| async move {
            release(&socket);
            let reason = disconnect_reason(reason);
            if let Some(metrics) = socket.extensions.get::<Arc<ConnectionMetrics>>() {
                metrics.closing(reason);
            }
            let span = span_of(&socket);
            async move {
                tracing::debug!(reason = reason.as_str(), "disconnected");
                forget(&socket, state.bus.as_ref(), &user.id);
                if let Err(err) = state.chat.disconnect(&user).await {
                    tracing::warn!(error = %err, "disconnect bookkeeping failed");
                }
            }
            .instrument(span)
            .await;
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

/// Whether the event's JSON is within `--max-json-depth` (the packet's `[event, data]`
/// array is one level more), checked on the raw text before it is parsed.
struct Depth(Result<(), ChatError>);

impl<A: Adapter> FromMessageParts<A> for Depth {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        value: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let Some(text) = value.as_str() else { return Ok(Depth(Ok(()))) };
        let max = socket.extensions.get::<MaxDepth>().map_or(usize::MAX, |MaxDepth(max)| max);
        Ok(Depth(validate::json_depth(text.as_bytes(), max, 1)))
    }
}

/// `--max-json-depth`, kept on each socket for the [`Depth`] extractor.
#[derive(Clone, Copy)]
struct MaxDepth(usize);

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
            let connections = target().map_or(0, |target| target.sockets().len());
            if connections == 0 {
                return;
            }
            let Some(target) = target() else { return };
            match target.emit(delivery.event.name(), &delivery.event).await {
                Ok(()) => telemetry::delivered(&delivery.event, connections),
                Err(socketioxide::BroadcastError::Socket(errors))
                    if errors.iter().any(|e| matches!(e, socketioxide::SocketError::InternalChannelFull)) =>
                {
                    // socketioxide does not say which socket was full; its heartbeat cuts
                    // a client that stopped reading, and the client repairs with `sync`.
                    tracing::warn!(
                        event = delivery.event.name(),
                        "a socket's outbound queue is full; event dropped for it"
                    );
                }
                Err(err) => tracing::debug!(error = %err, event = delivery.event.name(), "emit failed"),
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
