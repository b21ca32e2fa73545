//! Plain WebSocket at `GET /ws`, with JSON text frames: the client sends
//! `{"id":7,"event":"message:send","data":{…}}` and gets `{"id":7,"ack":{ok,…}}`; the server
//! pushes `{"event":"message:new","data":{…}}`. Same event vocabulary and dispatch as
//! Socket.IO ([`super::dispatch`]); this module only frames bytes: subscriptions, the bus
//! relay and the connection lifecycle are the [`Hub`]'s.
//!
//! Per connection there is one task (`connection.rs`) and a byte-bounded outbox (`outbox.rs`,
//! the connection's [`Sink`](crate::hub::Sink)): the hub queues each event's shared,
//! pre-encoded frame; the task takes everything queued and writes it with one flush, so
//! frames queued while it was busy leave in one write. A client that lets more than
//! `max_queued_bytes` or `--max-outbound-queue` frames pile up is cut off (close 1008) instead
//! of buffered. Events of one connection run one at a time, in the order they arrived, so a
//! client's sends are committed in the order it sent them.
//!
//! The hub's keepalive round pings every connection each `ping_interval` and closes those
//! silent for `idle_timeout` (1001). Each connection closes itself when its token's lease expires
//! (1008 `token_expired`; `auth:refresh` extends it). At shutdown every connection finishes
//! the event it is running, sends its ack, and closes with 1012 (service restart).

mod codec;
mod connection;
mod keepalive;
mod outbox;
mod sink;

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use self::codec::{FrameId, FrameRequest, Refusal, Reply, decode_binary_frame, decode_frame, reply};
use self::connection::serve_connection;
use super::MAX_PAYLOAD_BYTES;
use super::handshake::check_handshake;
use super::http::error::ApiError;
use super::http::extract::request_token;
use crate::core::ChatError;
use crate::core::lease::Lease;
use crate::hub::Hub;
use crate::state::AppState;

/// Bytes read from the socket at a time. Small, because every idle connection keeps one.
const READ_BUFFER_BYTES: usize = 1024;

/// Bytes of frames the WebSocket collects before it writes them to the socket: the frames
/// queued for a connection go out in one write per flush (its `message:new` and
/// `notification` together) instead of one write each. A connection keeps the buffer's
/// high-water mark once it had that much to send at once; idle ones keep almost nothing.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

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
