//! Push notification devices: register, list and remove (`/api/devices[/{id}]`).

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
use crate::core::model::Device;
use crate::core::requests::RegisterDevice;
use crate::state::AppState;
use crate::transport::openapi::{Invalid, NotFound, TooLarge, Unauthorized, Unavailable};

/// The devices' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register_device, list_devices)).routes(routes!(remove_device))
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
