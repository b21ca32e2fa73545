//! The REST API's extractors, whose rejections are contract errors ([`ApiError`]): the
//! caller (a user's JWT, or the admin key), a JSON body, query and path parameters, and the
//! token readers the long-lived requests (`/ws`, the SSE stream, Socket.IO) share.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::admin_key_matches;
use crate::core::model::User;
use crate::core::{ChatError, validate};
use crate::state::AppState;

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

/// The caller holds the admin key (`Authorization: Bearer <admin key>`, compared in constant
/// time). Without `--admin-key` every admin route is 404 `not_found`, like any unknown route.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.config.admin_key.as_deref() else {
            return Err(ChatError::not_found("no such route").into());
        };
        let given = bearer_token(parts)
            .ok_or_else(|| ChatError::Unauthorized("missing admin key (Bearer)".into()))?;
        if !admin_key_matches(expected, given) {
            return Err(ChatError::Unauthorized("not the admin key".into()).into());
        }
        Ok(Admin)
    }
}

/// Puts the path's id into a body field, refusing a body that names a different one.
pub fn id_from_path(field: &str, path_id: String, body_id: Option<String>) -> Result<String, ChatError> {
    match body_id {
        Some(id) if id != path_id => {
            Err(ChatError::invalid(format!("{field} in the body differs from the path")))
        }
        _ => Ok(path_id),
    }
}
