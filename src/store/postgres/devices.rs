//! Devices: each user's push endpoints.

use super::*;

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn upsert_device(&self, device: NewDevice, max_per_user: usize) -> Result<Device, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Registrations of one user take turns, so that two at once cannot both keep a slot.
        let lock =
            tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtext('chatd devices ' || $1::text))").await?;
        tx.execute(&lock, &[&device.user_id]).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO devices (id, user_id, platform, token, endpoint, keys, created_at, refreshed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
                 ON CONFLICT (user_id, platform, token) DO UPDATE \
                 SET endpoint = EXCLUDED.endpoint, keys = EXCLUDED.keys, refreshed_at = EXCLUDED.refreshed_at \
                 RETURNING id, platform, token, endpoint, keys, created_at",
            )
            .await?;
        let rows = tx
            .query(
                &upsert,
                &[
                    &device.id,
                    &device.user_id,
                    &device.platform.as_str(),
                    &device.token,
                    &device.endpoint,
                    &device.keys.as_ref().map(Json),
                    &device.created_at.millis(),
                ],
            )
            .await?;
        let written = rows
            .first()
            .map(device_from)
            .ok_or_else(|| StoreError::Backend("the device just written is missing".into()))??;
        let evict = tx
            .prepare_cached(
                "DELETE FROM devices WHERE user_id = $1 AND id <> $2 AND id NOT IN (\
                 SELECT id FROM devices WHERE user_id = $1 AND id <> $2 \
                 ORDER BY refreshed_at DESC, id DESC LIMIT $3)",
            )
            .await?;
        tx.execute(&evict, &[&device.user_id, &written.id, &as_i64(max_per_user.saturating_sub(1))]).await?;
        tx.commit().await?;
        Ok(written)
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        self.query(
            "SELECT id, platform, token, endpoint, keys, created_at FROM devices WHERE user_id = $1 ORDER BY id",
            &[&user_id],
        )
        .await?
        .iter()
        .map(device_from)
        .collect()
    }

    async fn remove_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let removed = self
            .execute("DELETE FROM devices WHERE id = $1 AND user_id = $2", &[&device_id, &user_id])
            .await?;
        Ok(removed == 1)
    }
}
