//! The media port: where uploaded and processed files live. Two backends (`media::local`,
//! the embedded default on disk, and `media::s3`, any S3-compatible object store) run one
//! test suite (tests/media).
//!
//! Keys are chatd's own (`uploads/<upload id>`, `attachments/<attachment id>`,
//! `thumbnails/<attachment id>`): never a client's file name.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// Why a media backend failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// No object under the key.
    #[error("no such object")]
    NotFound,
    /// The object is larger than the reader allowed.
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    /// The backend failed or could not be reached.
    #[error("media backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl MediaError {
    /// Wraps a backend's own error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        MediaError::Backend(Box::new(err))
    }
}

/// What a client declared it will upload, and for how long it may.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    /// The upload's id (the local backend's URL names it).
    pub upload_id: String,
    /// Where the bytes go.
    pub key: String,
    /// The declared MIME type (bound by the storage where it can; never trusted later).
    pub content_type: String,
    /// The declared length in bytes (the storage refuses any other where it can).
    pub size: u64,
    /// When the upload permission ends.
    pub expires_in: Duration,
    /// chatd's own secret for this upload (the local backend's URL carries it; an object
    /// store signs its own).
    pub token: String,
}

/// How the client uploads: `method` to `url`, with `headers` (a PUT) or as a multipart form
/// with `fields` then the file last (a POST). The unused one is empty.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UploadTarget {
    /// `PUT` or `POST`.
    pub method: &'static str,
    /// Absolute (object store) or relative to chatd's base URL (local disk).
    pub url: String,
    /// Headers to send with a PUT.
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Form fields to send, in order and before the file, with a POST.
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// How a stored object is served: its type and whether browsers may show it inline.
#[derive(Debug, Clone)]
pub struct ObjectHeaders {
    /// The verified MIME type.
    pub content_type: String,
    /// The full `Content-Disposition` value (`inline` only for safe image types).
    pub content_disposition: String,
}

/// Which bytes of an object a download asks for (HTTP `Range`, one range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`: offsets `a..b+1`.
    Bounded(Range<u64>),
    /// `bytes=a-`: from `a` to the end.
    From(u64),
    /// `bytes=-n`: the last `n`.
    Last(u64),
}

/// A stored object's bytes as a stream.
pub struct ObjectStream {
    /// The object's full length.
    pub total: u64,
    /// The offsets of the streamed bytes (all of them without a range).
    pub range: Range<u64>,
    /// The bytes.
    pub body: BoxStream<'static, Result<Bytes, MediaError>>,
}

/// How a download is answered.
pub enum Download {
    /// Redirect the client to a short-lived URL of the object store.
    Redirect(String),
    /// Stream the bytes through chatd.
    Stream(ObjectStream),
    /// The range asked for starts past the end of the object (HTTP 416), `total` bytes long.
    Unsatisfiable {
        /// The object's length.
        total: u64,
    },
}

/// Object storage of uploads, attachments and thumbnails.
#[async_trait]
pub trait Media: Send + Sync + 'static {
    /// The backend's name (`local`, `s3`), for logs and the admin API.
    fn name(&self) -> &'static str;

    /// Where a client uploads `spec`'s bytes directly.
    async fn upload_target(&self, spec: &UploadSpec) -> Result<UploadTarget, MediaError>;

    /// Whether chatd itself receives uploads (`PUT` to the URL of [`Media::upload_target`])
    /// and writes them with [`Media::put`].
    fn receives_uploads(&self) -> bool;

    /// The stored length of the object under `key`, or `None`.
    async fn size(&self, key: &str) -> Result<Option<u64>, MediaError>;

    /// The object's bytes; `TooLarge` past `max` bytes, `NotFound` if missing.
    async fn read(&self, key: &str, max: u64) -> Result<Bytes, MediaError>;

    /// Stores `bytes` under `key` (replacing any object there), served with `headers`.
    async fn put(&self, key: &str, bytes: Bytes, headers: &ObjectHeaders) -> Result<(), MediaError>;

    /// Deletes the object under `key`; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), MediaError>;

    /// How to serve the object under `key` (one range or all of it), valid for `expires_in`
    /// when it is a redirect.
    async fn download(
        &self,
        key: &str,
        range: Option<ByteRange>,
        headers: &ObjectHeaders,
        expires_in: Duration,
    ) -> Result<Download, MediaError>;
}
