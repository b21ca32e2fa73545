//! The OpenAPI 3.1 description of the REST API, served at `GET /api/openapi.json`.
//!
//! The REST routes are registered through `utoipa_axum`'s `OpenApiRouter` (the REST router
//! in `transport::http` assembles them with the document's header), so every route the
//! server answers is in the document and every documented route is served: the two cannot
//! drift. This module holds what the routes' annotations share: the security schemes, and the
//! error responses, whose code enums are derived from [`status_of`] (the one mapping the edge
//! uses).

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{self, ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, ToResponse};

use super::http::error::status_of;
use crate::core::ChatError;

/// Adds the security schemes: `bearer` (`Authorization: Bearer <jwt>`, every `/api` route),
/// `admin_key` (`Authorization: Bearer <admin key>`, the admin API) and `token_query`
/// (`?token=<jwt>`, for clients that cannot set headers).
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut admin_key = Http::new(HttpAuthScheme::Bearer);
        admin_key.description = Some("The operator's `--admin-key` (admin API only)".into());
        components.add_security_scheme("admin_key", SecurityScheme::Http(admin_key));
        components.add_security_scheme(
            "token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
    }
}

/// One of each [`ChatError`] variant, to read their codes and statuses from.
fn every_error() -> [ChatError; 11] {
    [
        ChatError::Unauthorized(String::new()),
        ChatError::TokenExpired,
        ChatError::NotAMember,
        ChatError::Forbidden(String::new()),
        ChatError::NotFound(String::new()),
        ChatError::Invalid(String::new()),
        ChatError::TooLarge(String::new()),
        ChatError::Conflict(String::new()),
        ChatError::RateLimited { retry_after: std::time::Duration::from_secs(1) },
        ChatError::Unavailable(String::new()),
        ChatError::Internal(String::new().into()),
    ]
}

/// The codes an error response with `status` may carry.
fn codes_of(status: StatusCode) -> Vec<&'static str> {
    every_error().iter().filter(|err| status_of(err) == status).map(ChatError::code).collect()
}

/// `{error:{code,message}}` with `code` limited to the codes of `status`.
fn error_response(status: StatusCode, description: &str) -> openapi::Response {
    let detail = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes_of(status))))
        .property(
            "message",
            ObjectBuilder::new().schema_type(Type::String).description(Some("Human readable")),
        )
        .required("code")
        .required("message");
    let body = ObjectBuilder::new().property("error", detail).required("error");
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(body)).build());
    if status == StatusCode::TOO_MANY_REQUESTS {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1));
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Whole seconds until a retry may succeed"))
                .build(),
        );
    }
    response.build()
}

/// Declares the error responses the routes refer to, one per status.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident = $status:ident, $description:literal;)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<openapi::Response>) {
                (stringify!($name), error_response(StatusCode::$status, $description).into())
            }
        }
    )+};
}

error_responses! {
    /// 400 `invalid`.
    Invalid = BAD_REQUEST, "Malformed JSON, wrong types, missing or unknown fields, bad values";
    /// 401 `unauthorized` / `token_expired`.
    Unauthorized = UNAUTHORIZED, "Missing, invalid or expired token";
    /// 403 `not_a_member` / `forbidden`.
    Forbidden = FORBIDDEN, "Not a member of the conversation, or the role does not allow it";
    /// 404 `not_found`.
    NotFound = NOT_FOUND, "No such conversation, message, member or device";
    /// 409 `conflict`.
    Conflict = CONFLICT, "The request conflicts with the resource's state";
    /// 413 `too_large`.
    TooLarge = PAYLOAD_TOO_LARGE, "Content, body or group over the limit";
    /// 429 `rate_limited`, with `Retry-After`.
    RateLimited = TOO_MANY_REQUESTS, "Over a per-user rate limit (message writes, or an event budget)";
    /// 503 `unavailable`.
    Unavailable = SERVICE_UNAVAILABLE, "The node is draining or its store is unreachable";
}

/// Splits the handlers' doc headings (`# \`POST /api/conversations\`` then prose) into each
/// operation's summary (the heading) and description (the prose).
pub fn tidy_summaries(api: &mut openapi::OpenApi) {
    let operations = api.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
            .into_iter()
            .flatten()
    });
    for operation in operations {
        let Some(summary) = operation.summary.take() else { continue };
        let summary = summary.strip_prefix("# ").unwrap_or(&summary);
        let (heading, prose) = summary.split_once('\n').unwrap_or((summary, ""));
        operation.summary = Some(heading.to_owned());
        let description = [prose, operation.description.as_deref().unwrap_or("")]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        operation.description = (!description.is_empty()).then_some(description);
    }
}

/// The `GET /api/openapi.json` handler: the document, serialized once.
pub fn serve(
    api: &openapi::OpenApi,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let json = match api.to_json() {
        Ok(json) => Bytes::from(json),
        Err(err) => {
            tracing::error!(error = %err, "could not serialize the OpenAPI document");
            Bytes::from_static(b"{}")
        }
    };
    move || {
        let headers = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        std::future::ready((headers, json.clone()).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_belongs_to_exactly_one_error_status() {
        let statuses = [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR,
        ];
        let mut documented: Vec<&str> = statuses.iter().flat_map(|status| codes_of(*status)).collect();
        documented.sort_unstable();
        let mut all: Vec<&str> = every_error().iter().map(ChatError::code).collect();
        all.sort_unstable();
        assert_eq!(documented, all);
        assert_eq!(codes_of(StatusCode::UNAUTHORIZED), ["unauthorized", "token_expired"]);
        assert_eq!(codes_of(StatusCode::FORBIDDEN), ["not_a_member", "forbidden"]);
    }

    #[test]
    fn rate_limited_response_documents_retry_after() {
        let response = error_response(StatusCode::TOO_MANY_REQUESTS, "x");
        assert!(response.headers.contains_key("Retry-After"));
    }
}
