//! Uploads and the attachments made from them (see migrations/sqlite/0010_uploads.sql).

use super::*;
use crate::core::ports::{AttachedUpload, DueMedia, NewUpload, StoredAttachment, Upload, UploadStore};
use crate::store::upload_rows::{UPLOAD_COLUMNS, UploadRow, attachment_json, db_size, stored_attachment};

/// Reads an [`UploadRow`] from the first columns of `row`.
fn upload_row(row: &Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        conversation_id: row.get(2)?,
        filename: row.get(3)?,
        content_type: row.get(4)?,
        size: row.get(5)?,
        sha256: row.get(6)?,
        token_hash: row.get(7)?,
        created_at: row.get(8)?,
        expires_at: row.get(9)?,
        state: row.get(10)?,
        message_id: row.get(11)?,
        attachment: row.get(12)?,
        thumbnail: row.get(13)?,
        inline: row.get(14)?,
    })
}

#[async_trait]
impl UploadStore for SqliteStore {
    async fn create_upload(&self, upload: NewUpload) -> Result<(), StoreError> {
        self.write_apart(move |conn| {
            conn.prepare_cached(
                "INSERT INTO uploads (id, user_id, conversation_id, filename, content_type, size, sha256, \
                 token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                upload.id,
                upload.user_id,
                upload.conversation_id,
                upload.filename,
                upload.content_type,
                db_size(upload.size),
                upload.sha256,
                upload.token_hash,
                upload.created_at.millis(),
                upload.expires_at.millis(),
            ])?;
            Ok(())
        })
        .await
    }

    async fn uploads_since(
        &self,
        user_id: &str,
        since: Timestamp,
    ) -> Result<(u64, Option<Timestamp>), StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let (count, oldest): (i64, Option<i64>) = conn
                .prepare_cached(
                    "SELECT count(*), min(created_at) FROM uploads WHERE user_id = ?1 AND created_at >= ?2",
                )?
                .query_row(params![user_id, since.millis()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((u64::try_from(count).unwrap_or(0), oldest.map(Timestamp)))
        })
        .await
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1");
            let row = conn.prepare_cached(&sql)?.query_row([id], upload_row).optional()?;
            row.map(UploadRow::into_upload).transpose()
        })
        .await
    }

    async fn attach_upload(
        &self,
        upload_id: &str,
        attached: &AttachedUpload,
        wait_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let (upload_id, json) = (upload_id.to_owned(), attachment_json(attached)?);
        let (attachment_id, message_id) = (attached.attachment.id.clone(), attached.message_id.clone());
        let (thumbnail, inline) = (attached.thumbnail.clone(), attached.inline);
        self.write_apart(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE uploads SET state = 'processed', attachment_id = ?2, message_id = ?3, \
                     attachment = ?4, thumbnail = ?5, inline = ?6, expires_at = max(expires_at, ?7) \
                     WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![
                    upload_id,
                    attachment_id,
                    message_id,
                    json,
                    thumbnail,
                    inline,
                    wait_until.millis()
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn rebind_upload(&self, upload_id: &str, message_id: &str) -> Result<(), StoreError> {
        let (upload_id, message_id) = (upload_id.to_owned(), message_id.to_owned());
        self.write_apart(move |conn| {
            conn.prepare_cached("UPDATE uploads SET message_id = ?2 WHERE id = ?1 AND state = 'processed'")?
                .execute(params![upload_id, message_id])?;
            Ok(())
        })
        .await
    }

    async fn attachment(&self, id: &str) -> Result<Option<StoredAttachment>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS}, \
                 EXISTS (SELECT 1 FROM messages m WHERE m.id = uploads.message_id), \
                 (SELECT m.deleted_at FROM messages m WHERE m.id = uploads.message_id) \
                 FROM uploads WHERE attachment_id = ?1 AND state IN ('processed', 'attached')"
            );
            let found = conn
                .prepare_cached(&sql)?
                .query_row([id], |row| {
                    Ok((upload_row(row)?, row.get::<_, bool>(15)?, row.get::<_, Option<i64>>(16)?))
                })
                .optional()?;
            let Some((row, exists, deleted_at)) = found else { return Ok(None) };
            stored_attachment(row.into_upload()?, exists, deleted_at)
        })
        .await
    }

    async fn due_media(
        &self,
        expired_before: Timestamp,
        deleted_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueMedia>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write_apart(move |conn| {
            conn.prepare_cached(
                "UPDATE uploads SET state = 'attached' WHERE state = 'processed' \
                 AND EXISTS (SELECT 1 FROM messages m WHERE m.id = uploads.message_id)",
            )?
            .execute([])?;
            query_all(
                conn,
                "SELECT id, attachment_id, thumbnail FROM uploads \
                 WHERE state IN ('pending', 'processed') AND expires_at < ?1 \
                 UNION ALL \
                 SELECT id, attachment_id, thumbnail FROM uploads \
                 WHERE message_deleted_at < ?2 AND state IN ('processed', 'attached') \
                 LIMIT ?3",
                params![expired_before.millis(), deleted_before.millis(), limit],
                |r| {
                    let thumbnail: Option<String> = r.get(2)?;
                    Ok(DueMedia {
                        upload_id: r.get(0)?,
                        attachment_id: r.get(1)?,
                        thumbnail: thumbnail.is_some(),
                    })
                },
            )
        })
        .await
    }

    async fn media_deleted(&self, upload_ids: &[String], forget_before: Timestamp) -> Result<(), StoreError> {
        let upload_ids = upload_ids.to_vec();
        self.write_apart(move |conn| {
            let mut gone = conn.prepare_cached("UPDATE uploads SET state = 'gone' WHERE id = ?1")?;
            for id in &upload_ids {
                gone.execute([id])?;
            }
            conn.prepare_cached("DELETE FROM uploads WHERE state = 'gone' AND created_at < ?1")?
                .execute([forget_before.millis()])?;
            Ok(())
        })
        .await
    }
}
