//! Messages: history, send, edit and delete (`/api/conversations/{id}/messages`,
//! `/api/messages/{id}`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, id_from_path};
use crate::core::chat::MessagePage;
use crate::core::model::Message;
use crate::core::requests::{EditMessage, HistoryQuery, SendMessage};
use crate::state::AppState;
use crate::transport::openapi::{
    Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};

/// The messages' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(history, send_message)).routes(routes!(edit_message, delete_message))
}

/// # `GET /api/conversations/{id}/messages?before_seq=&after_seq=&limit=`
/// A page of history in ascending `seq` (default the newest 30, at most 100).
#[utoipa::path(get, path = "/api/conversations/{id}/messages", tag = "messages", params(("id" = String, Path, description = "Conversation id"), HistoryQuery),
    responses((status = 200, description = "A page of messages, ascending", body = MessagePage),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn history(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.history(&user, &id, query).await?).into_response())
}

/// # `POST /api/conversations/{id}/messages`
/// 201 after the message is committed; 200 with the original on a `client_id` repeat.
#[utoipa::path(post, path = "/api/conversations/{id}/messages", tag = "messages", params(("id" = String, Path, description = "Conversation id")),
    request_body = SendMessage,
    responses((status = 201, description = "Committed", body = Message),
        (status = 200, description = "A `client_id` repeat: the original", body = Message),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 413, response = TooLarge), (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)))]
async fn send_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut req): ApiJson<SendMessage>,
) -> ApiResult<Response> {
    req.conversation_id = Some(id_from_path("conversation_id", id, req.conversation_id)?);
    let sent = state.chat.send_message(&user, req).await?;
    let status = if sent.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(sent.message)).into_response())
}

/// # `PATCH /api/messages/{id}`
/// Edits a message's content (its sender only; a deleted message answers 409).
#[utoipa::path(patch, path = "/api/messages/{id}", tag = "messages", params(("id" = String, Path, description = "Message id")), request_body = EditMessage,
    responses((status = 200, description = "The edited message", body = Message),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = TooLarge),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn edit_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut req): ApiJson<EditMessage>,
) -> ApiResult<Response> {
    req.message_id = Some(id_from_path("message_id", id, req.message_id)?);
    Ok(Json(state.chat.edit_message(&user, req).await?).into_response())
}

/// # `DELETE /api/messages/{id}`
/// Soft-deletes a message (its sender, or a group's owner/admin); repeating it returns the
/// deleted message.
#[utoipa::path(delete, path = "/api/messages/{id}", tag = "messages", params(("id" = String, Path, description = "Message id")),
    responses((status = 200, description = "The deleted message", body = Message),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn delete_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.delete_message(&user, &id).await?).into_response())
}
