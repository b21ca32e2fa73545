//! Devices: each user's push endpoints.

use super::*;

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn upsert_device(&self, device: NewDevice, max_per_user: usize) -> Result<Device, StoreError> {
        self.write(move |conn| {
            let keys = device.keys.as_ref().map(serde_json::to_string).transpose().map_err(json_error)?;
            let id: String = conn
                .prepare_cached(
                    "INSERT INTO devices (id, user_id, platform, token, endpoint, keys, created_at, refreshed_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
                     ON CONFLICT (user_id, platform, token) DO UPDATE SET endpoint = ?5, keys = ?6, refreshed_at = ?7 \
                     RETURNING id",
                )?
                .query_row(
                    params![
                        device.id,
                        device.user_id,
                        device.platform.as_str(),
                        device.token,
                        device.endpoint,
                        keys,
                        device.created_at.millis()
                    ],
                    |r| r.get(0),
                )?;
            // The writer is the only one: nothing registers a device between these statements.
            conn.prepare_cached(
                "DELETE FROM devices WHERE user_id = ?1 AND id <> ?2 AND id NOT IN (\
                 SELECT id FROM devices WHERE user_id = ?1 AND id <> ?2 \
                 ORDER BY refreshed_at DESC, id DESC LIMIT ?3)",
            )?
            .execute(params![device.user_id, id, i64::try_from(max_per_user.saturating_sub(1)).unwrap_or(i64::MAX)])?;
            load_devices(conn, &device.user_id, Some(&id))?
                .pop()
                .ok_or_else(|| StoreError::Backend("the device just written is missing".into()))
        })
        .await
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| load_devices(conn, &user_id, None)).await
    }

    async fn remove_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM devices WHERE id = ?1 AND user_id = ?2")?
                .execute(params![device_id, user_id])?;
            Ok(removed == 1)
        })
        .await
    }
}
