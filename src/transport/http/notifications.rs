//! Push notification settings: per conversation (`PUT /api/conversations/{id}/notifications`)
//! and the caller's global settings (`/api/notifications/settings`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::core::model::NotificationSettings;
use crate::core::requests::{NotificationSettingsUpdate, SetNotifications};
use crate::state::AppState;
use crate::transport::openapi::{Forbidden, Invalid, NotFound, TooLarge, Unauthorized, Unavailable};

/// The notification settings' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_notifications))
        .routes(routes!(archive, unarchive))
        .routes(routes!(notification_settings, update_notification_settings))
}

/// # `PUT /api/conversations/{id}/notifications`
/// Turns the caller's push notifications for the conversation on or off; `{enabled: false,
/// until}` mutes it until then.
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
    state.chat.set_notifications(&user, &id, req.enabled, req.until).await?;
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

/// # `PUT /api/conversations/{id}/archive`
/// Archives the conversation for the caller: it leaves their default list
/// (`GET /api/conversations?archived=true` lists it) until a new message comes, unless they
/// muted it.
#[utoipa::path(put, path = "/api/conversations/{id}/archive", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 204, description = "Archived for the caller"),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn archive(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.set_archived(&user, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `DELETE /api/conversations/{id}/archive`
/// Brings an archived conversation back to the caller's list.
#[utoipa::path(delete, path = "/api/conversations/{id}/archive", tag = "conversations",
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 204, description = "Back in the caller's list"),
        (status = 401, response = Unauthorized), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 503, response = Unavailable)))]
async fn unarchive(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.chat.set_archived(&user, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
