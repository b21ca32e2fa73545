//! Socket.IO v4 (Engine.IO v4, websocket + polling) via socketioxide: authenticates the
//! handshake, decodes each event into the core's request types and answers through the
//! ack. Framing only: every socket is a connection of the realtime [`Hub`] (its
//! subscriptions, the bus relay, drain), written to through [`SocketSink`]. socketioxide's
//! own rooms are not used. No chat rule lives here.
//!
//! Limits: the connect middleware runs the shared handshake checks ([`super::guard`]) and
//! the core's admission; the socket keeps its [`Permit`] and its token [`Lease`] (at expiry
//! it gets `auth:expired` and is disconnected). At shutdown, events already running finish
//! and are acked before every socket is disconnected (the hub's in-flight count).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use tracing::{Instrument, Span};

use crate::core::ChatError;
use crate::core::admission::{Permit, Refusal};
use crate::core::lease::Lease;
use crate::core::model::User;
use crate::core::telemetry::{self, ConnectionMetrics, Disconnect, Transport};
use crate::core::time::unix_now;
use crate::core::validate;
use crate::hub::{Close, Hub, Link, Outgoing, Sink};
use crate::state::AppState;
use crate::transport::MAX_PAYLOAD_BYTES;
use crate::transport::dispatch::{self, Credentials, dispatch, error_body};
use crate::transport::handshake::check_handshake;
use crate::transport::http::extract::request_token;

/// Where socketioxide serves (its default).
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Initial read buffer of a Socket.IO websocket.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// How the hub writes to a socket: emits the event's shared JSON payload (encoded once for
/// every recipient); socketioxide's writer sends whatever is queued per socket with one flush.
///
/// A socket whose queue (`--max-outbound-queue` packets) was found full has lost an event:
/// it gets nothing more and is disconnected as soon as its queue has room for the disconnect
/// packet (socketioxide cannot close a socket with a full queue), at its next event or
/// keepalive round, like a plain-WebSocket slow consumer (the client reconnects and syncs).
struct SocketSink {
    socket: SocketRef,
    overflowed: AtomicBool,
    /// The socket's token lease (also in its [`SocketConn`]), checked every second.
    lease: Arc<Lease>,
}

impl SocketSink {
    /// Disconnects an overflowed socket if its queue has room now.
    fn cut_if_overflowed(&self) -> bool {
        if !self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        if self.socket.clone().disconnect().is_ok() {
            tracing::info!(socket = %self.socket.id, "slow consumer disconnected");
        }
        true
    }
}

impl Sink for SocketSink {
    fn send(&self, event: &Arc<Outgoing>) -> bool {
        let Some(payload) = event.payload() else { return false };
        if self.cut_if_overflowed() {
            return false;
        }
        match self.socket.emit(event.name(), payload) {
            Ok(()) => true,
            Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
                tracing::debug!(event = event.name(), socket = %self.socket.id, "outbound queue full; event dropped");
                self.overflowed.store(true, Ordering::Relaxed);
                false
            }
            Err(err) => {
                tracing::debug!(error = %err, event = event.name(), "emit failed");
                false
            }
        }
    }

    fn keepalive(&self) {
        self.cut_if_overflowed();
    }

    /// At token expiry: `auth:expired` `{code, message}`, then a server-side disconnect
    /// (the lease is ended first, so this happens once).
    fn tick(&self) {
        if self.lease.expired(unix_now()) {
            self.lease.end();
            let expired = json!({ "code": "token_expired", "message": "token expired" });
            let _ = self.socket.emit("auth:expired", &expired);
            let _ = self.socket.clone().disconnect();
        }
    }

    fn close(&self, reason: Close) {
        match reason {
            // Running events finish and are answered first: the server disconnects every
            // socket once the hub has none in flight (see `server::serve`).
            Close::Restart => {}
            // The client sees a server disconnect ("io server disconnect") and does not
            // reconnect by itself.
            Close::Admin | Close::Banned | Close::Resync => {
                let _ = self.socket.clone().disconnect();
            }
        }
    }
}

/// Builds the Socket.IO layer for the router; its sockets are connections of `hub`.
pub fn layer(state: &AppState, hub: &Arc<Hub>) -> (SocketIoLayer, SocketIo) {
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
        .with_state(hub.clone())
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    (layer, io)
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
    request_token(socket.req_parts())
}

/// Everything chatd keeps per socket, in one extension: one allocation and one entry in the
/// socket's extension map instead of one each (it is most of an idle socket's own memory).
struct SocketConn {
    /// The authenticated user, `connection` set to the hub link's name.
    user: User,
    /// The socket's place in the hub.
    link: Link,
    /// The token's expiry, moved by `auth:refresh`.
    lease: Arc<Lease>,
    /// The socket's place in the connection caps, given back at disconnect.
    permit: Mutex<Option<Permit>>,
    /// The `connection` span (transport, id, user) its handlers run in.
    span: Span,
    /// Its place in the connection metrics (left when dropped).
    metrics: ConnectionMetrics,
    /// Events received so far, to stamp each with its arrival position.
    arrivals: AtomicU64,
    /// `--max-json-depth`.
    max_depth: usize,
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
/// [`Lease`] to the socket (see [`connect_socket`]).
/// A refusal is counted like every error answer.
async fn authenticate(
    socket: SocketRef,
    state: State<AppState>,
    hub: State<Arc<Hub>>,
    auth: TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    let result = connect_socket(socket, state, hub, auth);
    if let Err(Refused(code)) = &result {
        telemetry::rejected(code);
    }
    result
}

/// The `connect_error` message of a refused connection: `server_full` for a full node (as
/// the contract names it), else the error code.
fn connect_error_code(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::NodeFull => "server_full",
        Refusal::UserFull => ChatError::from(refusal).code(),
    }
}

/// Authenticates the handshake and sets the socket up: handlers, its place in the hub, its
/// user, its `connection` span and its place in the connection metrics (which leaves them
/// when the socket is dropped, whichever way it ends).
fn connect_socket(
    socket: SocketRef,
    State(state): State<AppState>,
    State(hub): State<Arc<Hub>>,
    TryData(auth): TryData<HandshakeAuth>,
) -> Result<(), Refused> {
    check_handshake(&state, socket.req_parts()).map_err(|err| Refused(err.code()))?;
    let token = handshake_token(&socket, auth.ok()).ok_or(Refused("unauthorized"))?;
    let (mut user, expires_at) = state.authenticate(&token).map_err(|err| Refused(err.code()))?;
    let permit = state.admission.admit(&user.id).map_err(|refusal| Refused(connect_error_code(refusal)))?;
    // Handlers and the hub registration are in place before the client learns it is
    // connected, so neither an event it sends nor one addressed to it is missed.
    let lease = Arc::new(Lease::new(expires_at));
    let sink =
        SocketSink { socket: socket.clone(), overflowed: AtomicBool::new(false), lease: lease.clone() };
    let link = hub.register(Transport::SocketIo, &user.id, true, Arc::new(sink));
    user.connection = Some(link.name().to_owned());
    let span = tracing::info_span!("connection", transport = "socketio", id = %link.name(), user = %user.id);
    socket.extensions.insert(Arc::new(SocketConn {
        user,
        link,
        lease,
        permit: Mutex::new(Some(permit)),
        span,
        metrics: ConnectionMetrics::open(Transport::SocketIo),
        arrivals: AtomicU64::new(0),
        max_depth: state.config.connections.max_json_depth,
    }));
    register_events(&socket);
    Ok(())
}

/// A connected socket: open it in the hub (subscriptions, presence), say `ready`.
async fn on_connect(socket: SocketRef, Extension(conn): Extension<Arc<SocketConn>>) {
    let span = conn.span.clone();
    connected(socket, conn).instrument(span).await;
}

async fn connected(socket: SocketRef, conn: Arc<SocketConn>) {
    tracing::debug!("connected");
    let (hub, user) = (conn.link.hub(), &conn.user);
    match hub.open(&conn.link, user).await {
        Ok(ready) => {
            let sent = socket.emit("ready", &ready);
            // A socket that closed during the handshake never sees its disconnect handler
            // run: clean up here, or presence and the hub would keep it forever.
            if sent.is_err() || !socket.connected() {
                release(&conn);
                hub.close(&conn.link, user, true).await;
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, user = %user.id, "connect failed");
            hub.remove(&conn.link);
            release(&conn);
            dispatch::rejected(None, &err);
            let _ = socket.emit("error", &error_body(None, &err));
            let _ = socket.disconnect();
        }
    }
}

/// Gives back the socket's admission place and ends its lease; safe to repeat.
fn release(conn: &SocketConn) {
    conn.lease.end();
    conn.permit.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
}

/// Registers the event handler and the disconnect handler. One fallback handler serves every
/// event (the dispatch table knows the names and refuses unknown ones): a handler per event
/// name would cost each socket a dozen boxed closures.
fn register_events(socket: &SocketRef) {
    socket.on_fallback(
        |socket: SocketRef,
         State(state): State<AppState>,
         Caller(conn, user): Caller,
         Event(event): Event,
         Depth(depth): Depth,
         TryData(data): TryData<Value>,
         AckRequested(wants_ack): AckRequested,
         ack: AckSender| async move {
            let span = conn.span.clone();
            async move {
                // Counted before the draining check, so a shutdown that saw no event running
                // cannot miss one that started meanwhile.
                let _running = conn.link.hub().in_flight().enter();
                let result = match readable(state.is_draining(), depth, data) {
                    Ok(data) => {
                        let credentials = Credentials { auth: &state.auth, lease: &conn.lease };
                        dispatch(&state.chat, &user, &event, data, &conn.link, &credentials).await
                    }
                    Err(err) => {
                        dispatch::rejected(Some(&event), &err);
                        Err(err)
                    }
                };
                respond(&socket, &event, wants_ack, ack, result);
            }
            .instrument(span)
            .await;
        },
    );
    socket.on_disconnect(
        |Extension(conn): Extension<Arc<SocketConn>>, reason: DisconnectReason| async move {
            release(&conn);
            let reason = disconnect_reason(reason);
            conn.metrics.closing(reason);
            let span = conn.span.clone();
            async move {
                tracing::debug!(reason = reason.as_str(), "disconnected");
                conn.link.hub().close(&conn.link, &conn.user, true).await;
            }
            .instrument(span)
            .await;
        },
    );
}

/// An event's payload, unless the event is refused before it is dispatched: the node is
/// draining, the JSON nests too deep, or the payload is unreadable.
fn readable(
    draining: bool,
    depth: Result<(), ChatError>,
    data: Result<Value, impl std::fmt::Display>,
) -> Result<Value, ChatError> {
    if draining {
        return Err(ChatError::Unavailable("draining: reconnect".into()));
    }
    depth?;
    data.map_err(|err| ChatError::invalid(format!("unreadable payload: {err}")))
}

/// The socket's state and its user, stamped with this event's arrival position on the
/// socket. Handlers run concurrently, but extractors run in the order events arrive, so the
/// stamp orders them.
struct Caller(Arc<SocketConn>, User);

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
        let conn = socket.extensions.get::<Arc<SocketConn>>().ok_or(NoCaller)?;
        let mut user = conn.user.clone();
        user.arrival = conn.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Caller(conn, user))
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
        let max = socket.extensions.get::<Arc<SocketConn>>().map_or(usize::MAX, |conn| conn.max_depth);
        Ok(Depth(validate::json_depth(text.as_bytes(), max, 1)))
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
    result: Result<dispatch::Done, ChatError>,
) {
    let sent = match result {
        Err(err) if !wants_ack => socket.emit("error", &error_body(Some(event), &err)),
        result => ack.send(&dispatch::ack(result)),
    };
    if let Err(err) = sent {
        tracing::debug!(error = %err, event, "could not answer");
    }
}
