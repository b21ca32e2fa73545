//! The bundled web chat page: static files compiled into the binary (no build step), served
//! at `/`. The page talks to chatd like any other client: REST for lists and history, `/ws`
//! for live events.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// One embedded file with its content type.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// `GET /` and the page's assets.
pub fn router() -> Router<AppState> {
    let page = asset("text/html; charset=utf-8", include_str!("../../web/index.html"));
    let script = asset("text/javascript; charset=utf-8", include_str!("../../web/app.js"));
    let style = asset("text/css; charset=utf-8", include_str!("../../web/app.css"));
    Router::new()
        .route("/", get(move || async move { page }))
        .route("/app.js", get(move || async move { script }))
        .route("/app.css", get(move || async move { style }))
}
