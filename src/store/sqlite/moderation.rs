//! Moderation: bans, operator disconnects, blocks.

use super::*;

#[async_trait]
impl ModerationStore for SqliteStore {
    async fn ban_user(
        &self,
        user_id: &str,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            let existed = conn.prepare_cached("SELECT 1 FROM bans WHERE user_id = ?1")?.exists([&user_id])?;
            conn.prepare_cached(
                "INSERT INTO bans (user_id, reason, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id) DO UPDATE SET reason = excluded.reason",
            )?
            .execute(params![user_id, reason, at.millis()])?;
            Ok(!existed)
        })
        .await
    }

    async fn unban_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            Ok(conn.prepare_cached("DELETE FROM bans WHERE user_id = ?1")?.execute([&user_id])? == 1)
        })
        .await
    }

    async fn banned_users(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| query_all(conn, "SELECT user_id FROM bans ORDER BY user_id", [], |r| r.get(0))).await
    }

    async fn mark_disconnected(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            conn.prepare_cached(
                "INSERT INTO disconnects (user_id, at) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET at = max(at, excluded.at)",
            )?
            .execute(params![user_id, at.millis()])?;
            conn.prepare_cached("DELETE FROM disconnects WHERE at < ?1")?
                .execute([at.minus(DISCONNECT_MARKS_KEPT).millis()])?;
            Ok(())
        })
        .await
    }

    async fn disconnected_since(&self, since: Timestamp) -> Result<Vec<(String, Timestamp)>, StoreError> {
        self.read(move |conn| {
            query_all(conn, "SELECT user_id, at FROM disconnects WHERE at >= ?1", [since.millis()], |r| {
                Ok((r.get(0)?, Timestamp(r.get(1)?)))
            })
        })
        .await
    }

    async fn block_user(&self, blocker: &str, blocked: &str, at: Timestamp) -> Result<bool, StoreError> {
        let (blocker, blocked) = (blocker.to_owned(), blocked.to_owned());
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![blocker, blocked, at.millis()])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn unblock_user(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        let (blocker, blocked) = (blocker.to_owned(), blocked.to_owned());
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")?
                .execute(params![blocker, blocked])?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn blocks_of(&self, blocker: &str) -> Result<Vec<Block>, StoreError> {
        let blocker = blocker.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT blocked_id, created_at FROM blocks WHERE blocker_id = ?1 ORDER BY created_at, blocked_id",
                [&blocker],
                |r| Ok(Block { user_id: r.get(0)?, created_at: Timestamp(r.get(1)?) }),
            )
        })
        .await
    }

    async fn blocked_among(&self, user_id: &str, others: &[String]) -> Result<Vec<String>, StoreError> {
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let (user_id, others) = (user_id.to_owned(), others.to_vec());
        self.read(move |conn| {
            let mut either_way = conn.prepare_cached(
                "SELECT 1 FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2) \
                                         OR (blocker_id = ?2 AND blocked_id = ?1)",
            )?;
            let mut blocked = Vec::new();
            for other in others {
                if either_way.exists(params![user_id, other])? {
                    blocked.push(other);
                }
            }
            Ok(blocked)
        })
        .await
    }
}
