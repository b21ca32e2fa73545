//! Members: standing, additions, removals with owner succession, read markers, mute switches, unread counts.

use super::*;

#[async_trait]
impl MemberStore for PostgresStore {
    async fn membership(&self, conversation_id: &str, user_id: &str) -> Result<Membership, StoreError> {
        let rows = self
            .query(
                "SELECT c.type, m.user_id, m.role, m.joined_at, m.last_read_seq, m.notifications, c.status \
                 FROM conversations c LEFT JOIN members m ON m.conversation_id = c.id AND m.user_id = $2 \
                 WHERE c.id = $1",
                &[&conversation_id, &user_id],
            )
            .await?;
        let Some(row) = rows.first() else { return Ok(Membership::NoConversation) };
        let kind: String = get(row, 0)?;
        let kind = ConversationType::parse(&kind).ok_or_else(|| unknown_name("conversation type", &kind))?;
        if get::<Option<String>>(row, 1)?.is_none() {
            return Ok(Membership::NotMember);
        }
        let status: &str = get(row, 6)?;
        let status = ConversationStatus::parse(status).ok_or_else(|| unknown_name("status", status))?;
        Ok(Membership::Member { member: member_at(row, 1)?, kind, status })
    }

    async fn add_members(
        &self,
        conversation_id: &str,
        user_ids: Vec<String>,
        role: Role,
        joined_at: Timestamp,
        by: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let named: Vec<&str> = user_ids.iter().map(String::as_str).collect();
        if blocks_between(&tx, by, &named, false).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        // Waits for appends in flight, so the new members' read markers are at the real last seq.
        let lock = tx.prepare_cached("SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE").await?;
        let Some(row) = tx.query_opt(&lock, &[&conversation_id]).await? else {
            tx.rollback().await?;
            return Ok(Some(Vec::new()));
        };
        let last_seq: i64 = get(&row, 0)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO members (conversation_id, user_id, role, joined_at, last_read_seq) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .await?;
        let mut added = Vec::new();
        for user_id in user_ids {
            let inserted = tx
                .execute(
                    &insert,
                    &[&conversation_id, &user_id, &role.as_str(), &joined_at.millis(), &last_seq],
                )
                .await?;
            if inserted == 1 {
                added.push(user_id);
            }
        }
        tx.commit().await?;
        Ok(Some(added))
    }

    async fn remove_member(&self, conversation_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Waits for appends and other member changes in flight: a removed member's append
        // either committed before this or sees the removal, and concurrent leaves take turns,
        // each seeing the members the previous left.
        let lock = tx.prepare_cached("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE").await?;
        tx.query_opt(&lock, &[&conversation_id]).await?;
        let delete =
            tx.prepare_cached("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2").await?;
        let removed = tx.execute(&delete, &[&conversation_id, &user_id]).await?;
        let succession = tx
            .prepare_cached(
                "UPDATE members SET role = 'owner' \
                 WHERE conversation_id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND role = 'owner') \
                 AND user_id = (SELECT user_id FROM members WHERE conversation_id = $1 \
                     ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1)",
            )
            .await?;
        tx.execute(&succession, &[&conversation_id]).await?;
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn mark_read(
        &self,
        conversation_id: &str,
        user_id: &str,
        seq: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT last_read_seq FROM members WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE",
            )
            .await?;
        let Some(row) = tx.query_opt(&lock, &[&conversation_id, &user_id]).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let before: i64 = get(&row, 0)?;
        // Capped at the last committed seq: an append in flight is not readable yet.
        let raise = tx
            .prepare_cached(
                "UPDATE members SET last_read_seq = GREATEST(last_read_seq, \
                   LEAST($3, (SELECT last_seq FROM conversations WHERE id = $1))) \
                 WHERE conversation_id = $1 AND user_id = $2 RETURNING last_read_seq",
            )
            .await?;
        let after: i64 = get(&tx.query_one(&raise, &[&conversation_id, &user_id, &seq]).await?, 0)?;
        if after > before {
            // Recount what is left after the marker: usually nothing, read to the end.
            let recount = tx
                .prepare_cached(
                    "UPDATE members SET unread_count = (SELECT count(*) FROM messages \
                       WHERE conversation_id = $1 AND seq > $3 AND sender_id <> $2 AND deleted_at IS NULL \
                         AND (thread_id IS NULL OR also_in_conversation)) \
                     WHERE conversation_id = $1 AND user_id = $2",
                )
                .await?;
            tx.execute(&recount, &[&conversation_id, &user_id, &after]).await?;
        }
        tx.commit().await?;
        Ok(Some((before, after)))
    }

    async fn set_notifications(
        &self,
        conversation_id: &str,
        user_id: &str,
        enabled: bool,
        until: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let until = until.filter(|_| !enabled).map(|t| t.millis());
        let changed = self
            .execute(
                "UPDATE members SET notifications = $3, muted_until = $4 WHERE conversation_id = $1 AND user_id = $2",
                &[&conversation_id, &user_id, &enabled, &until],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn set_archived(
        &self,
        conversation_id: &str,
        user_id: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        let changed = self
            .execute(
                "UPDATE members SET archived = $3 WHERE conversation_id = $1 AND user_id = $2",
                &[&conversation_id, &user_id, &archived],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn end_mutes(&self, now: Timestamp) -> Result<usize, StoreError> {
        let ended = self
            .execute(
                "UPDATE members SET notifications = true, muted_until = NULL \
                 WHERE muted_until IS NOT NULL AND muted_until <= $1",
                &[&now.millis()],
            )
            .await?;
        Ok(usize::try_from(ended).unwrap_or(usize::MAX))
    }

    async fn unread_counts(&self, user_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.query(
            "SELECT conversation_id, unread_count FROM members WHERE user_id = $1 AND unread_count > 0",
            &[&user_id],
        )
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?)))
        .collect()
    }
}
