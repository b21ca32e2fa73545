//! Conversations: create, read as a member sees them, list, update.

use super::*;

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn create_conversation(&self, new: NewConversation) -> Result<Option<Created>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some((owner, others, either_way)) = new.block_check()
            && blocks_between(&tx, owner, &others, either_way).await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let at = new.created_at.millis();
        let insert = tx
            .prepare_cached(
                "INSERT INTO conversations (id, type, name, context, metadata, direct_key, activity_at, created_at, \
                   private_preview) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (direct_key) DO NOTHING",
            )
            .await?;
        let inserted = tx
            .execute(
                &insert,
                &[
                    &new.id,
                    &new.kind.as_str(),
                    &new.name,
                    &new.context,
                    &Json(&new.metadata),
                    &new.direct_key,
                    &at,
                    &new.private_preview,
                ],
            )
            .await?;
        if inserted == 0 {
            // A direct conversation of this pair and context exists (perhaps just created by
            // another node): return it.
            tx.rollback().await?;
            let rows =
                self.query("SELECT id FROM conversations WHERE direct_key = $1", &[&new.direct_key]).await?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError::Backend("a direct_key conflict left no conversation".into()))?;
            return Ok(Some(Created { id: get(row, 0)?, created: false }));
        }
        let (user_ids, roles): (Vec<&str>, Vec<&str>) =
            new.members.iter().map(|(user_id, role)| (user_id.as_str(), role.as_str())).unzip();
        let members = tx
            .prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) \
                 SELECT $1, u, r, $4 FROM unnest($2::text[], $3::text[]) AS t (u, r)",
            )
            .await?;
        tx.execute(&members, &[&new.id, &user_ids, &roles, &at]).await?;
        tx.commit().await?;
        Ok(Some(Created { id: new.id, created: true }))
    }

    async fn conversation(&self, id: &str, viewer: &str) -> Result<Option<Conversation>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM conversations c \
                 LEFT JOIN members v ON v.conversation_id = c.id AND v.user_id = $2 \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE c.id = $1"
            ))
            .await?;
        let rows = client.query(&statement, &[&id, &viewer]).await?;
        Ok(conversations_from(&client, rows).await?.pop())
    }

    async fn conversations_of(
        &self,
        user_id: &str,
        after: Option<ActivityCursor>,
        limit: usize,
        archived: Option<bool>,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (after_at, after_id) = cursor_bounds(after.as_ref());
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM members v \
                 JOIN conversations c ON c.id = v.conversation_id \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE v.user_id = $1 AND ($5::BOOLEAN IS NULL OR v.archived = $5) \
                   AND ($2::BIGINT IS NULL OR c.activity_at < $2 OR (c.activity_at = $2 AND c.id < $3)) \
                 ORDER BY c.activity_at DESC, c.id DESC LIMIT $4"
            ))
            .await?;
        let rows =
            client.query(&statement, &[&user_id, &after_at, &after_id, &as_i64(limit), &archived]).await?;
        conversations_from(&client, rows).await
    }

    async fn update_conversation(&self, id: &str, update: ConversationUpdate) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE conversations SET name = COALESCE($2, name), metadata = COALESCE($3, metadata), \
                   private_preview = COALESCE($4, private_preview), status = COALESCE($5, status), \
                   status_reason = CASE WHEN $5::TEXT IS NULL THEN status_reason ELSE $6 END WHERE id = $1",
                &[
                    &id,
                    &update.name,
                    &update.metadata.as_ref().map(Json),
                    &update.private_preview,
                    &update.status.as_ref().map(|(status, _)| status.as_str()),
                    &update.status.as_ref().and_then(|(_, reason)| reason.as_deref()),
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn conversation_heads(&self, user_id: &str) -> Result<Vec<ConversationHead>, StoreError> {
        self.query(
            "SELECT c.id, c.last_seq, c.last_revision FROM members m JOIN conversations c \
             ON c.id = m.conversation_id WHERE m.user_id = $1 ORDER BY c.id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(ConversationHead { id: get(row, 0)?, last_seq: get(row, 1)?, last_revision: get(row, 2)? })
        })
        .collect()
    }

    async fn contacts(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT DISTINCT other.user_id FROM members mine \
             JOIN members other ON other.conversation_id = mine.conversation_id \
             WHERE mine.user_id = $1 AND other.user_id <> $1 \
               AND NOT EXISTS (SELECT 1 FROM blocks b \
                 WHERE (b.blocker_id = $1 AND b.blocked_id = other.user_id) \
                    OR (b.blocker_id = other.user_id AND b.blocked_id = $1))",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
    }

    async fn all_conversations(
        &self,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (after_at, after_id) = cursor_bounds(after.as_ref());
        let client = self.client().await?;
        // `v` (the viewer) joins nothing: the unread count is nobody's, 0.
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS}, {MESSAGE_COLUMNS} FROM conversations c \
                 LEFT JOIN members v ON false \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE ($1::BIGINT IS NULL OR c.activity_at < $1 OR (c.activity_at = $1 AND c.id < $2)) \
                 ORDER BY c.activity_at DESC, c.id DESC LIMIT $3"
            ))
            .await?;
        let rows = client.query(&statement, &[&after_at, &after_id, &as_i64(limit)]).await?;
        conversations_from(&client, rows).await
    }
}
