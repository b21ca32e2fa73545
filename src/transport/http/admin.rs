//! The admin API under `/api/admin/*` and the read-only admin page at `/admin`, served only
//! when `--admin-key` is set (otherwise every such route is 404 `not_found`, like any unknown
//! route). Every API route needs `Authorization: Bearer <admin key>`, compared in constant
//! time ([`Admin`]); a user's JWT, a wrong key or none is 401 `unauthorized`. The handlers
//! only decode and encode: the operations live in the core ([`crate::core::chat::admin`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use crate::core::ChatError;
use crate::core::chat::ConversationPage;
use crate::core::chat::admin::{
    BanRequest, ConversationStatusChange, CreateConversationFor, ListConversationsFor, Stats, SystemMessage,
    UserStatus,
};
use crate::core::model::{Conversation, Message};
use crate::state::AppState;
use crate::transport::openapi::{Forbidden, Invalid, NotFound, TooLarge, Unauthorized, Unavailable};

/// The admin page; empty when no admin key is configured (API off).
pub fn page_router(state: &AppState) -> Router<AppState> {
    if state.config.admin_key.is_none() {
        return Router::new();
    }
    Router::new().route("/admin", get(page))
}

/// The admin API routes with their OpenAPI operations (merged into the REST API's document
/// by the router); empty when no admin key is configured (API off).
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    if state.config.admin_key.is_none() {
        return OpenApiRouter::new();
    }
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(create_conversation, list_conversations))
        .routes(routes!(inspect_conversation, set_conversation_status))
        .routes(routes!(system_message))
        .routes(routes!(user_status))
        .routes(routes!(disconnect))
        .routes(routes!(ban, unban))
}

/// # `GET /admin`
/// The read-only stats page (embedded; it asks for the key and polls the stats).
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // Its own inline script and style, requests to this origin only, never framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        include_str!("../../../web/admin.html"),
    )
        .into_response()
}

/// # `GET /api/admin/stats`
/// This node's connections, users online and messages in the last minute.
#[utoipa::path(get, path = "/api/admin/stats", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, description = "This node's figures", body = Stats),
        (status = 401, response = Unauthorized)))]
async fn stats(State(state): State<AppState>, _: Admin) -> Response {
    Json(state.chat.stats()).into_response()
}

/// # `POST /api/admin/conversations`
/// 201 with the new conversation, 200 with the existing direct one.
#[utoipa::path(post, path = "/api/admin/conversations", tag = "admin", security(("admin_key" = [])),
    request_body = CreateConversationFor,
    responses((status = 201, description = "Created on the owner's behalf", body = Conversation),
        (status = 200, description = "The direct conversation existed", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 413, response = TooLarge),
        (status = 503, response = Unavailable)))]
async fn create_conversation(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<CreateConversationFor>,
) -> ApiResult<Response> {
    let (conversation, created) = state.chat.create_conversation_for(req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(conversation)).into_response())
}

/// # `GET /api/admin/conversations?user_id=&limit=&cursor=`
/// One user's conversations, or every conversation, newest activity first.
#[utoipa::path(get, path = "/api/admin/conversations", tag = "admin", security(("admin_key" = [])),
    params(ListConversationsFor),
    responses((status = 200, description = "A page, newest activity first", body = ConversationPage),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)))]
async fn list_conversations(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ListConversationsFor>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.conversations_for(query).await?).into_response())
}

/// # `GET /api/admin/conversations/{id}`
/// Any conversation, with all its members.
#[utoipa::path(get, path = "/api/admin/conversations/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, description = "The conversation (unread_count 0)", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn inspect_conversation(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.inspect_conversation(&id).await?).into_response())
}

/// # `PATCH /api/admin/conversations/{id}`
/// Sets a conversation's status as the platform: `blocked` (closed, e.g. a fraudulent
/// listing), `archived`, or `active` again, with an optional reason shown to members.
#[utoipa::path(patch, path = "/api/admin/conversations/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ConversationStatusChange,
    responses((status = 200, description = "The conversation (unread_count 0)", body = Conversation),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn set_conversation_status(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ConversationStatusChange>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.set_conversation_status(&id, req).await?).into_response())
}

/// # `POST /api/admin/conversations/{id}/messages`
/// 201 with the committed `system` message.
#[utoipa::path(post, path = "/api/admin/conversations/{id}/messages", tag = "admin",
    security(("admin_key" = [])), params(("id" = String, Path, description = "Conversation id")),
    request_body = SystemMessage,
    responses((status = 201, description = "Committed and fanned out", body = Message),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 413, response = TooLarge),
        (status = 503, response = Unavailable)))]
async fn system_message(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SystemMessage>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(state.chat.post_system_message(&id, req).await?)).into_response())
}

/// # `GET /api/admin/users/{id}`
/// Whether the user is banned and online.
#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user's standing", body = UserStatus),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)))]
async fn user_status(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.user_status(&id).await?).into_response())
}

/// # `POST /api/admin/users/{id}/disconnect`
/// Closes the user's connections on every node (they may reconnect).
#[utoipa::path(post, path = "/api/admin/users/{id}/disconnect", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Disconnected everywhere"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized)))]
async fn disconnect(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.disconnect_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `PUT /api/admin/users/{id}/ban`
/// Body optional: `{reason?}` (JSON), `null` or nothing.
#[utoipa::path(put, path = "/api/admin/users/{id}/ban", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "User id")),
    request_body(content = Option<BanRequest>, description = "Optional"),
    responses((status = 204, description = "Banned; their connections are cut on every node"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)))]
async fn ban(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        BanRequest::default()
    } else {
        serde_json::from_slice::<Option<BanRequest>>(&body)
            .map_err(|err| ChatError::invalid(format!("invalid body: {err}")))?
            .unwrap_or_default()
    };
    state.chat.ban(&id, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `DELETE /api/admin/users/{id}/ban`
/// Lifts a ban (idempotent).
#[utoipa::path(delete, path = "/api/admin/users/{id}/ban", tag = "admin", security(("admin_key" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Not banned (any more)"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)))]
async fn unban(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.unban(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
