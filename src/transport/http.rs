//! REST over HTTP: the contract's `/api/*` routes, health probes, and the error mapping
//! from [`ChatError`] to `{error:{code,message}}` + status.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{
    self, Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};
use crate::core::chat::BlockRequest;
use crate::core::chat::{ConversationPage, MessagePage, Unread};
use crate::core::events::{
    AddMembers, CreateConversation, EditMessage, HistoryQuery, ListConversations, MarkRead,
    NotificationSettingsUpdate, RegisterDevice, SendMessage, SetNotifications, UpdateConversation,
};
use crate::core::model::{Block, Conversation, Device, Message, NotificationSettings, User};
use crate::core::telemetry;
use crate::core::{ChatError, validate};
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

/// The `{error:{code,message}}` body shared by every failed request; counted in
/// `chatd_rejected_total` (every HTTP error answer is built here).
pub fn error_body(code: &'static str, message: &str) -> Json<serde_json::Value> {
    telemetry::rejected(code);
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

/// A JSON body whose rejections are contract errors: 400 `invalid` (also for nesting deeper
/// than `--max-json-depth`, checked before parsing), 413 `too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        if !json_type {
            return Err(ApiError(ChatError::invalid(
                "expected a JSON body with Content-Type: application/json",
            )));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            ApiError(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ChatError::TooLarge("request body is over the size limit".into())
            } else {
                ChatError::invalid(rejection.body_text())
            })
        })?;
        // Every body of the API is an object; serde would also fill a struct from an array.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError(ChatError::invalid("the body must be a JSON object")));
        }
        validate::json_depth(&body, state.config.connections.max_json_depth, 0)?;
        match Json::<T>::from_bytes(&body) {
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

/// The REST API under `/api` plus the health probes, and `GET /api/openapi.json`
/// describing them. Routes are registered with their OpenAPI operations (`routes!`), so the
/// document lists exactly the routes served.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(create_conversation, list_conversations))
        .routes(routes!(get_conversation, update_conversation))
        .routes(routes!(add_members))
        .routes(routes!(remove_member))
        .routes(routes!(history, send_message))
        .routes(routes!(mark_read))
        .routes(routes!(set_notifications))
        .routes(routes!(edit_message, delete_message))
        .routes(routes!(notification_settings, update_notification_settings))
        .routes(routes!(unread))
        .routes(routes!(register_device, list_devices))
        .routes(routes!(remove_device))
        .routes(routes!(block, list_blocks))
        .routes(routes!(unblock))
        .merge(super::admin::api_routes(state));
    if state.config.dev {
        router = router.routes(routes!(dev_token));
    }
    let (router, mut api) = router.split_for_parts();
    openapi::tidy_summaries(&mut api);
    router.route("/api/openapi.json", get(openapi::serve(&api)))
}

/// Body of the health probes' answers.
#[derive(Serialize, ToSchema)]
struct Status {
    /// `ok` (liveness) or `ready` (readiness).
    status: &'static str,
}

/// # `GET /healthz`
/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process serves", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// # `GET /readyz`
/// Readiness: not draining and the store answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Ready for traffic", body = Status), (status = 503, response = Unavailable)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    if state.is_draining() {
        return Err(ChatError::Unavailable("draining".into()).into());
    }
    state.chat.ready().await?;
    Ok(Json(Status { status: "ready" }))
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

/// # `PUT /api/conversations/{id}/notifications`
/// Turns the caller's push notifications for the conversation on or off.
#[utoipa::path(put, path = "/api/conversations/{id}/notifications", tag = "notifications", params(("id" = String, Path, description = "Conversation id")),
    request_body = SetNotifications,
    responses((status = 204, description = "Set"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn set_notifications(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetNotifications>,
) -> ApiResult<StatusCode> {
    state.chat.set_notifications(&user, &id, req.enabled).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /api/notifications/settings`
/// The caller's push settings for all conversations.
#[utoipa::path(get, path = "/api/notifications/settings", tag = "notifications",
    responses((status = 200, description = "The caller's push settings", body = NotificationSettings),
        (status = 401, response = Unauthorized), (status = 503, response = Unavailable)))]
async fn notification_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> ApiResult<Response> {
    Ok(Json(state.chat.notification_settings(&user).await?).into_response())
}

/// # `PUT /api/notifications/settings`
/// Changes the fields given; answers with the settings now in force.
#[utoipa::path(put, path = "/api/notifications/settings", tag = "notifications",
    request_body = NotificationSettingsUpdate,
    responses((status = 200, description = "The settings now in force", body = NotificationSettings),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn update_notification_settings(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<NotificationSettingsUpdate>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.update_notification_settings(&user, req).await?).into_response())
}

/// # `GET /api/unread`
/// The caller's unread counts: the total, and per conversation with unread messages.
#[utoipa::path(get, path = "/api/unread", tag = "notifications",
    responses((status = 200, description = "The caller's unread counts", body = Unread),
        (status = 401, response = Unauthorized), (status = 503, response = Unavailable)))]
async fn unread(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(state.chat.unread(&user).await?).into_response())
}

/// # `POST /api/devices`
/// 201 with the device (the same id when `(platform, token)` was registered before).
#[utoipa::path(post, path = "/api/devices", tag = "devices", request_body = RegisterDevice,
    responses((status = 201, description = "Registered (or refreshed, same id)", body = Device),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn register_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<RegisterDevice>,
) -> ApiResult<Response> {
    Ok((StatusCode::CREATED, Json(state.chat.register_device(&user, req).await?)).into_response())
}

/// Answer of `GET /api/devices`.
#[derive(Serialize, ToSchema)]
struct DeviceList {
    /// The caller's devices.
    devices: Vec<Device>,
}

/// # `GET /api/devices`
/// The caller's registered devices.
#[utoipa::path(get, path = "/api/devices", tag = "devices",
    responses((status = 200, description = "The caller's devices", body = DeviceList),
        (status = 401, response = Unauthorized), (status = 503, response = Unavailable)))]
async fn list_devices(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Response> {
    Ok(Json(DeviceList { devices: state.chat.devices(&user).await? }).into_response())
}

/// # `DELETE /api/devices/{id}`
/// Unregisters one of the caller's devices.
#[utoipa::path(delete, path = "/api/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 204, description = "Removed"),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
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

/// Body of `POST /api/dev/token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    /// The token's `sub`.
    user_id: String,
    /// The token's `name` (display name).
    #[serde(default)]
    name: Option<String>,
}

/// Answer of `POST /api/dev/token`.
#[derive(Serialize, ToSchema)]
struct DevToken {
    /// A JWT valid for 24 hours.
    token: String,
}

/// # `POST /api/dev/token` (only with `--dev`)
/// Hands anyone a 24 h token for any user id: for the bundled page and local trials.
#[utoipa::path(post, path = "/api/dev/token", tag = "dev", security(()), request_body = DevTokenRequest,
    responses((status = 200, description = "A 24 h token for the user", body = DevToken),
        (status = 400, response = Invalid), (status = 413, response = TooLarge)))]
async fn dev_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DevTokenRequest>,
) -> ApiResult<Response> {
    let token = state.auth.mint(&req.user_id, req.name, DEV_TOKEN_TTL)?;
    Ok(Json(DevToken { token }).into_response())
}
