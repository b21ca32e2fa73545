//! Conversations: create, list, read and update (`/api/conversations[/{id}]`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::core::chat::ConversationPage;
use crate::core::model::Conversation;
use crate::core::requests::{CreateConversation, ListConversations, UpdateConversation};
use crate::state::AppState;
use crate::transport::openapi::{
    Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};

/// The conversations' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_conversation, list_conversations))
        .routes(routes!(get_conversation, update_conversation))
}

/// # `POST /api/conversations`
/// 201 with the new conversation, 200 with the existing direct one.
#[utoipa::path(post, path = "/api/conversations", tag = "conversations", request_body = CreateConversation,
    responses((status = 201, description = "Created", body = Conversation),
        (status = 200, description = "The direct conversation existed", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 413, response = TooLarge),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn create_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CreateConversation>,
) -> ApiResult<Response> {
    let (conversation, created) = state.chat.create_conversation(&user, req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(conversation)).into_response())
}

/// # `GET /api/conversations?limit=&cursor=`
/// The caller's conversations, newest activity first, in pages of `limit` (default 20, at
/// most 100); pass `next_cursor` as `cursor` for the next page.
#[utoipa::path(get, path = "/api/conversations", tag = "conversations", params(ListConversations),
    responses((status = 200, description = "A page, newest activity first", body = ConversationPage),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)))]
async fn list_conversations(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(query): ApiQuery<ListConversations>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.list_conversations(&user, query).await?).into_response())
}

/// # `GET /api/conversations/{id}`
/// One conversation, for its members.
#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn get_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.conversation(&user, &id).await?).into_response())
}

/// # `PATCH /api/conversations/{id}`
/// Replaces the given fields (`name`, `metadata`); owners and admins only.
#[utoipa::path(patch, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path, description = "Conversation id")),
    request_body = UpdateConversation,
    responses((status = 200, description = "The updated conversation", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn update_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateConversation>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.update_conversation(&user, &id, req).await?).into_response())
}
