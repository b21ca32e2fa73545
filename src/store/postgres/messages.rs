//! Messages: appends, edits, deletes and history pages.

use super::*;

#[async_trait]
impl MessageStore for PostgresStore {
    async fn append_message(
        &self,
        new: NewMessage,
        on_commit: CommitHook,
    ) -> Result<AppendOutcome, StoreError> {
        self.appends.append(new, on_commit).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let rows =
            self.query(&format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1"), &[&id]).await?;
        Ok(messages_from(&rows)?.pop())
    }

    async fn edit_message(
        &self,
        id: &str,
        content: String,
        at: Timestamp,
    ) -> Result<Option<Message>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let find = tx
            .prepare_cached("SELECT conversation_id FROM messages WHERE id = $1 AND deleted_at IS NULL")
            .await?;
        let Some(row) = tx.query_opt(&find, &[&id]).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let conversation_id: String = get(&row, 0)?;
        let revision = annotations::next_revision(&tx, &conversation_id).await?;
        let edit = tx
            .prepare_cached(&format!(
                "UPDATE messages AS m SET content = $2, edited_at = $3, version = m.version + 1, revision = $4 \
                 WHERE m.id = $1 AND m.deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
            ))
            .await?;
        let edited = messages_from(&tx.query(&edit, &[&id, &content, &at.millis(), &revision]).await?)?.pop();
        tx.commit().await?;
        Ok(edited)
    }

    async fn delete_message(&self, id: &str, at: Timestamp) -> Result<Option<(Message, bool)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let find = tx.prepare_cached("SELECT conversation_id FROM messages WHERE id = $1").await?;
        let Some(row) = tx.query_opt(&find, &[&id]).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let conversation_id: String = get(&row, 0)?;
        // Unread counts change below: the conversation row first, like appends (taking the
        // revision locks it).
        let revision = annotations::next_revision(&tx, &conversation_id).await?;
        let delete = tx
            .prepare_cached(&format!(
                "UPDATE messages AS m SET content = NULL, attachments = '[]', metadata = '{{}}', deleted_at = $2, \
                 mentions = '[]', mentions_all = false, reaction_counts = '{{}}', latest_reactions = '[]', \
                 pinned_at = NULL, pinned_by = NULL, version = m.version + 1, revision = $3 \
                 WHERE m.id = $1 AND m.deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
            ))
            .await?;
        let result = match messages_from(&tx.query(&delete, &[&id, &at.millis(), &revision]).await?)?.pop() {
            Some(message) => {
                // It no longer counts as unread for those who had not read it.
                if message.in_timeline() {
                    let unread = tx
                        .prepare_cached(
                            "UPDATE members SET unread_count = unread_count - 1 \
                             WHERE conversation_id = $1 AND user_id <> $2 AND last_read_seq < $3 AND unread_count > 0",
                        )
                        .await?;
                    tx.execute(&unread, &[&message.conversation_id, &message.sender_id, &message.seq])
                        .await?;
                }
                // Nor as a mention; its reactions go with its content.
                let mentions =
                    tx.prepare_cached("DELETE FROM mentions WHERE conversation_id = $1 AND seq = $2").await?;
                tx.execute(&mentions, &[&message.conversation_id, &message.seq]).await?;
                let reactions = tx.prepare_cached("DELETE FROM reactions WHERE message_id = $1").await?;
                tx.execute(&reactions, &[&id]).await?;
                if let Some(root_id) = &message.thread_id {
                    annotations::record_reply_deleted(&tx, &conversation_id, root_id).await?;
                }
                // Its media go after the retention (the media housekeeping).
                let media = tx
                    .prepare_cached("UPDATE uploads SET message_deleted_at = $2 WHERE message_id = $1")
                    .await?;
                tx.execute(&media, &[&id, &at.millis()]).await?;
                Some((message, true))
            }
            None => {
                // Already deleted: nothing changed, the revision taken above goes back.
                tx.rollback().await?;
                let read = format!("SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1");
                return Ok(messages_from(&self.query(&read, &[&id]).await?)?
                    .pop()
                    .map(|message| (message, false)));
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn messages(
        &self,
        conversation_id: &str,
        range: HistoryRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let after = range.after_seq.unwrap_or(0);
        let before = range.before_seq.unwrap_or(i64::MAX);
        let fetch = as_i64(range.limit).saturating_add(1);
        let order = if range.after_seq.is_some() { "ASC" } else { "DESC" };
        let rows = self
            .query(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m \
                     WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3 ORDER BY m.seq {order} LIMIT $4"
                ),
                &[&conversation_id, &after, &before, &fetch],
            )
            .await?;
        let mut messages = messages_from(&rows)?;
        let has_more = messages.len() > range.limit;
        messages.truncate(range.limit);
        if range.after_seq.is_none() {
            messages.reverse();
        }
        Ok((messages, has_more))
    }
}
