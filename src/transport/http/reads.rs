//! Read state: the caller's read position in a conversation
//! (`POST /api/conversations/{id}/read`) and their unread counts (`GET /api/unread`).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, AuthUser, id_from_path};
use crate::core::chat::Unread;
use crate::core::requests::MarkRead;
use crate::state::AppState;
use crate::transport::openapi::{Forbidden, Invalid, NotFound, TooLarge, Unauthorized, Unavailable};

/// The read-state routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(mark_read)).routes(routes!(unread))
}

/// Answer of `POST /api/conversations/{id}/read`.
#[derive(Serialize, ToSchema)]
struct ReadState {
    /// The caller's read position after the request (never lower than before).
    last_read_seq: i64,
}

/// # `POST /api/conversations/{id}/read`
/// Moves the caller's read position forward (never back, at most `last_seq`).
#[utoipa::path(post, path = "/api/conversations/{id}/read", tag = "messages", params(("id" = String, Path, description = "Conversation id")), request_body = MarkRead,
    responses((status = 200, description = "The caller's read position", body = ReadState),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn mark_read(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut req): ApiJson<MarkRead>,
) -> ApiResult<Response> {
    req.conversation_id = Some(id_from_path("conversation_id", id, req.conversation_id)?);
    let last_read_seq = state.chat.mark_read(&user, req).await?;
    Ok(Json(ReadState { last_read_seq }).into_response())
}

/// # `GET /api/unread`
/// The caller's unread counts: the total, and per conversation with unread messages.
#[utoipa::path(get, path = "/api/unread", tag = "notifications",
    responses((status = 200, description = "The caller's unread counts", body = Unread),
        (status = 401, response = Unauthorized), (status = 503, response = Unavailable)))]
async fn unread(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(state.chat.unread(&user).await?).into_response())
}
