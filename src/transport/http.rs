//! REST over HTTP: the contract's `/api/*` routes, health probes, and the error mapping
//! from [`ChatError`] to `{error:{code,message}}` + status.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::core::ChatError;
use crate::core::blocks::BlockRequest;
use crate::core::events::{
    AddMembers, CreateConversation, EditMessage, HistoryQuery, ListConversations, MarkRead, RegisterDevice,
    SendMessage, SetNotifications, UpdateConversation,
};
use crate::core::model::User;
use crate::state::AppState;

/// Lifetime of tokens handed out by the dev endpoint.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A core error on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ChatError);

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        ApiError(err)
    }
}

/// The HTTP status of each contract error code.
pub fn status_of(err: &ChatError) -> StatusCode {
    match err {
        ChatError::Unauthorized(_) | ChatError::TokenExpired => StatusCode::UNAUTHORIZED,
        ChatError::NotAMember | ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
        ChatError::NotFound(_) => StatusCode::NOT_FOUND,
        ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
        ChatError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ChatError::Conflict(_) => StatusCode::CONFLICT,
        ChatError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ChatError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ChatError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `{error:{code,message}}` body shared by every failed request.
pub fn error_body(code: &str, message: &str) -> Json<serde_json::Value> {
    Json(json!({ "error": { "code": code, "message": message } }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        if let ChatError::Internal(source) = &err {
            // Logged inside the request span, which carries the request id.
            tracing::error!(error = %source, "internal error");
        }
        let mut response = (status_of(&err), error_body(err.code(), &err.to_string())).into_response();
        if let ChatError::RateLimited { retry_after } = err {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller, authenticated by `Authorization: Bearer <jwt>`.
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts).ok_or_else(|| ChatError::Unauthorized("missing bearer token".into()))?;
        Ok(AuthUser(state.authenticate(token)?.0))
    }
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// `token=` from a query string (where clients that cannot set headers put it).
pub fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
}

/// The token of a long-lived request (`/ws`, the SSE stream): `?token=`, else
/// `Authorization: Bearer`.
pub fn request_token(parts: &Parts) -> Option<String> {
    query_token(parts.uri.query()).or_else(|| bearer_token(parts).map(str::to_owned))
}

/// A JSON body whose rejections are contract errors: 400 `invalid`, 413 `too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError(json_rejection(rejection))),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ChatError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ChatError::TooLarge("request body is over the size limit".into());
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ChatError::invalid("expected a JSON body with Content-Type: application/json")
        }
        JsonRejection::JsonDataError(e) => ChatError::invalid(e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ChatError::invalid(e.body_text()),
        other => ChatError::invalid(other.body_text()),
    }
}

/// Query parameters whose rejections are 400 `invalid`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| ApiError(ChatError::invalid(e.body_text())))
    }
}

/// Path parameters whose rejections are 400 `invalid`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e: PathRejection| ApiError(ChatError::invalid(e.body_text())))
    }
}

/// Puts the path's id into a body field, refusing a body that names a different one.
fn id_from_path(field: &str, path_id: String, body_id: Option<String>) -> Result<String, ChatError> {
    match body_id {
        Some(id) if id != path_id => {
            Err(ChatError::invalid(format!("{field} in the body differs from the path")))
        }
        _ => Ok(path_id),
    }
}

/// The REST API under `/api` plus the health probes.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/conversations", post(create_conversation).get(list_conversations))
        .route("/api/conversations/{id}", get(get_conversation).patch(update_conversation))
        .route("/api/conversations/{id}/members", post(add_members))
        .route("/api/conversations/{id}/members/{user_id}", axum::routing::delete(remove_member))
        .route("/api/conversations/{id}/messages", get(history).post(send_message))
        .route("/api/conversations/{id}/read", post(mark_read))
        .route("/api/conversations/{id}/notifications", put(set_notifications))
        .route("/api/messages/{id}", axum::routing::patch(edit_message).delete(delete_message))
        .route("/api/unread", get(unread))
        .route("/api/devices", post(register_device).get(list_devices))
        .route("/api/devices/{id}", axum::routing::delete(remove_device))
        .route("/api/blocks", post(block).get(list_blocks))
        .route("/api/blocks/{user_id}", axum::routing::delete(unblock));
    if state.config.dev {
        router = router.route("/api/dev/token", post(dev_token));
    }
    router
}

/// # `GET /healthz`
/// Liveness: the process serves requests.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// # `GET /readyz`
/// Readiness: not draining and the store answers.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    if state.is_draining() {
        return Err(ChatError::Unavailable("draining".into()).into());
    }
    state.chat.ready().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// # `POST /api/conversations`
/// 201 with the new conversation, 200 with the existing direct one.
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
async fn list_conversations(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(query): ApiQuery<ListConversations>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.list_conversations(&user, query).await?).into_response())
}

/// # `GET /api/conversations/{id}`
async fn get_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.conversation(&user, &id).await?).into_response())
}

/// # `PATCH /api/conversations/{id}`
async fn update_conversation(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateConversation>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.update_conversation(&user, &id, req).await?).into_response())
}

/// # `POST /api/conversations/{id}/members`
async fn add_members(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<AddMembers>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.add_members(&user, &id, req).await?).into_response())
}

/// # `DELETE /api/conversations/{id}/members/{user_id}`
async fn remove_member(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath((id, member)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.chat.remove_member(&user, &id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /api/conversations/{id}/messages?before_seq=&after_seq=&limit=`
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
async fn delete_message(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.delete_message(&user, &id).await?).into_response())
}

/// # `POST /api/conversations/{id}/read`
async fn mark_read(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(mut req): ApiJson<MarkRead>,
) -> ApiResult<Response> {
    req.conversation_id = Some(id_from_path("conversation_id", id, req.conversation_id)?);
    let last_read_seq = state.chat.mark_read(&user, req).await?;
    Ok(Json(json!({ "last_read_seq": last_read_seq })).into_response())
}

/// # `PUT /api/conversations/{id}/notifications`
async fn set_notifications(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetNotifications>,
) -> ApiResult<StatusCode> {
    state.chat.set_notifications(&user, &id, req.enabled).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /api/unread`
async fn unread(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(state.chat.unread(&user).await?).into_response())
}

/// # `POST /api/devices`
/// 201 with the device (the same id when `(platform, token)` was registered before).
async fn register_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<RegisterDevice>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(state.chat.register_device(&user, req).await?)).into_response())
}

/// # `GET /api/devices`
async fn list_devices(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(json!({ "devices": state.chat.devices(&user).await? })).into_response())
}

/// # `DELETE /api/devices/{id}`
async fn remove_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.remove_device(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `POST /api/blocks`
/// 201 with `{user_id, created_at}`, 200 when the caller already blocked that user.
async fn block(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<BlockRequest>,
) -> ApiResult<Response> {
    let (block, created) = state.chat.block(&user, req).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(block)).into_response())
}

/// # `GET /api/blocks`
async fn list_blocks(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(json!({ "blocks": state.chat.blocks(&user).await? })).into_response())
}

/// # `DELETE /api/blocks/{user_id}`
async fn unblock(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(user_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.unblock(&user, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/dev/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    user_id: String,
    #[serde(default)]
    name: Option<String>,
}

/// # `POST /api/dev/token` (only with `--dev`)
/// Hands anyone a 24 h token for any user id: for the bundled page and local trials.
async fn dev_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> ApiResult<Response> {
    let token = state.auth.mint(&req.user_id, req.name, DEV_TOKEN_TTL)?;
    Ok(Json(json!({ "token": token })).into_response())
}
