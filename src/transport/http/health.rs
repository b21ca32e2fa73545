//! The health probes: `GET /healthz` (liveness) and `GET /readyz` (readiness).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use crate::core::ChatError;
use crate::state::AppState;
use crate::transport::openapi::Unavailable;

/// The probes' routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
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
