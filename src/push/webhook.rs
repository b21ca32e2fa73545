//! The generic webhook provider: a signed JSON POST to the device's own `endpoint`, so a
//! platform can bridge chatd's notifications to anything.
//!
//! The body is the [`PushPayload`] plus `device_id`, `token` and `timestamp` (Unix seconds).
//! Headers: `Content-Type: application/json`, `X-Chatd-Timestamp` (the same seconds) and
//! `X-Chatd-Signature: sha256=<hex HMAC-SHA256 of the raw body>` keyed by the configured
//! secret; the receiver verifies the signature over the bytes it received, and may refuse
//! stale timestamps (the body's timestamp is covered by the signature).
//!
//! Answers: 2xx delivered; 404 and 410 the device is gone; 408, 429 (with `Retry-After` in
//! seconds, if given) and 5xx, timeouts and connection errors are retried; any other status
//! (other 4xx, redirects, which are not followed) is a permanent failure.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::Sha256;

use crate::core::model::Device;
use crate::core::ports::{Push, PushError, PushPayload};
use crate::core::push_endpoints::EndpointPolicy;

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Chatd-Signature";
/// Header carrying the send time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Chatd-Timestamp";

/// Sends notifications to `webhook` devices.
pub struct WebhookPush {
    client: reqwest::Client,
    secret: Vec<u8>,
    /// Which endpoints may be called (devices registered before a policy change included).
    endpoints: EndpointPolicy,
}

/// The JSON body of one webhook call.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    payload: &'a PushPayload,
    device_id: &'a str,
    token: &'a str,
    timestamp: i64,
}

impl WebhookPush {
    /// A provider signing with `secret`, each request bounded by `timeout` (connecting,
    /// sending and reading the answer).
    pub fn new(
        secret: &str,
        timeout: Duration,
        endpoints: EndpointPolicy,
    ) -> Result<WebhookPush, reqwest::Error> {
        let client = super::endpoint_client(timeout, &endpoints).build()?;
        Ok(WebhookPush { client, secret: secret.as_bytes().to_vec(), endpoints })
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed by `secret`, as sent in
/// [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[async_trait]
impl Push for WebhookPush {
    async fn send(&self, device: &Device, payload: &PushPayload) -> Result<(), PushError> {
        let endpoint = super::allowed_endpoint(&self.endpoints, device.endpoint.as_deref())?;
        let timestamp = chrono::Utc::now().timestamp();
        let body =
            serde_json::to_vec(&Body { payload, device_id: &device.id, token: &device.token, timestamp })
                .map_err(|err| PushError::Permanent(format!("encoding the payload: {err}")))?;
        let signature = signature(&self.secret, &body);
        let response = self
            .client
            .post(endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|err| super::request_error("webhook request", &err))?;
        classify(response.status(), super::retry_after(response.headers()))
    }
}

/// What a webhook's answer means for the worker.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Result<(), PushError> {
    let reason = || format!("webhook answered {status}");
    match status.as_u16() {
        200..=299 => Ok(()),
        404 | 410 => Err(PushError::DeviceGone(reason())),
        408 | 429 | 500..=599 => Err(PushError::Retry { reason: reason(), retry_after }),
        _ => Err(PushError::Permanent(reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn statuses_map_to_delivered_gone_retry_or_permanent() {
        let later = Some(Duration::from_secs(7));
        assert_eq!(classify(StatusCode::OK, None), Ok(()));
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Ok(()));
        for gone in [StatusCode::NOT_FOUND, StatusCode::GONE] {
            assert!(matches!(classify(gone, None), Err(PushError::DeviceGone(_))), "{gone}");
        }
        for transient in [StatusCode::REQUEST_TIMEOUT, StatusCode::TOO_MANY_REQUESTS, StatusCode::BAD_GATEWAY]
        {
            assert!(
                matches!(classify(transient, later), Err(PushError::Retry { retry_after, .. }) if retry_after == later),
                "{transient}"
            );
        }
        for permanent in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::FOUND] {
            assert!(matches!(classify(permanent, None), Err(PushError::Permanent(_))), "{permanent}");
        }
    }
}
