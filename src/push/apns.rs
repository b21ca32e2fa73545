//! The APNs provider: token-based authentication over HTTP/2.
//!
//! Each request is `POST {endpoint}/3/device/{device token}` with `authorization: bearer
//! <provider JWT>`, `apns-topic` (the app's bundle id), `apns-push-type: alert` and
//! `apns-priority: 10`, and the body `{aps:{alert:{title, body}, badge, sound:"default"},
//! type, conversation_id, message_id, seq, sender_id}`.
//!
//! The provider JWT is ES256, signed with the team's `.p8` key; header `kid` = the key id,
//! claims `iss` = the team id and `iat`. Apple refuses tokens older than an hour and throttles
//! renewing more often than every 20 minutes, so one is reused for [`TOKEN_LIFETIME`].
//!
//! HTTP/2 only (APNs speaks nothing else): ALPN `h2` over TLS, prior knowledge (h2c) for an
//! `http://` endpoint (a local stand-in in tests).
//!
//! Answers: 200 delivered; 410, or 400 `BadDeviceToken` / `Unregistered` → the device is
//! gone; 429, 5xx, timeouts and connection errors → retried; 403 `ExpiredProviderToken` →
//! a new JWT is signed and the send tried once more; anything else is a permanent failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::retry_after;
use crate::core::model::Device;
use crate::core::ports::{Push, PushError, PushPayload};

/// Default base URL of APNs (production; the sandbox is `https://api.sandbox.push.apple.com`).
pub const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// How long one provider JWT is used before a new one is signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

/// What the APNs provider needs.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The `.p8` signing key file (PEM, PKCS#8 P-256).
    pub key_file: std::path::PathBuf,
    /// The key's id (the JWT's `kid`).
    pub key_id: String,
    /// The developer team id (the JWT's `iss`).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Base URL, without a trailing path.
    pub endpoint: String,
}

/// Why the APNs provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApnsSetupError {
    /// The key file could not be read.
    #[error("reading the APNs key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key is not a PEM P-256 private key.
    #[error("the APNs key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    /// The HTTP client could not be built.
    #[error("building the APNs HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Claims of the provider JWT.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

/// APNs' error answer.
#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// A signed provider JWT and when it is renewed.
struct ProviderToken {
    value: String,
    renew_at: Instant,
}

/// Sends notifications to `apns` devices.
pub struct ApnsPush {
    client: reqwest::Client,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    topic: String,
    endpoint: String,
    /// The current provider JWT. A std mutex: signing is quick and never awaits.
    token: Mutex<Option<ProviderToken>>,
}

impl ApnsPush {
    /// A provider for `config`, each request bounded by `timeout`.
    pub fn new(config: &ApnsConfig, timeout: Duration) -> Result<ApnsPush, ApnsSetupError> {
        let pem = std::fs::read(&config.key_file)
            .map_err(|source| ApnsSetupError::Read { path: config.key_file.display().to_string(), source })?;
        let key = EncodingKey::from_ec_pem(&pem)?;
        let client = super::http_client(timeout).http2_prior_knowledge().build()?;
        Ok(ApnsPush {
            client,
            key,
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            topic: config.topic.clone(),
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            token: Mutex::new(None),
        })
    }

    /// The current provider JWT; a new one when it is due for renewal, or when `rejected`
    /// (one APNs called expired) is still the current one.
    fn provider_token(&self, rejected: Option<&str>) -> Result<String, PushError> {
        let mut current = self.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(token) = current.as_ref()
            && Instant::now() < token.renew_at
            && rejected != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims { iss: &self.team_id, iat: chrono::Utc::now().timestamp() };
        let value = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|err| PushError::Permanent(format!("signing the APNs provider token: {err}")))?;
        *current = Some(ProviderToken { value: value.clone(), renew_at: Instant::now() + TOKEN_LIFETIME });
        Ok(value)
    }

    /// One request with the provider JWT `token`.
    async fn post(&self, url: &str, token: &str, payload: &PushPayload, body: &[u8]) -> Result<(), Refused> {
        let mut request = self.client.post(url);
        if let Some(collapse_id) = &payload.collapse_id {
            request = request.header("apns-collapse-id", collapse_id);
        }
        let response = request
            .header(reqwest::header::AUTHORIZATION, format!("bearer {token}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| Refused::Error(super::request_error("APNs request", &err)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let answer = response.bytes().await.unwrap_or_default();
        let reason =
            serde_json::from_slice::<ErrorBody>(&answer).ok().and_then(|e| e.reason).unwrap_or_default();
        classify(status, &reason, retry_after)
    }
}

/// Why APNs did not take a notification.
#[derive(Debug, PartialEq)]
enum Refused {
    /// The provider JWT expired: sign a new one and send again.
    ExpiredToken,
    /// Anything else, as the worker sees it.
    Error(PushError),
}

/// The JSON body of `payload`.
fn body(payload: &PushPayload) -> Value {
    let mut alert = json!({ "title": payload.title });
    if let Some(body) = &payload.body {
        alert["body"] = json!(body);
    }
    json!({
        "aps": { "alert": alert, "badge": payload.badge, "sound": "default" },
        "type": payload.kind,
        "conversation_id": payload.conversation_id,
        "message_id": payload.message_id,
        "seq": payload.seq,
        "sender_id": payload.sender_id,
    })
}

#[async_trait]
impl Push for ApnsPush {
    async fn send(&self, device: &Device, payload: &PushPayload) -> Result<(), PushError> {
        // A device token is hex; anything else could not be one (and must not shape the path).
        if device.token.is_empty() || !device.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PushError::DeviceGone("not a hex APNs device token".into()));
        }
        let url = format!("{}/3/device/{}", self.endpoint, device.token);
        let body = body(payload).to_string().into_bytes();
        let token = self.provider_token(None)?;
        match self.post(&url, &token, payload, &body).await {
            Ok(()) => Ok(()),
            Err(Refused::Error(err)) => Err(err),
            Err(Refused::ExpiredToken) => {
                let token = self.provider_token(Some(&token))?;
                match self.post(&url, &token, payload, &body).await {
                    Ok(()) => Ok(()),
                    Err(Refused::Error(err)) => Err(err),
                    Err(Refused::ExpiredToken) => {
                        Err(PushError::Permanent("APNs called a fresh provider token expired".into()))
                    }
                }
            }
        }
    }
}

/// What an APNs answer (status and `reason`) means.
fn classify(status: StatusCode, reason: &str, retry_after: Option<Duration>) -> Result<(), Refused> {
    let text = || format!("APNs answered {status} {reason}");
    match (status.as_u16(), reason) {
        (200, _) => Ok(()),
        (410, _) | (400, "BadDeviceToken" | "Unregistered") => {
            Err(Refused::Error(PushError::DeviceGone(text())))
        }
        (403, "ExpiredProviderToken") => Err(Refused::ExpiredToken),
        (429 | 500..=599, _) => Err(Refused::Error(PushError::Retry { reason: text(), retry_after })),
        _ => Err(Refused::Error(PushError::Permanent(text()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_delivered_gone_renew_retry_or_permanent() {
        let later = Some(Duration::from_secs(5));
        assert_eq!(classify(StatusCode::OK, "", None), Ok(()));
        for (status, reason) in [
            (StatusCode::GONE, "Unregistered"),
            (StatusCode::BAD_REQUEST, "BadDeviceToken"),
            (StatusCode::BAD_REQUEST, "Unregistered"),
        ] {
            assert!(
                matches!(classify(status, reason, None), Err(Refused::Error(PushError::DeviceGone(_)))),
                "{reason}"
            );
        }
        assert_eq!(classify(StatusCode::FORBIDDEN, "ExpiredProviderToken", None), Err(Refused::ExpiredToken));
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(
                matches!(classify(status, "", later), Err(Refused::Error(PushError::Retry { retry_after, .. })) if retry_after == later),
                "{status}"
            );
        }
        for (status, reason) in [
            (StatusCode::FORBIDDEN, "InvalidProviderToken"),
            (StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic"),
            (StatusCode::BAD_REQUEST, "PayloadTooLarge"),
        ] {
            assert!(
                matches!(classify(status, reason, None), Err(Refused::Error(PushError::Permanent(_)))),
                "{reason}"
            );
        }
    }
}
