//! Reactions, pins, threads and changed messages (`/api/messages/{id}/reactions…`,
//! `/api/messages/{id}/pin`, `/api/messages/{id}/thread`, `/api/conversations/{id}/pins`,
//! `/api/conversations/{id}/changes`), and who is in a conversation now
//! (`/api/conversations/{id}/presence`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery, AuthUser};
use crate::core::chat::{ChangedMessages, PinnedMessages, ReactionPage, ThreadPage};
use crate::core::model::Message;
use crate::core::requests::{ChangesQuery, ReactionsQuery, ThreadQuery};
use crate::core::server_events::ConversationPresence;
use crate::state::AppState;
use crate::transport::openapi::{
    Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};

/// The routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(react, unreact))
        .routes(routes!(reactions))
        .routes(routes!(pin, unpin))
        .routes(routes!(pins))
        .routes(routes!(thread))
        .routes(routes!(changes))
        .routes(routes!(presence))
}

/// # `PUT /api/messages/{id}/reactions/{emoji}`
/// Adds the caller's reaction (idempotent: 204 again). `emoji` is one emoji or a
/// `:shortcode:`, percent-encoded.
#[utoipa::path(put, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = String, Path, description = "Message id"), ("emoji" = String, Path, description = "One emoji or a :shortcode:")),
    responses((status = 204, description = "The reaction is there"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = TooLarge),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn react(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, emoji)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.chat.react(&user, &id, &emoji).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `DELETE /api/messages/{id}/reactions/{emoji}`
/// Takes the caller's reaction back (idempotent: 204 again).
#[utoipa::path(delete, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages",
    params(("id" = String, Path, description = "Message id"), ("emoji" = String, Path, description = "One emoji or a :shortcode:")),
    responses((status = 204, description = "The reaction is not there"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn unreact(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, emoji)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.chat.unreact(&user, &id, &emoji).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /api/messages/{id}/reactions?cursor=&limit=`
/// Every reaction on a message, oldest first, paged.
#[utoipa::path(get, path = "/api/messages/{id}/reactions", tag = "messages",
    params(("id" = String, Path, description = "Message id"), ReactionsQuery),
    responses((status = 200, description = "A page of reactions", body = ReactionPage),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn reactions(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReactionsQuery>,
) -> ApiResult<Response> {
    let page = state.chat.reactions(&user, &id, query.cursor.as_deref(), query.limit).await?;
    Ok(Json(page).into_response())
}

/// # `POST /api/messages/{id}/pin`
/// Pins a message (a group's owner or admins; either member of a direct chat); at most 50
/// per conversation. Pinning a pinned message answers it unchanged.
#[utoipa::path(post, path = "/api/messages/{id}/pin", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The pinned message", body = Message),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)))]
async fn pin(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.pin(&user, &id).await?).into_response())
}

/// # `DELETE /api/messages/{id}/pin`
/// Unpins a message (who may pin it); unpinning an unpinned message answers it unchanged.
#[utoipa::path(delete, path = "/api/messages/{id}/pin", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The unpinned message", body = Message),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)))]
async fn unpin(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.unpin(&user, &id).await?).into_response())
}

/// # `GET /api/conversations/{id}/pins`
/// The conversation's pinned messages, most recently pinned first.
#[utoipa::path(get, path = "/api/conversations/{id}/pins", tag = "messages",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "Pinned messages", body = PinnedMessages),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn pins(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.pins(&user, &id).await?).into_response())
}

/// # `GET /api/messages/{id}/thread?after_seq=&limit=`
/// A thread's root and a page of its replies, ascending by seq.
#[utoipa::path(get, path = "/api/messages/{id}/thread", tag = "messages",
    params(("id" = String, Path, description = "The thread's root message id"), ThreadQuery),
    responses((status = 200, description = "The root and a page of replies", body = ThreadPage),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn thread(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ThreadQuery>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.thread(&user, &id, query.after_seq, query.limit).await?).into_response())
}

/// # `GET /api/conversations/{id}/changes?after_revision=&up_to_seq=&limit=`
/// Messages changed after a revision (edits, deletes, reactions, pins, thread summaries), as
/// they stand now, ascending by `revision`: how a client that was away catches up on
/// messages it already holds.
#[utoipa::path(get, path = "/api/conversations/{id}/changes", tag = "messages",
    params(("id" = String, Path, description = "Conversation id"), ChangesQuery),
    responses((status = 200, description = "Changed messages", body = ChangedMessages),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn changes(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> ApiResult<Response> {
    let page =
        state.chat.changed_messages(&user, &id, query.after_revision, query.up_to_seq, query.limit).await?;
    Ok(Json(page).into_response())
}

/// # `GET /api/conversations/{id}/presence`
/// Who is in the conversation now: members online (any node) and those looking at it;
/// members who block the caller, or whom the caller blocks, are left out.
#[utoipa::path(get, path = "/api/conversations/{id}/presence", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "Members online and focused", body = ConversationPresence),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn presence(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.conversation_presence(&user, &id).await?).into_response())
}
