//! Push providers: each implements [`crate::core::ports::Push`] for one platform.

pub mod apns;
pub mod fcm;
pub mod webhook;
pub mod webpush;

use std::time::Duration;

use crate::core::ports::PushError;

/// The HTTP client settings every provider shares: each request bounded by `timeout`
/// (connecting, sending and reading the answer), redirects not followed, chatd's user agent.
pub(crate) fn http_client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chatd/", env!("CARGO_PKG_VERSION")))
}

/// A request to `what` that got no answer: a bad URL is permanent, anything else (timeout,
/// connection) transient. The reason (logged, and kept with the job) leaves the URL out:
/// push URLs hold device tokens and Web Push capability tokens.
pub(crate) fn request_error(what: &str, err: &reqwest::Error) -> PushError {
    let cause = std::error::Error::source(err).map(|source| format!(": {source}")).unwrap_or_default();
    if err.is_builder() {
        PushError::Permanent(format!("{what}: bad URL{cause}"))
    } else {
        let kind = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        PushError::Retry { reason: format!("{what} {kind}{cause}"), retry_after: None }
    }
}

/// A `Retry-After` given in seconds (an HTTP date is ignored: backoff applies then).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
