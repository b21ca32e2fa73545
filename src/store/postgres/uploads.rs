//! Uploads and the attachments made from them (see migrations/postgres/0010_uploads.sql).

use super::*;
use crate::core::ports::{AttachedUpload, DueMedia, NewUpload, StoredAttachment, Upload, UploadStore};
use crate::store::upload_rows::{UPLOAD_COLUMNS, UploadRow, attachment_json, db_size, stored_attachment};

/// Reads an [`UploadRow`] from the first columns of `row`.
fn upload_row(row: &Row) -> Result<UploadRow, StoreError> {
    Ok(UploadRow {
        id: get(row, 0)?,
        user_id: get(row, 1)?,
        conversation_id: get(row, 2)?,
        filename: get(row, 3)?,
        content_type: get(row, 4)?,
        size: get(row, 5)?,
        sha256: get(row, 6)?,
        token_hash: get(row, 7)?,
        created_at: get(row, 8)?,
        expires_at: get(row, 9)?,
        state: get(row, 10)?,
        message_id: get(row, 11)?,
        attachment: get(row, 12)?,
        thumbnail: get(row, 13)?,
        inline: get(row, 14)?,
    })
}

#[async_trait]
impl UploadStore for PostgresStore {
    async fn create_upload(&self, upload: NewUpload) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO uploads (id, user_id, conversation_id, filename, content_type, size, sha256, \
             token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &upload.id,
                &upload.user_id,
                &upload.conversation_id,
                &upload.filename,
                &upload.content_type,
                &db_size(upload.size),
                &upload.sha256,
                &upload.token_hash,
                &upload.created_at.millis(),
                &upload.expires_at.millis(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn uploads_since(
        &self,
        user_id: &str,
        since: Timestamp,
    ) -> Result<(u64, Option<Timestamp>), StoreError> {
        let rows = self
            .query(
                "SELECT count(*), min(created_at) FROM uploads WHERE user_id = $1 AND created_at >= $2",
                &[&user_id, &since.millis()],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok((0, None)) };
        let (count, oldest): (i64, Option<i64>) = (get(row, 0)?, get(row, 1)?);
        Ok((u64::try_from(count).unwrap_or(0), oldest.map(Timestamp)))
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1");
        let rows = self.query(&sql, &[&id]).await?;
        rows.first().map(|row| upload_row(row)?.into_upload()).transpose()
    }

    async fn attach_upload(
        &self,
        upload_id: &str,
        attached: &AttachedUpload,
        wait_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE uploads SET state = 'processed', attachment_id = $2, message_id = $3, \
                 attachment = $4, thumbnail = $5, inline = $6, expires_at = GREATEST(expires_at, $7) \
                 WHERE id = $1 AND state = 'pending'",
                &[
                    &upload_id,
                    &attached.attachment.id,
                    &attached.message_id,
                    &attachment_json(attached)?,
                    &attached.thumbnail,
                    &attached.inline,
                    &wait_until.millis(),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn rebind_upload(&self, upload_id: &str, message_id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE uploads SET message_id = $2 WHERE id = $1 AND state = 'processed'",
            &[&upload_id, &message_id],
        )
        .await?;
        Ok(())
    }

    async fn attachment(&self, id: &str) -> Result<Option<StoredAttachment>, StoreError> {
        let sql = format!(
            "SELECT {UPLOAD_COLUMNS}, \
             EXISTS (SELECT 1 FROM messages m WHERE m.id = uploads.message_id), \
             (SELECT m.deleted_at FROM messages m WHERE m.id = uploads.message_id) \
             FROM uploads WHERE attachment_id = $1 AND state IN ('processed', 'attached')"
        );
        let rows = self.query(&sql, &[&id]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        stored_attachment(upload_row(row)?.into_upload()?, get(row, 15)?, get(row, 16)?)
    }

    async fn due_media(
        &self,
        expired_before: Timestamp,
        deleted_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueMedia>, StoreError> {
        self.execute(
            "UPDATE uploads SET state = 'attached' WHERE state = 'processed' \
             AND EXISTS (SELECT 1 FROM messages m WHERE m.id = uploads.message_id)",
            &[],
        )
        .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "(SELECT id, attachment_id, thumbnail FROM uploads \
              WHERE state IN ('pending', 'processed') AND expires_at < $1) \
             UNION ALL \
             (SELECT id, attachment_id, thumbnail FROM uploads \
              WHERE message_deleted_at < $2 AND state IN ('processed', 'attached')) \
             LIMIT $3",
            &[&expired_before.millis(), &deleted_before.millis(), &limit],
        )
        .await?
        .iter()
        .map(|row| {
            let thumbnail: Option<String> = get(row, 2)?;
            Ok(DueMedia {
                upload_id: get(row, 0)?,
                attachment_id: get(row, 1)?,
                thumbnail: thumbnail.is_some(),
            })
        })
        .collect()
    }

    async fn media_deleted(&self, upload_ids: &[String], forget_before: Timestamp) -> Result<(), StoreError> {
        self.execute("UPDATE uploads SET state = 'gone' WHERE id = ANY($1)", &[&upload_ids]).await?;
        self.execute(
            "DELETE FROM uploads WHERE state = 'gone' AND created_at < $1",
            &[&forget_before.millis()],
        )
        .await?;
        Ok(())
    }
}
