//! The FCM HTTP v1 provider: `POST {endpoint}/v1/projects/{project_id}/messages:send` with
//! an OAuth 2.0 access token of a Google service account.
//!
//! The token comes from the service account's `token_uri`: chatd signs a JWT (RS256, `iss` =
//! the account's `client_email`, `scope` = [`SCOPE`], `aud` = `token_uri`, valid one hour)
//! with the account's private key and exchanges it (`grant_type=` [`GRANT_TYPE`],
//! `assertion=<jwt>`, form-encoded) for an access token. The token is cached until a minute
//! before it expires; one refresh runs at a time (concurrent sends wait for it).
//!
//! The message: `{message:{token, notification:{title, body}, data:{type, conversation_id,
//! message_id, seq, sender_id, badge} (strings, as FCM requires), android:{notification:
//! {notification_count: badge}}, apns:{payload:{aps:{badge}}}}}`.
//!
//! Answers: 2xx delivered; 404, or an error whose status or FCM `errorCode` is
//! `UNREGISTERED`, or an `INVALID_ARGUMENT` about the registration token → the device is gone;
//! 408, 429 (with `Retry-After`), 5xx, timeouts and connection errors → retried; 401 → the
//! access token is dropped, a new one fetched and the send tried once more; anything else is
//! a permanent failure.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::retry_after;
use crate::core::model::Device;
use crate::core::ports::{Push, PushError, PushPayload};

/// OAuth scope of the FCM HTTP v1 API.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// OAuth grant type of a service account's signed JWT.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Default base URL of the FCM API.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// Lifetime of the signed assertion (the most Google accepts).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its expiry a cached access token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The fields of a Google service-account key file chatd uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    /// The Firebase project messages are sent through.
    pub project_id: String,
    /// PEM (PKCS#8) RSA private key of the account.
    pub private_key: String,
    /// The account's e-mail: the assertion's issuer.
    pub client_email: String,
    /// Where assertions are exchanged for access tokens.
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Why the FCM provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FcmSetupError {
    /// The service-account file could not be read.
    #[error("reading the FCM service account {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a service-account key.
    #[error("parsing the FCM service account: {0}")]
    Parse(#[from] serde_json::Error),
    /// Its private key is not a PEM RSA key.
    #[error("the FCM service account's private key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
    /// The HTTP client could not be built.
    #[error("building the FCM HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl ServiceAccount {
    /// Reads a service-account JSON key file.
    pub fn from_file(path: &Path) -> Result<ServiceAccount, FcmSetupError> {
        let text = std::fs::read(path)
            .map_err(|source| FcmSetupError::Read { path: path.display().to_string(), source })?;
        Ok(serde_json::from_slice(&text)?)
    }
}

/// Claims of the assertion exchanged for an access token.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// A cached access token.
#[derive(Clone)]
struct AccessToken {
    value: String,
    refresh_at: Instant,
}

/// Sends notifications to `fcm` devices.
pub struct FcmPush {
    client: reqwest::Client,
    account: ServiceAccount,
    key: EncodingKey,
    send_url: String,
    /// The cached access token. A Tokio mutex, held across the token exchange on purpose:
    /// that makes one refresh at a time, the others waiting for its result.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl FcmPush {
    /// A provider sending as `account` to the FCM API at `endpoint` (no trailing path), each
    /// request bounded by `timeout`.
    pub fn new(account: ServiceAccount, endpoint: &str, timeout: Duration) -> Result<FcmPush, FcmSetupError> {
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())?;
        let client = super::http_client(timeout).build()?;
        let send_url =
            format!("{}/v1/projects/{}/messages:send", endpoint.trim_end_matches('/'), account.project_id);
        Ok(FcmPush { client, account, key, send_url, token: tokio::sync::Mutex::new(None) })
    }

    /// The cached access token, or a fresh one when there is none or it is about to expire.
    async fn access_token(&self) -> Result<String, PushError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Forgets `rejected` (if it is still the cached token), so the next send fetches anew.
    async fn drop_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected) {
            *cached = None;
        }
    }

    /// Signs an assertion and exchanges it for an access token.
    async fn fetch_token(&self) -> Result<AccessToken, PushError> {
        let now = chrono::Utc::now().timestamp();
        let lifetime = i64::try_from(ASSERTION_LIFETIME.as_secs()).unwrap_or(3600);
        let claims = AssertionClaims {
            iss: &self.account.client_email,
            scope: SCOPE,
            aud: &self.account.token_uri,
            iat: now,
            exp: now + lifetime,
        };
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|err| PushError::Permanent(format!("signing the FCM assertion: {err}")))?;
        let started = Instant::now();
        let response = self
            .client
            .post(&self.account.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|err| super::request_error("FCM token exchange", &err))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|err| super::request_error("FCM token exchange", &err))?;
        if !status.is_success() {
            let reason = format!("FCM token exchange answered {status}: {}", snippet(&body));
            return Err(match status.as_u16() {
                408 | 429 | 500..=599 => PushError::Retry { reason, retry_after },
                _ => PushError::Permanent(reason),
            });
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|err| PushError::Retry {
            reason: format!("FCM token answer: {err}"),
            retry_after: None,
        })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(3600));
        let refresh_at = started + lifetime.saturating_sub(REFRESH_MARGIN);
        Ok(AccessToken { value: token.access_token, refresh_at })
    }

    /// One `messages:send` with `token`.
    async fn post(&self, token: &str, body: &Value) -> Result<Sent, PushError> {
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|err| super::request_error("FCM send", &err))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Sent::Unauthorized);
        }
        let body = response.bytes().await.unwrap_or_default();
        classify(status, &body, retry_after).map(|()| Sent::Done)
    }
}

/// What one send attempt came to.
enum Sent {
    Done,
    Unauthorized,
}

/// The `messages:send` body of `payload` for `device`.
fn message(device: &Device, payload: &PushPayload) -> Value {
    let mut notification = json!({ "title": payload.title });
    if let Some(body) = &payload.body {
        notification["body"] = json!(body);
    }
    let mut message = json!({
        "message": {
            "token": device.token,
            "notification": notification,
            "data": {
                "type": payload.kind,
                "conversation_id": payload.conversation_id,
                "message_id": payload.message_id,
                "seq": payload.seq.to_string(),
                "sender_id": payload.sender_id,
                "badge": payload.badge.to_string(),
            },
            "android": { "notification": { "notification_count": payload.badge } },
            "apns": { "payload": { "aps": { "badge": payload.badge } } },
        }
    });
    if let Some(collapse_id) = &payload.collapse_id {
        message["message"]["android"]["collapse_key"] = json!(collapse_id);
        message["message"]["apns"]["headers"] = json!({ "apns-collapse-id": collapse_id });
    }
    message
}

#[async_trait]
impl Push for FcmPush {
    async fn send(&self, device: &Device, payload: &PushPayload) -> Result<(), PushError> {
        let body = message(device, payload);
        let token = self.access_token().await?;
        if let Sent::Done = self.post(&token, &body).await? {
            return Ok(());
        }
        // The token was revoked or expired early: fetch a new one, once.
        self.drop_token(&token).await;
        let token = self.access_token().await?;
        match self.post(&token, &body).await? {
            Sent::Done => Ok(()),
            Sent::Unauthorized => {
                Err(PushError::Permanent("FCM answered 401 Unauthorized with a fresh access token".into()))
            }
        }
    }
}

/// What an FCM error answer means for the worker.
fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Result<(), PushError> {
    if status.is_success() {
        return Ok(());
    }
    let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &error["error"];
    let error_status = error["status"].as_str().unwrap_or_default();
    let error_codes: Vec<&str> = error["details"]
        .as_array()
        .map(|details| details.iter().filter_map(|d| d["errorCode"].as_str()).collect())
        .unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    let reason =
        format!("FCM answered {status}: {}", if message.is_empty() { snippet(body) } else { message.into() });
    let unregistered = error_status == "UNREGISTERED" || error_codes.contains(&"UNREGISTERED");
    let bad_token = (error_status == "INVALID_ARGUMENT" || error_codes.contains(&"INVALID_ARGUMENT"))
        && message.to_ascii_lowercase().contains("registration token");
    match status.as_u16() {
        404 => Err(PushError::DeviceGone(reason)),
        _ if unregistered || bad_token => Err(PushError::DeviceGone(reason)),
        408 | 429 | 500..=599 => Err(PushError::Retry { reason, retry_after }),
        _ => Err(PushError::Permanent(reason)),
    }
}

/// The start of an answer's body, for the log.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_body(status: &str, code: Option<&str>, message: &str) -> Vec<u8> {
        let details = code.map_or(json!([]), |code| {
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}])
        });
        json!({"error": {"code": 400, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn dead_tokens_are_gone_transient_errors_retried_and_others_permanent() {
        let later = Some(Duration::from_secs(3));
        assert_eq!(classify(StatusCode::OK, b"{}", None), Ok(()));
        let gone = [
            (
                StatusCode::NOT_FOUND,
                error_body("NOT_FOUND", Some("UNREGISTERED"), "Requested entity was not found."),
            ),
            (StatusCode::BAD_REQUEST, error_body("INVALID_ARGUMENT", Some("UNREGISTERED"), "x")),
            (
                StatusCode::BAD_REQUEST,
                error_body(
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "The registration token is not a valid FCM registration token",
                ),
            ),
        ];
        for (status, body) in gone {
            assert!(matches!(classify(status, &body, None), Err(PushError::DeviceGone(_))), "{status}");
        }
        for status in
            [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE, StatusCode::REQUEST_TIMEOUT]
        {
            let body = error_body("UNAVAILABLE", None, "try later");
            assert!(
                matches!(classify(status, &body, later), Err(PushError::Retry { retry_after, .. }) if retry_after == later),
                "{status}"
            );
        }
        let other = error_body("INVALID_ARGUMENT", Some("INVALID_ARGUMENT"), "Invalid value at message.data");
        assert!(matches!(classify(StatusCode::BAD_REQUEST, &other, None), Err(PushError::Permanent(_))));
        assert!(matches!(classify(StatusCode::FORBIDDEN, b"not json", None), Err(PushError::Permanent(_))));
    }
}
