//! Conversations: create, read as a member sees them, list, update.

use super::*;

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(&self, new: NewConversation) -> Result<Option<Created>, StoreError> {
        self.write(move |conn| {
            // The one writer runs this whole: no block commits between the check and the write.
            if let Some((owner, others, either_way)) = new.block_check()
                && blocks_between(conn, owner, &others, either_way)?
            {
                return Ok(None);
            }
            if let Some(key) = &new.direct_key {
                let existing: Option<String> = conn
                    .prepare_cached("SELECT id FROM conversations WHERE direct_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Some(Created { id, created: false }));
                }
            }
            let metadata = serde_json::to_string(&new.metadata).map_err(json_error)?;
            let at = new.created_at.millis();
            conn.prepare_cached(
                "INSERT INTO conversations (id, type, name, context, metadata, direct_key, activity_at, created_at, \
                   private_preview) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            )?
            .execute(params![
                new.id,
                new.kind.as_str(),
                new.name,
                new.context,
                metadata,
                new.direct_key,
                at,
                new.private_preview
            ])?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (user_id, role) in &new.members {
                insert.execute(params![new.id, user_id, role.as_str(), at])?;
            }
            Ok(Some(Created { id: new.id, created: true }))
        })
        .await
    }

    async fn conversation(&self, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError> {
        let (id, viewer) = (id.to_owned(), viewer.to_owned());
        self.read(move |conn| load_conversation(conn, &id, &viewer)).await
    }

    async fn conversations_of(
        &self,
        user_id: &str,
        after: Option<ActivityCursor>,
        limit: usize,
        archived: Option<bool>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            let (after_at, after_id) = match &after {
                Some(c) => (Some(c.activity_at.millis()), Some(c.id.as_str())),
                None => (None, None),
            };
            let ids = conn
                .prepare_cached(
                    "SELECT c.id FROM members m JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.user_id = ?1 AND (?5 IS NULL OR m.archived = ?5) \
                       AND (?2 IS NULL OR c.activity_at < ?2 OR (c.activity_at = ?2 AND c.id < ?3)) \
                     ORDER BY c.activity_at DESC, c.id DESC LIMIT ?4",
                )?
                .query_map(params![user_id, after_at, after_id, limit as i64, archived], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut conversations = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(c) = load_conversation(conn, &id, &user_id)? {
                    conversations.push(c);
                }
            }
            Ok(conversations)
        })
        .await
    }

    async fn update_conversation(&self, id: &str, update: ConversationUpdate) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let metadata =
                update.metadata.map(|m| serde_json::to_string(&m)).transpose().map_err(json_error)?;
            let (status, reason) = match update.status {
                Some((status, reason)) => (Some(status.as_str()), reason),
                None => (None, None),
            };
            let changed = conn
                .prepare_cached(
                    "UPDATE conversations SET name = COALESCE(?2, name), metadata = COALESCE(?3, metadata), \
                       private_preview = COALESCE(?4, private_preview), status = COALESCE(?5, status), \
                       status_reason = CASE WHEN ?5 IS NULL THEN status_reason ELSE ?6 END \
                     WHERE id = ?1",
                )?
                .execute(params![id, update.name, metadata, update.private_preview, status, reason])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn conversation_heads(&self, user_id: &str) -> Result<Vec<ConversationHead>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT c.id, c.last_seq, c.last_revision FROM members m JOIN conversations c \
                     ON c.id = m.conversation_id WHERE m.user_id = ?1 ORDER BY c.id",
                [&user_id],
                |r| Ok(ConversationHead { id: r.get(0)?, last_seq: r.get(1)?, last_revision: r.get(2)? }),
            )
        })
        .await
    }

    async fn contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT DISTINCT other.user_id FROM members mine \
                     JOIN members other ON other.conversation_id = mine.conversation_id \
                     WHERE mine.user_id = ?1 AND other.user_id <> ?1 \
                       AND NOT EXISTS (SELECT 1 FROM blocks b \
                         WHERE (b.blocker_id = ?1 AND b.blocked_id = other.user_id) \
                            OR (b.blocker_id = other.user_id AND b.blocked_id = ?1))",
                [&user_id],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn all_conversations(
        &self,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.read(move |conn| {
            let (after_at, after_id) = match &after {
                Some(c) => (Some(c.activity_at.millis()), Some(c.id.as_str())),
                None => (None, None),
            };
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM conversations \
                     WHERE (?1 IS NULL OR activity_at < ?1 OR (activity_at = ?1 AND id < ?2)) \
                     ORDER BY activity_at DESC, id DESC LIMIT ?3",
                )?
                .query_map(params![after_at, after_id, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut conversations = Vec::with_capacity(ids.len());
            for id in ids {
                // No member has an empty id, so the unread count is nobody's: 0.
                if let Some(c) = load_conversation(conn, &id, "")? {
                    conversations.push(c);
                }
            }
            Ok(conversations)
        })
        .await
    }
}
