//! Development helpers, served only with `--dev`: `POST /api/dev/token`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::ApiJson;
use crate::state::AppState;
use crate::transport::openapi::{Invalid, TooLarge};

/// Lifetime of tokens handed out by the dev endpoint.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The dev routes with their OpenAPI operations (the caller serves them only with `--dev`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(dev_token))
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
