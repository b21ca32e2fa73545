//! Messages: appends, edits, deletes and history pages.

use super::*;

#[async_trait]
impl MessageStore for SqliteStore {
    async fn append_message(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError> {
        self.submit(Touches::Append, move |conn, appends| appends.append(conn, new), Some(on_commit)).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| message_by_id(conn, &id)).await
    }

    async fn edit_message(
        &self,
        id: &str,
        content: String,
        at: Timestamp,
    ) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let conversation_id: Option<String> = conn
                .prepare_cached("SELECT conversation_id FROM messages WHERE id = ?1 AND deleted_at IS NULL")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            let Some(conversation_id) = conversation_id else { return Ok(None) };
            let revision = threads::next_revision(conn, &conversation_id)?;
            conn.prepare_cached(
                "UPDATE messages SET content = ?2, edited_at = ?3, version = version + 1, revision = ?4 WHERE id = ?1",
            )?
            .execute(params![id, content, at.millis(), revision])?;
            message_by_id(conn, &id)
        })
        .await
    }

    async fn delete_message(&self, id: &str, at: Timestamp) -> Result<Option<(Message, bool)>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let conversation_id: Option<String> = conn
                .prepare_cached("SELECT conversation_id FROM messages WHERE id = ?1 AND deleted_at IS NULL")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            let deleted = match conversation_id {
                Some(conversation_id) => {
                    let revision = threads::next_revision(conn, &conversation_id)?;
                    conn.prepare_cached(
                        "UPDATE messages SET content = NULL, attachments = '[]', metadata = '{}', deleted_at = ?2, \
                         mentions = '[]', mentions_all = 0, reaction_counts = '{}', latest_reactions = '[]', \
                         pinned_at = NULL, pinned_by = NULL, version = version + 1, revision = ?3 WHERE id = ?1",
                    )?
                    .execute(params![id, at.millis(), revision])?
                }
                None => 0,
            };
            let message = message_by_id(conn, &id)?;
            if let (1, Some(m)) = (deleted, &message) {
                // It no longer counts as unread for those who had not read it.
                if m.in_timeline() {
                    conn.prepare_cached(
                        "UPDATE members SET unread_count = unread_count - 1 \
                         WHERE conversation_id = ?1 AND user_id <> ?2 AND last_read_seq < ?3 AND unread_count > 0",
                    )?
                    .execute(params![m.conversation_id, m.sender_id, m.seq])?;
                }
                // Nor as a mention; its reactions go with its content.
                conn.prepare_cached("DELETE FROM mentions WHERE conversation_id = ?1 AND seq = ?2")?
                    .execute(params![m.conversation_id, m.seq])?;
                conn.prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?.execute([&id])?;
                if let Some(root_id) = &m.thread_id {
                    threads::record_reply_deleted(conn, root_id)?;
                }
                // Its media go after the retention (the media housekeeping).
                conn.prepare_cached("UPDATE uploads SET message_deleted_at = ?2 WHERE message_id = ?1")?
                    .execute(params![id, at.millis()])?;
            }
            Ok(message.map(|m| (m, deleted == 1)))
        })
        .await
    }

    async fn messages(
        &self,
        conversation_id: &str,
        range: HistoryRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read(move |conn| {
            let after = range.after_seq.unwrap_or(0);
            let before = range.before_seq.unwrap_or(i64::MAX);
            let fetch = range.limit as i64 + 1;
            let mut messages = if range.after_seq.is_some() {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 \
                     ORDER BY seq ASC LIMIT ?4"
                );
                query_messages(conn, &sql, params![conversation_id, after, before, fetch])?
            } else {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?3 \
                     ORDER BY seq DESC LIMIT ?4"
                );
                query_messages(conn, &sql, params![conversation_id, after, before, fetch])?
            };
            let has_more = messages.len() > range.limit;
            messages.truncate(range.limit);
            if range.after_seq.is_none() {
                messages.reverse();
            }
            Ok((messages, has_more))
        })
        .await
    }
}
