//! Server-Sent Events: `GET /api/notifications/stream`, the user's `notification` events as
//! an `EventSource` reads them. Authenticates (`Authorization: Bearer` or `?token=`, as
//! `EventSource` cannot set headers), opens the core's
//! [`NotificationStream`](crate::core::notifications::NotificationStream) and encodes its
//! items; keep-alive comments every `--sse-keep-alive`. A stream ends when its token
//! expires, the node shuts down, or an operator disconnects or bans the user (the client
//! reconnects with `Last-Event-ID`; a banned user is refused with 403).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tracing::{Instrument, Span};

use super::handshake::check_handshake;
use super::http::error::ApiError;
use super::http::extract::{ApiQuery, request_token};
use crate::core::ChatError;
use crate::core::admission::Permit;
use crate::core::lease::Lease;
use crate::core::model::User;
use crate::core::notifications::{self, LiveFeed, NotificationStream, StreamItem};
use crate::core::telemetry::{self, ConnectionMetrics, Disconnect, Transport};
use crate::hub::{Close, Hub, Link, Outgoing, Sink};
use crate::state::AppState;

/// The SSE route; each stream is a connection of `hub` that follows only its user.
pub fn router(hub: Arc<Hub>) -> Router<AppState> {
    Router::new().route(
        "/api/notifications/stream",
        get(move |state: State<AppState>, request: Request| notification_stream(state, hub.clone(), request)),
    )
}

/// How the hub writes to a stream: `notification`s go to its live feed, `sync:required`
/// makes it catch up from the log, a close ends it (the first reason is kept).
struct StreamSink {
    feed: LiveFeed,
    closed: Arc<OnceLock<Close>>,
}

impl Sink for StreamSink {
    /// Never counted here: the stream counts each notification when it writes it.
    fn send(&self, event: &Arc<Outgoing>) -> bool {
        match event.name() {
            "notification" => {
                if let Some(notification) = notifications::notification_of(event.server_event()) {
                    self.feed.notification(notification);
                }
            }
            "sync:required" => self.feed.resync(),
            _ => {}
        }
        false
    }

    fn close(&self, reason: Close) {
        let _ = self.closed.set(reason);
        self.feed.end();
    }
}

/// Query parameters of the stream (`token` is read by [`request_token`]).
#[derive(Deserialize)]
struct StreamQuery {
    /// Resume after this id, for clients that cannot send `Last-Event-ID`.
    last_event_id: Option<i64>,
}

/// # `GET /api/notifications/stream`
/// `text/event-stream` of `event: notification` with `id:` (per user, increasing); resumes
/// after `Last-Event-ID` (header, or `?last_event_id=`). 401 with the usual error body for a
/// missing or bad token, 400 for an id that is not a non-negative integer.
#[utoipa::path(get, path = "/api/notifications/stream", tag = "notifications",
    security(("bearer" = []), ("token_query" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this id (a non-negative integer)"),
        ("last_event_id" = Option<i64>, Query, description = "Resume after this id, for clients that cannot set headers")),
    responses((status = 200, description = "`text/event-stream` of `notification` (and `notification:gap`) events",
            content_type = "text/event-stream", body = String),
        (status = 400, response = super::openapi::Invalid), (status = 401, response = super::openapi::Unauthorized),
        (status = 503, response = super::openapi::Unavailable)))]
async fn notification_stream(State(state): State<AppState>, hub: Arc<Hub>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(err) = check_handshake(&state, &parts) {
        return ApiError(err).into_response();
    }
    let Some(token) = request_token(&parts) else {
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
    let permit = match state.admission.admit(&user.id) {
        Ok(permit) => permit,
        Err(refusal) => return ApiError(refusal.into()).into_response(),
    };
    let query = match ApiQuery::<StreamQuery>::from_request_parts(&mut parts, &state).await {
        Ok(ApiQuery(query)) => query,
        Err(err) => return err.into_response(),
    };
    let header = match parts.headers.get("last-event-id").map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("")) => None,
        Some(Ok(text)) => match text.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                return ApiError(ChatError::invalid("Last-Event-ID must be an integer")).into_response();
            }
        },
        Some(Err(_)) => {
            return ApiError(ChatError::invalid("Last-Event-ID must be an integer")).into_response();
        }
    };
    let (feed, live) = notifications::live_feed();
    let closed = Arc::new(OnceLock::new());
    let link =
        hub.register(Transport::Sse, &user.id, false, Arc::new(StreamSink { feed, closed: closed.clone() }));
    let user = User { connection: Some(link.name().to_owned()), ..user };
    let stream = match state.chat.notification_stream(&user, header.or(query.last_event_id), live).await {
        Ok(stream) => stream,
        Err(err) => {
            hub.remove(&link);
            return ApiError(err).into_response();
        }
    };
    let lease = Lease::new(expires_at);
    let span = tracing::info_span!("connection", transport = "sse", id = %link.name(), user = %user.id);
    span.in_scope(|| tracing::debug!("connected"));
    let metrics = ConnectionMetrics::open(Transport::Sse);
    let open = Open { stream, closed, link, lease, metrics, span, _permit: permit };
    let events = stream::unfold(open, |mut open| async move {
        let span = open.span.clone();
        let item = open.next().instrument(span).await?;
        Some((Ok::<_, Infallible>(item), open))
    });
    let keep_alive = KeepAlive::new().interval(state.config.sse_keep_alive).text("keep-alive");
    // Tells nginx not to buffer the stream.
    let no_buffering = (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
    ([no_buffering], Sse::new(events).keep_alive(keep_alive)).into_response()
}

/// An open stream until the token expires or the node shuts down (or the client leaves:
/// then it is dropped, and counted as closed by the client).
struct Open {
    stream: NotificationStream,
    /// Why the hub closed the stream, if it did.
    closed: Arc<OnceLock<Close>>,
    /// The stream's place in the hub, given back when it is dropped.
    link: Link,
    lease: Lease,
    metrics: ConnectionMetrics,
    /// The stream's `connection` span.
    span: Span,
    /// The stream's place in the connection caps, given back when it ends.
    _permit: Permit,
}

impl Open {
    /// The next event, `None` when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        let next = tokio::select! {
            item = self.stream.next() => item.ok_or_else(|| match self.closed.get() {
                Some(Close::Restart) => Disconnect::ServerShutdown,
                Some(Close::Admin | Close::Banned) => Disconnect::Kicked,
                Some(Close::Resync) | None => Disconnect::Error,
            }),
            _ = self.lease.wait() => Err(Disconnect::TokenExpired),
        };
        match next {
            Ok(item) => {
                if let StreamItem::Notification(_) = item {
                    telemetry::delivered_named("notification", 1);
                }
                Some(encode(item))
            }
            Err(reason) => {
                self.metrics.closing(reason);
                tracing::debug!(reason = reason.as_str(), "disconnected");
                None
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.link.hub().remove(&self.link);
    }
}

/// The SSE form of a stream item.
fn encode(item: StreamItem) -> Event {
    match item {
        StreamItem::Notification(notification) => {
            let id = notification.id.unwrap_or_default();
            // Serializing plain fields cannot fail; an empty object would be the fallback.
            let data = serde_json::to_string(&notification).unwrap_or_else(|_| "{}".to_owned());
            Event::default().event("notification").id(id.to_string()).data(data)
        }
        StreamItem::Gap { from, to } => Event::default()
            .event("notification:gap")
            .id(to.to_string())
            .data(json!({ "from": from, "to": to }).to_string()),
    }
}
