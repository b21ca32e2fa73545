//! An upload row as both backends read it, and how it becomes an [`Upload`]: one place for
//! the meaning of `state` and of the attachment columns.

use crate::core::error::StoreError;
use crate::core::model::Attachment;
use crate::core::ports::{AttachedUpload, BoundMessage, NewUpload, StoredAttachment, Upload, UploadState};
use crate::core::time::Timestamp;

/// The columns [`UploadRow`] is read from, in order.
pub(crate) const UPLOAD_COLUMNS: &str = "id, user_id, conversation_id, filename, content_type, size, sha256, \
     token_hash, created_at, expires_at, state, message_id, attachment, thumbnail, inline";

/// An upload's columns, as read.
pub(crate) struct UploadRow {
    pub id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: Option<String>,
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: String,
    pub message_id: Option<String>,
    pub attachment: Option<String>,
    pub thumbnail: Option<String>,
    pub inline: bool,
}

impl UploadRow {
    /// The upload these columns describe.
    pub fn into_upload(self) -> Result<Upload, StoreError> {
        let state = match (self.state.as_str(), self.message_id, self.attachment) {
            ("pending", _, _) => UploadState::Pending,
            ("gone", _, _) => UploadState::Gone,
            ("processed" | "attached", Some(message_id), Some(attachment)) => {
                UploadState::Attached(AttachedUpload {
                    attachment: serde_json::from_str::<Attachment>(&attachment)
                        .map_err(|err| StoreError::Backend(Box::new(err)))?,
                    message_id,
                    thumbnail: self.thumbnail,
                    inline: self.inline,
                })
            }
            (state, _, _) => {
                return Err(StoreError::Backend(
                    format!("upload {} in a bad state {state:?}", self.id).into(),
                ));
            }
        };
        Ok(Upload {
            declared: NewUpload {
                id: self.id,
                user_id: self.user_id,
                conversation_id: self.conversation_id,
                filename: self.filename,
                content_type: self.content_type,
                size: u64::try_from(self.size).unwrap_or(0),
                sha256: self.sha256,
                token_hash: self.token_hash,
                created_at: Timestamp(self.created_at),
                expires_at: Timestamp(self.expires_at),
            },
            state,
        })
    }
}

/// The attachment column's text.
pub(crate) fn attachment_json(attached: &AttachedUpload) -> Result<String, StoreError> {
    serde_json::to_string(&attached.attachment).map_err(|err| StoreError::Backend(Box::new(err)))
}

/// A byte count as a database integer.
pub(crate) fn db_size(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// The attachment of an upload read with its message's existence and deletion time.
pub(crate) fn stored_attachment(
    upload: Upload,
    message_exists: bool,
    deleted_at: Option<i64>,
) -> Result<Option<StoredAttachment>, StoreError> {
    let UploadState::Attached(attached) = upload.state else { return Ok(None) };
    let message = match (message_exists, deleted_at) {
        (false, _) => BoundMessage::Missing,
        (true, Some(at)) => BoundMessage::Deleted(Timestamp(at)),
        (true, None) => BoundMessage::Live,
    };
    Ok(Some(StoredAttachment {
        conversation_id: upload.declared.conversation_id,
        uploader_id: upload.declared.user_id,
        attached,
        message,
    }))
}
