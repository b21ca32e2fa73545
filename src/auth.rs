//! JWT verification (used by every transport) and minting (CLI, dev endpoint).
//!
//! Tokens are issued by the platform: `sub` is the user id (never the reserved `system`, the
//! sender of admin messages), `name` an optional display name, `exp` required, `nbf` checked
//! when present. HS256 with a shared secret by default; RS256 or ES256 when a PEM public
//! key is configured (the algorithm follows the key type). Only the one configured
//! algorithm is accepted, so `alg: none` and algorithm confusion are rejected.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::core::ChatError;
use crate::core::chat::admin::SYSTEM_SENDER;
use crate::core::model::User;
use crate::core::validate;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// The claims chatd reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Audience, when the deployment checks it: one, or several (RFC 7519 §4.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer, when the deployment checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The `aud` claim: a single audience or an array of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "chat-api"`
    One(String),
    /// `"aud": ["chat-api", "billing"]`
    Many(Vec<String>),
}

/// Where the verification key comes from.
pub enum KeySource {
    /// HS256 shared secret.
    Secret(Vec<u8>),
    /// PEM public key (RSA → RS256, EC P-256 → ES256); minting is then impossible.
    PublicKeyPem(Vec<u8>),
}

/// Verifies (and, with a shared secret, mints) tokens.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
}

impl Authenticator {
    /// Builds a verifier; `audience` and `issuer` are checked when given.
    pub fn new(key: KeySource, audience: Option<String>, issuer: Option<String>) -> anyhow::Result<Self> {
        let (decoding, encoding, algorithm) = match key {
            KeySource::Secret(secret) => {
                anyhow::ensure!(secret.len() >= 16, "the JWT secret must be at least 16 bytes");
                (DecodingKey::from_secret(&secret), Some(EncodingKey::from_secret(&secret)), Algorithm::HS256)
            }
            KeySource::PublicKeyPem(pem) => {
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, None, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, None, Algorithm::ES256)
                } else {
                    anyhow::bail!("the JWT public key is neither an RSA nor an EC PEM public key");
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud`/`iss` only when the token has them: a configured one
        // must also be present.
        let mut required = vec!["exp", "sub"];
        match &audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Authenticator { decoding, encoding, algorithm, validation, audience, issuer })
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies a token and returns its user, or `unauthorized` / `token_expired`.
    pub fn verify(&self, token: &str) -> Result<User, ChatError> {
        self.verify_session(token).map(|(user, _)| user)
    }

    /// Like [`Auth::verify`], with the token's expiry (`exp`, Unix seconds), for connections
    /// that outlive a request and must end when their token does.
    pub fn verify_session(&self, token: &str) -> Result<(User, u64), ChatError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => ChatError::TokenExpired,
                ErrorKind::ImmatureSignature => ChatError::Unauthorized("token not valid yet (nbf)".into()),
                ErrorKind::InvalidAudience => ChatError::Unauthorized("token audience not accepted".into()),
                ErrorKind::InvalidIssuer => ChatError::Unauthorized("token issuer not accepted".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    ChatError::Unauthorized(format!("token lacks the {claim} claim"))
                }
                _ => ChatError::Unauthorized("invalid token".into()),
            },
        )?;
        let claims = data.claims;
        validate::identifier("sub", &claims.sub)
            .map_err(|e| ChatError::Unauthorized(format!("token {e}")))?;
        if claims.sub == SYSTEM_SENDER {
            return Err(ChatError::Unauthorized(format!("{SYSTEM_SENDER:?} is reserved, not a user")));
        }
        Ok((User { id: claims.sub, name: claims.name, connection: None, arrival: 0 }, claims.exp))
    }

    /// Signs a token for `user_id` valid for `ttl`, with the configured audience and issuer.
    /// Fails with `unavailable` when only a public key is configured (it cannot sign).
    pub fn mint(&self, user_id: &str, name: Option<String>, ttl: Duration) -> Result<String, ChatError> {
        let Some(encoding) = &self.encoding else {
            return Err(ChatError::Unavailable(
                "tokens can only be minted with a shared secret, not with a public key".into(),
            ));
        };
        validate::identifier("user_id", user_id)?;
        if user_id == SYSTEM_SENDER {
            return Err(ChatError::invalid(format!("{SYSTEM_SENDER:?} is reserved, not a user")));
        }
        if let Some(name) = &name {
            validate::label("name", name, validate::MAX_LABEL_CHARS)?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| ChatError::Internal(Box::new(e)))?;
        let claims = Claims {
            sub: user_id.to_owned(),
            name,
            exp: now.as_secs() + ttl.as_secs(),
            aud: self.audience.clone().map(Audience::One),
            iss: self.issuer.clone(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .map_err(|e| ChatError::Internal(Box::new(e)))
    }
}

/// Whether `given` is the admin key `expected`, compared in constant time: over SHA-256
/// digests, so neither the content nor the length of the key leaks through timing.
pub fn admin_key_matches(expected: &str, given: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(expected.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())).into()
}

#[cfg(test)]
mod tests {
    use super::admin_key_matches;

    #[test]
    fn only_the_exact_admin_key_matches() {
        assert!(admin_key_matches("s3cret-admin-key", "s3cret-admin-key"));
        assert!(!admin_key_matches("s3cret-admin-key", "s3cret-admin-kez"));
        assert!(!admin_key_matches("s3cret-admin-key", "s3cret"));
        assert!(!admin_key_matches("s3cret-admin-key", ""));
    }
}
