//! Devices: registering, listing and removing a user's push endpoints.

use super::*;

/// Longest device token or endpoint, in characters.
const MAX_DEVICE_FIELD_CHARS: usize = 4096;

impl Chat {
    /// # Register a device for push notifications
    /// Registering the same `(platform, token)` again refreshes it and returns the same id.
    pub async fn register_device(&self, user: &User, req: RegisterDevice) -> Result<Device, ChatError> {
        validate::text("token", &req.token, MAX_DEVICE_FIELD_CHARS)?;
        if req.token.trim().is_empty() {
            return Err(ChatError::invalid("token must not be empty"));
        }
        if let Some(endpoint) = &req.endpoint {
            validate::text("endpoint", endpoint, MAX_DEVICE_FIELD_CHARS)?;
            self.limits.push_endpoints.check(endpoint).map_err(ChatError::Invalid)?;
        }
        match req.platform {
            Platform::Webpush => {
                let keys = req.keys.as_ref().ok_or_else(|| ChatError::invalid("webpush needs keys"))?;
                if req.endpoint.is_none() {
                    return Err(ChatError::invalid("webpush needs an endpoint"));
                }
                for key in ["p256dh", "auth"] {
                    let present = keys.get(key).and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty());
                    if !present {
                        return Err(ChatError::invalid(format!("webpush keys need a {key} string")));
                    }
                }
            }
            Platform::Webhook if req.endpoint.is_none() => {
                return Err(ChatError::invalid("webhook needs an endpoint"));
            }
            _ => {}
        }
        let device = NewDevice {
            id: new_id(),
            user_id: user.id.clone(),
            platform: req.platform,
            token: req.token,
            endpoint: req.endpoint,
            keys: req.keys,
            created_at: Timestamp::now(),
        };
        Ok(self.store.upsert_device(device, self.limits.max_devices_per_user.max(1)).await?)
    }

    /// # The caller's devices
    pub async fn devices(&self, user: &User) -> Result<Vec<Device>, ChatError> {
        Ok(self.store.devices(&user.id).await?)
    }

    /// # Remove one of the caller's devices
    pub async fn remove_device(&self, user: &User, device_id: &str) -> Result<(), ChatError> {
        if !self.store.remove_device(&user.id, device_id).await? {
            return Err(ChatError::not_found("no such device"));
        }
        Ok(())
    }
}
