//! The checks every realtime handshake (Socket.IO connect, `/ws` upgrade, SSE stream) passes
//! before its token is even read: the node is not draining, the browser `Origin` is allowed,
//! and the client IP is within its handshake rate. One function, called by each transport.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::header;
use axum::http::request::Parts;

use crate::core::ChatError;
use crate::state::AppState;

/// Refuses a handshake: `unavailable` while draining, `forbidden` for an `Origin` outside
/// `--allowed-origins` (requests without `Origin`, from native apps, pass), `rate_limited`
/// over the per-IP handshake rate (IP from the TCP peer; unknown peers are not limited).
pub fn check_handshake(state: &AppState, parts: &Parts) -> Result<(), ChatError> {
    if state.is_draining() {
        return Err(ChatError::Unavailable("draining: reconnect to another node".into()));
    }
    if let Some(allowed) = &state.config.connections.allowed_origins
        && let Some(origin) = parts.headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        if !allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin)) {
            return Err(ChatError::forbidden("origin not allowed"));
        }
    }
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        state.handshakes.check(peer.ip())?;
    }
    Ok(())
}
