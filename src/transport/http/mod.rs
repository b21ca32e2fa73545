//! REST over HTTP: the contract's `/api/*` routes and the health probes, one module per
//! resource, assembled here with the OpenAPI document (`GET /api/openapi.json`) that lists
//! exactly the routes served.
//!
//! Below the resources: [`error`] (a core error as an HTTP answer, pure), [`extract`] (the
//! extractors, whose rejections are contract errors) and [`rejections`] (the middleware that
//! counts and logs every refused request).

pub mod admin;
mod annotations;
mod blocks;
mod conversations;
mod dev;
mod devices;
pub mod error;
pub mod extract;
mod health;
mod media;
mod members;
mod messages;
mod notifications;
mod reads;
pub mod rejections;
mod search;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;
use crate::transport::openapi::{
    self, Conflict, Forbidden, Invalid, NotFound, RateLimited, SecuritySchemes, TooLarge, Unauthorized,
    Unavailable,
};

/// The document's header, shared components and the routes served outside the REST router
/// (the SSE stream, `/metrics`). Every operation needs a bearer token unless it says
/// otherwise.
#[derive(OpenApi)]
#[openapi(
    info(title = "chatd", description = "REST API of chatd, a real-time chat backend. The realtime \
        events (Socket.IO, plain WebSocket `/ws`) are described in docs/protocol.md."),
    paths(super::sse::notification_stream, super::prometheus::metrics),
    components(responses(Invalid, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited, Unavailable)),
    modifiers(&SecuritySchemes),
    security(("bearer" = [])),
    tags(
        (name = "conversations", description = "Conversations and their members"),
        (name = "messages", description = "Messages, history and read receipts"),
        (name = "media", description = "Photos and files: uploads and attachment downloads"),
        (name = "devices", description = "Push notification devices"),
        (name = "blocks", description = "Users the caller blocks"),
        (name = "admin", description = "Operators' API (with `--admin-key`; not served without it)"),
        (name = "notifications", description = "Unread counts and the notification stream"),
        (name = "health", description = "Probes for orchestrators"),
        (name = "dev", description = "Development helpers (only with `--dev`)"),
    )
)]
pub struct ApiDoc;

/// The REST API under `/api` (the admin API with `--admin-key`, the dev token with `--dev`),
/// the health probes, the admin page, and `GET /api/openapi.json` describing them. Routes are
/// registered with their OpenAPI operations (`routes!`), so the document lists exactly the
/// routes served.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(conversations::routes())
        .merge(members::routes())
        .merge(messages::routes())
        .merge(annotations::routes())
        .merge(media::routes())
        .merge(reads::routes())
        .merge(search::routes())
        .merge(notifications::routes())
        .merge(devices::routes())
        .merge(blocks::routes())
        .merge(admin::routes(state));
    if state.config.dev {
        router = router.merge(dev::routes());
    }
    let (router, mut api) = router.split_for_parts();
    openapi::tidy_summaries(&mut api);
    router.route("/api/openapi.json", get(openapi::serve(&api))).merge(admin::page_router(state))
}
