//! From a [`ChatError`] to an HTTP answer: the contract's status per error code and the
//! `{error:{code,message}}` body. Pure: the response carries a [`Rejected`] extension, and
//! the rejection middleware (`http::rejections`) counts and logs it.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::ChatError;

/// A core error on its way out as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ChatError);

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        ApiError(err)
    }
}

/// What a handler returns: its answer, or a core error answered as the contract says.
pub type ApiResult<T> = Result<T, ApiError>;

/// The HTTP status of each contract error code.
pub fn status_of(err: &ChatError) -> StatusCode {
    match err {
        ChatError::Unauthorized(_) | ChatError::TokenExpired => StatusCode::UNAUTHORIZED,
        ChatError::NotAMember | ChatError::Forbidden(_) => StatusCode::FORBIDDEN,
        ChatError::NotFound(_) => StatusCode::NOT_FOUND,
        ChatError::Invalid(_) => StatusCode::BAD_REQUEST,
        ChatError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ChatError::Conflict(_) => StatusCode::CONFLICT,
        ChatError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ChatError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ChatError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Marks a response as a refused request, for the rejection middleware: the contract code
/// it answered, and for an internal error its cause (logged, never sent).
#[derive(Clone, Debug)]
pub struct Rejected {
    /// The contract error code of the answer.
    pub code: &'static str,
    /// What went wrong, for an internal error.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// A failed request's answer: `status` with the `{error:{code,message}}` body shared by
/// every failed request, marked [`Rejected`] (every HTTP error answer is built here).
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response =
        (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response();
    response.extensions_mut().insert(Rejected { code, cause: None });
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let err = self.0;
        let mut response = error_response(status_of(&err), err.code(), &err.to_string());
        match err {
            ChatError::RateLimited { retry_after } => {
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            ChatError::Internal(source) => {
                let cause = Some(Arc::from(source));
                response.extensions_mut().insert(Rejected { code: "internal", cause });
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rejected(response: &Response) -> &Rejected {
        response.extensions().get::<Rejected>().expect("an error answer is marked Rejected")
    }

    #[test]
    fn an_internal_error_is_marked_with_its_cause_for_the_log() {
        let response = ApiError(ChatError::Internal("disk on fire".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let mark = rejected(&response);
        assert_eq!(mark.code, "internal");
        assert_eq!(mark.cause.as_ref().map(ToString::to_string).as_deref(), Some("disk on fire"));
    }

    #[test]
    fn a_rate_limited_answer_rounds_retry_after_up_and_has_no_cause() {
        let retry_after = Duration::from_millis(1500);
        let response = ApiError(ChatError::RateLimited { retry_after }).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let mark = rejected(&response);
        assert_eq!(mark.code, "rate_limited");
        assert!(mark.cause.is_none());
    }

    #[test]
    fn an_answer_built_from_a_status_and_code_is_marked_with_that_code() {
        let response = error_response(StatusCode::METHOD_NOT_ALLOWED, "invalid", "method not allowed");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(rejected(&response).code, "invalid");
    }
}
