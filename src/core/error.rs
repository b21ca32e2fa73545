//! The one error type of the core. Each variant is a contract error code; transports map
//! them to HTTP statuses or event acks and never invent codes of their own.

use std::time::Duration;

/// Why a chat operation was refused. `code()` is the wire code from the contract.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The token was valid once but has expired.
    #[error("token expired")]
    TokenExpired,
    /// The caller is not a member of the conversation.
    #[error("you are not a member of this conversation")]
    NotAMember,
    /// A member whose role or ownership does not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    /// No such conversation, message or device.
    #[error("{0}")]
    NotFound(String),
    /// Malformed input: wrong types, missing fields, bad values.
    #[error("{0}")]
    Invalid(String),
    /// Content or payload over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The request conflicts with the state of the resource.
    #[error("{0}")]
    Conflict(String),
    /// Over the per-user rate limit; retry after the given time.
    #[error("rate limit exceeded, retry in {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long until the next request would be admitted.
        retry_after: Duration,
    },
    /// The server is draining or its store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected backend failure; details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ChatError {
    /// The contract's error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::Unauthorized(_) => "unauthorized",
            ChatError::TokenExpired => "token_expired",
            ChatError::NotAMember => "not_a_member",
            ChatError::Forbidden(_) => "forbidden",
            ChatError::NotFound(_) => "not_found",
            ChatError::Invalid(_) => "invalid",
            ChatError::TooLarge(_) => "too_large",
            ChatError::Conflict(_) => "conflict",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::Unavailable(_) => "unavailable",
            ChatError::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`ChatError::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        ChatError::Invalid(message.into())
    }

    /// Shorthand for [`ChatError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        ChatError::NotFound(message.into())
    }

    /// Shorthand for [`ChatError::Forbidden`].
    pub fn forbidden(message: impl Into<String>) -> Self {
        ChatError::Forbidden(message.into())
    }

    /// Shorthand for [`ChatError::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        ChatError::Conflict(message.into())
    }
}

/// A refusal by the [`crate::core::ports::RateLimiter`] port: over the per-user limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded, retry in {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// How long until the next write would be admitted (at least 1 ms).
    pub retry_after: Duration,
}

impl From<RateLimited> for ChatError {
    fn from(RateLimited { retry_after }: RateLimited) -> Self {
        ChatError::RateLimited { retry_after }
    }
}

/// A storage backend failure, as reported through the [`crate::core::ports::Store`] port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or is shutting down.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for ChatError {
    /// Every store failure a request meets passes here once: it is counted here.
    fn from(err: StoreError) -> Self {
        super::telemetry::store_error();
        match err {
            StoreError::Unavailable(msg) => ChatError::Unavailable(msg),
            StoreError::Backend(source) => ChatError::Internal(source),
        }
    }
}
