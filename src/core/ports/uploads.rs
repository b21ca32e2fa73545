//! The store's part of media: uploads, and the attachments made from them. Implemented by
//! both store backends next to the rest of [`super::Store`].

use async_trait::async_trait;

use crate::core::error::StoreError;
use crate::core::model::Attachment;
use crate::core::time::Timestamp;

/// An upload being opened (`POST /api/uploads`).
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Fresh id; the raw bytes go to `uploads/<id>`.
    pub id: String,
    /// The uploader.
    pub user_id: String,
    /// The conversation the upload may be attached in.
    pub conversation_id: String,
    /// The file name the uploader gave (cleaned).
    pub filename: String,
    /// The declared MIME type.
    pub content_type: String,
    /// The declared length in bytes.
    pub size: u64,
    /// The declared SHA-256 (lowercase hex), if given.
    pub sha256: Option<String>,
    /// SHA-256 (hex) of the token that authorizes uploading to chatd itself.
    pub token_hash: String,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When uploading to it ends; unattached, its bytes are deleted then.
    pub expires_at: Timestamp,
}

/// Where an upload is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadState {
    /// The client may upload its bytes.
    Pending,
    /// Processed into an attachment, bound to a message (which may not have committed: a
    /// send refused after processing binds it again on its next try).
    Attached(AttachedUpload),
    /// Its objects are deleted.
    Gone,
}

/// The attachment made from an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedUpload {
    /// The attachment as messages carry it.
    pub attachment: Attachment,
    /// The message it is (to be) part of.
    pub message_id: String,
    /// The MIME type of `thumbnails/<attachment id>`, when there is one.
    pub thumbnail: Option<String>,
    /// Whether browsers may show it inline (safe image types).
    pub inline: bool,
}

/// An upload as stored.
#[derive(Debug, Clone)]
pub struct Upload {
    /// What was declared when it was opened.
    pub declared: NewUpload,
    /// Where it is in its life.
    pub state: UploadState,
}

/// Whether the message an attachment is bound to can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundMessage {
    /// Committed and not deleted.
    Live,
    /// Deleted at this time.
    Deleted(Timestamp),
    /// Never committed.
    Missing,
}

/// An attachment found by its id, with where it may be seen.
#[derive(Debug, Clone)]
pub struct StoredAttachment {
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// Who uploaded it.
    pub uploader_id: String,
    /// The attachment.
    pub attached: AttachedUpload,
    /// The state of its message.
    pub message: BoundMessage,
}

/// Objects whose time is up, to delete (then [`UploadStore::media_deleted`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DueMedia {
    /// The upload.
    pub upload_id: String,
    /// Its attachment, if it was processed (`attachments/<id>`, `thumbnails/<id>`).
    pub attachment_id: Option<String>,
    /// Whether the attachment has a thumbnail.
    pub thumbnail: bool,
}

/// Uploads and attachments.
#[async_trait]
pub trait UploadStore: Send + Sync + 'static {
    /// Records a pending upload.
    async fn create_upload(&self, upload: NewUpload) -> Result<(), StoreError>;

    /// How many uploads `user_id` opened since `since`, and when the oldest of them was
    /// (the daily quota).
    async fn uploads_since(
        &self,
        user_id: &str,
        since: Timestamp,
    ) -> Result<(u64, Option<Timestamp>), StoreError>;

    /// The upload `id`, whatever its state.
    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError>;

    /// Records the attachment made from a pending upload, which then waits for its message
    /// until `expires_at` or `wait_until`, whichever is later; false (and nothing changes)
    /// when the upload is no longer pending (another send processed it first).
    async fn attach_upload(
        &self,
        upload_id: &str,
        attached: &AttachedUpload,
        wait_until: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Binds an attached upload to another message (its first was never committed).
    async fn rebind_upload(&self, upload_id: &str, message_id: &str) -> Result<(), StoreError>;

    /// The attachment `id` (not gone), with its conversation and message state.
    async fn attachment(&self, id: &str) -> Result<Option<StoredAttachment>, StoreError>;

    /// At most `limit` uploads whose objects are due for deletion: pending ones expired
    /// before `expired_before`; attached ones whose message never committed and that expired
    /// before `expired_before`; attached ones whose message was deleted before `deleted_before`.
    async fn due_media(
        &self,
        expired_before: Timestamp,
        deleted_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueMedia>, StoreError>;

    /// Marks uploads gone (their objects are deleted) and forgets gone uploads opened
    /// before `forget_before`.
    async fn media_deleted(&self, upload_ids: &[String], forget_before: Timestamp) -> Result<(), StoreError>;
}
