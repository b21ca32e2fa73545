//! Notification settings and each user's notification log.

use super::*;

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn notification_settings(&self, user_id: &str) -> Result<NotificationSettings, StoreError> {
        let rows = self
            .query(
                "SELECT enabled, mentions_when_muted FROM notification_settings WHERE user_id = $1",
                &[&user_id],
            )
            .await?;
        match rows.first() {
            Some(row) => {
                Ok(NotificationSettings { enabled: get(row, 0)?, mentions_when_muted: get(row, 1)? })
            }
            None => Ok(NotificationSettings::default()),
        }
    }

    async fn update_notification_settings(
        &self,
        user_id: &str,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, StoreError> {
        // One statement: absent fields keep the stored value, or the default for a new row.
        let defaults = NotificationSettings::default();
        let rows = self
            .query(
                "INSERT INTO notification_settings AS s (user_id, enabled, mentions_when_muted) \
                 VALUES ($1, COALESCE($2::boolean, $4::boolean), COALESCE($3::boolean, $5::boolean)) \
                 ON CONFLICT (user_id) DO UPDATE SET enabled = COALESCE($2::boolean, s.enabled), \
                   mentions_when_muted = COALESCE($3::boolean, s.mentions_when_muted) \
                 RETURNING enabled, mentions_when_muted",
                &[
                    &user_id,
                    &update.enabled,
                    &update.mentions_when_muted,
                    &defaults.enabled,
                    &defaults.mentions_when_muted,
                ],
            )
            .await?;
        let row = rows.first().ok_or_else(|| StoreError::Backend("upsert returned no row".into()))?;
        Ok(NotificationSettings { enabled: get(row, 0)?, mentions_when_muted: get(row, 1)? })
    }

    async fn record_notifications(
        &self,
        notifications: Vec<NewNotification>,
        keep: usize,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if notifications.is_empty() {
            return Ok(Vec::new());
        }
        let keep = as_i64(keep.max(1));
        // Entries by user, users in a fixed order: concurrent batches lock counter rows in
        // the same order, so they never deadlock.
        let mut by_user: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (index, new) in notifications.iter().enumerate() {
            by_user.entry(new.user_id.as_str()).or_default().push(index);
        }
        let mut ids: Vec<Option<i64>> = vec![None; notifications.len()];
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock taken here is held to commit: another node's ids for this user come
        // after these and commit after them.
        let bump = tx
            .prepare_cached(
                "UPDATE notification_counters SET last_id = last_id + $2 WHERE user_id = $1 RETURNING last_id",
            )
            .await?;
        let mut opened = Vec::new();
        for (user_id, indexes) in &by_user {
            let count = as_i64(indexes.len());
            // No counter: the user's log is not open.
            let Some(row) = tx.query_opt(&bump, &[user_id, &count]).await? else { continue };
            let last: i64 = get(&row, 0)?;
            opened.push(*user_id);
            for (offset, index) in indexes.iter().enumerate() {
                if let Some(id) = ids.get_mut(*index) {
                    *id = Some(last - count + 1 + as_i64(offset));
                }
            }
        }
        if opened.is_empty() {
            tx.commit().await?;
            return Ok(ids);
        }
        let logged: Vec<(&NewNotification, i64)> =
            notifications.iter().zip(&ids).filter_map(|(n, id)| id.map(|id| (n, id))).collect();
        let users: Vec<&str> = logged.iter().map(|(n, _)| n.user_id.as_str()).collect();
        let numbers: Vec<i64> = logged.iter().map(|(_, id)| *id).collect();
        let conversations: Vec<&str> =
            logged.iter().map(|(n, _)| n.notification.conversation_id.as_str()).collect();
        let messages: Vec<&str> = logged.iter().map(|(n, _)| n.notification.message_id.as_str()).collect();
        let seqs: Vec<i64> = logged.iter().map(|(n, _)| n.notification.seq).collect();
        let senders: Vec<&str> = logged.iter().map(|(n, _)| n.notification.sender_id.as_str()).collect();
        let previews: Vec<Option<&str>> =
            logged.iter().map(|(n, _)| n.notification.preview.as_deref()).collect();
        let unread: Vec<i64> = logged.iter().map(|(n, _)| n.notification.unread_count).collect();
        let created: Vec<i64> = logged.iter().map(|(n, _)| n.created_at.millis()).collect();
        let kinds: Vec<&str> = logged.iter().map(|(n, _)| n.notification.kind.as_str()).collect();
        let emojis: Vec<Option<&str>> = logged.iter().map(|(n, _)| n.notification.emoji.as_deref()).collect();
        let insert = tx
            .prepare_cached(
                "INSERT INTO notifications (user_id, id, conversation_id, message_id, seq, sender_id, \
                 preview, unread_count, created_at, type, emoji) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
                 $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[])",
            )
            .await?;
        tx.execute(
            &insert,
            &[
                &users,
                &numbers,
                &conversations,
                &messages,
                &seqs,
                &senders,
                &previews,
                &unread,
                &created,
                &kinds,
                &emojis,
            ],
        )
        .await?;
        let trim = tx
            .prepare_cached(
                "DELETE FROM notifications n USING notification_counters c \
                 WHERE c.user_id = ANY($1) AND n.user_id = c.user_id AND n.id <= c.last_id - $2",
            )
            .await?;
        tx.execute(&trim, &[&opened, &keep]).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn notifications_after(
        &self,
        user_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Notification>, StoreError> {
        let rows = self
            .query(
                "SELECT id, conversation_id, message_id, seq, sender_id, preview, unread_count, type, emoji \
                 FROM notifications WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&user_id, &after, &as_i64(limit)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: &str = get(row, 7)?;
                Ok(Notification {
                    id: Some(get(row, 0)?),
                    kind: NotificationKind::parse(kind).unwrap_or(NotificationKind::Message),
                    emoji: get(row, 8)?,
                    conversation_id: get(row, 1)?,
                    message_id: get(row, 2)?,
                    seq: get(row, 3)?,
                    sender_id: get(row, 4)?,
                    preview: get(row, 5)?,
                    unread_count: get(row, 6)?,
                })
            })
            .collect()
    }

    async fn open_notification_log(&self, user_id: &str) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO notification_counters (user_id, last_id) VALUES ($1, 0) ON CONFLICT (user_id) DO NOTHING",
            &[&user_id],
        )
        .await?;
        self.latest_notification_id(user_id).await
    }

    async fn latest_notification_id(&self, user_id: &str) -> Result<i64, StoreError> {
        let rows =
            self.query("SELECT last_id FROM notification_counters WHERE user_id = $1", &[&user_id]).await?;
        match rows.first() {
            Some(row) => get(row, 0),
            None => Ok(0),
        }
    }

    async fn prune_notifications(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let deleted = self
            .execute(
                "DELETE FROM notifications WHERE (user_id, id) IN (SELECT user_id, id FROM notifications \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                &[&before.millis(), &as_i64(limit)],
            )
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }
}
