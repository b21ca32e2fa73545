//! Moderation: bans, operator disconnects, blocks.

use super::*;

#[async_trait]
impl ModerationStore for PostgresStore {
    async fn ban_user(
        &self,
        user_id: &str,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        // `xmax = 0` only for a freshly inserted row, not for one the conflict updated.
        let rows = self
            .query(
                "INSERT INTO bans (user_id, reason, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET reason = EXCLUDED.reason RETURNING (xmax = 0)",
                &[&user_id, &reason, &at.millis()],
            )
            .await?;
        rows.first().map_or(Ok(false), |row| get(row, 0))
    }

    async fn unban_user(&self, user_id: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM bans WHERE user_id = $1", &[&user_id]).await? == 1)
    }

    async fn banned_users(&self) -> Result<Vec<String>, StoreError> {
        self.query("SELECT user_id FROM bans ORDER BY user_id", &[])
            .await?
            .iter()
            .map(|row| get(row, 0))
            .collect()
    }

    async fn mark_disconnected(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO disconnects (user_id, at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET at = GREATEST(disconnects.at, EXCLUDED.at)",
            &[&user_id, &at.millis()],
        )
        .await?;
        let horizon = at.minus(DISCONNECT_MARKS_KEPT).millis();
        self.execute("DELETE FROM disconnects WHERE at < $1", &[&horizon]).await?;
        Ok(())
    }

    async fn disconnected_since(&self, since: Timestamp) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.query("SELECT user_id, at FROM disconnects WHERE at >= $1", &[&since.millis()])
            .await?
            .iter()
            .map(|row| Ok((get(row, 0)?, Timestamp(get(row, 1)?))))
            .collect()
    }

    async fn block_user(&self, blocker: &str, blocked: &str, at: Timestamp) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Waits for conversations being created or joined with `blocked` (see `blocks_between`).
        tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&BLOCKS_LOCK, &blocked]).await?;
        let inserted = tx
            .execute(
                "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&blocker, &blocked, &at.millis()],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    async fn unblock_user(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        let deleted = self
            .execute("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", &[&blocker, &blocked])
            .await?;
        Ok(deleted == 1)
    }

    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        self.query(
            "SELECT blocked_id, created_at FROM blocks WHERE blocker_id = $1 ORDER BY created_at, blocked_id",
            &[&blocker],
        )
        .await?
        .iter()
        .map(|row| Ok(Block { user_id: get(row, 0)?, created_at: Timestamp(get(row, 1)?) }))
        .collect()
    }

    async fn blocked_among(&self, user_id: &str, others: &[String]) -> Result<Vec<String>, StoreError> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        self.query(
            "SELECT o FROM unnest($2::text[]) AS o WHERE EXISTS (SELECT 1 FROM blocks b \
               WHERE (b.blocker_id = $1 AND b.blocked_id = o) OR (b.blocker_id = o AND b.blocked_id = $1))",
            &[&user_id, &others],
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
    }
}
