//! A connection's life from upgrade to close: `ready`, then frames both ways (one event at a
//! time, in arrival order) until the client leaves, the connection is cut or its token
//! expires; then the closing handshake and the disconnect's accounting.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures_util::SinkExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::codec::{FrameId, FrameRequest, Push, Refusal, decode_binary_frame, decode_frame, encode, reply};
use super::outbox::Connection;
use crate::core::ChatError;
use crate::core::admission::Permit;
use crate::core::lease::{Lease, LeaseEnd};
use crate::core::model::User;
use crate::core::telemetry::{self, ConnectionMetrics, Disconnect, Transport};
use crate::hub::{Hub, Link};
use crate::state::AppState;
use crate::transport::dispatch::{self, Credentials};

/// How long a closing handshake may take before the connection is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

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

/// Runs one connection from upgrade to close, inside a `connection` span (transport, id,
/// user) that every log line of the connection's work carries.
pub(super) async fn serve_connection(
    socket: WebSocket,
    hub: Arc<Hub>,
    state: AppState,
    mut user: User,
    lease: Lease,
    permit: Permit,
) {
    let _task = hub.task();
    let config = &state.config;
    let connection = Arc::new(Connection::new(
        config.ws.max_queued_bytes,
        config.connections.max_outbound_queue,
        config.ws.idle_timeout,
    ));
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
                connection.keepalive.heard();
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
