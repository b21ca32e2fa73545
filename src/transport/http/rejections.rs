//! The one place refused HTTP requests are counted and logged: a middleware that reads the
//! [`Rejected`] mark every error answer carries ([`super::error`]), whichever route, fallback
//! or handshake built it. It runs inside the request span, so an internal error's log line
//! carries the request id.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::error::Rejected;
use crate::core::telemetry;

/// Counts each error answer in `chatd_rejected_total` by its code, and logs the cause of an
/// internal error.
pub async fn record(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(Rejected { code, cause }) = response.extensions().get::<Rejected>() {
        telemetry::rejected(code);
        if let Some(source) = cause {
            tracing::error!(error = %source, "internal error");
        }
    }
    response
}
