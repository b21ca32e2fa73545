//! The Web Push provider (RFC 8030): the payload encrypted for the browser's subscription
//! (RFC 8291, `Content-Encoding: aes128gcm` of RFC 8188) and POSTed to the subscription's
//! `endpoint`, authorised with VAPID (RFC 8292).
//!
//! Encryption: per message a fresh ephemeral P-256 key and a random 16-byte salt; ECDH with
//! the subscription's `p256dh` key, then HKDF keyed by its `auth` secret (RFC 8291 §3.4) gives
//! the content key and nonce; the body is the aes128gcm header (salt, record size 4096, key id
//! = the ephemeral public key) followed by one record: the JSON [`PushPayload`] and the `0x02`
//! last-record delimiter, sealed with AES-128-GCM.
//!
//! VAPID: `Authorization: vapid t=<JWT>, k=<the server's public key, base64url>`, the JWT
//! signed ES256 with `aud` = the endpoint's origin, `exp` 12 hours ahead and `sub` = the
//! configured contact. Other headers: `TTL`, `Urgency: high`, `Content-Type:
//! application/octet-stream`, `Content-Encoding: aes128gcm`, and `Topic` (derived from the
//! conversation) so that a push service holding several undelivered notifications of one
//! conversation for an offline browser keeps only the newest.
//!
//! Answers: 2xx delivered; 404 and 410 the subscription is gone; 408, 429 (with
//! `Retry-After` in seconds, if given), 5xx, timeouts and connection errors are retried; 413
//! (payload too large) and any other status (other 4xx, redirects, which are not followed)
//! are permanent failures.

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use p256::{PublicKey, SecretKey};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::core::model::Device;
use crate::core::ports::{Push, PushError, PushPayload};
use crate::core::push_endpoints::EndpointPolicy;

/// Record size announced in the aes128gcm header; the one record is always smaller.
const RECORD_SIZE: u32 = 4096;
/// Length of an uncompressed P-256 point (`0x04 || x || y`), the key id of the header.
const PUBLIC_KEY_LEN: usize = 65;
/// The aes128gcm header: salt (16), record size (4), key id length (1), key id (65).
const HEADER_LEN: usize = 16 + 4 + 1 + PUBLIC_KEY_LEN;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Largest body every push service must accept (RFC 8030 §7.2).
pub const MAX_BODY_BYTES: usize = 4096;
/// Largest plaintext that fits [`MAX_BODY_BYTES`] once encrypted (header, delimiter, tag).
pub const MAX_PLAINTEXT_BYTES: usize = MAX_BODY_BYTES - HEADER_LEN - 1 - TAG_LEN;
/// Lifetime of a VAPID JWT (RFC 8292 §2: at most 24 hours).
const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why the provider cannot be set up (at startup).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Neither a SEC1 (`EC PRIVATE KEY`) nor a PKCS#8 (`PRIVATE KEY`) P-256 PEM.
    #[error("not a PEM P-256 private key (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`)")]
    Key,
    /// The subject is neither a `mailto:` nor an `https:` URI.
    #[error("the VAPID subject must be a mailto: or https: URI, got {0:?}")]
    Subject(String),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why a payload could not be encrypted for a subscription.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncryptError {
    /// `p256dh` is not an uncompressed P-256 point in base64url.
    #[error("the subscription's p256dh key is not a P-256 public key")]
    PublicKey,
    /// `auth` is not 16 bytes in base64url.
    #[error("the subscription's auth secret is not 16 bytes")]
    AuthSecret,
    /// The plaintext exceeds [`MAX_PLAINTEXT_BYTES`].
    #[error("payload of {0} bytes exceeds the {MAX_PLAINTEXT_BYTES} bytes Web Push carries")]
    TooLarge(usize),
    /// AES-GCM refused (cannot happen for sizes within the limit).
    #[error("encrypting the payload failed")]
    Cipher,
}

/// The application server's VAPID key pair.
pub struct VapidKey {
    /// PKCS#8 DER form, for `jsonwebtoken`.
    signing: jsonwebtoken::EncodingKey,
    /// The uncompressed public point, base64url without padding (the `k=` parameter).
    public: String,
}

impl VapidKey {
    /// Reads a PEM P-256 private key, SEC1 (`openssl ecparam -genkey`) or PKCS#8.
    pub fn from_pem(pem: &str) -> Result<VapidKey, SetupError> {
        let secret = SecretKey::from_sec1_pem(pem)
            .or_else(|_| SecretKey::from_pkcs8_pem(pem))
            .map_err(|_| SetupError::Key)?;
        let der = secret.to_pkcs8_der().map_err(|_| SetupError::Key)?;
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        Ok(VapidKey { signing: jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()), public })
    }

    /// The public key as browsers take it in `applicationServerKey` (base64url, uncompressed).
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

/// The claims of a VAPID JWT.
#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: i64,
    sub: &'a str,
}

/// Sends notifications to `webpush` devices.
pub struct WebPush {
    client: reqwest::Client,
    vapid: VapidKey,
    subject: String,
    ttl: Duration,
    /// Which endpoints may be called (devices registered before a policy change included).
    endpoints: EndpointPolicy,
}

impl WebPush {
    /// A provider signing with `vapid` on behalf of `subject` (a `mailto:` or `https:` contact
    /// for the push services), asking them to keep undelivered messages for `ttl`, each
    /// request bounded by `timeout`.
    pub fn new(
        vapid: VapidKey,
        subject: &str,
        ttl: Duration,
        timeout: Duration,
        endpoints: EndpointPolicy,
    ) -> Result<WebPush, SetupError> {
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            return Err(SetupError::Subject(subject.to_owned()));
        }
        let client = super::endpoint_client(timeout, &endpoints).build()?;
        Ok(WebPush { client, vapid, subject: subject.to_owned(), ttl, endpoints })
    }

    /// The `Authorization` value for `endpoint`, whose origin is the JWT's audience.
    fn authorization(&self, endpoint: &reqwest::Url) -> Result<String, PushError> {
        let audience = endpoint.origin().ascii_serialization();
        let lifetime = i64::try_from(JWT_LIFETIME.as_secs()).unwrap_or(43_200);
        let claims =
            Claims { aud: &audience, exp: chrono::Utc::now().timestamp() + lifetime, sub: &self.subject };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let jwt = jsonwebtoken::encode(&header, &claims, &self.vapid.signing)
            .map_err(|err| PushError::Permanent(format!("signing the VAPID JWT: {err}")))?;
        Ok(format!("vapid t={jwt}, k={}", self.vapid.public))
    }
}

#[async_trait]
impl Push for WebPush {
    async fn send(&self, device: &Device, payload: &PushPayload) -> Result<(), PushError> {
        let endpoint = super::allowed_endpoint(&self.endpoints, device.endpoint.as_deref())?;
        let key = |name: &str| {
            device
                .keys
                .as_ref()
                .and_then(|keys| keys.get(name))
                .and_then(|value| value.as_str())
                .ok_or_else(|| PushError::Permanent(format!("webpush device has no {name} key")))
        };
        let (p256dh, auth) = (key("p256dh")?, key("auth")?);
        let plaintext = serde_json::to_vec(payload)
            .map_err(|err| PushError::Permanent(format!("encoding the payload: {err}")))?;
        let body = encrypt(&plaintext, p256dh, auth).map_err(|err| PushError::Permanent(err.to_string()))?;
        let response = self
            .client
            .post(endpoint.clone())
            .header(reqwest::header::AUTHORIZATION, self.authorization(&endpoint)?)
            .header("TTL", self.ttl.as_secs().to_string())
            .header("Urgency", "high")
            .header("Topic", topic(&payload.conversation_id))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_ENCODING, "aes128gcm")
            .body(body)
            .send()
            .await
            .map_err(|err| super::request_error("webpush request", &err))?;
        classify(response.status(), super::retry_after(response.headers()))
    }
}

/// A `Topic` for the conversation: 32 base64url characters (the most RFC 8030 §5.4 allows)
/// of its id's SHA-256, so the id itself is not shown to the push service.
fn topic(conversation_id: &str) -> String {
    let digest = Sha256::digest(conversation_id.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.get(..24).unwrap_or_default())
}

/// Encrypts `plaintext` for the subscription with keys `p256dh` and `auth` (base64url, as
/// browsers give them; padding and the standard alphabet are accepted too): the complete
/// `aes128gcm` body, with a fresh ephemeral key and salt.
pub fn encrypt(plaintext: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, EncryptError> {
    let ua_public = decode_base64(p256dh)
        .and_then(|bytes| PublicKey::from_sec1_bytes(&bytes).ok())
        .ok_or(EncryptError::PublicKey)?;
    let auth: [u8; 16] =
        decode_base64(auth).and_then(|bytes| bytes.try_into().ok()).ok_or(EncryptError::AuthSecret)?;
    let ephemeral = SecretKey::random(&mut rand_core::OsRng);
    encrypt_with(plaintext, &ua_public, &auth, &ephemeral, rand::random())
}

/// [`encrypt`] with the sender's key and the salt given (RFC 8291 §3.3, §3.4; RFC 8188 §2).
fn encrypt_with(
    plaintext: &[u8],
    ua_public: &PublicKey,
    auth: &[u8; 16],
    as_secret: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(EncryptError::TooLarge(plaintext.len()));
    }
    let ua_point = ua_public.to_encoded_point(false);
    let as_point = as_secret.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_public.as_affine());

    // IKM = HKDF(salt = auth, ikm = ecdh, info = "WebPush: info" 0x00 ua_public as_public, 32).
    let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_LEN);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_point.as_bytes());
    key_info.extend_from_slice(as_point.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| EncryptError::Cipher)?;

    // CEK and NONCE = HKDF(salt, IKM, "Content-Encoding: aes128gcm|nonce" 0x00).
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek).map_err(|_| EncryptError::Cipher)?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce).map_err(|_| EncryptError::Cipher)?;

    // One record (sequence number 0: the nonce as derived), the last: delimiter 0x02.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(0x02);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| EncryptError::Cipher)?;
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: &record, aad: b"" })
        .map_err(|_| EncryptError::Cipher)?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_point.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// Base64url (or standard) bytes, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD.decode(trimmed).or_else(|_| STANDARD_NO_PAD.decode(trimmed)).ok()
}

/// What a push service's answer means for the worker.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Result<(), PushError> {
    let reason = || format!("push service answered {status}");
    match status.as_u16() {
        200..=299 => Ok(()),
        404 | 410 => Err(PushError::DeviceGone(reason())),
        408 | 429 | 500..=599 => Err(PushError::Retry { reason: reason(), retry_after }),
        413 => Err(PushError::Permanent(format!("{}: payload too large", reason()))),
        _ => Err(PushError::Permanent(reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// RFC 8291 §5 / Appendix A: the published example, byte for byte.
    #[test]
    fn encryption_matches_the_rfc_8291_example() {
        let ua_public = PublicKey::from_sec1_bytes(&b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        ))
        .unwrap();
        let as_secret = SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let auth: [u8; 16] = b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body =
            encrypt_with(b"When I grow up, I want to be a watermelon", &ua_public, &auth, &as_secret, salt)
                .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn each_message_gets_a_fresh_key_and_salt() {
        let ua = SecretKey::random(&mut rand_core::OsRng);
        let p256dh = URL_SAFE_NO_PAD.encode(ua.public_key().to_encoded_point(false).as_bytes());
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let (a, b) = (encrypt(b"x", &p256dh, &auth).unwrap(), encrypt(b"x", &p256dh, &auth).unwrap());
        assert_eq!(a.len(), HEADER_LEN + 2 + TAG_LEN);
        assert_ne!(a[..16], b[..16], "salt");
        assert_ne!(a[21..HEADER_LEN], b[21..HEADER_LEN], "ephemeral key");
    }

    #[test]
    fn bad_subscription_keys_and_oversized_payloads_are_refused() {
        let ua = SecretKey::random(&mut rand_core::OsRng);
        let p256dh = URL_SAFE_NO_PAD.encode(ua.public_key().to_encoded_point(false).as_bytes());
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert_eq!(encrypt(b"x", "BOr-key", &auth), Err(EncryptError::PublicKey));
        assert_eq!(encrypt(b"x", &p256dh, "c2hvcnQ"), Err(EncryptError::AuthSecret));
        let padded = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(encrypt(b"x", &p256dh, &padded).is_ok(), "padded base64 is accepted");
        let big = vec![b'a'; MAX_PLAINTEXT_BYTES + 1];
        assert_eq!(encrypt(&big, &p256dh, &auth), Err(EncryptError::TooLarge(big.len())));
        let fits = encrypt(&big[1..], &p256dh, &auth).unwrap();
        assert_eq!(fits.len(), MAX_BODY_BYTES);
    }

    #[test]
    fn the_topic_is_32_url_safe_characters() {
        let topic = topic("01J0CONVERSATION");
        assert_eq!(topic.len(), 32);
        assert!(topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn statuses_map_to_delivered_gone_retry_or_permanent() {
        let later = Some(Duration::from_secs(7));
        for ok in [StatusCode::OK, StatusCode::CREATED, StatusCode::ACCEPTED] {
            assert_eq!(classify(ok, None), Ok(()), "{ok}");
        }
        for gone in [StatusCode::NOT_FOUND, StatusCode::GONE] {
            assert!(matches!(classify(gone, None), Err(PushError::DeviceGone(_))), "{gone}");
        }
        for transient in
            [StatusCode::TOO_MANY_REQUESTS, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY]
        {
            assert!(
                matches!(classify(transient, later), Err(PushError::Retry { retry_after, .. }) if retry_after == later),
                "{transient}"
            );
        }
        for permanent in [
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FOUND,
        ] {
            assert!(matches!(classify(permanent, None), Err(PushError::Permanent(_))), "{permanent}");
        }
    }

    #[test]
    fn a_vapid_key_loads_from_sec1_or_pkcs8_pem() {
        use p256::pkcs8::LineEnding;
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(VapidKey::from_pem(&sec1).unwrap().public_key(), public);
        assert_eq!(VapidKey::from_pem(&pkcs8).unwrap().public_key(), public);
        assert!(matches!(VapidKey::from_pem("not a key"), Err(SetupError::Key)));
    }
}
