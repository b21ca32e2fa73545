//! Photos and files: opening an upload (`POST /api/uploads`), receiving its bytes on local
//! disk (`PUT /api/uploads/{id}/content`), and downloading attachments and thumbnails
//! (`GET /api/attachments/{id}`, `…/thumbnail`) for members only.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, error_response};
use super::extract::{ApiJson, ApiPath, AuthUser, query_token, request_token};
use crate::core::ChatError;
use crate::core::chat::{AttachmentDownload, UploadTicket};
use crate::core::model::User;
use crate::core::ports::{ByteRange, Download};
use crate::core::requests::CreateUpload;
use crate::state::AppState;
use crate::transport::openapi::{
    Conflict, Forbidden, Invalid, NotFound, RateLimited, TooLarge, Unauthorized, Unavailable,
};

/// The media routes with their OpenAPI operations.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_upload))
        .routes(routes!(receive_upload))
        .routes(routes!(attachment))
        .routes(routes!(thumbnail))
}

/// # `POST /api/uploads`
/// Opens an upload in a conversation (members only): answers where the client uploads the
/// bytes directly (`method` to `url` with `headers`, or a multipart POST with `fields` then
/// the file), until `expires_at`. Then the client sends a message with
/// `attachments: [{upload_id}]`; chatd checks the bytes then.
#[utoipa::path(post, path = "/api/uploads", tag = "media", request_body = CreateUpload,
    responses((status = 201, description = "Where to upload", body = UploadTicket),
        (status = 400, response = Invalid), (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden), (status = 404, response = NotFound),
        (status = 413, response = TooLarge), (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)))]
async fn open_upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CreateUpload>,
) -> ApiResult<Response> {
    let ticket = state.chat.open_upload(&user, req).await?;
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

/// # `PUT /api/uploads/{id}/content`
/// The bytes of an upload, when chatd stores media on its own disk (the URL `POST
/// /api/uploads` answered, with its `token`). Exactly the declared length and
/// `Content-Type`; no other authentication.
#[utoipa::path(put, path = "/api/uploads/{id}/content", tag = "media", security(()),
    params(("id" = String, Path, description = "Upload id"),
        ("token" = String, Query, description = "The upload's token, from its URL")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses((status = 204, description = "Stored"),
        (status = 400, response = Invalid), (status = 403, response = Forbidden),
        (status = 404, response = NotFound), (status = 409, response = Conflict),
        (status = 413, response = TooLarge), (status = 503, response = Unavailable)))]
async fn receive_upload(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> ApiResult<Response> {
    let token = query_token(request.uri().query())
        .ok_or_else(|| ChatError::forbidden("the upload URL's token is missing"))?;
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let limit = usize::try_from(state.chat.max_upload_bytes()).unwrap_or(usize::MAX);
    let bytes = to_bytes(request.into_body(), limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ChatError::TooLarge(format!("files are at most {limit} bytes"))
        } else {
            ChatError::invalid(format!("reading the body failed: {err}"))
        }
    })?;
    state.chat.receive_upload(&id, &token, content_type.as_deref(), bytes).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The caller of a download: `Authorization: Bearer`, or `?token=` (for `<img src>`).
struct Viewer(User);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = request_token(parts).ok_or_else(|| ChatError::Unauthorized("missing token".into()))?;
        Ok(Viewer(state.authenticate(&token)?.0))
    }
}

/// # `GET /api/attachments/{id}`
/// An attachment's bytes, for members of its conversation (404 to anyone else, as for a
/// missing id): a redirect to a short-lived URL of the object store, or the bytes (with
/// `Range`). Only JPEG, PNG, GIF and WebP are shown inline; everything else downloads.
#[utoipa::path(get, path = "/api/attachments/{id}", tag = "media",
    params(("id" = String, Path, description = "Attachment id"),
        ("token" = Option<String>, Query, description = "The user's token, instead of Authorization")),
    responses((status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range"),
        (status = 302, description = "Redirect to the object store"),
        (status = 401, response = Unauthorized), (status = 404, response = NotFound),
        (status = 416, description = "The range starts past the end"),
        (status = 503, response = Unavailable)))]
async fn attachment(
    State(state): State<AppState>,
    Viewer(user): Viewer,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let download = state.chat.download_attachment(&user, &id, false, requested_range(&headers)).await?;
    Ok(download_response(download))
}

/// # `GET /api/attachments/{id}/thumbnail`
/// An image attachment's thumbnail (at most 320 px on its long side), for members only.
#[utoipa::path(get, path = "/api/attachments/{id}/thumbnail", tag = "media",
    params(("id" = String, Path, description = "Attachment id"),
        ("token" = Option<String>, Query, description = "The user's token, instead of Authorization")),
    responses((status = 200, description = "The thumbnail", content_type = "image/jpeg", body = Vec<u8>),
        (status = 206, description = "The requested range"),
        (status = 302, description = "Redirect to the object store"),
        (status = 401, response = Unauthorized), (status = 404, response = NotFound),
        (status = 416, description = "The range starts past the end"),
        (status = 503, response = Unavailable)))]
async fn thumbnail(
    State(state): State<AppState>,
    Viewer(user): Viewer,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let download = state.chat.download_attachment(&user, &id, true, requested_range(&headers)).await?;
    Ok(download_response(download))
}

/// The one range of a `Range: bytes=…` header; none for anything else (several ranges, other
/// units, malformed), which is then served whole (RFC 9110 allows ignoring `Range`).
fn requested_range(headers: &HeaderMap) -> Option<ByteRange> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(ByteRange::Last(last.parse().ok()?)).filter(|r| *r != ByteRange::Last(0)),
        (false, true) => Some(ByteRange::From(first.parse().ok()?)),
        (false, false) => {
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            (first <= last).then(|| ByteRange::Bounded(first..last.saturating_add(1)))
        }
        (true, true) => None,
    }
}

/// The HTTP answer of a download. Every answer says `nosniff` and forbids scripts (the
/// bytes are never a page); attachments never change, so clients may cache them privately.
fn download_response(found: AttachmentDownload) -> Response {
    let mut response = match found.download {
        Download::Redirect(url) => match HeaderValue::try_from(url) {
            Ok(location) => {
                let mut response = StatusCode::FOUND.into_response();
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
                response
            }
            Err(_) => return error_response(StatusCode::BAD_GATEWAY, "unavailable", "bad object store URL"),
        },
        Download::Unsatisfiable { total } => {
            let mut response =
                error_response(StatusCode::RANGE_NOT_SATISFIABLE, "invalid", "the range starts past the end");
            if let Ok(value) = HeaderValue::try_from(format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
        Download::Stream(stream) => {
            let partial = stream.range.start > 0 || stream.range.end < stream.total;
            let length = stream.range.end - stream.range.start;
            let body = Body::from_stream(stream.body.map_err(std::io::Error::other));
            let mut response = body.into_response();
            *response.status_mut() = if partial { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if partial {
                let range = format!("bytes {}-{}/{}", stream.range.start, stream.range.end - 1, stream.total);
                if let Ok(value) = HeaderValue::try_from(range) {
                    headers.insert(header::CONTENT_RANGE, value);
                }
            }
            for (name, value) in [
                (header::CONTENT_TYPE, found.headers.content_type.as_str()),
                (header::CONTENT_DISPOSITION, found.headers.content_disposition.as_str()),
            ] {
                if let Ok(value) = HeaderValue::try_from(value) {
                    headers.insert(name, value);
                }
            }
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=31536000, immutable"),
            );
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> Option<ByteRange> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).expect("header"));
        requested_range(&headers)
    }

    #[test]
    fn one_byte_range_is_understood_and_anything_else_ignored() {
        assert_eq!(range("bytes=0-99"), Some(ByteRange::Bounded(0..100)));
        assert_eq!(range("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(range("bytes=-20"), Some(ByteRange::Last(20)));
        assert_eq!(range("bytes=5-1"), None);
        assert_eq!(range("bytes=0-1,4-5"), None);
        assert_eq!(range("items=0-1"), None);
        assert_eq!(range("bytes=-0"), None);
        assert_eq!(range("bytes=x-"), None);
    }
}
