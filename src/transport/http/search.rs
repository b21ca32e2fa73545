//! Message search (`GET /api/search`).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiQuery, AuthUser};
use crate::core::chat::SearchResults;
use crate::core::requests::SearchMessages;
use crate::state::AppState;
use crate::transport::openapi::{Invalid, NotFound, RateLimited, Unauthorized, Unavailable};

/// The search route with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_messages))
}

/// # `GET /api/search?q=&conversation_id=&from=&before=&after=&limit=&cursor=`
/// The caller's non-deleted messages whose text contains every word of `q`
/// (case-insensitive substrings, any language), in the conversations they are a member of,
/// newest first, each with `highlights`: `[start, end)` character ranges of `content`.
/// A `conversation_id` the caller is not in is `not_found`.
#[utoipa::path(get, path = "/api/search", tag = "messages", params(SearchMessages),
    responses((status = 200, description = "A page of results, newest first", body = SearchResults),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 404, response = NotFound), (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)))]
async fn search_messages(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiQuery(query): ApiQuery<SearchMessages>,
) -> ApiResult<Response> {
    Ok(Json(state.chat.search_messages(&user, query).await?).into_response())
}
