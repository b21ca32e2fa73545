//! Notification settings: per conversation (mute) and per user.

use super::*;

impl Chat {
    /// # Switch push notifications for one conversation (members only)
    pub async fn set_notifications(&self, user: &User, id: &str, enabled: bool) -> Result<(), ChatError> {
        self.require_member(id, user).await?;
        if !self.store.set_notifications(id, &user.id, enabled).await? {
            return Err(ChatError::NotAMember);
        }
        Ok(())
    }

    /// # The caller's push notification settings
    pub async fn notification_settings(&self, user: &User) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.notification_settings(&user.id).await?)
    }

    /// # Change the caller's push notification settings
    /// Fields left out keep their value; returns the settings now in force.
    pub async fn update_notification_settings(
        &self,
        user: &User,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.update_notification_settings(&user.id, update).await?)
    }
}
