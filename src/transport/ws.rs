//! Plain WebSocket at `GET /ws`, with JSON text frames: the client sends
//! `{"id":7,"event":"message:send","data":{…}}` and gets `{"id":7,"ack":{ok,…}}`; the server
//! pushes `{"event":"message:new","data":{…}}`. Same event vocabulary and dispatch as
//! Socket.IO ([`super::dispatch`]); this module only frames bytes: subscriptions, the bus
//! relay and the connection lifecycle are the [`Hub`]'s.
//!
//! Per connection there is one task and a byte-bounded outbox (the connection's [`Sink`]):
//! the hub queues each event's shared, pre-encoded frame; the task takes everything queued
//! and writes it with one flush, so frames queued while it was busy leave in one write. A client that lets more than `max_queued_bytes` or
//! `--max-outbound-queue` frames pile up is cut off (close 1008) instead of buffered. Events of one connection run one at a time, in the
//! order they arrived, so a client's sends are committed in the order it sent them.
//!
//! The hub's keepalive round pings every connection each `ping_interval` and closes those
//! silent for `idle_timeout` (1001). Each connection closes itself when its token's lease expires
//! (1008 `token_expired`; `auth:refresh` extends it). At shutdown every connection finishes
//! the event it is running, sends its ack, and closes with 1012 (service restart).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::MAX_PAYLOAD_BYTES;
use super::dispatch::{self, Credentials};
use super::guard::check_handshake;
use super::http::error::ApiError;
use super::http::extract::request_token;
use crate::core::ChatError;
use crate::core::admission::Permit;
use crate::core::lease::{Lease, LeaseEnd};
use crate::core::model::User;
use crate::core::telemetry::{self, ConnectionMetrics, Disconnect, Transport};
use crate::core::validate;
use crate::hub::{Close, Hub, Link, Outgoing, Sink};
use crate::state::AppState;

/// Bytes read from the socket at a time. Small, because every idle connection keeps one.
const READ_BUFFER_BYTES: usize = 1024;

/// Bytes of frames the WebSocket collects before it writes them to the socket: the frames
/// queued for a connection go out in one write per flush (its `message:new` and
/// `notification` together) instead of one write each. A connection keeps the buffer's
/// high-water mark once it had that much to send at once; idle ones keep almost nothing.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// How long a closing handshake may take before the connection is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `/ws` route over this node's realtime hub.
pub fn router(hub: Arc<Hub>) -> Router<AppState> {
    Router::new().route(
        "/ws",
        get(move |state: State<AppState>, request: Request| upgrade(state, hub.clone(), request)),
    )
}

/// Checks the handshake, authenticates, admits, then upgrades. Every refusal comes before
/// the upgrade, with the usual `{error:{code,message}}` body: 503 draining or node full,
/// 403 origin or a banned user, 429 handshake rate or the user's connection cap, 401 token; a non-WebSocket
/// request gets 400.
async fn upgrade(State(state): State<AppState>, hub: Arc<Hub>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(err) = check_handshake(&state, &parts) {
        return ApiError(err).into_response();
    }
    let token = request_token(&parts);
    let Some(token) = token else {
        return ApiError(ChatError::Unauthorized("missing token (?token= or Authorization: Bearer)".into()))
            .into_response();
    };
    let (user, expires_at) = match state.authenticate(&token) {
        Ok(verified) => verified,
        Err(err) => return ApiError(err).into_response(),
    };
    let permit = match state.admission.admit(&user.id) {
        Ok(permit) => permit,
        Err(refusal) => return ApiError(refusal.into()).into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError(ChatError::invalid(rejection.body_text())).into_response();
        }
    };
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_PAYLOAD_BYTES)
        .max_frame_size(MAX_PAYLOAD_BYTES)
        .on_upgrade(move |socket| serve_connection(socket, hub, state, user, Lease::new(expires_at), permit))
}

/// A server push: `{"event": name, "data": payload}`.
#[derive(Serialize)]
struct Push<'a, T: Serialize> {
    event: &'a str,
    data: &'a T,
}

fn encode(value: &impl Serialize) -> Result<Message, serde_json::Error> {
    Ok(Message::Text(Utf8Bytes::from(serde_json::to_string(value)?)))
}

/// Milliseconds since the first call (the clock of `last_heard`).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One open WebSocket: its outbox and the signals its task waits on.
struct Connection {
    max_queued_bytes: usize,
    max_queued_frames: usize,
    idle_timeout_ms: u64,
    /// Shutting down: finish the running event, flush, close with 1012.
    draining: AtomicBool,
    /// [`now_ms`] when the client last sent anything (a pong included).
    last_heard: AtomicU64,
    outbox: Mutex<Outbox>,
    /// Frames were queued.
    wake: Notify,
    /// The connection must end now (see [`Outbox::close`]).
    cut: Notify,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Message>,
    bytes: usize,
    /// Set once: the close frame to send before dropping the connection.
    close: Option<CloseFrame>,
}

impl Connection {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame; cuts the connection off when the client has fallen too far behind.
    /// Returns whether the frame was queued.
    fn push(&self, frame: Message) -> bool {
        let size = frame_len(&frame);
        {
            let mut outbox = self.outbox();
            if outbox.close.is_some() {
                return false;
            }
            // The bound is on the backlog: one frame larger than the bound (a big `sync`
            // page) still goes to a client that has read everything before it.
            let over_bytes = outbox.bytes > 0 && outbox.bytes + size > self.max_queued_bytes;
            if over_bytes || outbox.frames.len() >= self.max_queued_frames {
                drop(outbox);
                tracing::info!("slow consumer disconnected");
                self.close(close_code::POLICY, "slow consumer: outbound queue full");
                return false;
            }
            outbox.bytes += size;
            outbox.frames.push_back(frame);
        }
        self.wake.notify_one();
        true
    }

    fn push_json(&self, value: &impl Serialize) {
        match encode(value) {
            Ok(frame) => {
                self.push(frame);
            }
            Err(err) => tracing::error!(error = %err, "could not encode a frame"),
        }
    }

    /// Ends the connection: its task stops whatever it is doing, sends `code`/`reason`
    /// (best effort) and drops the socket. The first close wins.
    fn close(&self, code: u16, reason: &'static str) {
        let mut outbox = self.outbox();
        if outbox.close.is_none() {
            outbox.close = Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) });
            outbox.frames = VecDeque::new();
            outbox.bytes = 0;
            drop(outbox);
            self.cut.notify_one();
        }
    }

    /// Takes every queued frame; the outbox keeps no memory while idle.
    fn take_frames(&self) -> VecDeque<Message> {
        let mut outbox = self.outbox();
        outbox.bytes = 0;
        std::mem::take(&mut outbox.frames)
    }

    /// Queues `frame` ahead of everything else (for `ready`, which must come first).
    fn push_first(&self, frame: Message) {
        let mut outbox = self.outbox();
        if outbox.close.is_none() {
            outbox.bytes += frame_len(&frame);
            outbox.frames.push_front(frame);
            drop(outbox);
            self.wake.notify_one();
        }
    }

    fn close_frame(&self) -> Option<CloseFrame> {
        self.outbox().close.clone()
    }
}

impl Sink for Connection {
    fn send(&self, event: &Arc<Outgoing>) -> bool {
        event.ws_frame().is_some_and(|frame| self.push(Message::Text(frame)))
    }

    fn close(&self, reason: Close) {
        match reason {
            Close::Restart => {
                self.draining.store(true, Ordering::SeqCst);
                self.wake.notify_one();
            }
            Close::Admin => Connection::close(self, close_code::POLICY, "disconnected by an operator"),
            Close::Banned => Connection::close(self, close_code::POLICY, "forbidden: banned"),
            Close::Resync => Connection::close(
                self,
                close_code::AGAIN,
                "messages may have been missed: reconnect and sync",
            ),
        }
    }

    fn keepalive(&self) {
        if now_ms().saturating_sub(self.last_heard.load(Ordering::Relaxed)) > self.idle_timeout_ms {
            Connection::close(self, close_code::AWAY, "idle timeout");
        } else {
            self.push(Message::Ping(Default::default()));
        }
    }
}

fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

/// A client frame's id, echoed in the ack as given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FrameId {
    /// A number (JSON integer ≥ 0).
    Number(u64),
    /// A string.
    Text(String),
}

/// `{"id"?, "event", "data"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFrame {
    #[serde(default)]
    id: Option<FrameId>,
    event: String,
    #[serde(default)]
    data: Value,
}

/// Why a connection ended, from the close frame the server sent (none: the client left).
fn disconnect_reason(close: Option<&CloseFrame>) -> Disconnect {
    let Some(close) = close else { return Disconnect::ClientClosed };
    match (close.code, close.reason.as_str()) {
        (close_code::AWAY, "idle timeout") => Disconnect::PingTimeout,
        (close_code::AWAY | close_code::RESTART, _) => Disconnect::ServerShutdown,
        (close_code::POLICY, "token_expired") => Disconnect::TokenExpired,
        (close_code::POLICY, reason) if reason.starts_with("slow consumer") => Disconnect::SlowConsumer,
        (close_code::POLICY, _) => Disconnect::Kicked,
        (close_code::AGAIN, _) => Disconnect::Resync,
        (close_code::SIZE, _) => Disconnect::TooLarge,
        (close_code::PROTOCOL, _) => Disconnect::ProtocolError,
        _ => Disconnect::Error,
    }
}

/// Just the id of a frame; other fields are skipped unparsed (serde_json skips without
/// recursing, so nesting too deep to parse does not hide the id).
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<FrameId>,
}

/// A client frame decoded into the event it asks for.
#[derive(Debug)]
pub struct FrameRequest {
    /// The id to answer to; without one only a failure is answered (an `error` push).
    pub id: Option<FrameId>,
    /// The event name as sent.
    pub name: String,
    /// The typed event.
    pub event: dispatch::ClientEvent,
}

/// A client frame refused before anything ran, and why.
#[derive(Debug)]
pub struct Refusal {
    /// The frame's id, when one could be read.
    pub id: Option<FrameId>,
    /// The frame's event name, when one could be read.
    pub name: Option<String>,
    /// Why (always [`ChatError::Invalid`]).
    pub error: ChatError,
}

/// Decodes one client text frame whose payload may nest `max_depth` levels. Pure (no
/// connection, no store), so the `ws_frame` fuzz target (fuzz/) drives exactly what a
/// connection runs.
pub fn decode_frame(text: &str, max_depth: usize) -> Result<FrameRequest, Refusal> {
    // The envelope is one level; the payload may use the rest. Checked before parsing.
    if let Err(error) = validate::json_depth(text.as_bytes(), max_depth, 1) {
        let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|frame| frame.id);
        return Err(Refusal { id, name: None, error });
    }
    // serde reads a struct from a JSON array too (fields by position): only an object is a
    // frame.
    if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
        return Err(Refusal {
            id: None,
            name: None,
            error: ChatError::invalid("invalid frame: expected a JSON object"),
        });
    }
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => {
            // Answer to the id if one can be read at all: from the JSON, else (too deep for
            // the parser's recursion limit) skipping everything but the id.
            let id = match serde_json::from_str::<Value>(text) {
                Ok(value) => value.get("id").and_then(|id| FrameId::deserialize(id).ok()),
                Err(_) => serde_json::from_str::<IdOnly>(text).ok().and_then(|frame| frame.id),
            };
            return Err(Refusal {
                id,
                name: None,
                error: ChatError::invalid(format!("invalid frame: {err}")),
            });
        }
    };
    match dispatch::ClientEvent::decode(&frame.event, frame.data) {
        Ok(event) => Ok(FrameRequest { id: frame.id, name: frame.event, event }),
        Err(error) => Err(Refusal { id: frame.id, name: Some(frame.event), error }),
    }
}

/// Decodes one client binary frame: accepted like text when it holds UTF-8 JSON.
pub fn decode_binary_frame(data: &[u8], max_depth: usize) -> Result<FrameRequest, Refusal> {
    match std::str::from_utf8(data) {
        Ok(text) => decode_frame(text, max_depth),
        Err(_) => {
            Err(Refusal { id: None, name: None, error: ChatError::invalid("frames must be UTF-8 JSON") })
        }
    }
}

/// A frame answering a client frame.
// Made once per answer and serialized at once: boxing the large ack would only add an
// allocation per answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `{"id", "ack"}`: the answer to a frame with an id.
    Ack {
        /// The frame's id, as given.
        id: FrameId,
        /// `{ok:true,…}` or `{ok:false,error:{code,message}}`.
        ack: dispatch::Ack,
    },
    /// `{"event":"error","data":{code,message,event?}}`: a failure without an id to answer.
    Error {
        /// Always `"error"`.
        event: &'static str,
        /// `{code, message}`, plus the event name when it could be read.
        data: Value,
    },
}

/// The frame answering an event: an ack when it had an id, an `error` push when it failed
/// without one, and nothing for a success without an id.
pub fn reply(
    id: Option<FrameId>,
    event: Option<&str>,
    result: Result<dispatch::Done, ChatError>,
) -> Option<Reply> {
    match (id, result) {
        (Some(id), result) => Some(Reply::Ack { id, ack: dispatch::ack(result) }),
        (None, Err(err)) => Some(Reply::Error { event: "error", data: dispatch::error_body(event, &err) }),
        (None, Ok(_)) => None,
    }
}

/// Runs one connection from upgrade to close, inside a `connection` span (transport, id,
/// user) that every log line of the connection's work carries.
async fn serve_connection(
    socket: WebSocket,
    hub: Arc<Hub>,
    state: AppState,
    mut user: User,
    lease: Lease,
    permit: Permit,
) {
    let _task = hub.task();
    let config = &state.config;
    let connection = Arc::new(Connection {
        max_queued_bytes: config.ws.max_queued_bytes,
        max_queued_frames: config.connections.max_outbound_queue,
        idle_timeout_ms: u64::try_from(config.ws.idle_timeout.as_millis()).unwrap_or(u64::MAX),
        draining: AtomicBool::new(false),
        last_heard: AtomicU64::new(now_ms()),
        outbox: Mutex::default(),
        wake: Notify::new(),
        cut: Notify::new(),
    });
    let link = Arc::new(hub.register(Transport::Ws, &user.id, true, connection.clone()));
    let span = tracing::info_span!("connection", transport = "ws", id = %link.name(), user = %user.id);
    user.connection = Some(link.name().to_owned());
    let metrics = ConnectionMetrics::open(Transport::Ws);
    run_connection(socket, &connection, &link, &state, &user, lease, permit).instrument(span.clone()).await;
    let reason = disconnect_reason(connection.close_frame().as_ref());
    metrics.closing(reason);
    span.in_scope(|| tracing::debug!(reason = reason.as_str(), "disconnected"));
}

/// The life of a registered connection: `ready`, then frames both ways until the client
/// leaves, the connection is cut or its token expires, then cleanup.
async fn run_connection(
    mut socket: WebSocket,
    connection: &Arc<Connection>,
    link: &Arc<Link>,
    state: &AppState,
    user: &User,
    lease: Lease,
    permit: Permit,
) {
    tracing::debug!("connected");
    let hub = link.hub();
    let connected = match hub.open(link, user).await {
        Ok(ready) => {
            // Pushes addressed to the user may already be queued (the connection was
            // registered before the store was read); `ready` still goes first.
            match encode(&Push { event: "ready", data: &ready }) {
                Ok(frame) => connection.push_first(frame),
                Err(err) => tracing::error!(error = %err, "could not encode ready"),
            }
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, user = %user.id, "connect failed");
            dispatch::rejected(None, &err);
            if let Ok(frame) = encode(&Push { event: "error", data: &dispatch::error_body(None, &err) }) {
                let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(frame)).await;
            }
            connection.close(close_code::ERROR, "could not register the connection");
            false
        }
    };
    let lease = Arc::new(lease);
    if connected {
        tokio::select! {
            () = connection.cut.notified() => {}
            () = pump(&mut socket, connection, link, state, user, &lease) => {}
            end = lease.wait() => if end == LeaseEnd::Expired {
                connection.close(close_code::POLICY, "token_expired");
            },
        }
    }
    lease.end();
    drop(permit);
    hub.close(link, user, connected).await;
    if let Some(close) = connection.close_frame() {
        // The closing handshake: send ours, then read until the client's close (or give up).
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            socket.send(Message::Close(Some(close))).await?;
            while let Some(frame) = socket.recv().await {
                if let Message::Close(_) = frame? {
                    break;
                }
            }
            Ok::<(), axum::Error>(())
        })
        .await;
    }
}

/// Moves frames both ways until the client goes away or the connection is closed.
///
/// Each event runs in its own task, awaited before the next frame is read: the order of a
/// connection's events is kept, and an event already running finishes (and publishes what
/// it committed) even when the connection is cut meanwhile; a panic stays in that task.
async fn pump(
    socket: &mut WebSocket,
    connection: &Arc<Connection>,
    link: &Arc<Link>,
    state: &AppState,
    user: &User,
    lease: &Arc<Lease>,
) {
    let mut in_flight: Option<JoinHandle<()>> = None;
    let mut arrivals = 0;
    loop {
        let frames = connection.take_frames();
        if !frames.is_empty() {
            let count = frames.len();
            for frame in frames {
                if socket.feed(frame).await.is_err() {
                    return;
                }
            }
            if socket.flush().await.is_err() {
                return;
            }
            telemetry::ws_written(count);
        }
        // Draining: the running event's ack went out above; nothing new is read.
        if in_flight.is_none() && connection.draining.load(Ordering::SeqCst) {
            connection.close(close_code::RESTART, "server restarting: reconnect");
            return;
        }
        tokio::select! {
            () = connection.wake.notified() => {}
            finished = async { in_flight.as_mut().expect("guarded by the precondition").await }, if in_flight.is_some() => {
                in_flight = None;
                if let Err(err) = finished {
                    tracing::error!(error = %err, "event handler failed");
                }
            }
            frame = socket.recv(), if in_flight.is_none() => {
                let frame = match frame {
                    None => return,
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "read failed");
                        if let Some((code, reason)) = read_failure(&err) {
                            connection.close(code, reason);
                        }
                        return;
                    }
                    Some(Ok(frame)) => frame,
                };
                connection.last_heard.store(now_ms(), Ordering::Relaxed);
                let decoded = match frame {
                    Message::Text(text) => decode_frame(text.as_str(), state.config.connections.max_json_depth),
                    Message::Binary(data) => decode_binary_frame(&data, state.config.connections.max_json_depth),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) => {
                        // Sends the close reply the library has queued.
                        let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                        return;
                    }
                };
                arrivals += 1;
                in_flight = handle_frame(decoded, connection, link, state, user, lease, arrivals)
                    .map(|work| tokio::spawn(work.in_current_span()));
            }
        }
    }
}

/// The close code and reason for a failed read; `None` when the client just went away (the
/// connection dropped without a closing handshake), as there is nobody to tell.
fn read_failure(err: &axum::Error) -> Option<(u16, &'static str)> {
    use std::error::Error as _;
    use tungstenite::error::ProtocolError;
    match err.source().and_then(|source| source.downcast_ref::<tungstenite::Error>()) {
        Some(tungstenite::Error::Capacity(_)) => Some((close_code::SIZE, "frame too large")),
        Some(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
        | Some(
            tungstenite::Error::Io(_)
            | tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed,
        ) => None,
        _ => Some((close_code::PROTOCOL, "protocol error")),
    }
}

/// Answers a refused frame, or returns the future that runs its event and queues the answer.
fn handle_frame(
    decoded: Result<FrameRequest, Refusal>,
    connection: &Arc<Connection>,
    link: &Arc<Link>,
    state: &AppState,
    user: &User,
    lease: &Arc<Lease>,
    arrival: u64,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let request = match decoded {
        Ok(request) => request,
        Err(refusal) => {
            answer(connection, refusal.id, refusal.name.as_deref(), Err(refusal.error));
            return None;
        }
    };
    let (connection, link, chat) = (connection.clone(), link.clone(), state.chat.clone());
    let (auth, lease) = (state.auth.clone(), lease.clone());
    let mut user = user.clone();
    user.arrival = arrival;
    Some(async move {
        let _running = link.hub().in_flight().enter();
        let credentials = Credentials { auth: &auth, lease: &lease };
        let result = dispatch::apply(&chat, &user, request.event, &link, &credentials).await;
        answer(&connection, request.id, Some(&request.name), result);
    })
}

/// Accounts for an event's outcome ([`dispatch::record`]) and queues the frame answering it,
/// if any (see [`reply`]).
fn answer(
    connection: &Connection,
    id: Option<FrameId>,
    event: Option<&str>,
    result: Result<dispatch::Done, ChatError>,
) {
    dispatch::record(event, &result);
    if let Some(frame) = reply(id, event, result) {
        connection.push_json(&frame);
    }
}
