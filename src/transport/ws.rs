//! Plain WebSocket at `GET /ws`, with JSON text frames: the client sends
//! `{"id":7,"event":"message:send","data":{…}}` and gets `{"id":7,"ack":{ok,…}}`; the server
//! pushes `{"event":"message:new","data":{…}}`. Same event vocabulary and dispatch as
//! Socket.IO ([`super::dispatch`]); this module only frames bytes and keeps subscriptions.
//!
//! Per connection there is one task and a byte-bounded outbox: the relay encodes each event
//! once and queues the shared bytes to every subscribed connection; the task writes whatever
//! is queued and flushes once. A client that lets more than `max_queued_bytes` pile up is cut
//! off (close 1008) instead of buffered. Events of one connection run one at a time, in the
//! order they arrived, so a client's sends are committed in the order it sent them.
//!
//! One sweeper pings every connection each `ping_interval`, closes those silent for
//! `idle_timeout` (1001) and those whose token expired (1008 `token_expired`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use super::dispatch::{self, Subscriptions, dispatch};
use super::http::{ApiError, error_body, request_token};
use crate::config::WsConfig;
use crate::core::ChatError;
use crate::core::model::User;
use crate::core::ports::{Bus, Topic};
use crate::core::realtime::{Audience, BusMessage, Delivery, WS_CONNECTION_PREFIX};
use crate::server::MAX_PAYLOAD_BYTES;
use crate::state::AppState;

/// Bytes read from the socket at a time. Small, because every idle connection keeps one.
const READ_BUFFER_BYTES: usize = 1024;

/// How long a closing handshake may take before the connection is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The `/ws` route, and the tasks that feed it (bus relay, keepalive sweeper). Must be
/// called inside a Tokio runtime; the returned [`Hub`] closes every connection at shutdown.
pub fn router(state: &AppState) -> (Router<AppState>, Arc<Hub>) {
    let hub = Arc::new(Hub::new(state.config.ws.clone(), state.bus.clone()));
    tokio::spawn(relay(Arc::downgrade(&hub), state.bus.subscribe()));
    tokio::spawn(sweep(Arc::downgrade(&hub)));
    let route_hub = hub.clone();
    let router = Router::new().route(
        "/ws",
        get(move |state: State<AppState>, request: Request| upgrade(state, route_hub.clone(), request)),
    );
    (router, hub)
}

/// Authenticates, then upgrades. A bad token is refused before the upgrade with 401 and the
/// usual `{error:{code,message}}` body, a banned user with 403 `forbidden`; a non-WebSocket
/// request gets 400.
async fn upgrade(State(state): State<AppState>, hub: Arc<Hub>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let token = request_token(&parts);
    let Some(token) = token else {
        return ApiError(ChatError::Unauthorized("missing token (?token= or Authorization: Bearer)".into()))
            .into_response();
    };
    let (user, expires_at) = match state.authenticate(&token) {
        Ok(verified) => verified,
        Err(err) => return ApiError(err).into_response(),
    };
    if state.is_draining() {
        return ApiError(ChatError::Unavailable("draining".into())).into_response();
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return (StatusCode::BAD_REQUEST, error_body("invalid", &rejection.body_text())).into_response();
        }
    };
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_PAYLOAD_BYTES)
        .max_frame_size(MAX_PAYLOAD_BYTES)
        .on_upgrade(move |socket| serve_connection(socket, hub, state, user, expires_at))
}

/// Every connection of this node and what each is subscribed to. The node watches a user's
/// and a conversation's bus topic while at least one of its connections needs it.
pub struct Hub {
    config: WsConfig,
    bus: Arc<dyn Bus>,
    /// Connection names in the core ([`User::connection`]) are `ws:<node tag>:<n>`: unique
    /// across nodes sharing a bus (Socket.IO ids never contain a colon).
    prefix: String,
    rooms: RwLock<Rooms>,
    next_id: AtomicU64,
    started: Instant,
}

#[derive(Default)]
struct Rooms {
    connections: HashMap<u64, Entry>,
    by_user: HashMap<String, Vec<u64>>,
    by_conversation: HashMap<String, HashSet<u64>>,
}

struct Entry {
    connection: Arc<Connection>,
    conversations: Vec<String>,
}

impl Rooms {
    /// Subscribes a connection; true when it is the node's first for the conversation.
    fn subscribe(&mut self, id: u64, conversation_id: &str) -> bool {
        let Some(entry) = self.connections.get_mut(&id) else { return false };
        let members = self.by_conversation.entry(conversation_id.to_owned()).or_default();
        let first = members.is_empty();
        if members.insert(id) {
            entry.conversations.push(conversation_id.to_owned());
        }
        first
    }

    /// Unsubscribes a connection; true when it was the node's last for the conversation.
    fn unsubscribe(&mut self, id: u64, conversation_id: &str) -> bool {
        let Some(entry) = self.connections.get_mut(&id) else { return false };
        entry.conversations.retain(|c| c != conversation_id);
        self.drop_subscriber(id, conversation_id)
    }

    /// Takes `id` out of a conversation's subscribers; true when none is left.
    fn drop_subscriber(&mut self, id: u64, conversation_id: &str) -> bool {
        let Some(members) = self.by_conversation.get_mut(conversation_id) else { return false };
        if !members.remove(&id) || !members.is_empty() {
            return false;
        }
        self.by_conversation.remove(conversation_id);
        true
    }

    /// The connections a delivery goes to; `except_connection` is this node's id of the
    /// connection left out, if it is one of ours.
    fn audience(&self, delivery: &Delivery, except_connection: Option<u64>) -> Vec<Arc<Connection>> {
        let mut ids: Vec<u64> = match &delivery.to {
            Audience::Conversation(id) => {
                self.by_conversation.get(id).map(|set| set.iter().copied().collect()).unwrap_or_default()
            }
            Audience::Users(users) => {
                users.iter().filter_map(|user| self.by_user.get(user)).flatten().copied().collect()
            }
        };
        ids.sort_unstable();
        ids.dedup();
        ids.iter()
            .filter(|id| Some(**id) != except_connection)
            .filter_map(|id| self.connections.get(id))
            .map(|entry| &entry.connection)
            .filter(|c| delivery.except_user.as_deref() != Some(c.user_id.as_str()))
            .cloned()
            .collect()
    }
}

impl Hub {
    fn new(config: WsConfig, bus: Arc<dyn Bus>) -> Self {
        Hub {
            config,
            bus,
            prefix: format!("{WS_CONNECTION_PREFIX}{:08x}:", rand::random::<u32>()),
            rooms: RwLock::default(),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    fn rooms(&self) -> std::sync::RwLockReadGuard<'_, Rooms> {
        self.rooms.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn rooms_mut(&self) -> std::sync::RwLockWriteGuard<'_, Rooms> {
        self.rooms.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Milliseconds since the hub started (the clock of `last_heard`).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.rooms().connections.len()
    }

    fn register(&self, user_id: &str, expires_at: u64) -> Arc<Connection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id,
            user_id: user_id.to_owned(),
            expires_at,
            max_queued_bytes: self.config.max_queued_bytes,
            last_heard: AtomicU64::new(self.now_ms()),
            outbox: Mutex::default(),
            wake: Notify::new(),
            cut: Notify::new(),
        });
        let mut rooms = self.rooms_mut();
        rooms.connections.insert(id, Entry { connection: connection.clone(), conversations: Vec::new() });
        let ids = rooms.by_user.entry(user_id.to_owned()).or_default();
        ids.push(id);
        if ids.len() == 1 {
            self.bus.watch(Topic::User(user_id.to_owned()));
        }
        connection
    }

    fn remove(&self, connection: &Connection) {
        let mut rooms = self.rooms_mut();
        let Some(entry) = rooms.connections.remove(&connection.id) else { return };
        for conversation_id in entry.conversations {
            if rooms.drop_subscriber(connection.id, &conversation_id) {
                self.bus.unwatch(Topic::Conversation(conversation_id));
            }
        }
        if let Some(ids) = rooms.by_user.get_mut(&connection.user_id) {
            ids.retain(|id| *id != connection.id);
            if ids.is_empty() {
                rooms.by_user.remove(&connection.user_id);
                self.bus.unwatch(Topic::User(connection.user_id.clone()));
            }
        }
    }

    /// Subscribes a connection to a conversation (under the caller's lock).
    fn subscribe(&self, rooms: &mut Rooms, id: u64, conversation_id: &str) {
        if rooms.subscribe(id, conversation_id) {
            self.bus.watch(Topic::Conversation(conversation_id.to_owned()));
        }
    }

    /// Unsubscribes a connection from a conversation (under the caller's lock).
    fn unsubscribe(&self, rooms: &mut Rooms, id: u64, conversation_id: &str) {
        if rooms.unsubscribe(id, conversation_id) {
            self.bus.unwatch(Topic::Conversation(conversation_id.to_owned()));
        }
    }

    /// Closes every connection with 1001 (server going away), for graceful shutdown.
    pub fn close_all(&self) {
        self.close_every(close_code::AWAY, "server shutting down");
    }

    fn close_every(&self, code: u16, reason: &'static str) {
        for entry in self.rooms().connections.values() {
            entry.connection.close(code, reason);
        }
    }

    fn apply(&self, message: &BusMessage) {
        match message {
            BusMessage::Deliver(delivery) => {
                let except_connection = delivery
                    .except_connection
                    .as_deref()
                    .and_then(|c| c.strip_prefix(self.prefix.as_str())?.parse().ok());
                let targets = self.rooms().audience(delivery, except_connection);
                if targets.is_empty() {
                    return;
                }
                let frame = match encode(&Push { event: delivery.event.name(), data: &delivery.event }) {
                    Ok(frame) => frame,
                    Err(err) => {
                        tracing::error!(error = %err, event = delivery.event.name(), "could not encode event");
                        return;
                    }
                };
                for connection in targets {
                    connection.push(frame.clone());
                }
            }
            BusMessage::Subscribe { user_id, conversation_id } => {
                let mut rooms = self.rooms_mut();
                for id in rooms.by_user.get(user_id).cloned().unwrap_or_default() {
                    self.subscribe(&mut rooms, id, conversation_id);
                }
            }
            BusMessage::Unsubscribe { user_id, conversation_id } => {
                let mut rooms = self.rooms_mut();
                for id in rooms.by_user.get(user_id).cloned().unwrap_or_default() {
                    self.unsubscribe(&mut rooms, id, conversation_id);
                }
            }
            BusMessage::Disconnect { user_id, reason } => {
                let rooms = self.rooms();
                for id in rooms.by_user.get(user_id).into_iter().flatten() {
                    if let Some(entry) = rooms.connections.get(id) {
                        entry.connection.close(close_code::POLICY, reason.as_str());
                    }
                }
            }
            BusMessage::BanChanged { .. } => {}
            BusMessage::Gap => {
                tracing::warn!("the bus may have lost messages; closing connections (1013)");
                self.close_every(close_code::AGAIN, "messages may have been missed: reconnect and sync");
            }
        }
    }

    /// One keepalive round: close the silent and the expired, ping the rest.
    fn sweep(&self) {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for entry in self.rooms().connections.values() {
            let connection = &entry.connection;
            if now.saturating_sub(connection.last_heard.load(Ordering::Relaxed)) > idle_ms {
                connection.close(close_code::AWAY, "idle timeout");
            } else if connection.expires_at <= unix_now {
                connection.close(close_code::POLICY, "token_expired");
            } else {
                connection.push(Message::Ping(Default::default()));
            }
        }
    }
}

/// A server push: `{"event": name, "data": payload}`.
#[derive(Serialize)]
struct Push<'a, T: Serialize> {
    event: &'a str,
    data: &'a T,
}

/// An ack: `{"id": id, "ack": body}`.
#[derive(Serialize)]
struct Ack<'a> {
    id: &'a FrameId,
    ack: &'a Value,
}

fn encode(value: &impl Serialize) -> Result<Message, serde_json::Error> {
    Ok(Message::Text(Utf8Bytes::from(serde_json::to_string(value)?)))
}

/// One open WebSocket: its outbox and the signals its task waits on.
struct Connection {
    id: u64,
    user_id: String,
    /// Token expiry, Unix seconds.
    expires_at: u64,
    max_queued_bytes: usize,
    /// [`Hub::now_ms`] when the client last sent anything (a pong included).
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
    fn push(&self, frame: Message) {
        let size = frame_len(&frame);
        {
            let mut outbox = self.outbox();
            if outbox.close.is_some() {
                return;
            }
            // The bound is on the backlog: one frame larger than the bound (a big `sync`
            // page) still goes to a client that has read everything before it.
            if outbox.bytes > 0 && outbox.bytes + size > self.max_queued_bytes {
                drop(outbox);
                tracing::info!(connection = self.id, user = %self.user_id, "slow consumer disconnected");
                self.close(close_code::POLICY, "slow consumer: outbound queue full");
                return;
            }
            outbox.bytes += size;
            outbox.frames.push_back(frame);
        }
        self.wake.notify_one();
    }

    fn push_json(&self, value: &impl Serialize) {
        match encode(value) {
            Ok(frame) => self.push(frame),
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

fn frame_len(frame: &Message) -> usize {
    match frame {
        Message::Text(text) => text.len(),
        Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
        Message::Close(_) => 0,
    }
}

/// This connection's subscriptions in the hub.
struct HubSubscriptions<'a> {
    hub: &'a Hub,
    id: u64,
}

impl Subscriptions for HubSubscriptions<'_> {
    fn subscribe(&self, conversation_id: &str) {
        self.hub.subscribe(&mut self.hub.rooms_mut(), self.id, conversation_id);
    }

    fn unsubscribe(&self, conversation_id: &str) {
        self.hub.unsubscribe(&mut self.hub.rooms_mut(), self.id, conversation_id);
    }
}

/// A client frame's id, echoed in the ack as given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum FrameId {
    Number(u64),
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

/// Runs one connection from upgrade to close.
async fn serve_connection(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    state: AppState,
    mut user: User,
    expires_at: u64,
) {
    let connection = hub.register(&user.id, expires_at);
    user.connection = Some(format!("{}{}", hub.prefix, connection.id));
    let connected = match state.chat.connect(&user).await {
        Ok(ready) => {
            {
                let mut rooms = hub.rooms_mut();
                for conversation in &ready.conversations {
                    hub.subscribe(&mut rooms, connection.id, &conversation.id);
                }
            }
            state.bus.settled().await;
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
            if let Ok(frame) = encode(&Push { event: "error", data: &dispatch::error_body(None, &err) }) {
                let _ = tokio::time::timeout(CLOSE_GRACE, socket.send(frame)).await;
            }
            connection.close(close_code::ERROR, "could not register the connection");
            false
        }
    };
    if connected {
        tokio::select! {
            () = connection.cut.notified() => {}
            () = pump(&mut socket, &connection, &hub, &state, &user) => {}
        }
    }
    hub.remove(&connection);
    if connected && let Err(err) = state.chat.disconnect(&user).await {
        tracing::warn!(error = %err, user = %user.id, "disconnect bookkeeping failed");
    }
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
    hub: &Arc<Hub>,
    state: &AppState,
    user: &User,
) {
    let mut in_flight: Option<JoinHandle<()>> = None;
    let mut arrivals = 0;
    loop {
        let frames = connection.take_frames();
        if !frames.is_empty() {
            for frame in frames {
                if socket.feed(frame).await.is_err() {
                    return;
                }
            }
            if socket.flush().await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = connection.wake.notified() => {}
            finished = async { in_flight.as_mut().expect("guarded by the precondition").await }, if in_flight.is_some() => {
                in_flight = None;
                if let Err(err) = finished {
                    tracing::error!(error = %err, connection = connection.id, "event handler failed");
                }
            }
            frame = socket.recv(), if in_flight.is_none() => {
                let frame = match frame {
                    None => return,
                    Some(Err(err)) => {
                        let (code, reason) = read_failure(&err);
                        tracing::debug!(error = %err, connection = connection.id, "read failed");
                        connection.close(code, reason);
                        return;
                    }
                    Some(Ok(frame)) => frame,
                };
                connection.last_heard.store(hub.now_ms(), Ordering::Relaxed);
                let text = match frame {
                    Message::Text(text) => text,
                    Message::Binary(data) => match Utf8Bytes::try_from(data) {
                        Ok(text) => text,
                        Err(_) => {
                            reject_frame(connection, None, ChatError::invalid("frames must be UTF-8 JSON"));
                            continue;
                        }
                    },
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) => {
                        // Sends the close reply the library has queued.
                        let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                        return;
                    }
                };
                arrivals += 1;
                in_flight = handle_frame(text.as_str(), connection, hub, state, user, arrivals).map(tokio::spawn);
            }
        }
    }
}

/// The close code and reason for a failed read.
fn read_failure(err: &axum::Error) -> (u16, &'static str) {
    use std::error::Error as _;
    let capacity = err
        .source()
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if capacity { (close_code::SIZE, "frame too large") } else { (close_code::PROTOCOL, "protocol error") }
}

/// Decodes a frame and returns the future that runs its event and queues the answer.
fn handle_frame(
    text: &str,
    connection: &Arc<Connection>,
    hub: &Arc<Hub>,
    state: &AppState,
    user: &User,
    arrival: u64,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let frame: ClientFrame = match serde_json::from_str(text) {
        Ok(frame) => frame,
        Err(err) => {
            // Answer to the id if one can be read at all.
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|value| serde_json::from_value(value.get("id")?.clone()).ok());
            reject_frame(connection, id, ChatError::invalid(format!("invalid frame: {err}")));
            return None;
        }
    };
    let (connection, hub, chat) = (connection.clone(), hub.clone(), state.chat.clone());
    let mut user = user.clone();
    user.arrival = arrival;
    Some(async move {
        let subscriptions = HubSubscriptions { hub: &hub, id: connection.id };
        let result = dispatch(&chat, &user, &frame.event, frame.data, &subscriptions).await;
        match (frame.id, result) {
            (Some(id), result) => connection.push_json(&Ack { id: &id, ack: &dispatch::ack(result) }),
            (None, Err(err)) => connection
                .push_json(&Push { event: "error", data: &dispatch::error_body(Some(&frame.event), &err) }),
            (None, Ok(_)) => {}
        }
    })
}

/// Answers a frame that could not be run: an error ack when it had an id, else an `error`.
fn reject_frame(connection: &Connection, id: Option<FrameId>, err: ChatError) {
    match id {
        Some(id) => connection.push_json(&Ack { id: &id, ack: &dispatch::ack(Err(err)) }),
        None => connection.push_json(&Push { event: "error", data: &dispatch::error_body(None, &err) }),
    }
}

/// Applies bus messages to this node's connections, in order, while the hub exists.
async fn relay(hub: Weak<Hub>, mut messages: broadcast::Receiver<Arc<BusMessage>>) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                // Skipped subscription changes cannot be repaired by `sync`: make every client
                // reconnect (which resubscribes it) and sync.
                tracing::warn!(skipped, "websocket relay fell behind; closing connections (1013)");
                if let Some(hub) = hub.upgrade() {
                    hub.close_every(close_code::AGAIN, "server overloaded: reconnect and sync");
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Some(hub) = hub.upgrade() else { break };
        hub.apply(&message);
    }
}

/// Runs the keepalive rounds while the hub exists.
async fn sweep(hub: Weak<Hub>) {
    let Some(period) = hub.upgrade().map(|hub| hub.config.ping_interval) else { return };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { break };
        hub.sweep();
    }
}
