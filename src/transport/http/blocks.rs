//! The users the caller blocks: block, list and unblock (`/api/blocks[/{user_id}]`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::core::chat::BlockRequest;
use crate::core::model::Block;
use crate::state::AppState;
use crate::transport::openapi::{Invalid, NotFound, TooLarge, Unauthorized, Unavailable};

/// The blocks' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(block, list_blocks)).routes(routes!(unblock))
}

/// # `POST /api/blocks`
/// 201 with `{user_id, created_at}`, 200 when the caller already blocked that user.
#[utoipa::path(post, path = "/api/blocks", tag = "blocks", request_body = BlockRequest,
    responses((status = 201, description = "Blocked", body = Block),
        (status = 200, description = "Already blocked", body = Block),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn block(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<BlockRequest>,
) -> ApiResult<Response> {
    let (block, created) = state.chat.block(&user, req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(block)).into_response())
}

/// Answer of `GET /api/blocks`.
#[derive(Serialize, ToSchema)]
struct BlockList {
    /// The users the caller blocks, oldest block first.
    blocks: Vec<Block>,
}

/// # `GET /api/blocks`
/// The users the caller blocks.
#[utoipa::path(get, path = "/api/blocks", tag = "blocks",
    responses((status = 200, description = "The caller's blocks", body = BlockList),
        (status = 401, response = Unauthorized), (status = 503, response = Unavailable)))]
async fn list_blocks(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(BlockList { blocks: state.chat.blocks(&user).await? }).into_response())
}

/// # `DELETE /api/blocks/{user_id}`
/// Lifts the caller's block of `user_id`.
#[utoipa::path(delete, path = "/api/blocks/{user_id}", tag = "blocks",
    params(("user_id" = String, Path, description = "The blocked user")),
    responses((status = 204, description = "Unblocked"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn unblock(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.unblock(&user, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
