//! The admin API under `/api/admin/*` and the read-only admin page at `/admin`, served only
//! when `--admin-key` is set (otherwise every such route is 404 `not_found`, like any unknown
//! route). Every API route needs `Authorization: Bearer <admin key>`, compared in constant
//! time; a user's JWT, a wrong key or none is 401 `unauthorized`. The handlers only decode
//! and encode: the operations live in the core ([`crate::core::admin`]).

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::http::{ApiError, ApiJson, ApiPath, ApiQuery, bearer_token};
use crate::auth::admin_key_matches;
use crate::core::ChatError;
use crate::core::admin::{BanRequest, CreateConversationFor, ListConversationsFor, SystemMessage};
use crate::state::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// The caller holds the admin key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.config.admin_key.as_deref() else {
            return Err(ChatError::not_found("no such route").into());
        };
        let given = bearer_token(parts)
            .ok_or_else(|| ChatError::Unauthorized("missing admin key (Bearer)".into()))?;
        if !admin_key_matches(expected, given) {
            return Err(ChatError::Unauthorized("not the admin key".into()).into());
        }
        Ok(Admin)
    }
}

/// The admin routes and page; empty when no admin key is configured (API off).
pub fn router(state: &AppState) -> Router<AppState> {
    if state.config.admin_key.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/admin", get(page))
        .route("/api/admin/stats", get(stats))
        .route("/api/admin/conversations", post(create_conversation).get(list_conversations))
        .route("/api/admin/conversations/{id}", get(inspect_conversation))
        .route("/api/admin/conversations/{id}/messages", post(system_message))
        .route("/api/admin/users/{id}", get(user_status))
        .route("/api/admin/users/{id}/disconnect", post(disconnect))
        .route("/api/admin/users/{id}/ban", axum::routing::put(ban).delete(unban))
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
        include_str!("../../web/admin.html"),
    )
        .into_response()
}

/// # `GET /api/admin/stats`
async fn stats(State(state): State<AppState>, _: Admin) -> Response {
    Json(state.chat.stats()).into_response()
}

/// # `POST /api/admin/conversations`
/// 201 with the new conversation, 200 with the existing direct one.
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
async fn list_conversations(
    State(state): State<AppState>,
    _: Admin,
    ApiQuery(query): ApiQuery<ListConversationsFor>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.conversations_for(query).await?).into_response())
}

/// # `GET /api/admin/conversations/{id}`
async fn inspect_conversation(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.inspect_conversation(&id).await?).into_response())
}

/// # `POST /api/admin/conversations/{id}/messages`
/// 201 with the committed `system` message.
async fn system_message(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SystemMessage>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(state.chat.post_system_message(&id, req).await?)).into_response())
}

/// # `GET /api/admin/users/{id}`
async fn user_status(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.user_status(&id).await?).into_response())
}

/// # `POST /api/admin/users/{id}/disconnect`
async fn disconnect(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.disconnect_user(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `PUT /api/admin/users/{id}/ban`
/// Body optional: `{reason?}` (JSON), `null` or nothing.
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
async fn unban(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.unban(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
