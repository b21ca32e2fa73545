//! A conversation's members: add, remove or leave (`/api/conversations/{id}/members`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::core::model::Conversation;
use crate::core::requests::AddMembers;
use crate::state::AppState;
use crate::transport::openapi::{
    Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};

/// The members' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(add_members)).routes(routes!(remove_member))
}

/// # `POST /api/conversations/{id}/members`
/// Adds members to a group (owners and admins; only the owner adds admins).
#[utoipa::path(post, path = "/api/conversations/{id}/members", tag = "conversations", params(("id" = String, Path, description = "Conversation id")),
    request_body = AddMembers,
    responses((status = 200, description = "The conversation with its new members", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = TooLarge),
        (status = 429, response = RateLimited), (status = 503, response = Unavailable)))]
async fn add_members(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AddMembers>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.add_members(&user, &id, req).await?).into_response())
}

/// # `DELETE /api/conversations/{id}/members/{user_id}`
/// Removes a member, or leaves; direct conversations refuse it (409).
#[utoipa::path(delete, path = "/api/conversations/{id}/members/{user_id}", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id"), ("user_id" = String, Path, description = "The member to remove")),
    responses((status = 204, description = "Removed (or left)"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 503, response = Unavailable)))]
async fn remove_member(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, member)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.chat.remove_member(&user, &id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}
