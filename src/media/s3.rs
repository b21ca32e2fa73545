//! Media in an S3-compatible object store (AWS S3, SeaweedFS, MinIO...). Clients upload
//! directly with a presigned POST whose policy pins the key, the declared type and the exact
//! length, and download from a presigned GET that makes the store answer with chatd's
//! `Content-Type` and `Content-Disposition` (`response-content-*` parameters, signed), so
//! chatd never carries the bytes.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{Attribute, Attributes, BackoffConfig, ObjectStore, PutOptions, PutPayload, RetryConfig};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{delete_object, object_path, object_size, read_bounded, store_error};
use crate::core::ports::{ByteRange, Download, Media, MediaError, ObjectHeaders, UploadSpec, UploadTarget};

/// Where the objects live and with which credentials.
#[derive(Clone)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// The store's URL (`http://127.0.0.1:8333`) for a store other than AWS; requests then use
    /// path-style addressing. `None`: AWS (or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The region the signatures name (`us-east-1` for most S3-compatible stores).
    pub region: String,
    /// The access key; `None`: the usual AWS environment variables (or instance credentials).
    pub access_key_id: Option<String>,
    /// The secret key; `None` as for `access_key_id`.
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Media in one bucket of an S3-compatible object store.
#[derive(Debug)]
pub struct S3Media {
    store: AmazonS3,
    bucket: String,
    region: String,
    /// Where presigned POSTs go: the bucket's URL.
    bucket_url: String,
}

impl S3Media {
    /// Connects to the bucket and checks that it answers (a listing of one empty prefix), so a
    /// wrong bucket, endpoint or credential fails at start rather than at the first upload.
    pub async fn connect(config: &S3Config) -> Result<S3Media, MediaError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            // Requests on a chat's hot path: fail within seconds rather than minutes.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
            });
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::S3Endpoint))
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
            .map(|endpoint| endpoint.trim_end_matches('/').to_owned());
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_config(AmazonS3ConfigKey::S3Endpoint, endpoint)
                .with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(MediaError::backend)?;
        let bucket_url = match &endpoint {
            Some(endpoint) => format!("{endpoint}/{}", config.bucket),
            None => format!("https://{}.s3.{}.amazonaws.com", config.bucket, config.region),
        };
        let probe = object_store::path::Path::from("chatd-connect-check");
        let listing = store.list_with_delimiter(Some(&probe)).await;
        listing.map_err(MediaError::backend)?;
        Ok(S3Media { store, bucket: config.bucket.clone(), region: config.region.clone(), bucket_url })
    }
}

#[async_trait]
impl Media for S3Media {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn upload_target(&self, spec: &UploadSpec) -> Result<UploadTarget, MediaError> {
        let credential = self.store.credentials().get_credential().await.map_err(MediaError::backend)?;
        let fields = presigned_post_fields(&credential, &self.bucket, &self.region, spec, Utc::now())?;
        Ok(UploadTarget { method: "POST", url: self.bucket_url.clone(), headers: Map::new(), fields })
    }

    fn receives_uploads(&self) -> bool {
        false
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, MediaError> {
        object_size(&self.store, key).await
    }

    async fn read(&self, key: &str, max: u64) -> Result<Bytes, MediaError> {
        read_bounded(&self.store, key, max).await
    }

    /// Stores the object with `headers` as its own `Content-Type` and `Content-Disposition`
    /// (what the store answers to a plain GET).
    async fn put(&self, key: &str, bytes: Bytes, headers: &ObjectHeaders) -> Result<(), MediaError> {
        let attributes = Attributes::from_iter([
            (Attribute::ContentType, headers.content_type.clone()),
            (Attribute::ContentDisposition, headers.content_disposition.clone()),
        ]);
        let options = PutOptions { attributes, ..PutOptions::default() };
        self.store
            .put_opts(&object_path(key)?, PutPayload::from(bytes), options)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), MediaError> {
        delete_object(&self.store, key).await
    }

    /// A presigned GET valid for `expires_in` whose signed `response-content-type` and
    /// `response-content-disposition` make the store answer with `headers`, whatever it stored.
    /// The client sends its `Range` to the store itself, so `range` plays no part; signing asks
    /// nothing of the store, so a missing object is the store's 404 when the client follows.
    async fn download(
        &self,
        key: &str,
        _range: Option<ByteRange>,
        headers: &ObjectHeaders,
        expires_in: Duration,
    ) -> Result<Download, MediaError> {
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", headers.content_type.as_str()),
            ("response-content-disposition", headers.content_disposition.as_str()),
        ]);
        let url = self
            .store
            .signed_url_opts(Method::GET, &object_path(key)?, expires_in, &options)
            .await
            .map_err(MediaError::backend)?;
        Ok(Download::Redirect(url.to_string()))
    }
}

/// The form fields of a presigned POST (AWS SigV4, "browser-based upload") that lets a client
/// store exactly `spec` in `bucket` until `now + spec.expires_in`: the policy requires the
/// key, the declared `Content-Type` and a length of exactly `spec.size` bytes.
fn presigned_post_fields(
    credential: &AwsCredential,
    bucket: &str,
    region: &str,
    spec: &UploadSpec,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, MediaError> {
    let lifetime = chrono::TimeDelta::from_std(spec.expires_in).map_err(MediaError::backend)?;
    let expiration = (now + lifetime).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{}/{date}/{region}/s3/aws4_request", credential.key_id);

    let mut conditions = vec![
        json!({ "bucket": bucket }),
        json!(["eq", "$key", spec.key]),
        json!(["eq", "$Content-Type", spec.content_type]),
        json!(["content-length-range", spec.size, spec.size]),
        json!({ "x-amz-algorithm": "AWS4-HMAC-SHA256" }),
        json!({ "x-amz-credential": scope }),
        json!({ "x-amz-date": amz_date }),
    ];
    if let Some(token) = &credential.token {
        conditions.push(json!({ "x-amz-security-token": token }));
    }
    let policy_json = json!({ "expiration": expiration, "conditions": conditions }).to_string();
    let policy = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, policy_json);
    let signature = sign_post_policy(&credential.secret_key, &date, region, &policy);

    let mut fields = Map::new();
    fields.insert("key".to_owned(), spec.key.clone().into());
    fields.insert("Content-Type".to_owned(), spec.content_type.clone().into());
    fields.insert("policy".to_owned(), policy.into());
    fields.insert("x-amz-algorithm".to_owned(), "AWS4-HMAC-SHA256".into());
    fields.insert("x-amz-credential".to_owned(), scope.into());
    fields.insert("x-amz-date".to_owned(), amz_date.into());
    if let Some(token) = &credential.token {
        fields.insert("x-amz-security-token".to_owned(), token.clone().into());
    }
    fields.insert("x-amz-signature".to_owned(), signature.into());
    Ok(fields)
}

/// The SigV4 signature (hex) of a base64 POST policy: HMAC-SHA256 with the signing key derived
/// from `secret` for `date` (`YYYYMMDD`), `region` and the `s3` service.
fn sign_post_policy(secret: &str, date: &str, region: &str, policy_base64: &str) -> String {
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hmac_sha256(&key, policy_base64.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// HMAC-SHA256 of `data` under `key`.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's "Browser-Based Upload using HTTP POST (Using AWS Signature
    /// Version 4)" page: its base64 policy (the string to sign), example secret, date, region
    /// and published signature.
    #[test]
    fn post_policy_signature_matches_the_aws_example() {
        let policy = concat!(
            "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7",
            "ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91",
            "c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3Qi",
            "OiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwi",
            "fSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRh",
            "LXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVT",
            "MjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNy",
            "ZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9",
            "LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAi",
            "MjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9",
        );
        let signature =
            sign_post_policy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20151229", "us-east-1", policy);
        assert_eq!(signature, "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e");
    }

    #[test]
    fn post_policy_pins_key_type_and_exact_length() {
        let credential = AwsCredential {
            key_id: "AKIDEXAMPLE".to_owned(),
            secret_key: "secret".to_owned(),
            token: Some("session".to_owned()),
        };
        let spec = UploadSpec {
            upload_id: "u1".to_owned(),
            key: "uploads/u1".to_owned(),
            content_type: "image/png".to_owned(),
            size: 1234,
            expires_in: Duration::from_secs(600),
            token: "unused".to_owned(),
        };
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("date").to_utc();
        let fields = presigned_post_fields(&credential, "media", "us-east-1", &spec, now).expect("fields");
        assert_eq!(fields["x-amz-credential"], "AKIDEXAMPLE/20260102/us-east-1/s3/aws4_request");
        assert_eq!(fields["x-amz-date"], "20260102T030405Z");
        assert_eq!(fields["x-amz-security-token"], "session");
        let policy_base64 = fields["policy"].as_str().expect("policy");
        let policy: Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, policy_base64)
                .expect("base64"),
        )
        .expect("json");
        assert_eq!(policy["expiration"], "2026-01-02T03:14:05.000Z");
        let conditions = policy["conditions"].as_array().expect("conditions");
        assert!(conditions.contains(&json!(["eq", "$key", "uploads/u1"])));
        assert!(conditions.contains(&json!(["eq", "$Content-Type", "image/png"])));
        assert!(conditions.contains(&json!(["content-length-range", 1234, 1234])));
        assert!(conditions.contains(&json!({ "x-amz-security-token": "session" })));
        let expected = sign_post_policy("secret", "20260102", "us-east-1", policy_base64);
        assert_eq!(fields["x-amz-signature"], Value::String(expected));
    }
}
