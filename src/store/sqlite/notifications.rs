//! Notification settings and each user's notification log.

use super::*;

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn notification_settings(&self, user_id: &str) -> Result<NotificationSettings, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| load_notification_settings(conn, &user_id)).await
    }

    async fn update_notification_settings(
        &self,
        user_id: &str,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, StoreError> {
        let user_id = user_id.to_owned();
        self.write_apart(move |conn| {
            let current = load_notification_settings(conn, &user_id)?;
            let settings = NotificationSettings {
                enabled: update.enabled.unwrap_or(current.enabled),
                mentions_when_muted: update.mentions_when_muted.unwrap_or(current.mentions_when_muted),
            };
            conn.prepare_cached(
                "INSERT INTO notification_settings (user_id, enabled, mentions_when_muted) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (user_id) DO UPDATE SET enabled = ?2, mentions_when_muted = ?3",
            )?
            .execute(params![user_id, settings.enabled, settings.mentions_when_muted])?;
            Ok(settings)
        })
        .await
    }

    async fn record_notifications(
        &self,
        notifications: Vec<NewNotification>,
        keep: usize,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        self.write_apart(move |conn| {
            // The writer is the only writer: bumping the counter and inserting in one job
            // commits ids in order.
            let mut bump = conn.prepare_cached(
                "UPDATE notification_counters SET last_id = last_id + 1 WHERE user_id = ?1 RETURNING last_id",
            )?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO notifications (user_id, id, conversation_id, message_id, seq, sender_id, \
                 preview, unread_count, created_at, type, emoji) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut trim =
                conn.prepare_cached("DELETE FROM notifications WHERE user_id = ?1 AND id <= ?2")?;
            let mut ids = Vec::with_capacity(notifications.len());
            for new in notifications {
                // No counter: the user's log is not open.
                let Some(id) = bump.query_row(params![new.user_id], |r| r.get::<_, i64>(0)).optional()?
                else {
                    ids.push(None);
                    continue;
                };
                let n = &new.notification;
                insert.execute(params![
                    new.user_id,
                    id,
                    n.conversation_id,
                    n.message_id,
                    n.seq,
                    n.sender_id,
                    n.preview,
                    n.unread_count,
                    new.created_at.millis(),
                    n.kind.as_str(),
                    n.emoji,
                ])?;
                if id > keep {
                    trim.execute(params![new.user_id, id - keep])?;
                }
                ids.push(Some(id));
            }
            Ok(ids)
        })
        .await
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let user_id = user_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT id, conversation_id, message_id, seq, sender_id, preview, unread_count, type, emoji \
                 FROM notifications WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                params![user_id, after, limit],
                |r| {
                    let kind: String = r.get(7)?;
                    Ok(Notification {
                        id: Some(r.get(0)?),
                        kind: NotificationKind::parse(&kind).unwrap_or(NotificationKind::Message),
                        emoji: r.get(8)?,
                        conversation_id: r.get(1)?,
                        message_id: r.get(2)?,
                        seq: r.get(3)?,
                        sender_id: r.get(4)?,
                        preview: r.get(5)?,
                        unread_count: r.get(6)?,
                    })
                },
            )
        })
        .await
    }

    async fn open_notification_log(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_owned();
        // Appends cache whether each member has a log: opening one drops that cache.
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO notification_counters (user_id, last_id) VALUES (?1, 0) ON CONFLICT (user_id) DO NOTHING",
            )?
            .execute([&user_id])?;
            Ok(conn
                .prepare_cached("SELECT last_id FROM notification_counters WHERE user_id = ?1")?
                .query_row([&user_id], |r| r.get(0))?)
        })
        .await
    }

    async fn latest_notification_id(&self, user_id: &str) -> Result<i64, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT last_id FROM notification_counters WHERE user_id = ?1")?
                .query_row([&user_id], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn prune_notifications(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        self.write_apart(move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM notifications WHERE (user_id, id) IN (SELECT user_id, id FROM notifications \
                     WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                )?
                .execute(params![before.millis(), i64::try_from(limit).unwrap_or(i64::MAX)])?)
        })
        .await
    }
}
