//! Photos and files: opening an upload, receiving its bytes (local disk), turning uploads
//! into attachments when a message names them, serving attachments to members, and deleting
//! media whose time is up.
//!
//! An upload's declared type and size are hints; the bytes decide ([`inspect`]). Nothing a
//! client uploaded is served before it was checked and, for images, re-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::*;
use crate::core::media::inspect::{self, InspectLimits, Inspected, Kind};
use crate::core::media::{attachment_key, clean_filename, content_disposition, thumbnail_key, upload_key};
use crate::core::model::{Attachment, AttachmentKind, JsonObject, ThumbnailSize};
use crate::core::ports::{
    AttachedUpload, BoundMessage, ByteRange, Download, Media, NewUpload, ObjectHeaders, UploadSpec,
    UploadState,
};
use crate::core::requests::CreateUpload;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 320;
/// How long a download redirect (object store) stays valid.
const DOWNLOAD_LINK_TTL: Duration = Duration::from_secs(300);
/// How long a processed upload waits for its message at least.
const ATTACH_WAIT: Duration = Duration::from_secs(60);
/// Uploads examined per housekeeping round.
const SWEEP_ROUND: usize = 500;
/// The quota's window.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Where and how to upload, as `POST /api/uploads` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadTicket {
    /// The upload's id: name it in a message's `attachments` as `{upload_id}`.
    pub upload_id: String,
    /// How to upload (method, URL, headers or form fields).
    #[serde(flatten)]
    pub target: crate::core::ports::UploadTarget,
    /// When uploading ends; unattached by then, the upload is deleted.
    pub expires_at: Timestamp,
}

/// An attachment's bytes, as a download answers.
pub struct AttachmentDownload {
    /// A redirect or the bytes.
    pub download: Download,
    /// Its verified type and disposition.
    pub headers: ObjectHeaders,
}

impl Chat {
    /// This service storing media in `media`; without it, uploads are `unavailable`.
    pub fn with_media(mut self, media: Arc<dyn Media>) -> Self {
        self.media = Some(media);
        self
    }

    /// Starts deleting expired uploads and deleted messages' media (needs a Tokio runtime).
    pub fn start_media_housekeeping(self: &Arc<Self>) {
        if self.media.is_none() {
            return;
        }
        let limits = &self.limits.media;
        let period = (limits.upload_expiry.min(limits.retention) / 2)
            .clamp(Duration::from_millis(250), Duration::from_secs(60));
        let chat = Arc::downgrade(self);
        self.tasks.spawn("delete expired media", async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(chat) = chat.upgrade() else { return };
                if let Err(err) = chat.delete_due_media().await {
                    tracing::warn!(error = %err, "deleting expired media failed");
                }
            }
        });
    }

    fn media(&self) -> Result<&Arc<dyn Media>, ChatError> {
        self.media.as_ref().ok_or_else(|| ChatError::Unavailable("media storage is not configured".into()))
    }

    /// # Open an upload (members only)
    /// Checks the declared type and size, the daily quota and membership; answers where the
    /// client uploads the bytes directly.
    pub async fn open_upload(&self, user: &User, req: CreateUpload) -> Result<UploadTicket, ChatError> {
        let media = self.media()?;
        let limits = &self.limits.media;
        validate::identifier("conversation_id", &req.conversation_id)?;
        let filename =
            clean_filename(&req.filename).ok_or_else(|| ChatError::invalid("filename is empty"))?;
        validate::label("content_type", &req.content_type, 255)?;
        let content_type = req.content_type.trim().to_ascii_lowercase();
        if !inspect::declared_type_allowed(&content_type) {
            return Err(ChatError::invalid(format!("content type {content_type:?} is not allowed")));
        }
        if req.size == 0 {
            return Err(ChatError::invalid("size must be at least 1 byte"));
        }
        if req.size > limits.max_bytes {
            return Err(ChatError::TooLarge(format!("files are at most {} bytes", limits.max_bytes)));
        }
        let sha256 = match req.sha256 {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            Some(_) => return Err(ChatError::invalid("sha256 must be 64 hexadecimal digits")),
            None => None,
        };
        self.refuse_banned(user)?;
        self.message_limiter.check(&user.id).await?;
        self.require_member(&req.conversation_id, user).await?;
        let now = Timestamp::now();
        let (opened, oldest) = self.store.uploads_since(&user.id, now.minus(DAY)).await?;
        if opened >= limits.uploads_per_day {
            let frees_at = oldest.unwrap_or(now).plus(DAY);
            let retry_after =
                Duration::from_millis(u64::try_from(frees_at.millis() - now.millis()).unwrap_or(0));
            return Err(ChatError::RateLimited { retry_after });
        }
        let id = new_id();
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let expires_at = now.plus(limits.upload_expiry);
        self.store
            .create_upload(NewUpload {
                id: id.clone(),
                user_id: user.id.clone(),
                conversation_id: req.conversation_id,
                filename,
                content_type: content_type.clone(),
                size: req.size,
                sha256,
                token_hash: token_hash(&token),
                created_at: now,
                expires_at,
            })
            .await?;
        let target = media
            .upload_target(&UploadSpec {
                upload_id: id.clone(),
                key: upload_key(&id),
                content_type,
                size: req.size,
                expires_in: limits.upload_expiry,
                token,
            })
            .await
            .map_err(media_error)?;
        Ok(UploadTicket { upload_id: id, target, expires_at })
    }

    /// The most bytes chatd accepts in one upload request of its own.
    pub fn max_upload_bytes(&self) -> u64 {
        self.limits.media.max_bytes
    }

    /// # Receive an upload's bytes (local disk)
    /// `token` is the one from the upload's URL; `content_type` must be the declared one and
    /// `bytes` exactly the declared length, as an object store's signed policy demands.
    pub async fn receive_upload(
        &self,
        upload_id: &str,
        token: &str,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<(), ChatError> {
        let media = self.media()?;
        if !media.receives_uploads() {
            return Err(ChatError::not_found("uploads go to the object store"));
        }
        let upload =
            self.store.upload(upload_id).await?.ok_or_else(|| ChatError::not_found("no such upload"))?;
        let declared = &upload.declared;
        let given = token_hash(token);
        if !bool::from(given.as_bytes().ct_eq(declared.token_hash.as_bytes())) {
            return Err(ChatError::forbidden("the upload token is not valid"));
        }
        if upload.state != UploadState::Pending {
            return Err(ChatError::conflict("the upload was already attached to a message"));
        }
        if declared.expires_at <= Timestamp::now() {
            return Err(ChatError::forbidden("the upload permission has expired"));
        }
        let given_type = content_type.map(|t| t.trim().to_ascii_lowercase());
        if given_type.as_deref() != Some(declared.content_type.as_str()) {
            return Err(ChatError::invalid(format!(
                "Content-Type must be {:?}, as declared",
                declared.content_type
            )));
        }
        let length = bytes.len() as u64;
        if length > declared.size {
            return Err(ChatError::TooLarge(format!("{length} bytes sent; {} declared", declared.size)));
        }
        if length < declared.size {
            return Err(ChatError::invalid(format!("{length} bytes sent; {} declared", declared.size)));
        }
        let headers = ObjectHeaders {
            content_type: declared.content_type.clone(),
            content_disposition: content_disposition(false, &declared.filename),
        };
        media.put(&upload_key(upload_id), bytes, &headers).await.map_err(media_error)
    }

    /// Turns the uploads a message names (`{upload_id}` entries) into server-made
    /// attachments bound to `message_id`; other entries pass unchanged. Refuses (`invalid`,
    /// with the reason) an upload that is unknown, someone else's, of another conversation,
    /// never uploaded, of another size or hash than declared, not an allowed type, or
    /// already in another message. A retry of the same send (`client_id`) reuses its work.
    pub(super) async fn attach_uploads(
        &self,
        user: &User,
        conversation_id: &str,
        message_id: &str,
        client_id: Option<&str>,
        entries: Vec<JsonObject>,
    ) -> Result<Vec<JsonObject>, ChatError> {
        if !entries.iter().any(|entry| entry.contains_key("upload_id")) {
            return Ok(entries);
        }
        self.require_member(conversation_id, user).await?;
        let mut seen = Vec::new();
        let mut attachments = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(upload_id) = entry.get("upload_id") else {
                attachments.push(entry);
                continue;
            };
            let Some(upload_id) = upload_id.as_str().filter(|_| entry.len() == 1) else {
                return Err(ChatError::invalid(
                    "an attachment with upload_id is {\"upload_id\": string} only",
                ));
            };
            if seen.contains(&upload_id.to_owned()) {
                return Err(ChatError::invalid(format!("upload {upload_id} is named twice")));
            }
            seen.push(upload_id.to_owned());
            let attachment =
                self.attach_upload(user, conversation_id, message_id, client_id, upload_id).await?;
            match serde_json::to_value(attachment) {
                Ok(serde_json::Value::Object(object)) => attachments.push(object),
                Ok(_) => return Err(ChatError::Internal("an attachment is not a JSON object".into())),
                Err(err) => return Err(ChatError::Internal(Box::new(err))),
            }
        }
        Ok(attachments)
    }

    /// One upload of [`Chat::attach_uploads`].
    async fn attach_upload(
        &self,
        user: &User,
        conversation_id: &str,
        message_id: &str,
        client_id: Option<&str>,
        upload_id: &str,
    ) -> Result<Attachment, ChatError> {
        let not_yours = || {
            ChatError::invalid(format!("upload {upload_id} is not an upload of yours in this conversation"))
        };
        validate::identifier("upload_id", upload_id)?;
        let upload = self.store.upload(upload_id).await?.ok_or_else(not_yours)?;
        let declared = &upload.declared;
        if declared.user_id != user.id || declared.conversation_id != conversation_id {
            return Err(not_yours());
        }
        match upload.state {
            UploadState::Pending => {}
            UploadState::Gone => return Err(ChatError::invalid(format!("upload {upload_id} has expired"))),
            UploadState::Attached(attached) => {
                return self.reuse_attachment(upload_id, attached, message_id, client_id).await;
            }
        }
        if declared.expires_at <= Timestamp::now() {
            return Err(ChatError::invalid(format!("upload {upload_id} has expired")));
        }
        let media = self.media()?;
        let key = upload_key(upload_id);
        let stored = media.size(&key).await.map_err(media_error)?;
        let stored =
            stored.ok_or_else(|| ChatError::invalid(format!("upload {upload_id} was never uploaded")))?;
        if stored != declared.size {
            return Err(ChatError::invalid(format!(
                "upload {upload_id} holds {stored} bytes; {} were declared",
                declared.size
            )));
        }
        if stored > self.limits.media.max_bytes {
            return Err(ChatError::TooLarge(format!(
                "files are at most {} bytes",
                self.limits.media.max_bytes
            )));
        }
        let bytes = media.read(&key, declared.size).await.map_err(media_error)?;
        if let Some(expected) = &declared.sha256 {
            let actual = hex(&Sha256::digest(&bytes));
            if &actual != expected {
                return Err(ChatError::invalid(format!("upload {upload_id} does not match its sha256")));
            }
        }
        let inspected = self.inspect(bytes, &declared.filename).await?;
        let attached = self.store_attachment(inspected, &declared.filename, message_id).await?;
        let wait_until = Timestamp::now().plus(ATTACH_WAIT);
        if !self.store.attach_upload(upload_id, &attached, wait_until).await? {
            // Another send processed it first: drop this copy and take that one's.
            self.delete_attachment_objects(&attached.attachment.id, attached.thumbnail.is_some()).await;
            return match self.store.upload(upload_id).await?.map(|u| u.state) {
                Some(UploadState::Attached(theirs)) => {
                    self.reuse_attachment(upload_id, theirs, message_id, client_id).await
                }
                _ => Err(ChatError::invalid(format!("upload {upload_id} has expired"))),
            };
        }
        if let Err(err) = media.delete(&key).await {
            tracing::warn!(error = %err, upload_id, "deleting a processed upload's raw bytes failed");
        }
        Ok(attached.attachment)
    }

    /// An upload processed before: free when its message never committed (it is bound to
    /// this one), the same when this send repeats the one it is in, refused otherwise.
    async fn reuse_attachment(
        &self,
        upload_id: &str,
        attached: AttachedUpload,
        message_id: &str,
        client_id: Option<&str>,
    ) -> Result<Attachment, ChatError> {
        match self.store.message(&attached.message_id).await? {
            None => {
                self.store.rebind_upload(upload_id, message_id).await?;
                Ok(attached.attachment)
            }
            Some(message) if client_id.is_some() && message.client_id.as_deref() == client_id => {
                Ok(attached.attachment)
            }
            Some(_) => {
                Err(ChatError::invalid(format!("upload {upload_id} is already attached to a message")))
            }
        }
    }

    /// Runs [`inspect::inspect`] off the async threads, a few at a time.
    async fn inspect(&self, bytes: Bytes, filename: &str) -> Result<Inspected, ChatError> {
        let _turn = self.processing.acquire().await.map_err(|err| ChatError::Internal(Box::new(err)))?;
        let limits = InspectLimits {
            max_pixels: self.limits.media.max_pixels,
            thumbnail_edge: THUMBNAIL_EDGE,
            ..InspectLimits::default()
        };
        let filename = filename.to_owned();
        let started = Instant::now();
        let inspected = tokio::task::spawn_blocking(move || inspect::inspect(bytes, &filename, &limits))
            .await
            .map_err(|err| ChatError::Internal(Box::new(err)))?;
        telemetry::media_processed(started.elapsed());
        let inspected = inspected.map_err(|refusal| ChatError::invalid(refusal.to_string()))?;
        if !self.limits.media.allows(inspected.kind, inspected.content_type) {
            return Err(ChatError::invalid(format!("{} files are not allowed here", inspected.content_type)));
        }
        Ok(inspected)
    }

    /// Stores an inspected upload's bytes and thumbnail as a new attachment.
    async fn store_attachment(
        &self,
        inspected: Inspected,
        filename: &str,
        message_id: &str,
    ) -> Result<AttachedUpload, ChatError> {
        let media = self.media()?;
        let id = new_id();
        let headers = ObjectHeaders {
            content_type: inspected.content_type.to_owned(),
            content_disposition: content_disposition(inspected.inline, filename),
        };
        let size = inspected.bytes.len() as u64;
        media.put(&attachment_key(&id), inspected.bytes, &headers).await.map_err(media_error)?;
        let mut thumbnail = None;
        if let Some(thumb) = inspected.thumbnail {
            let headers = ObjectHeaders {
                content_type: thumb.content_type.to_owned(),
                content_disposition: content_disposition(true, filename),
            };
            media.put(&thumbnail_key(&id), thumb.bytes, &headers).await.map_err(media_error)?;
            thumbnail = Some((
                thumb.content_type.to_owned(),
                ThumbnailSize { width: thumb.width, height: thumb.height },
            ));
        }
        Ok(AttachedUpload {
            attachment: Attachment {
                id,
                kind: match inspected.kind {
                    Kind::Image => AttachmentKind::Image,
                    Kind::Video => AttachmentKind::Video,
                    Kind::Audio => AttachmentKind::Audio,
                    Kind::File => AttachmentKind::File,
                },
                content_type: inspected.content_type.to_owned(),
                size,
                name: filename.to_owned(),
                width: inspected.dimensions.map(|(w, _)| w),
                height: inspected.dimensions.map(|(_, h)| h),
                thumbnail: thumbnail.as_ref().map(|(_, size)| *size),
            },
            message_id: message_id.to_owned(),
            thumbnail: thumbnail.map(|(content_type, _)| content_type),
            inline: inspected.inline,
        })
    }

    /// # Download an attachment or its thumbnail (members only)
    /// Anyone else, and any attachment of a deleted or never-sent message (but for its
    /// uploader's own unsent one), gets `not_found`, exactly as for a missing id.
    pub async fn download_attachment(
        &self,
        user: &User,
        attachment_id: &str,
        thumbnail: bool,
        range: Option<ByteRange>,
    ) -> Result<AttachmentDownload, ChatError> {
        let missing = || ChatError::not_found("no such attachment");
        let media = self.media()?;
        validate::identifier("attachment_id", attachment_id).map_err(|_| missing())?;
        let found = self.store.attachment(attachment_id).await?.ok_or_else(missing)?;
        let visible = match found.message {
            BoundMessage::Live => true,
            BoundMessage::Missing => found.uploader_id == user.id,
            BoundMessage::Deleted(_) => false,
        };
        if !visible
            || !matches!(
                self.store.membership(&found.conversation_id, &user.id).await?,
                Membership::Member { .. }
            )
        {
            return Err(missing());
        }
        let attachment = &found.attached.attachment;
        let (key, headers) = if thumbnail {
            let content_type = found.attached.thumbnail.clone().ok_or_else(missing)?;
            let headers = ObjectHeaders {
                content_type,
                content_disposition: content_disposition(true, &attachment.name),
            };
            (thumbnail_key(attachment_id), headers)
        } else {
            let headers = ObjectHeaders {
                content_type: attachment.content_type.clone(),
                content_disposition: content_disposition(found.attached.inline, &attachment.name),
            };
            (attachment_key(attachment_id), headers)
        };
        let download =
            media.download(&key, range, &headers, DOWNLOAD_LINK_TTL).await.map_err(|err| match err {
                MediaError::NotFound => missing(),
                other => media_error(other),
            })?;
        Ok(AttachmentDownload { download, headers })
    }

    /// One round of media housekeeping: deletes the objects of uploads never attached in
    /// time and of messages deleted longer than the retention ago.
    pub async fn delete_due_media(&self) -> Result<usize, ChatError> {
        let media = self.media()?;
        let now = Timestamp::now();
        let mut deleted = 0;
        loop {
            let due = self.store.due_media(now, now.minus(self.limits.media.retention), SWEEP_ROUND).await?;
            let mut done = Vec::with_capacity(due.len());
            for item in &due {
                let mut removal = media.delete(&upload_key(&item.upload_id)).await;
                if let Some(attachment_id) = &item.attachment_id {
                    removal = removal.and(media.delete(&attachment_key(attachment_id)).await);
                    if item.thumbnail {
                        removal = removal.and(media.delete(&thumbnail_key(attachment_id)).await);
                    }
                }
                match removal {
                    Ok(()) => done.push(item.upload_id.clone()),
                    Err(err) => {
                        tracing::warn!(error = %err, upload_id = %item.upload_id, "deleting media failed")
                    }
                }
            }
            self.store.media_deleted(&done, now.minus(DAY.max(self.limits.media.upload_expiry))).await?;
            deleted += done.len();
            if due.len() < SWEEP_ROUND || done.is_empty() {
                return Ok(deleted);
            }
        }
    }

    /// Deletes a just-made attachment's objects (another send won the race).
    async fn delete_attachment_objects(&self, attachment_id: &str, thumbnail: bool) {
        let Ok(media) = self.media() else { return };
        let mut keys = vec![attachment_key(attachment_id)];
        if thumbnail {
            keys.push(thumbnail_key(attachment_id));
        }
        for key in keys {
            if let Err(err) = media.delete(&key).await {
                tracing::warn!(error = %err, key, "deleting an unused attachment failed");
            }
        }
    }
}

/// The hex SHA-256 of an upload token, as stored.
fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A media backend failure as the client sees it: `unavailable` (details are logged).
fn media_error(err: MediaError) -> ChatError {
    match err {
        MediaError::NotFound => ChatError::not_found("no such object"),
        MediaError::TooLarge(max) => ChatError::TooLarge(format!("the file is larger than {max} bytes")),
        MediaError::Backend(source) => {
            tracing::warn!(error = %source, "media backend failed");
            ChatError::Unavailable("media storage is unavailable".into())
        }
    }
}
